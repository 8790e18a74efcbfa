//! `McasActivity_CL`: activities in the shape of the `CloudAppEvents` table.

use super::entities::is_guid;
use super::{time_generated, vocabulary, Issues};
#[cfg(feature = "sim")]
use super::{Column, ColumnType as T};
use crate::json::record::SourceText;
use crate::json::Record;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

#[cfg(feature = "sim")]
/// What CloudAppEvents holds that CAS's records cannot give (docs/tables.md).
pub(crate) const NOTES: &str = "With `CAS_ACTIVITIES_SOURCE=graph` the rows are advanced hunting's CloudAppEvents rows \
themselves: every column above of the same name holds CloudAppEvents' own value (`TimeGenerated` is `Timestamp`, `ISP` is \
`Isp`, booleans sent as 0/1 are booleans), the `Cas*` columns and `Description` and `Severity` are absent, and \
`SourceRecord` holds the row's other columns (`AccountType`, `AuditSource`, `AdditionalFields`, `UncommonForUser`…). \
From the REST API: values follow CloudAppEvents' vocabularies, from what real CAS records carry \
(tests/fixtures/real-shaped/ names where each shape was seen): `DeviceType` Desktop, Mobile, Tablet, Other; \
`IPCategory` from CAS's IP category number; `IPTags` and `UserAgentTags` as the built-in tags' names; \
`ActivityObjects` with `Role` Actor, Target object or Parameter and `Type` User, Application or Account where \
CAS's numbers are known (roles 1 to 3; object types 2, 6, 21 to 23); any other number stays as CAS wrote it, \
as text, rather than be guessed. `ActivityType` is CAS's generic type in CloudAppEvents' spelling (Basic, \
Failedlogin…); CAS's own category and event type are kept in `CasEventCategory` and `CasEventType` \
(`AdditionalFields` in the `McasCloudAppEvents` function).\n\n\
Left empty because CAS's API does not carry them: `AccountType` (Regular, Admin… are Defender XDR's \
classification), `LastSeenForUser`, `UncommonForUser`, `AuditSource`, `SessionData`, `OAuthAppId`. \
`AppInstanceId` is 0 (the default instance): CAS's activity records name no instance of the app.";

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
    Column::new("AccountId", T::String, "the actor's Entra object id where CAS resolved one (as real rows), else `user.userName`, else `failedUserData.userName` (failed sign-ins)"),
    Column::new(
        "AccountDisplayName",
        T::String,
        "`resolvedActor.name`, else `user.userName`",
    ),
    Column::new("IsAdminOperation", T::Boolean, "`adminEvent`; false when CAS has none (`null`)"),
    Column::new("IsImpersonated", T::Boolean, "`impersonated`; false when CAS has none"),
    Column::new("IsExternalUser", T::Boolean, "whether the actor is an external account (`resolvedActor.objType` 22)"),
    Column::new(
        "DeviceType",
        T::String,
        "`userAgent.deviceType` as CloudAppEvents writes it: Desktop, Mobile, Tablet, Other",
    ),
    Column::new("OSPlatform", T::String, "`userAgent.operatingSystem.name`"),
    Column::new("UserAgentTags", T::Dynamic, "`userAgent.tags` as names (Native client, Outdated browser, Outdated operating system, Robot); a custom tag's id is kept"),
    Column::new("IPAddress", T::String, "`device.clientIP`"),
    Column::new("IsAnonymousProxy", T::Boolean, "`location.anonymousProxy`"),
    Column::new("IPCategory", T::String, "`location.category`: Corporate, Administrative, Risky, VPN, Cloud provider, Other; empty for none"),
    Column::new("IPTags", T::Dynamic, "`location.ipTags` as names (Tor, Anonymous proxy, Amazon Web Services…); a custom tag's id is kept"),
    Column::new("ISP", T::String, "`location.organizationSearchable`, else `location.carrier`"),
    Column::new(
        "CountryCode",
        T::String,
        "`location.countryCode`, else `device.countryCode`",
    ),
    Column::new("City", T::String, "`location.city`"),
    Column::new("UserAgent", T::String, "`device.userAgent`"),
    Column::new("ActivityType", T::String, "`genericEventType` in CloudAppEvents' words (Basic, Failedlogin…)"),
    Column::new("CasEventCategory", T::String, "`eventTypeName` (EVENT_CATEGORY_…), CAS's own category"),
    Column::new("CasEventType", T::String, "`eventTypeValue` (EVENT_AAD_LOGIN_FAILED…), CAS's own event type"),
    Column::new("Description", T::String, "`description`"),
    Column::new("Severity", T::String, "`severity`"),
    Column::new("ActivityObjects", T::Dynamic, "`mainInfo.eventObjects` as CloudAppEvents' `[{Type, Role, Name, Id, ApplicationId, ApplicationInstance, Value}]`; Role Actor, Target object or Parameter, Type User, Application or Account where CAS's numbers say so (others kept as the number)"),
    Column::new("ObjectName", T::String, "`Name` of the first \"Target object\" in `ActivityObjects`"),
    Column::new("ObjectType", T::String, "its `Type`"),
    Column::new("ObjectId", T::String, "its `Id`"),
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
    super::CAS_TENANT,
    super::CAS_TENANT_ID,
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
    /// Whether the actor is an external account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_external_user: Option<bool>,
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
    /// `genericEventType`, as a word.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_type: Option<String>,
    /// `eventTypeName` (e.g. EVENT_CATEGORY_DOWNLOAD_FILE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_event_category: Option<String>,
    /// `eventTypeValue` (e.g. EVENT_AAD_LOGIN_FAILED).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cas_event_type: Option<String>,
    /// `description`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `severity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// `mainInfo.eventObjects` in CloudAppEvents' shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_objects: Option<Value>,
    /// The target object's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_name: Option<String>,
    /// The target object's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    /// The target object's id.
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
    if super::hunting_activities::is_hunting_row(rec) {
        return super::hunting_activities::map(rec);
    }
    let mut is = Issues::default();
    let time = is.time(rec, "/timestamp", true);
    // A failed sign-in keeps its user in `failedUserData`; `user` then holds only tags.
    let user = is
        .str(rec, "/user/userName", false)
        .or_else(|| is.str(rec, "/failedUserData/userName", false))
        .filter(|u| u != "null");
    let action = is
        .str(rec, "/mainInfo/rawOperationName", false)
        .or_else(|| {
            rec.pointer("/eventTypeName")
                .and_then(|v| v.as_str().map(str::to_string))
        });
    let objects = rec
        .pointer("/mainInfo/eventObjects")
        .map(|o| activity_objects(&o));
    let target = objects.as_ref().and_then(|o| {
        o.as_array()?
            .iter()
            .find(|x| x["Role"] == "Target object")
            .cloned()
    });
    let target_text = |key: &str| {
        target
            .as_ref()
            .and_then(|t| t.get(key)?.as_str().map(str::to_string))
    };
    let object_id = is
        .str(rec, "/resolvedActor/id", false)
        .filter(|id| is_guid(id))
        .or_else(|| {
            // The acting user's object carries the Entra object id when the actor is a UPN.
            objects.as_ref()?.as_array()?.iter().find_map(|o| {
                let id = o["Id"].as_str()?;
                (o["Role"] == "Actor" && o["Type"] == "User" && is_guid(id)).then(|| id.to_string())
            })
        });
    let location_text = |p: &str| {
        rec.pointer(p)
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|v| !v.is_empty() && v != "null")
    };
    ActivityRow {
        time_generated: time_generated(time, &mut is),
        action_type: action,
        application: is.str(rec, "/appName", false),
        application_id: is.int(rec, "/appId"),
        account_id: object_id.clone().or_else(|| user.clone()),
        account_object_id: object_id,
        account_display_name: is
            .str(rec, "/resolvedActor/name", false)
            .or_else(|| user.clone()),
        // CAS's null is "no": CloudAppEvents holds a boolean on every row.
        is_admin_operation: Some(is.boolean(rec, "/adminEvent").unwrap_or(false)),
        is_impersonated: Some(is.boolean(rec, "/impersonated").unwrap_or(false)),
        is_external_user: Some(
            is.str(rec, "/resolvedActor/objType", false).as_deref() == Some("22"),
        ),
        device_type: is
            .str(rec, "/userAgent/deviceType", false)
            .map(|d| vocabulary::device_type(&d)),
        os_platform: is.str(rec, "/userAgent/operatingSystem/name", false),
        user_agent_tags: rec
            .pointer("/userAgent/tags")
            .and_then(|t| vocabulary::user_agent_tags(&t)),
        ip_address: is.str(rec, "/device/clientIP", false),
        is_anonymous_proxy: is.boolean(rec, "/location/anonymousProxy"),
        ip_category: vocabulary::ip_category(
            is.int(rec, "/location/category"),
            location_text("/location/categoryValue").as_deref(),
        ),
        ip_tags: rec
            .pointer("/location/ipTags")
            .and_then(|t| vocabulary::ip_tags(&t)),
        isp: location_text("/location/organizationSearchable")
            .or_else(|| location_text("/location/carrier").map(|c| vocabulary::decode_carrier(&c))),
        country_code: is
            .str(rec, "/location/countryCode", false)
            .or_else(|| is.str(rec, "/device/countryCode", false)),
        city: is.str(rec, "/location/city", false),
        user_agent: is.str(rec, "/device/userAgent", false),
        activity_type: is
            .str(rec, "/genericEventType", false)
            .map(|g| vocabulary::activity_type(&g)),
        cas_event_category: is.str(rec, "/eventTypeName", false),
        cas_event_type: is.str(rec, "/eventTypeValue", false),
        description: is.str(rec, "/description", false),
        severity: is.str(rec, "/severity", false),
        object_name: target_text("Name"),
        object_type: target_text("Type"),
        object_id: target_text("Id"),
        activity_objects: objects,
        report_id: is.str(rec, "/_id", true),
        cas_created: is.time(rec, "/created", true),
        raw_event_data: rec.get("rawDataJson"),
        source_record: rec.without("rawDataJson"),
        mapping_issues: is.into_column(),
    }
}

