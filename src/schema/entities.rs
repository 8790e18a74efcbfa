//! CAS alert entities → Sentinel entities, the objects SecurityAlert's `Entities` holds and
//! Sentinel content reads with `parse_json(Entities)`: each has `$id` and `Type` (`account`,
//! `ip`, `cloud-application`, `host`, `file`, `url`, `mailbox`) and that type's own fields.
//!
//! CAS lists an alert's entities as `{"type", "id", "label", "pa", ...}`; the ones that name
//! no Sentinel entity (the policy, a group tag) stay in `CasEntities` only.

use serde_json::{json, Map, Value};

/// The Sentinel entities of a CAS entity list, numbered from `$id` 1. CAS lists a person
/// twice, as an `account` (its Entra object id, its UPN in `pa`) and as a `user` (its UPN):
/// they are one account entity, as in Sentinel's own rows.
pub(crate) fn sentinel_entities(cas: &Value) -> Vec<Value> {
    let mut out: Vec<Map<String, Value>> = Vec::new();
    for e in cas.as_array().into_iter().flatten() {
        let Some(mut entity) = one(e) else { continue };
        if let Some(same) = upn_key(&entity).and_then(|k| {
            out.iter_mut()
                .find(|o| upn_key(o).as_deref() == Some(k.as_str()))
        }) {
            for (k, v) in entity {
                same.entry(k).or_insert(v);
            }
            continue;
        }
        entity.insert("$id".into(), json!((out.len() + 1).to_string()));
        out.push(entity);
    }
    out.into_iter().map(Value::Object).collect()
}

/// An account entity's UPN, lowercased: what makes two CAS entities one person.
fn upn_key(entity: &Map<String, Value>) -> Option<String> {
    if entity.get("Type")?.as_str()? != "account" {
        return None;
    }
    let name = entity.get("Name")?.as_str()?;
    let suffix = entity.get("UPNSuffix")?.as_str()?;
    Some(format!("{name}@{suffix}").to_lowercase())
}

/// A text field of the CAS entity (numbers, as CAS writes app ids, become text).
fn text(e: &Value, key: &str) -> Option<String> {
    match e.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn one(e: &Value) -> Option<Map<String, Value>> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v));
        }
    };
    let label = text(e, "label");
    let id = text(e, "id");
    match e.get("type")?.as_str()? {
        "account" | "user" => {
            put("Type", Some("account".into()));
            // `pa` is the principal's address (its UPN); `id` is the Entra object id when
            // CAS resolved the account to Entra.
            let upn = text(e, "pa")
                .or_else(|| label.clone().filter(|l| l.contains('@')))
                .or_else(|| id.clone().filter(|i| i.contains('@')));
            match upn.as_deref().and_then(|u| u.split_once('@')) {
                Some((name, suffix)) => {
                    put("Name", Some(name.into()));
                    put("UPNSuffix", Some(suffix.into()));
                }
                None => put("Name", label.clone()),
            }
            put("AadUserId", id.filter(|i| is_guid(i)));
            put("DisplayName", label);
        }
        "ip" => {
            put("Type", Some("ip".into()));
            put("Address", id.or(label));
        }
        "service" | "app" => {
            put("Type", Some("cloud-application".into()));
            put("Name", label);
            // Sentinel's AppId is the numeric Defender for Cloud Apps app id.
            if let Some(n) = e
                .get("id")
                .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
            {
                m.insert("AppId".into(), json!(n));
            }
            // `saas` is the app's id in the Defender for Cloud Apps catalogue and `inst` its
            // instance (0 the default one); CAS's entity gives no instance name, so none is made up.
            if let Some(saas) = e.get("saas").and_then(Value::as_i64) {
                m.insert("SaasId".into(), json!(saas));
            }
            m.insert(
                "InstanceId".into(),
                json!(e.get("inst").and_then(Value::as_i64).unwrap_or(0)),
            );
        }
        "device" | "host" => {
            put("Type", Some("host".into()));
            put("HostName", label);
        }
        "file" => {
            put("Type", Some("file".into()));
            put("Name", label);
        }
        "url" => {
            put("Type", Some("url".into()));
            put("Url", label.or(id));
        }
        "mailbox" => {
            put("Type", Some("mailbox".into()));
            put("MailboxPrimaryAddress", text(e, "pa").or(label));
        }
        _ => return None,
    }
    Some(m)
}

