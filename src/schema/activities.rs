//! `McasActivity_CL`: activities in the shape of the `CloudAppEvents` table.

use super::{time_generated, Issues};
#[cfg(feature = "sim")]
use super::{Column, ColumnType as T};
use crate::json::record::SourceText;
use crate::json::Record;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

#[cfg(feature = "sim")]
/// The table's columns.
pub(crate) const COLUMNS: &[Column] = &[
    Column::new(
        "TimeGenerated",
        T::DateTime,
        "`timestamp` (when the activity happened)",
    ),
    Column::new(
        "ActionType",
        T::String,
        "`mainInfo.rawOperationName`, else `eventTypeName`",
    ),
    Column::new("Application", T::String, "`appName`"),
    Column::new(
        "ApplicationId",
        T::Int,
        "`appId` (int, as in CloudAppEvents)",
    ),
    Column::new(
        "AccountObjectId",
        T::String,
        "`resolvedActor.id` when it is an Entra object id (a GUID)",
    ),
    Column::new("AccountId", T::String, "`user.userName`"),
    Column::new(
        "AccountDisplayName",
        T::String,
        "`resolvedActor.name`, else `user.userName`",
    ),
    Column::new("IsAdminOperation", T::Boolean, "`adminEvent`"),
    Column::new("IsImpersonated", T::Boolean, "`impersonated`"),
    Column::new(
        "DeviceType",
        T::String,
        "`userAgent.deviceType` (DESKTOP, MOBILE, TABLET, OTHER)",
    ),
    Column::new("OSPlatform", T::String, "`userAgent.operatingSystem.name`"),
    Column::new("UserAgentTags", T::Dynamic, "`userAgent.tags`"),
    Column::new("IPAddress", T::String, "`device.clientIP`"),
    Column::new("IsAnonymousProxy", T::Boolean, "`location.anonymousProxy`"),
    Column::new("IPCategory", T::String, "`location.categoryValue`"),
    Column::new("IPTags", T::Dynamic, "`location.tags`"),
    Column::new("ISP", T::String, "`location.isp`"),
    Column::new(
        "CountryCode",
        T::String,
        "`location.countryCode`, else `device.countryCode`",
    ),
    Column::new("City", T::String, "`location.city`"),
    Column::new("UserAgent", T::String, "`device.userAgent`"),
    Column::new("ActivityType", T::String, "`eventTypeName`"),
    Column::new("Description", T::String, "`description`"),
    Column::new("Severity", T::String, "`severity`"),
    Column::new("ActivityObjects", T::Dynamic, "`mainInfo.eventObjects`"),
    Column::new(
        "ObjectName",
        T::String,
        "`name` of the first of `mainInfo.eventObjects`",
    ),
    Column::new(
        "ObjectType",
        T::String,
        "`objType` of that object (CAS's number, as text)",
    ),
    Column::new("ObjectId", T::String, "`id` of that object"),
    Column::new("ReportId", T::String, "`_id`: the dedupe key"),
    Column::new(
        "CasCreated",
        T::DateTime,
        "`created` (when CAS stored it; the poll windows on it)",
    ),
    Column::new(
        "RawEventData",
        T::Dynamic,
        "`rawDataJson`, the source service's own event",
    ),
    super::source_record_column("the CAS record without `rawDataJson` (in `RawEventData`)"),
    super::MAPPING_ISSUES,
    super::TRUNCATED_FIELDS,
];

/// One `McasActivity_CL` row.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ActivityRow<'a> {
    /// When the activity happened (`timestamp`).
    pub time_generated: String,
    /// The raw operation name (e.g. FileDownloaded), else the CAS event type name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_type: Option<String>,
    /// `appName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// `appId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<i64>,
    /// `resolvedActor.id` when it is an Entra object id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_object_id: Option<String>,
    /// `user.userName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// `resolvedActor.name`, else `user.userName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_display_name: Option<String>,
    /// `adminEvent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_admin_operation: Option<bool>,
    /// `impersonated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_impersonated: Option<bool>,
    /// `userAgent.deviceType`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// `userAgent.operatingSystem.name`.
    #[serde(rename = "OSPlatform")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_platform: Option<String>,
    /// `userAgent.tags`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent_tags: Option<Value>,
    /// `device.clientIP`.
    #[serde(rename = "IPAddress")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// `location.anonymousProxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_anonymous_proxy: Option<bool>,
    /// `location.categoryValue`.
    #[serde(rename = "IPCategory")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_category: Option<String>,
    /// `location.tags`.
    #[serde(rename = "IPTags")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_tags: Option<Value>,
    /// `location.isp`.
    #[serde(rename = "ISP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isp: Option<String>,
    /// `location.countryCode`, else `device.countryCode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// `location.city`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// `device.userAgent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `eventTypeName` (the CAS category, e.g. EVENT_CATEGORY_DOWNLOAD_FILE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_type: Option<String>,
    /// `description`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `severity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// `mainInfo.eventObjects`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_objects: Option<Value>,
    /// The first event object's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_name: Option<String>,
    /// The first event object's `objType`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    /// The first event object's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// CAS `_id`: the dedupe key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// When CAS stored the record (`created`): the poll windows on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_created: Option<String>,
    /// `rawDataJson`, the source service's own event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_event_data: Option<&'a RawValue>,
    /// The CAS record without `rawDataJson`, which is in `RawEventData` (see [`Record::without`]).
    /// Written last, by [`super::row_bytes`], straight from the record's text.
    #[serde(skip)]
    pub source_record: SourceText<'a>,
    /// What could not be mapped, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_issues: Option<String>,
}

