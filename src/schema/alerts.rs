//! `McasAlerts_CL`: alerts in the shape of Sentinel's `SecurityAlert` table.

use super::record::SourceText;
use super::Record;
use super::{time_generated, Column, ColumnType as T, Issues};
use crate::model::format_ms;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The product name Sentinel's own CAS connector writes.
pub const PRODUCT_NAME: &str = "Microsoft Cloud App Security";

/// The table's columns.
pub const COLUMNS: &[Column] = &[
    Column::new("TimeGenerated", T::DateTime, "`timestamp` (when the alert was raised); for an alert forwarded again because it changed, when the change was seen"),
    Column::new("AlertName", T::String, "`title`"),
    Column::new("AlertSeverity", T::String, "`severityValue`: 0 Low, 1 Medium, 2 High, 3 Informational"),
    Column::new("Description", T::String, "`description`"),
    Column::new("StartTime", T::DateTime, "`timestamp`"),
    Column::new("EndTime", T::DateTime, "`timestamp` (CAS alerts are instantaneous)"),
    Column::new("Status", T::String, "New, InProgress, Resolved or Dismissed, from `statusValue` and `resolutionStatusValue`"),
    Column::new("ResolutionStatus", T::String, "`resolutionStatusValue`: Open, Dismissed, Resolved, FalsePositive, Benign, TruePositive"),
    Column::new("VendorOriginalId", T::String, "`_id`: the dedupe key"),
    Column::new("SystemAlertId", T::String, "`_id`"),
    Column::new("ProductName", T::String, "always \"Microsoft Cloud App Security\""),
    Column::new("AlertType", T::String, "`policyType` of the `policyRule` entity"),
    Column::new("AlertLink", T::String, "`URL`"),
    Column::new("CompromisedEntity", T::String, "`pa` (or `label`) of the first `account` entity"),
    Column::new("ThreatScore", T::Int, "`threatScore`"),
    Column::new("Entities", T::Dynamic, "`entities`, unchanged"),
    Column::new("ExtendedProperties", T::Dynamic, "`statusValue`, `resolutionStatusValue`, `severityValue`, `isSystemAlert`, `idValue`, `contextId`, `stories`"),
    super::source_record_column("the CAS record without `entities` (in `Entities`)"),
    super::MAPPING_ISSUES,
    super::TRUNCATED_FIELDS,
];

/// One `McasAlerts_CL` row.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlertRow<'a> {
    /// The alert's time (`timestamp`).
    pub time_generated: String,
    /// `title`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_name: Option<String>,
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
    /// The policy type of the alert's policy entity (e.g. ANOMALY_DETECTION).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_type: Option<String>,
    /// `URL`: the alert in the CAS portal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_link: Option<String>,
    /// The first account entity's `pa` or label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compromised_entity: Option<String>,
    /// `threatScore`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threat_score: Option<i64>,
    /// `entities`, unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities: Option<&'a RawValue>,
    /// The CAS fields that have no SecurityAlert column.
    pub extended_properties: Value,
    /// The CAS record without `entities`, which is in `Entities` (see [`Record::without`]).
    /// Written last, by [`super::row_bytes`], straight from the record's text.
    #[serde(skip)]
    pub source_record: SourceText<'a>,
    /// What could not be mapped, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_issues: Option<String>,
}

/// Maps a CAS alert; `observed` is set for an alert forwarded again because it changed.
pub fn map<'a>(rec: &Record<'a>, observed: Option<i64>) -> AlertRow<'a> {
    let mut is = Issues::default();
    let id = is.str(rec, "/_id", true);
    let time = is.time(rec, "/timestamp", true);
    let severity = is.int(rec, "/severityValue").map(|v| match v {
        0 => "Low",
        1 => "Medium",
        2 => "High",
        3 => "Informational",
        _ => "Unknown",
    });
    let status_value = is.int(rec, "/statusValue");
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
    let status = match (resolution_value, status_value) {
        (Some(1 | 3 | 4), _) => Some("Dismissed"),
        (Some(2 | 5), _) | (_, Some(2)) => Some("Resolved"),
        (_, Some(1)) => Some("InProgress"),
        (_, Some(0)) => Some("New"),
        _ => None,
    };
    let entities = rec.pointer("/entities");
    let of_type = |t: &str| {
        entities
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|e| e.get("type").and_then(Value::as_str) == Some(t))
    };
    let alert_type = of_type("policyRule")
        .and_then(|e| e.get("policyType"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let compromised = of_type("account")
        .and_then(|e| e.get("pa").or_else(|| e.get("label")))
        .and_then(Value::as_str)
        .map(str::to_string);
    AlertRow {
        time_generated: time_generated(observed.map(format_ms).or_else(|| time.clone()), &mut is),
        alert_name: is.str(rec, "/title", true),
        alert_severity: severity.map(str::to_string),
        description: is.str(rec, "/description", false),
        start_time: time.clone(),
        end_time: time,
        status: status.map(str::to_string),
        resolution_status: resolution.map(str::to_string),
        system_alert_id: id.clone(),
        vendor_original_id: id,
        product_name: PRODUCT_NAME,
        alert_type,
        alert_link: is.str(rec, "/URL", false),
        compromised_entity: compromised,
        threat_score: is.int(rec, "/threatScore"),
        extended_properties: json!({
            "StatusValue": rec.get("statusValue"),
            "ResolutionStatusValue": rec.get("resolutionStatusValue"),
            "SeverityValue": rec.get("severityValue"),
            "IsSystemAlert": rec.get("isSystemAlert"),
            "IdValue": rec.get("idValue"),
            "ContextId": rec.get("contextId"),
            "Stories": rec.get("stories"),
        }),
        entities: rec.get("entities"),
        source_record: rec.without("entities"),
        mapping_issues: is.into_column(),
    }
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
        assert_eq!(row["AlertType"], "ANOMALY_DETECTION");
        assert_eq!(row["CompromisedEntity"], "ada@contoso.example");
        assert_eq!(row["ProductName"], PRODUCT_NAME);
        assert_eq!(row["TimeGenerated"], "2026-11-29T09:25:00.123Z");
        assert!(row.get("MappingIssues").is_none());
        let mut whole = row["SourceRecord"].clone();
        assert!(whole.get("entities").is_none(), "{whole}");
        whole["entities"] = row["Entities"].clone();
        assert_eq!(whole, page["data"][0]);
    }
}
