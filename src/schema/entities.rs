//! CAS alert entities → Sentinel entities, the objects SecurityAlert's `Entities` holds and
//! Sentinel content reads with `parse_json(Entities)`: each has `$id` and `Type` (`account`,
//! `ip`, `cloud-application`, `host`, `file`, `url`, `mailbox`) and that type's own fields.
//!
//! CAS lists an alert's entities as `{"type", "id", "label", "pa", ...}`; the ones that name
//! no Sentinel entity (the policy, a group tag) stay in `CasEntities` only.

use serde_json::{json, Map, Value};

/// The Sentinel entities of a CAS entity list, numbered from `$id` 1.
pub(crate) fn sentinel_entities(cas: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for e in cas.as_array().into_iter().flatten() {
        if let Some(mut entity) = one(e) {
            entity.insert("$id".into(), json!((out.len() + 1).to_string()));
            out.push(Value::Object(entity));
        }
    }
    out
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
            let upn = text(e, "pa").or_else(|| label.clone().filter(|l| l.contains('@')));
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
            m.insert(
                "InstanceName".into(),
                json!(text(e, "inst").unwrap_or_else(|| "0".into())),
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
            {"$id": "3", "Type": "cloud-application", "Name": "Microsoft OneDrive for Business", "AppId": 15600, "InstanceName": "0"},
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
