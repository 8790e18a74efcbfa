//! `McasAlerts_CL`: alerts in the shape of Sentinel's `SecurityAlert` table.

use super::{time_generated, vocabulary, Issues};
#[cfg(feature = "sim")]
use super::{Column, ColumnType as T};
use crate::json::record::SourceText;
use crate::json::Record;
use crate::model::format_ms;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The product name Sentinel's own CAS connector writes.
pub(crate) const PRODUCT_NAME: &str = "Microsoft Cloud App Security";

#[cfg(feature = "sim")]
/// What SecurityAlert holds that CAS's alert records cannot give (docs/tables.md).
pub(crate) const NOTES: &str = "From the CAS REST API, per column: `AlertType` is Microsoft's documented alert name \
where one fits the policy (the built-in anomaly detections by name, file and activity policies by type), else the \
policy's type as CAS writes it; `Status` is New, Resolved or Dismissed (InProgress, `IncidentId`, `Classification`, `Determination` and `DetectionSource` exist only in \
Microsoft Graph's alerts, which `CAS_ALERTS_SOURCE=graph` forwards: the last column says how each column is \
filled then); `Entities` holds one account per person (CAS lists a person as `account` and again as \
`user`), cloud applications with `AppId`, `SaasId` and `InstanceId` (CAS gives no instance name, so none is \
written); `StartTime` and `EndTime` are the alert's time (CAS's alert records carry no first and last activity).";

#[cfg(feature = "sim")]
/// The table's columns.
pub(crate) const COLUMNS: &[Column] = &[
    Column::new("TimeGenerated", T::DateTime, "`timestamp` (when the alert was raised); for an alert forwarded again because it changed, when the change was seen"),
    Column::new("AlertName", T::String, "`title`"),
    Column::new("DisplayName", T::String, "`title`"),
    Column::new("AlertSeverity", T::String, "`severityValue`: 0 Low, 1 Medium, 2 High, 3 Informational"),
    Column::new("Description", T::String, "`description` as plain text (CAS's HTML tags and `__siteIcon__` markers removed)"),
    Column::new("StartTime", T::DateTime, "`timestamp`"),
    Column::new("EndTime", T::DateTime, "`timestamp` (CAS alerts are instantaneous)"),
    Column::new("Status", T::String, "`resolutionStatusValue`: 0 or absent (older tenants) New; 1, 3, 4 Dismissed; 2, 5 Resolved (`statusValue` is read/unread, not the alert's state). InProgress needs Graph's alerts"),
    Column::new("ResolutionStatus", T::String, "`resolutionStatusValue`: Open, Dismissed, Resolved, FalsePositive, Benign, TruePositive"),
    Column::new("VendorOriginalId", T::String, "`_id`: the dedupe key"),
    Column::new("SystemAlertId", T::String, "`_id`"),
    Column::new("ProductName", T::String, "always \"Microsoft Cloud App Security\", as Sentinel's own connector writes"),
    Column::new("ProviderName", T::String, "always \"MCAS\""),
    Column::new("VendorName", T::String, "always \"Microsoft\""),
    Column::new("AlertType", T::String, "the documented alert name (`MCAS_ALERT_ANUBIS_DETECTION_*` for the built-in anomaly detections by name, `ALERT_CABINET_EVENT_MATCH_FILE` for file policies, `ALERT_CABINET_EVENT_MATCH_AUDIT` for activity policies…); else the `policyType` of the `policyRule` entity"),
    Column::new("AlertLink", T::String, "`URL`"),
    Column::new("ExtendedLinks", T::Dynamic, "`URL`, as SecurityAlert's link list"),
    Column::new("CompromisedEntity", T::String, "`pa` (or `label`) of the first `account` entity"),
    Column::new("Tactics", T::String, "`intent` (MITRE ATT&CK tactics), comma-separated as in SecurityAlert"),
    Column::new("Techniques", T::String, "MITRE technique ids (T1234) named in `description`, a JSON list as in SecurityAlert"),
    Column::new("SubTechniques", T::String, "MITRE sub-technique ids (T1234.001) named in `description`"),
    Column::new("ThreatScore", T::Int, "`threatScore`"),
    Column::new("Entities", T::Dynamic, "Sentinel entities built from `entities` (account, ip, cloud-application, host, file, url, mailbox)"),
    Column::new("CasEntities", T::Dynamic, "`entities`, unchanged"),
    Column::new("ExtendedProperties", T::Dynamic, "`DetectorId` (the policy's id), `Category` (from `stories`), and `statusValue` (read/unread), `resolutionStatusValue`, `severityValue`, `isSystemAlert`, `idValue`, `contextId`, `stories`, `evidence`; IncidentId, Classification, Determination and DetectionSource exist only in Graph's alerts"),
    super::source_record_column("the CAS record without `entities` (in `CasEntities`)"),
    super::MAPPING_ISSUES,
    super::TRUNCATED_FIELDS,
    super::CAS_TENANT,
    super::CAS_TENANT_ID,
];

