//! Microsoft Graph's `security/alerts_v2` alerts → `McasAlerts_CL`, in SecurityAlert's
//! values. The same table as the REST alerts: `VendorOriginalId` is the Defender for Cloud
//! Apps alert id (`providerAlertId`, the REST API's `_id`), so rows from both sources, and
//! from before and after a switch, are one alert in `McasSecurityAlert`.
//!
//! A Graph alert is told from a REST one by its shape: Graph's have `serviceSource` and no
//! `_id`, the REST API's always have `_id` (both are documented, required properties).

use super::alerts::{AlertRow, PRODUCT_NAME};
use super::{time_generated, Issues};
use crate::json::Record;
use serde_json::{json, Map, Value};

#[cfg(feature = "sim")]
/// Where each column's value comes from in a Graph alert (for `docs/tables.md`), in the
/// order of [`super::alerts::COLUMNS`]; a test checks that every column has its line.
pub(crate) const GRAPH_SOURCES: &[(&str, &str)] = &[
    ("TimeGenerated", "`lastUpdateDateTime`: each state of an alert is a row as of its update"),
    ("AlertName", "`title`"),
    ("DisplayName", "`title`"),
    ("AlertSeverity", "`severity`: Low, Medium, High, Informational"),
    ("Description", "`description`"),
    ("StartTime", "`firstActivityDateTime` (else `createdDateTime`)"),
    ("EndTime", "`lastActivityDateTime` (else `createdDateTime`)"),
    ("Status", "`status` new New, inProgress InProgress, resolved Resolved, or Dismissed when `classification` is falsePositive"),
    ("ResolutionStatus", "`status` and `classification`: Open, TruePositive, FalsePositive, Benign, Resolved"),
    ("VendorOriginalId", "`providerAlertId`: the Defender for Cloud Apps alert id, the REST API's `_id`, so both sources' rows are one alert"),
    ("SystemAlertId", "`id` (Graph's)"),
    ("ProductName", "always \"Microsoft Cloud App Security\""),
    ("ProviderName", "always \"MCAS\""),
    ("VendorName", "always \"Microsoft\""),
    ("AlertType", "`detectorId`"),
    ("AlertLink", "`alertWebUrl`"),
    ("ExtendedLinks", "`alertWebUrl` and `incidentWebUrl`"),
    ("CompromisedEntity", "the first user evidence's `userAccount` (UPN, else account name)"),
    ("Tactics", "`categories` (else `category`), comma-separated"),
    ("Techniques", "`mitreTechniques` without sub-techniques, a JSON list"),
    ("SubTechniques", "`mitreTechniques` that are sub-techniques (T1234.001)"),
    ("ThreatScore", "empty (Graph's alerts have no score)"),
    ("Entities", "Sentinel entities from the typed `evidence`: user (account), ip, cloud application, OAuth application, mailbox, file, url; other evidence types stay in `CasEntities`"),
    ("CasEntities", "`evidence`, unchanged"),
    ("ExtendedProperties", "IncidentId, Classification, Determination, DetectionSource, DetectorId, Category, LastUpdated, ServiceSource, AssignedTo, ProductName"),
    ("SourceRecord", "the Graph alert without `evidence` (in `CasEntities`)"),
    ("MappingIssues", "as for the REST source"),
    ("TruncatedFields", "as for the REST source"),
    ("CasTenant", "as for the REST source"),
    ("CasTenantId", "as for the REST source"),
];

/// Whether `rec` is a Graph alert rather than a REST one.
pub(crate) fn is_graph_alert(rec: &Record) -> bool {
    rec.get("_id").is_none() && rec.get("serviceSource").is_some()
}

