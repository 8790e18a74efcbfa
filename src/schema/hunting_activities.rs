//! Advanced hunting's `CloudAppEvents` rows (`CAS_ACTIVITIES_SOURCE=graph`) →
//! `McasActivity_CL`. They already are CloudAppEvents' columns and values, so the mapping
//! renames only what the Sentinel copy names differently (`Timestamp` is `TimeGenerated`,
//! `Isp` is `ISP`) and reads values in the several forms Graph sends them: a boolean as
//! `true` or as `1` (with an `@odata.type` sidecar key, which is dropped), an `int` as a
//! number, a dynamic column as JSON (or, from some tenants, as JSON text).
//!
//! A hunting row is told from a REST activity by its shape: it has `ReportId` and
//! `Timestamp`; the REST API's records have `_id` and `timestamp`.

use super::activities::ActivityRow;
use super::{time_generated, Issues};
use crate::json::Record;
use serde_json::Value;

#[cfg(feature = "sim")]
/// Where each column's value comes from in a hunted CloudAppEvents row (for
/// `docs/tables.md`), in the order of [`super::activities::COLUMNS`].
pub(crate) const GRAPH_SOURCES: &[(&str, &str)] = &[
    ("TimeGenerated", "`Timestamp`"),
    ("ActionType", "`ActionType`"),
    ("Application", "`Application`"),
    ("ApplicationId", "`ApplicationId`"),
    ("AccountObjectId", "`AccountObjectId`"),
    ("AccountId", "`AccountId`"),
    ("AccountDisplayName", "`AccountDisplayName`"),
    ("IsAdminOperation", "`IsAdminOperation` (Graph sends 0/1 for some booleans; written as true/false)"),
    ("IsImpersonated", "`IsImpersonated`"),
    ("IsExternalUser", "`IsExternalUser`"),
    ("DeviceType", "`DeviceType`"),
    ("OSPlatform", "`OSPlatform`"),
    ("UserAgentTags", "`UserAgentTags` (parsed when Graph sends the dynamic as JSON text)"),
    ("IPAddress", "`IPAddress`"),
    ("IsAnonymousProxy", "`IsAnonymousProxy`"),
    ("IPCategory", "`IPCategory` (empty is absent)"),
    ("IPTags", "`IPTags` (parsed when sent as JSON text)"),
    ("ISP", "`ISP` (or `Isp`, as some answers spell it)"),
    ("CountryCode", "`CountryCode`"),
    ("City", "`City`"),
    ("UserAgent", "`UserAgent`"),
    ("ActivityType", "`ActivityType`"),
    ("CasEventCategory", "empty (a REST-only column)"),
    ("CasEventType", "empty (a REST-only column)"),
    ("Description", "empty (CloudAppEvents has none)"),
    ("Severity", "empty (CloudAppEvents has none)"),
    ("ActivityObjects", "`ActivityObjects`"),
    ("ObjectName", "`ObjectName`"),
    ("ObjectType", "`ObjectType`"),
    ("ObjectId", "`ObjectId`"),
    ("ReportId", "`ReportId`: the dedupe key (CloudAppEvents' own, not the REST `_id`)"),
    ("CasCreated", "empty (a REST-only column)"),
    ("RawEventData", "`RawEventData`"),
    ("SourceRecord", "the row's other columns (AppInstanceId, AccountType, AuditSource, SessionData, OAuthAppId…) without `RawEventData`"),
    ("MappingIssues", "as for the REST source"),
    ("TruncatedFields", "as for the REST source"),
    ("CasTenant", "as for the REST source"),
    ("CasTenantId", "as for the REST source"),
];

/// Whether `rec` is an advanced hunting row rather than a REST activity.
pub(crate) fn is_hunting_row(rec: &Record) -> bool {
    rec.get("_id").is_none() && rec.get("ReportId").is_some() && rec.get("Timestamp").is_some()
}