/// Whether `s` is a GUID (as Entra object ids are).
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cas_entity_type_maps_to_its_sentinel_entity() {
        let cas = json!([
            {"type": "account", "id": "7d0c9b8a-1e2f-4a3b-8c4d-5e6f7a8b9c0d", "label": "Ada Lovelace", "pa": "ada@contoso.example", "entityRole": "Source"},
            {"type": "ip", "id": "203.0.113.17", "label": "203.0.113.17"},
            {"type": "service", "id": 15600, "label": "Microsoft OneDrive for Business"},
            {"type": "device", "id": "55017817-27af-49a7-93d6-8af6c5030fdb", "label": "DC3"},
            {"type": "file", "id": "f1", "label": "plan.docx"},
            {"type": "url", "id": "u1", "label": "https://evil.example/x"},
            {"type": "mailbox", "id": "m1", "label": "Ada", "pa": "ada@contoso.example"},
            {"type": "policyRule", "id": "5bfd18bfab73c36ba10d38cb", "label": "Mass download"},
            {"type": "groupTag", "id": "g1", "label": "Admins"},
            {"label": "no type"},
        ]);
        let got = sentinel_entities(&cas);
        let want = json!([
            {"$id": "1", "Type": "account", "Name": "ada", "UPNSuffix": "contoso.example", "AadUserId": "7d0c9b8a-1e2f-4a3b-8c4d-5e6f7a8b9c0d", "DisplayName": "Ada Lovelace"},
            {"$id": "2", "Type": "ip", "Address": "203.0.113.17"},
            {"$id": "3", "Type": "cloud-application", "Name": "Microsoft OneDrive for Business", "AppId": 15600, "InstanceId": 0},
            {"$id": "4", "Type": "host", "HostName": "DC3"},
            {"$id": "5", "Type": "file", "Name": "plan.docx"},
            {"$id": "6", "Type": "url", "Url": "https://evil.example/x"},
            {"$id": "7", "Type": "mailbox", "MailboxPrimaryAddress": "ada@contoso.example"},
        ]);
        assert_eq!(
            Value::Array(got),
            want,
            "policy rules and tags name no Sentinel entity"
        );
    }

    #[test]
    fn a_person_listed_as_account_and_as_user_is_one_account() {
        // As real CAS alerts list them.
        let got = sentinel_entities(&json!([
            {"entityRole": "Source", "entityType": 2, "id": "6204bdaf-ad46-48bf-b8a9-1d5e3e9d6dd3", "inst": 0, "label": "Dev One", "pa": "dev@contoso.example", "saas": 11161, "type": "account"},
            {"id": "Dev@Contoso.example", "label": "Dev@Contoso.example", "type": "user"},
            {"id": 11161, "label": "Office 365", "type": "service", "saas": 11161, "inst": 0},
        ]));
        assert_eq!(
            Value::Array(got),
            json!([
                {"$id": "1", "Type": "account", "Name": "dev", "UPNSuffix": "contoso.example", "AadUserId": "6204bdaf-ad46-48bf-b8a9-1d5e3e9d6dd3", "DisplayName": "Dev One"},
                {"$id": "2", "Type": "cloud-application", "Name": "Office 365", "AppId": 11161, "SaasId": 11161, "InstanceId": 0},
            ])
        );
    }

    #[test]
    fn an_account_without_an_address_or_entra_id_keeps_its_label() {
        let got = sentinel_entities(
            &json!([{"type": "account", "id": "S-1-5-21-1", "label": "CONTOSO\\ada"}]),
        );
        assert_eq!(
            got,
            vec![
                json!({"$id": "1", "Type": "account", "Name": "CONTOSO\\ada", "DisplayName": "CONTOSO\\ada"})
            ]
        );
        assert!(sentinel_entities(&json!("not a list")).is_empty());
    }
}