/// One `McasAlerts_CL` row.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AlertRow<'a> {
    /// The alert's time (`timestamp`).
    pub time_generated: String,
    /// `title`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_name: Option<String>,
    /// `title`, as SecurityAlert's display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Low, Medium, High or Informational, from `severityValue`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_severity: Option<String>,
    /// `description`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The alert's time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// The alert's time (CAS alerts are instantaneous).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// New, InProgress, Resolved or Dismissed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// CAS resolution: Open, Dismissed, Resolved, FalsePositive, Benign, TruePositive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution_status: Option<String>,
    /// CAS `_id`: the dedupe key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_original_id: Option<String>,
    /// CAS `_id` as well, as SecurityAlert queries expect the column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_alert_id: Option<String>,
    /// Always "Microsoft Cloud App Security".
    pub product_name: &'static str,
    /// Always "MCAS".
    pub provider_name: &'static str,
    /// Always "Microsoft".
    pub vendor_name: &'static str,
    /// The policy type of the alert's policy entity (e.g. ANOMALY_DETECTION).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_type: Option<String>,
    /// `URL`: the alert in the CAS portal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_link: Option<String>,
    /// The alert's link, as SecurityAlert's list of links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_links: Option<Value>,
    /// The first account entity's `pa` or label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compromised_entity: Option<String>,
    /// MITRE tactics from `intent`, comma-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tactics: Option<String>,
    /// MITRE technique ids named in the description, as a JSON list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub techniques: Option<String>,
    /// MITRE sub-technique ids named in the description, as a JSON list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_techniques: Option<String>,
    /// `threatScore`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threat_score: Option<i64>,
    /// Sentinel entities built from `entities`.
    pub entities: Vec<Value>,
    /// `entities`, unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_entities: Option<&'a RawValue>,
    /// The CAS fields that have no SecurityAlert column.
    pub extended_properties: Value,
    /// The CAS record without `entities`, which is in `CasEntities` (see [`Record::without`]).
    /// Written last, by [`super::row_bytes`], straight from the record's text.
    #[serde(skip)]
    pub source_record: SourceText<'a>,
    /// What could not be mapped, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_issues: Option<String>,
}

/// Maps a CAS alert; `observed` is set for an alert forwarded again because it changed. A
/// Microsoft Graph alert (the `graph` alerts source) is mapped by [`super::graph_alerts`].
pub(crate) fn map<'a>(rec: &Record<'a>, observed: Option<i64>) -> AlertRow<'a> {
    if super::graph_alerts::is_graph_alert(rec) {
        return super::graph_alerts::map(rec);
    }
    let mut is = Issues::default();
    let id = is.str(rec, "/_id", true);
    let time = is.time(rec, "/timestamp", true);
    let (severity, resolution, status) = states(rec, &mut is);
    let description = is
        .str(rec, "/description", false)
        .map(|d| vocabulary::plain_text(&d));
    let (techniques, sub_techniques) = mitre_ids(description.as_deref().unwrap_or_default());
    let entities = rec.pointer("/entities");
    let (alert_type, compromised) = policy_and_account(entities.as_ref());
    let policy_id = entities.as_ref().and_then(|e| {
        e.as_array()?
            .iter()
            .find(|x| x["type"] == "policyRule")
            .map(|x| x["id"].clone())
    });
    let category = rec.pointer("/stories").as_ref().and_then(story);
    AlertRow {
        time_generated: time_generated(observed.map(format_ms).or_else(|| time.clone()), &mut is),
        display_name: is.str(rec, "/title", false),
        alert_name: is.str(rec, "/title", true),
        alert_severity: severity.map(str::to_string),
        description,
        start_time: time.clone(),
        end_time: time,
        status: status.map(str::to_string),
        resolution_status: resolution.map(str::to_string),
        system_alert_id: id.clone(),
        vendor_original_id: id,
        product_name: PRODUCT_NAME,
        provider_name: "MCAS",
        vendor_name: "Microsoft",
        alert_type,
        extended_links: rec.pointer("/URL").and_then(|u| u.as_str().map(|u| json!([{"Href": u, "Category": null, "Label": "Alert in Microsoft Defender for Cloud Apps", "Type": "webLink"}]))),
        alert_link: is.str(rec, "/URL", false),
        compromised_entity: compromised,
        tactics: tactics(rec.pointer("/intent").as_ref(), &mut is),
        techniques,
        sub_techniques,
        threat_score: is.int(rec, "/threatScore"),
        extended_properties: json!({
            "DetectorId": policy_id,
            "Category": category,
            "StatusValue": rec.get("statusValue"),
            "ResolutionStatusValue": rec.get("resolutionStatusValue"),
            "SeverityValue": rec.get("severityValue"),
            "IsSystemAlert": rec.get("isSystemAlert"),
            "IdValue": rec.get("idValue"),
            "ContextId": rec.get("contextId"),
            "Stories": rec.get("stories"),
            "Evidence": rec.get("evidence"),
        }),
        entities: entities
            .as_ref()
            .map(super::entities::sentinel_entities)
            .unwrap_or_default(),
        cas_entities: rec.get("entities"),
        source_record: rec.without("entities"),
        mapping_issues: is.into_column(),
    }
}