/// Maps a Graph alert. Every row is the alert as of its `lastUpdateDateTime`, its
/// `TimeGenerated`: a later state of the same alert is a later row, as Sentinel's own
/// Defender connector writes them.
pub(crate) fn map<'a>(rec: &Record<'a>) -> AlertRow<'a> {
    let mut is = Issues::default();
    let provider_id = is.str(rec, "/providerAlertId", true);
    let graph_id = is.str(rec, "/id", true);
    let updated = is.datetime(rec, "/lastUpdateDateTime");
    let created = is.datetime(rec, "/createdDateTime");
    let status = is.str(rec, "/status", true);
    let classification = is.str(rec, "/classification", false);
    let determination = is.str(rec, "/determination", false);
    let (state, resolution) = states(status.as_deref(), classification.as_deref());
    let techniques = rec.pointer("/mitreTechniques");
    let ids = |sub: bool| -> Option<String> {
        let list: Vec<&str> = techniques
            .as_ref()?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| t.contains('.') == sub)
            .collect();
        (!list.is_empty()).then(|| json!(list).to_string())
    };
    let evidence = rec.pointer("/evidence");
    let entities = evidence.as_ref().map(entities).unwrap_or_default();
    let compromised = entities
        .iter()
        .find(|e| e["Type"] == "account")
        .and_then(|e| match (e["Name"].as_str(), e["UPNSuffix"].as_str()) {
            (Some(n), Some(s)) => Some(format!("{n}@{s}")),
            (Some(n), None) => Some(n.to_string()),
            _ => None,
        });
    let category = is.str(rec, "/category", false);
    let tactics = rec
        .pointer("/categories")
        .and_then(|c| {
            let list: Vec<String> = c
                .as_array()?
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            (!list.is_empty()).then(|| list.join(","))
        })
        .or_else(|| category.clone());
    let link = is.str(rec, "/alertWebUrl", false);
    let incident_link = is.str(rec, "/incidentWebUrl", false);
    let mut links = Vec::new();
    if let Some(u) = &link {
        links.push(json!({"Href": u, "Category": null, "Label": "Alert in Microsoft Defender XDR", "Type": "webLink"}));
    }
    if let Some(u) = &incident_link {
        links.push(json!({"Href": u, "Category": null, "Label": "Incident in Microsoft Defender XDR", "Type": "webLink"}));
    }
    AlertRow {
        time_generated: time_generated(updated.clone().or_else(|| created.clone()), &mut is),
        alert_name: is.str(rec, "/title", true),
        display_name: is.str(rec, "/title", false),
        alert_severity: is
            .str(rec, "/severity", false)
            .map(|s| severity(&s).to_string()),
        description: is.str(rec, "/description", false),
        start_time: is
            .datetime(rec, "/firstActivityDateTime")
            .or_else(|| created.clone()),
        end_time: is
            .datetime(rec, "/lastActivityDateTime")
            .or_else(|| created.clone()),
        status: state.map(str::to_string),
        resolution_status: resolution.map(str::to_string),
        vendor_original_id: provider_id.or_else(|| graph_id.clone()),
        system_alert_id: graph_id,
        product_name: PRODUCT_NAME,
        provider_name: "MCAS",
        vendor_name: "Microsoft",
        alert_type: is.str(rec, "/detectorId", false),
        alert_link: link,
        extended_links: (!links.is_empty()).then_some(Value::Array(links)),
        compromised_entity: compromised,
        tactics,
        techniques: ids(false),
        sub_techniques: ids(true),
        threat_score: None,
        entities,
        cas_entities: rec.get("evidence"),
        extended_properties: json!({
            "IncidentId": rec.pointer("/incidentId"),
            "Classification": classification,
            "Determination": determination,
            "DetectionSource": rec.pointer("/detectionSource"),
            "DetectorId": rec.pointer("/detectorId"),
            "Category": category,
            "LastUpdated": updated,
            "ServiceSource": rec.pointer("/serviceSource"),
            "AssignedTo": rec.pointer("/assignedTo"),
            "ProductName": rec.pointer("/productName"),
        }),
        source_record: rec.without("evidence"),
        mapping_issues: is.into_column(),
    }
}

/// SecurityAlert's severity words.
fn severity(s: &str) -> &'static str {
    match s {
        "low" => "Low",
        "medium" => "Medium",
        "high" => "High",
        "informational" => "Informational",
        _ => "Unknown",
    }
}

/// SecurityAlert's Status and the REST-era ResolutionStatus word, from Graph's `status`
/// and `classification`. A false positive is dismissed, as the REST API's "dismissed"
/// resolution was; other resolved alerts are resolved.
fn states(
    status: Option<&str>,
    classification: Option<&str>,
) -> (Option<&'static str>, Option<&'static str>) {
    let state = status.map(|s| match (s, classification) {
        ("new", _) => "New",
        ("inProgress", _) => "InProgress",
        ("resolved", Some("falsePositive")) => "Dismissed",
        ("resolved", _) => "Resolved",
        _ => "Unknown",
    });
    let resolution = status.map(|s| match (s, classification) {
        ("new" | "inProgress", _) => "Open",
        ("resolved", Some("truePositive")) => "TruePositive",
        ("resolved", Some("falsePositive")) => "FalsePositive",
        ("resolved", Some("informationalExpectedActivity" | "benignPositive")) => "Benign",
        ("resolved", _) => "Resolved",
        _ => "Unknown",
    });
    (state, resolution)
}