/// Maps a CAS activity.
pub(crate) fn map<'a>(rec: &Record<'a>) -> ActivityRow<'a> {
    let mut is = Issues::default();
    let time = is.time(rec, "/timestamp", true);
    let user = is.str(rec, "/user/userName", false);
    let action = is
        .str(rec, "/mainInfo/rawOperationName", false)
        .or_else(|| {
            rec.pointer("/eventTypeName")
                .and_then(|v| v.as_str().map(str::to_string))
        });
    ActivityRow {
        time_generated: time_generated(time, &mut is),
        action_type: action,
        application: is.str(rec, "/appName", false),
        application_id: is.int(rec, "/appId"),
        account_object_id: is
            .str(rec, "/resolvedActor/id", false)
            .filter(|id| super::entities::is_guid(id)),
        account_display_name: is
            .str(rec, "/resolvedActor/name", false)
            .or_else(|| user.clone()),
        account_id: user,
        is_admin_operation: is.boolean(rec, "/adminEvent"),
        is_impersonated: is.boolean(rec, "/impersonated"),
        device_type: is.str(rec, "/userAgent/deviceType", false),
        os_platform: is.str(rec, "/userAgent/operatingSystem/name", false),
        user_agent_tags: rec.pointer("/userAgent/tags"),
        ip_address: is.str(rec, "/device/clientIP", false),
        is_anonymous_proxy: is.boolean(rec, "/location/anonymousProxy"),
        ip_category: is.str(rec, "/location/categoryValue", false),
        ip_tags: rec.pointer("/location/tags"),
        isp: is.str(rec, "/location/isp", false),
        country_code: is
            .str(rec, "/location/countryCode", false)
            .or_else(|| is.str(rec, "/device/countryCode", false)),
        city: is.str(rec, "/location/city", false),
        user_agent: is.str(rec, "/device/userAgent", false),
        activity_type: is.str(rec, "/eventTypeName", false),
        description: is.str(rec, "/description", false),
        severity: is.str(rec, "/severity", false),
        object_name: is.str(rec, "/mainInfo/eventObjects/0/name", false),
        object_type: is.str(rec, "/mainInfo/eventObjects/0/objType", false),
        object_id: is.str(rec, "/mainInfo/eventObjects/0/id", false),
        activity_objects: rec.pointer("/mainInfo/eventObjects"),
        report_id: is.str(rec, "/_id", true),
        cas_created: is.time(rec, "/created", true),
        raw_event_data: rec.get("rawDataJson"),
        source_record: rec.without("rawDataJson"),
        mapping_issues: is.into_column(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DataType;

    #[test]
    fn the_documented_activity_maps_to_a_cloudappevents_shaped_row() {
        let page: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/cas-activities-scan-page.json"
        ))
        .unwrap();
        let row = crate::schema::to_row(DataType::Activities, &page["data"][0]);
        crate::schema::tests::assert_row_matches_columns(DataType::Activities, &row);
        assert_eq!(row["ActionType"], "FileDownloaded");
        assert_eq!(row["ApplicationId"], 15600);
        assert_eq!(
            row["ObjectName"],
            "https://contoso-my.sharepoint.com/personal/ada/Documents/plan.docx"
        );
        assert_eq!(
            (row["ObjectType"].as_str(), row["ObjectId"].as_str()),
            (Some("1"), Some("2f6e1d0c"))
        );
        assert_eq!(row["IPAddress"], "203.0.113.17");
        assert_eq!(row["CountryCode"], "NL");
        assert_eq!(row["TimeGenerated"], "2026-11-29T09:20:00Z");
        assert_eq!(row["CasCreated"], "2026-11-29T09:24:30.555Z");
        // Keys that differ only in case survive untouched.
        assert_eq!(row["RawEventData"]["Level"], 1);
        assert_eq!(row["RawEventData"]["level"], "info");
        assert!(row.get("MappingIssues").is_none(), "{row}");
        // Nothing is lost and nothing is sent twice: SourceRecord + RawEventData is the
        // record as CAS sent it.
        let mut whole = row["SourceRecord"].clone();
        assert!(whole.get("rawDataJson").is_none(), "{whole}");
        whole["rawDataJson"] = row["RawEventData"].clone();
        assert_eq!(whole, page["data"][0]);
    }
}