/// Severity, CAS resolution, and SecurityAlert's Status.
fn states(
    rec: &Record,
    is: &mut Issues,
) -> (
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
) {
    let severity = is.int(rec, "/severityValue").map(|v| match v {
        0 => "Low",
        1 => "Medium",
        2 => "High",
        3 => "Informational",
        _ => "Unknown",
    });
    let resolution_value = is.int(rec, "/resolutionStatusValue");
    let resolution = resolution_value.map(|v| match v {
        0 => "Open",
        1 => "Dismissed",
        2 => "Resolved",
        3 => "FalsePositive",
        4 => "Benign",
        5 => "TruePositive",
        _ => "Unknown",
    });
    // SecurityAlert's Status is the alert's state: CAS keeps it in resolutionStatusValue.
    // statusValue is only whether someone has opened the alert (unread, read, archived).
    // Older tenants' records lack resolutionStatusValue: such an alert is open.
    let status = Some(match resolution_value {
        None | Some(0) => "New",
        Some(1 | 3 | 4) => "Dismissed",
        Some(2 | 5) => "Resolved",
        Some(_) => "Unknown",
    });
    (severity, resolution, status)
}

/// The alert's type (its documented alert name, else its policy's type) and its first
/// account (`pa`, else label), from CAS's entities.
fn policy_and_account(entities: Option<&Value>) -> (Option<String>, Option<String>) {
    let of_type = |t: &str| {
        entities
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|e| e.get("type").and_then(Value::as_str) == Some(t))
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let policy = of_type("policyRule");
    let policy_type = text(policy.and_then(|e| e.get("policyType")));
    let label = text(policy.and_then(|e| e.get("label")));
    let alert_type = vocabulary::alert_type(policy_type.as_deref(), label.as_deref())
        .map(str::to_string)
        .or(policy_type);
    (
        alert_type,
        text(of_type("account").and_then(|e| e.get("pa").or_else(|| e.get("label")))),
    )
}

/// The alert's category from CAS's `stories` (its first), in the names the portal uses.
fn story(stories: &Value) -> Option<Value> {
    let name = match stories.as_array()?.first()?.as_u64()? {
        0 => "ThreatDetection",
        1 => "PrivilegedAccountMonitoring",
        2 => "Compliance",
        3 => "DataLossPrevention",
        4 => "Discovery",
        5 => "SharingControl",
        7 => "AccessControl",
        8 => "ConfigurationMonitoring",
        _ => return None,
    };
    Some(Value::String(name.into()))
}

/// MITRE ATT&CK tactics, by CAS's `intent` value, in SecurityAlert's spelling.
const TACTICS: [&str; 14] = [
    "Unknown",
    "PreAttack",
    "InitialAccess",
    "Persistence",
    "PrivilegeEscalation",
    "DefenseEvasion",
    "CredentialAccess",
    "Discovery",
    "LateralMovement",
    "Execution",
    "Collection",
    "Exfiltration",
    "CommandAndControl",
    "Impact",
];

/// `intent` (a list of numbers) as SecurityAlert's `Tactics`: names joined by ", ".
fn tactics(intent: Option<&Value>, is: &mut Issues) -> Option<String> {
    let list = intent?.as_array()?;
    let mut names = Vec::new();
    for v in list {
        match v.as_u64().and_then(|n| TACTICS.get(n as usize)) {
            Some(&"Unknown") => {}
            Some(name) if !names.contains(name) => names.push(*name),
            Some(_) => {}
            None => is.note(format!("/intent holds {v}, not a known tactic number")),
        }
    }
    (!names.is_empty()).then(|| names.join(", "))
}