/// Sentinel entities from Graph's typed evidence, numbered from `$id` 1. Evidence types
/// with no Sentinel entity (there are dozens) stay in `CasEntities` only.
fn entities(evidence: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for e in evidence.as_array().into_iter().flatten() {
        let kind = e["@odata.type"].as_str().unwrap_or_default();
        let kind = kind.rsplit('.').next().unwrap_or_default();
        let mut m = Map::new();
        let mut put = |k: &str, v: &Value| {
            let v = match v {
                Value::String(s) if s.is_empty() => return,
                Value::Null => return,
                v => v.clone(),
            };
            m.insert(k.to_string(), v);
        };
        match kind {
            "userEvidence" => {
                let a = &e["userAccount"];
                put("Type", &json!("account"));
                match a["userPrincipalName"]
                    .as_str()
                    .and_then(|u| u.split_once('@'))
                {
                    Some((name, suffix)) => {
                        put("Name", &json!(name));
                        put("UPNSuffix", &json!(suffix));
                    }
                    None => put("Name", &a["accountName"]),
                }
                put("NTDomain", &a["domainName"]);
                put("AadUserId", &a["azureAdUserId"]);
                put("Sid", &a["userSid"]);
                put("DisplayName", &a["displayName"]);
            }
            "ipEvidence" => {
                put("Type", &json!("ip"));
                put("Address", &e["ipAddress"]);
                if let Some(c) = e["countryLetterCode"].as_str().filter(|c| !c.is_empty()) {
                    put("Location", &json!({"CountryCode": c}));
                }
            }
            "cloudApplicationEvidence" => {
                put("Type", &json!("cloud-application"));
                put("AppId", &e["appId"]);
                put("Name", &e["displayName"]);
                put("InstanceId", &e["instanceId"]);
                put("InstanceName", &e["instanceName"]);
                put("SaasId", &e["saasAppId"]);
            }
            "oauthApplicationEvidence" => {
                put("Type", &json!("oauth-application"));
                put("OAuthAppId", &e["appId"]);
                put("Name", &e["displayName"]);
                put("OAuthObjectId", &e["objectId"]);
                put("PublisherName", &e["publisher"]);
            }
            "mailboxEvidence" => {
                put("Type", &json!("mailbox"));
                put("MailboxPrimaryAddress", &e["primaryAddress"]);
                put("DisplayName", &e["displayName"]);
                put("Upn", &e["upn"]);
            }
            "fileEvidence" => {
                let f = &e["fileDetails"];
                put("Type", &json!("file"));
                put("Name", &f["fileName"]);
                put("Directory", &f["filePath"]);
                let hashes: Vec<Value> = [("SHA1", "sha1"), ("SHA256", "sha256"), ("MD5", "md5")]
                    .iter()
                    .filter_map(|(alg, k)| {
                        f[*k]
                            .as_str()
                            .filter(|h| !h.is_empty())
                            .map(|h| json!({"Algorithm": alg, "Value": h}))
                    })
                    .collect();
                if !hashes.is_empty() {
                    put("FileHashes", &Value::Array(hashes));
                }
            }
            "urlEvidence" => {
                put("Type", &json!("url"));
                put("Url", &e["url"]);
            }
            _ => continue,
        }
        m.insert("$id".into(), json!((out.len() + 1).to_string()));
        out.push(Value::Object(m));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::record;

    /// A Defender for Cloud Apps alert as alerts_v2 lists it (the documented properties;
    /// the shape of Microsoft's published samples).
    fn alert() -> Value {
        serde_json::from_str(
            r##"{
    "@odata.type": "#microsoft.graph.security.alert",
    "id": "ca7a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "providerAlertId": "64f0c3a1e0b2f4a5c6d7e8f9",
    "incidentId": "28282",
    "status": "resolved",
    "severity": "medium",
    "classification": "truePositive",
    "determination": "compromisedAccount",
    "serviceSource": "microsoftDefenderForCloudApps",
    "detectionSource": "cloudAppSecurity",
    "productName": "Microsoft Defender for Cloud Apps",
    "detectorId": "MCAS_ALERT_ANUBIS_DETECTION_IMPOSSIBLE_TRAVEL",
    "tenantId": "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c",
    "title": "Impossible travel activity",
    "description": "The user signed in from two countries 40 minutes apart.",
    "category": "InitialAccess",
    "assignedTo": "soc@contoso.com",
    "alertWebUrl": "https://security.microsoft.com/alerts/ca7a1b2c3d4e5f60718293a4b5c6d7e8f9?tid=b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c",
    "incidentWebUrl": "https://security.microsoft.com/incidents/28282?tid=b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c",
    "mitreTechniques": ["T1078", "T1078.004"],
    "createdDateTime": "2026-11-30T10:00:00.1234567Z",
    "lastUpdateDateTime": "2026-11-30T12:30:00.5Z",
    "resolvedDateTime": "2026-11-30T12:30:00.5Z",
    "firstActivityDateTime": "2026-11-30T09:10:00Z",
    "lastActivityDateTime": "2026-11-30T09:50:00Z",
    "comments": [],
    "systemTags": [],
    "evidence": [
        {"@odata.type": "#microsoft.graph.security.userEvidence", "roles": ["compromised"], "verdict": "suspicious",
         "userAccount": {"accountName": "alex", "domainName": null, "userSid": "S-1-12-1-1-2-3-4",
           "azureAdUserId": "3a7e5d2b-1c4f-4e8a-9b6d-0f2c3a4b5c6d", "userPrincipalName": "alex@contoso.com", "displayName": "Alex Wilber"}},
        {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.7", "countryLetterCode": "NL"},
        {"@odata.type": "#microsoft.graph.security.cloudApplicationEvidence", "appId": 11161, "displayName": "Office 365",
         "instanceId": 0, "instanceName": "Office 365", "saasAppId": 11161},
        {"@odata.type": "#microsoft.graph.security.processEvidence", "processId": 4}
    ]
}"##,
        )
        .unwrap()
    }

    #[test]
    fn a_graph_alert_gets_security_alert_values_and_one_id_with_the_rest_api() {
        let raw = record::raw_of(&alert());
        let rec = Record::new(&raw);
        assert!(is_graph_alert(&rec));
        let row = map(&rec);
        assert_eq!(
            row.vendor_original_id.as_deref(),
            Some("64f0c3a1e0b2f4a5c6d7e8f9")
        );
        assert_eq!(
            row.system_alert_id.as_deref(),
            Some("ca7a1b2c3d4e5f60718293a4b5c6d7e8f9")
        );
        assert_eq!(row.time_generated, "2026-11-30T12:30:00.5Z");
        assert_eq!(row.start_time.as_deref(), Some("2026-11-30T09:10:00Z"));
        assert_eq!(row.alert_severity.as_deref(), Some("Medium"));
        assert_eq!(row.status.as_deref(), Some("Resolved"));
        assert_eq!(row.resolution_status.as_deref(), Some("TruePositive"));
        assert_eq!(
            row.alert_type.as_deref(),
            Some("MCAS_ALERT_ANUBIS_DETECTION_IMPOSSIBLE_TRAVEL")
        );
        assert_eq!(row.tactics.as_deref(), Some("InitialAccess"));
        assert_eq!(row.techniques.as_deref(), Some(r#"["T1078"]"#));
        assert_eq!(row.sub_techniques.as_deref(), Some(r#"["T1078.004"]"#));
        assert_eq!(row.compromised_entity.as_deref(), Some("alex@contoso.com"));
        let types: Vec<&str> = row
            .entities
            .iter()
            .map(|e| e["Type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["account", "ip", "cloud-application"],
            "process evidence has no entity here"
        );
        assert_eq!(row.entities[1]["Location"]["CountryCode"], "NL");
        assert_eq!(row.entities[2]["AppId"], 11161);
        assert_eq!(row.extended_properties["IncidentId"], "28282");
        assert_eq!(
            row.extended_properties["Determination"],
            "compromisedAccount"
        );
        assert_eq!(
            row.extended_properties["DetectionSource"],
            "cloudAppSecurity"
        );
        assert!(row.mapping_issues.is_none(), "{:?}", row.mapping_issues);
    }

    #[test]
    fn a_false_positive_is_dismissed_and_open_alerts_are_open() {
        assert_eq!(
            states(Some("resolved"), Some("falsePositive")),
            (Some("Dismissed"), Some("FalsePositive"))
        );
        assert_eq!(
            states(Some("inProgress"), None),
            (Some("InProgress"), Some("Open"))
        );
        assert_eq!(
            states(Some("unknownFutureValue"), None),
            (Some("Unknown"), Some("Unknown"))
        );
        assert_eq!(severity("unknownFutureValue"), "Unknown");
    }
}
