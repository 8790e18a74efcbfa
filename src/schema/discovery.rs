//! `McasShadowItReporting_CL`: one row per continuous report, discovered app and day.
//!
//! The CAS API has no per-user or per-IP discovery listing, so `UserName`,
//! `EnrichedUserName` and `IpAddress` stay empty; the per-app counts of users and IP
//! addresses go to `UsersCount` and `IpAddressesCount` instead.
//!
//! The record this maps is the one the discovery pull builds: `{"streamId", "streamName",
//! "day" (Unix ms of 00:00 UTC), "app": <the CAS discovered-app aggregate>}`.

use super::record::SourceText;
use super::Record;
use super::{time_generated, Column, ColumnType as T, Issues};
use serde::Serialize;
use serde_json::Value;

/// The table's columns.
pub const COLUMNS: &[Column] = &[
    Column::new(
        "TimeGenerated",
        T::DateTime,
        "the day the aggregate covers, 00:00 UTC",
    ),
    Column::new(
        "StreamName",
        T::String,
        "the continuous report's `displayName`",
    ),
    Column::new("StreamId", T::String, "the continuous report's `_id`"),
    Column::new("TotalEvents", T::Long, "`trafficTotalEvents`"),
    Column::new("BlockedEvents", T::Long, "`trafficBlockedEvents`"),
    Column::new("UploadedBytes", T::Long, "`trafficUploadedBytes`"),
    Column::new("TotalBytes", T::Long, "`trafficTotalBytes`"),
    Column::new("DownloadedBytes", T::Long, "`trafficDownloadedBytes`"),
    Column::new(
        "IpAddress",
        T::String,
        "empty: the API has no per-IP listing",
    ),
    Column::new(
        "UserName",
        T::String,
        "empty: the API has no per-user listing",
    ),
    Column::new(
        "EnrichedUserName",
        T::String,
        "empty: the API has no per-user listing",
    ),
    Column::new("AppName", T::String, "`name`"),
    Column::new("AppId", T::Long, "`appId`"),
    Column::new("AppCategory", T::String, "`category`"),
    Column::new("AppTags", T::Dynamic, "`tags`"),
    Column::new("AppScore", T::Int, "`score`"),
    Column::new("UsersCount", T::Long, "`usersCount`"),
    Column::new("IpAddressesCount", T::Long, "`ipAddressesCount`"),
    Column::new(
        "ReportId",
        T::String,
        "`<streamId>/<appId>/<day>`: the dedupe key",
    ),
    super::source_record_column("the report, app and day record"),
    super::MAPPING_ISSUES,
    super::TRUNCATED_FIELDS,
];

/// One `McasShadowItReporting_CL` row.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShadowItRow<'a> {
    /// The day the aggregate covers (00:00 UTC).
    pub time_generated: String,
    /// The continuous report's display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    /// The continuous report's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// `trafficTotalEvents`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_events: Option<i64>,
    /// `trafficBlockedEvents`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_events: Option<i64>,
    /// `trafficUploadedBytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_bytes: Option<i64>,
    /// `trafficTotalBytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// `trafficDownloadedBytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloaded_bytes: Option<i64>,
    /// Not available from the API (always empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// Not available from the API (always empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Not available from the API (always empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enriched_user_name: Option<String>,
    /// `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// `appId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<i64>,
    /// `category`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_category: Option<String>,
    /// `tags`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_tags: Option<Value>,
    /// `score`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_score: Option<i64>,
    /// `usersCount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_count: Option<i64>,
    /// `ipAddressesCount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_addresses_count: Option<i64>,
    /// `<streamId>/<appId>/<day>`: the dedupe key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// The whole record.
    /// Written last, by [`super::row_bytes`], straight from the record's text.
    #[serde(skip)]
    pub source_record: SourceText<'a>,
    /// What could not be mapped, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_issues: Option<String>,
}

/// Maps one discovered-app record of one report and day.
pub fn map<'a>(rec: &Record<'a>) -> ShadowItRow<'a> {
    let mut is = Issues::default();
    let day = is.time(rec, "/day", true);
    let stream_id = is.str(rec, "/streamId", true);
    let app_id = is.int(rec, "/app/appId");
    if rec.pointer("/app/appId").is_none() {
        is.note("/app/appId missing");
    }
    let report_id = match (
        &stream_id,
        app_id,
        rec.pointer("/day").and_then(|d| d.as_i64()),
    ) {
        (Some(s), Some(a), Some(d)) => Some(format!("{s}/{a}/{d}")),
        _ => None,
    };
    ShadowItRow {
        time_generated: time_generated(day, &mut is),
        stream_name: is.str(rec, "/streamName", false),
        stream_id,
        total_events: is.int(rec, "/app/trafficTotalEvents"),
        blocked_events: is.int(rec, "/app/trafficBlockedEvents"),
        uploaded_bytes: is.int(rec, "/app/trafficUploadedBytes"),
        total_bytes: is.int(rec, "/app/trafficTotalBytes"),
        downloaded_bytes: is.int(rec, "/app/trafficDownloadedBytes"),
        ip_address: None,
        user_name: None,
        enriched_user_name: None,
        app_name: is.str(rec, "/app/name", true),
        app_id,
        app_category: is.str(rec, "/app/category", false),
        app_tags: rec.pointer("/app/tags"),
        app_score: is.int(rec, "/app/score"),
        users_count: is.int(rec, "/app/usersCount"),
        ip_addresses_count: is.int(rec, "/app/ipAddressesCount"),
        report_id,
        source_record: SourceText::whole(rec.text()),
        mapping_issues: is.into_column(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DataType;
    use serde_json::json;

    #[test]
    fn the_documented_aggregate_maps_to_a_shadow_it_row() {
        let page: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/cas-discovered-apps.json"
        ))
        .unwrap();
        let rec = json!({"streamId": "5f0000000000000000000001", "streamName": "Global View", "day": 1795910400000i64, "app": page["data"][0]});
        let row = crate::schema::to_row(DataType::Discovery, &rec);
        crate::schema::tests::assert_row_matches_columns(DataType::Discovery, &row);
        assert_eq!(row["StreamName"], "Global View");
        assert_eq!(row["UploadedBytes"], 1514874);
        assert_eq!(row["AppTags"], json!(["sanctioned"]));
        assert_eq!(
            row["ReportId"],
            "5f0000000000000000000001/15600/1795910400000"
        );
        assert_eq!(row["TimeGenerated"], "2026-11-29T00:00:00Z");
        assert!(row.get("MappingIssues").is_none(), "{row}");
    }
}