/// The MITRE technique and sub-technique ids a description names ("… Account Discovery
/// (T1087) and subtechnique used Domain Account (T1087.002)"), each as a JSON list.
fn mitre_ids(text: &str) -> (Option<String>, Option<String>) {
    let (mut techniques, mut subs) = (Vec::new(), Vec::new());
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| {
        b.len() >= from + n && b[from..from + n].iter().all(u8::is_ascii_digit)
    };
    let mut i = 0;
    while i < b.len() {
        let starts =
            b[i] == b'T' && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) && digits(i + 1, 4);
        if !starts {
            i += 1;
            continue;
        }
        let id = &text[i..i + 5];
        let sub = b.get(i + 5) == Some(&b'.') && digits(i + 6, 3);
        let end = if sub { i + 9 } else { i + 5 };
        if b.get(end).is_some_and(u8::is_ascii_alphanumeric) {
            i = end;
            continue;
        }
        if !techniques.iter().any(|t| t == id) {
            techniques.push(id.to_string());
        }
        if sub {
            let s = text[i..end].to_string();
            if !subs.contains(&s) {
                subs.push(s);
            }
        }
        i = end;
    }
    let list = |v: Vec<String>| (!v.is_empty()).then(|| Value::from(v).to_string());
    (list(techniques), list(subs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DataType;

    #[test]
    fn the_documented_alert_maps_to_a_securityalert_shaped_row() {
        let page: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/cas-alerts-page.json"))
                .unwrap();
        let row = crate::schema::to_row(DataType::Alerts, &page["data"][0]);
        crate::schema::tests::assert_row_matches_columns(DataType::Alerts, &row);
        assert_eq!(row["VendorOriginalId"], "6a1f0c2b9e8d7c6b5a4f3e2d");
        assert_eq!(row["AlertSeverity"], "Medium");
        assert_eq!(row["Status"], "New");
        assert_eq!(
            row["AlertType"], "MCAS_ALERT_ANUBIS_DETECTION_REPEATED_ACTIVITY_DOWNLOAD",
            "the documented name of the built-in Mass download detection"
        );
        assert_eq!(row["CompromisedEntity"], "ada@contoso.example");
        assert_eq!(row["ProductName"], PRODUCT_NAME);
        assert_eq!(row["TimeGenerated"], "2026-11-29T09:25:00.123Z");
        assert!(row.get("MappingIssues").is_none());
        assert_eq!(row["DisplayName"], row["AlertName"]);
        assert_eq!(
            (row["ProviderName"].as_str(), row["VendorName"].as_str()),
            (Some("MCAS"), Some("Microsoft"))
        );
        assert_eq!(row["Entities"][0]["Type"], "account");
        assert_eq!(row["Entities"][0]["UPNSuffix"], "contoso.example");
        assert_eq!(row["ExtendedLinks"][0]["Href"], row["AlertLink"]);
        let mut whole = row["SourceRecord"].clone();
        assert!(whole.get("entities").is_none(), "{whole}");
        whole["entities"] = row["CasEntities"].clone();
        assert_eq!(whole, page["data"][0]);
    }

    #[test]
    fn status_follows_the_resolution_never_whether_the_alert_was_read() {
        let status = |status_value: u64, resolution: u64| {
            let rec = json!({"_id": "a", "timestamp": 1, "title": "t", "statusValue": status_value, "resolutionStatusValue": resolution});
            let row = crate::schema::to_row(DataType::Alerts, &rec);
            (
                row["Status"].as_str().unwrap().to_string(),
                row["ExtendedProperties"]["StatusValue"].clone(),
            )
        };
        for read in [0, 1, 2] {
            assert_eq!(
                status(read, 0).0,
                "New",
                "unread, read or archived: still new"
            );
            assert_eq!(status(read, 0).1, json!(read), "kept in ExtendedProperties");
        }
        for (resolution, want) in [
            (1, "Dismissed"),
            (3, "Dismissed"),
            (4, "Dismissed"),
            (2, "Resolved"),
            (5, "Resolved"),
            (9, "Unknown"),
        ] {
            assert_eq!(status(0, resolution).0, want, "{resolution}");
        }
    }

    #[test]
    fn tactics_come_from_intent_and_techniques_from_the_description() {
        let rec = json!({"_id": "a", "timestamp": 1, "title": "t", "intent": [7, 6, 7, 0],
            "description": "Contoso user performed 11 suspicious activities MITRE Technique used Account Discovery (T1087) and subtechnique used Domain Account (T1087.002); not T12345 or XT1000"});
        let row = crate::schema::to_row(DataType::Alerts, &rec);
        assert_eq!(row["Tactics"], "Discovery, CredentialAccess");
        assert_eq!(row["Techniques"], r#"["T1087"]"#);
        assert_eq!(row["SubTechniques"], r#"["T1087.002"]"#);
        let odd = crate::schema::to_row(
            DataType::Alerts,
            &json!({"_id": "a", "timestamp": 1, "title": "t", "intent": [99]}),
        );
        assert!(odd.get("Tactics").is_none());
        assert!(odd["MappingIssues"].as_str().unwrap().contains("/intent"));
    }
}