/// CAS's `eventObjects` as CloudAppEvents' `ActivityObjects`: `{Type, Role, Name, Id,
/// ApplicationId, ApplicationInstance, Value}` each, in the words real rows use.
fn activity_objects(objects: &Value) -> Value {
    let number = |v: &Value| v.as_i64().or_else(|| v.as_str()?.parse().ok());
    let text = |v: &Value| match v {
        Value::String(s) => Some(Value::String(s.clone())),
        Value::Number(n) => Some(Value::String(n.to_string())),
        _ => None,
    };
    let Some(list) = objects.as_array() else {
        return objects.clone();
    };
    Value::Array(
        list.iter()
            .map(|o| {
                let mut m = serde_json::Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                };
                put(
                    "Type",
                    number(&o["objType"]).map(|t| vocabulary::object_type(t).into()),
                );
                put(
                    "Role",
                    number(&o["role"]).map(|r| vocabulary::object_role(r).into()),
                );
                put("Name", text(&o["name"]));
                put("Id", text(&o["id"]));
                put("ApplicationId", number(&o["saasId"]).map(Value::from));
                put(
                    "ApplicationInstance",
                    number(&o["instanceId"]).map(Value::from),
                );
                put("Value", text(&o["value"]));
                Value::Object(m)
            })
            .collect(),
    )
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
            (Some("1"), Some("2f6e1d0c")),
            "the target object; objType 1 has no documented word, so CAS's number stays"
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