/// Maps a `CloudAppEvents` row.
pub(crate) fn map<'a>(rec: &Record<'a>) -> ActivityRow<'a> {
    let mut is = Issues::default();
    let time = is.datetime(rec, "/Timestamp");
    let text = |is: &mut Issues, k: &str| {
        is.str(rec, &format!("/{k}"), false)
            .filter(|s| !s.is_empty())
    };
    let flag = |is: &mut Issues, k: &str| match rec.pointer(&format!("/{k}")) {
        Some(Value::Bool(b)) => Some(b),
        Some(Value::Number(n)) => Some(n.as_i64() == Some(1)),
        None | Some(Value::Null) => None,
        Some(other) => {
            is.note(format!("/{k} is not a boolean ({other})"));
            None
        }
    };
    let dynamic = |k: &str| match rec.pointer(&format!("/{k}")) {
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => serde_json::from_str(&s).ok().or(Some(Value::String(s))),
        Some(Value::Null) | None => None,
        Some(v) => Some(v),
    };
    ActivityRow {
        time_generated: time_generated(time, &mut is),
        action_type: text(&mut is, "ActionType"),
        application: text(&mut is, "Application"),
        application_id: is.int(rec, "/ApplicationId"),
        account_object_id: text(&mut is, "AccountObjectId"),
        account_id: text(&mut is, "AccountId"),
        account_display_name: text(&mut is, "AccountDisplayName"),
        is_admin_operation: flag(&mut is, "IsAdminOperation"),
        is_impersonated: flag(&mut is, "IsImpersonated"),
        is_external_user: flag(&mut is, "IsExternalUser"),
        device_type: text(&mut is, "DeviceType"),
        os_platform: text(&mut is, "OSPlatform"),
        user_agent_tags: dynamic("UserAgentTags"),
        ip_address: text(&mut is, "IPAddress"),
        is_anonymous_proxy: flag(&mut is, "IsAnonymousProxy"),
        ip_category: text(&mut is, "IPCategory"),
        ip_tags: dynamic("IPTags"),
        isp: text(&mut is, "Isp").or_else(|| text(&mut is, "ISP")),
        country_code: text(&mut is, "CountryCode"),
        city: text(&mut is, "City"),
        user_agent: text(&mut is, "UserAgent"),
        activity_type: text(&mut is, "ActivityType"),
        cas_event_category: None,
        cas_event_type: None,
        description: None,
        severity: None,
        activity_objects: dynamic("ActivityObjects"),
        object_name: text(&mut is, "ObjectName"),
        object_type: text(&mut is, "ObjectType"),
        object_id: text(&mut is, "ObjectId"),
        report_id: is.str(rec, "/ReportId", true),
        cas_created: None,
        raw_event_data: rec.get("RawEventData"),
        source_record: rec.without("RawEventData"),
        mapping_issues: is.into_column(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::record;

    #[test]
    fn a_hunting_row_keeps_cloudappevents_values_in_whichever_form_graph_sends() {
        let row: Value = serde_json::from_str(
            r##"{"Timestamp":"2026-11-30T10:00:00.1234567Z","ActionType":"FileDownloaded","Application":"Microsoft SharePoint Online",
                "ApplicationId":20892,"AppInstanceId":0,"AccountObjectId":"3a7e5d2b-1c4f-4e8a-9b6d-0f2c3a4b5c6d","AccountId":"3a7e5d2b-1c4f-4e8a-9b6d-0f2c3a4b5c6d",
                "AccountDisplayName":"Alex Wilber","IsAdminOperation@odata.type":"#SByte","IsAdminOperation":0,"IsImpersonated":false,
                "IsExternalUser@odata.type":"#SByte","IsExternalUser":1,"DeviceType":"Desktop","OSPlatform":"Windows 10","IPAddress":"203.0.113.7",
                "IsAnonymousProxy":false,"CountryCode":"NL","City":"Amsterdam","Isp":"Contoso Telecom","UserAgent":"Mozilla/5.0","ActivityType":"Basic",
                "ActivityObjects":[{"Type":"File","Role":"Target object","Name":"q3.xlsx","Id":"https://contoso.sharepoint.com/q3.xlsx"}],
                "ObjectName":"q3.xlsx","ObjectType":"File","ObjectId":"https://contoso.sharepoint.com/q3.xlsx","ReportId":"d87bb92aaf829_20892",
                "IPTags":"[\"Tor\"]","IPCategory":"","UserAgentTags":[],"RawEventData":{"Operation":"FileDownloaded"},"AuditSource":"Defender for Cloud Apps app connector"}"##,
        )
        .unwrap();
        let raw = record::raw_of(&row);
        let rec = Record::new(&raw);
        assert!(is_hunting_row(&rec));
        let r = map(&rec);
        assert_eq!(r.time_generated, "2026-11-30T10:00:00.123Z");
        assert_eq!(r.is_admin_operation, Some(false));
        assert_eq!(r.is_external_user, Some(true));
        assert_eq!(r.isp.as_deref(), Some("Contoso Telecom"));
        assert_eq!(
            r.ip_tags,
            Some(serde_json::json!(["Tor"])),
            "dynamic sent as JSON text"
        );
        assert_eq!(r.ip_category, None, "empty is absent, as in Sentinel");
        assert_eq!(r.application_id, Some(20892));
        assert_eq!(r.report_id.as_deref(), Some("d87bb92aaf829_20892"));
        assert!(r.mapping_issues.is_none(), "{:?}", r.mapping_issues);
    }
}
