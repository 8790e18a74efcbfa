//! Activities → Sentinel's native ASIM tables (`SENTINEL_ASIM=on`), besides their row in
//! `McasActivity_CL`: sign-ins into `ASimAuthenticationEventLogs`, file activity into
//! `ASimFileEventLogs`, administrative, permission and sharing changes into
//! `ASimAuditEventLogs`, so every ASIM rule (`_Im_Authentication`, `_Im_FileEvent`,
//! `_Im_AuditEvent`) covers Defender for Cloud Apps.
//!
//! The ASIM row is made from the activity's mapped row (CloudAppEvents' columns), not from
//! the CAS record, so the REST and advanced-hunting sources normalize alike. The native
//! tables store neither aliases nor constants (the stub parsers add `User`, `Src`,
//! `EventSchema`…), so only stored columns are sent, each one the table has.
//!
//! Alerts are left out: Microsoft documents that `ASimAlertEventLogs` accepts the Logs
//! Ingestion API, but its output stream name is written nowhere we could find, and no
//! ASIM alert parser reads the native table; docs/tables.md says so.

use crate::json::Record;
use serde_json::{json, Map, Value};

/// A native ASIM table we write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum AsimTable {
    /// `ASimAuthenticationEventLogs` (schema Authentication).
    Authentication,
    /// `ASimFileEventLogs` (schema FileEvent).
    FileEvent,
    /// `ASimAuditEventLogs` (schema AuditEvent).
    AuditEvent,
}

impl AsimTable {
    /// Every table, in the order a batch's rows are sent.
    pub(crate) const ALL: [AsimTable; 3] = [
        AsimTable::Authentication,
        AsimTable::FileEvent,
        AsimTable::AuditEvent,
    ];

    /// The Log Analytics table.
    #[cfg(feature = "sim")]
    pub(crate) fn table(self) -> &'static str {
        match self {
            AsimTable::Authentication => "ASimAuthenticationEventLogs",
            AsimTable::FileEvent => "ASimFileEventLogs",
            AsimTable::AuditEvent => "ASimAuditEventLogs",
        }
    }

    /// The DCR input stream we declare for it.
    pub(crate) fn stream(self) -> &'static str {
        match self {
            AsimTable::Authentication => "Custom-McasAsimAuthentication",
            AsimTable::FileEvent => "Custom-McasAsimFileEvent",
            AsimTable::AuditEvent => "Custom-McasAsimAuditEvent",
        }
    }

    /// The built-in table's output stream (`Microsoft-<table>`, as the Logs Ingestion
    /// documentation names built-in tables; these three are confirmed by Microsoft's own
    /// solution tooling).
    #[cfg(feature = "sim")]
    pub(crate) fn output_stream(self) -> String {
        format!("Microsoft-{}", self.table())
    }

    /// The ASIM schema's name.
    pub(crate) fn schema(self) -> &'static str {
        match self {
            AsimTable::Authentication => "Authentication",
            AsimTable::FileEvent => "FileEvent",
            AsimTable::AuditEvent => "AuditEvent",
        }
    }

    /// The schema version the rows follow (the newest each schema's documentation lists).
    pub(crate) fn schema_version(self) -> &'static str {
        match self {
            AsimTable::Authentication => "0.1.4",
            AsimTable::FileEvent => "0.2.2",
            AsimTable::AuditEvent => "0.1.2",
        }
    }
}

/// ASIM's vendor and product lists name no value for Defender for Cloud Apps; Microsoft's
/// own ASIM parser of Defender XDR alerts writes the alert's `serviceSource` as the
/// product, which for this product is this name, so rows of both agree.
pub(crate) const EVENT_PRODUCT: &str = "Microsoft Defender for Cloud Apps";
/// The vendor.
pub(crate) const EVENT_VENDOR: &str = "Microsoft";

/// What an activity is, in ASIM's terms: its table and the values that depend on the kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Kind {
    /// Where the row goes.
    pub table: AsimTable,
    /// `EventType`.
    pub event_type: &'static str,
    /// `EventSubType`, where the schema has one for it.
    pub sub_type: Option<&'static str>,
    /// Whether the activity failed.
    pub failed: bool,
}

fn kind(table: AsimTable, event_type: &'static str, sub_type: Option<&'static str>) -> Kind {
    Kind {
        table,
        event_type,
        sub_type,
        failed: false,
    }
}

/// The ASIM kind of an activity by its `ActionType` (the operation as the app named it,
/// or CAS's event type) and `ActivityType`, or `None` for an activity no ASIM schema
/// describes (mail read, a page view, a generic event): those stay in `McasActivity_CL`
/// only, rather than be forced into a schema they do not fit.
pub(crate) fn classify(action: &str, activity_type: &str, is_admin: bool) -> Option<Kind> {
    use AsimTable::*;
    let a = action.trim();
    let lower = a.to_ascii_lowercase();
    // Sign-ins, by the operation names Microsoft 365 and Entra use and CAS's categories.
    let failed_login = activity_type.eq_ignore_ascii_case("Failedlogin")
        || matches!(
            lower.as_str(),
            "userloginfailed" | "event_category_failed_login"
        );
    if failed_login {
        return Some(Kind {
            failed: true,
            ..kind(Authentication, "Logon", None)
        });
    }
    match lower.as_str() {
        "userloggedin" | "event_category_login" | "log on" | "login" | "signin" => {
            return Some(kind(Authentication, "Logon", None))
        }
        "userloggedout" | "event_category_logout" | "log off" | "logout" | "signout" => {
            return Some(kind(Authentication, "Logoff", None))
        }
        _ => {}
    }
    // File activity: ASIM has no upload or download type; they are a creation and an
    // access with that sub-type.
    let file = match lower.as_str() {
        "filedownloaded" | "filesyncdownloadedfull" | "event_category_download_file" => {
            Some(("FileAccessed", Some("Download")))
        }
        "fileuploaded" | "filesyncuploadedfull" | "event_category_upload_file" => {
            Some(("FileCreated", Some("Upload")))
        }
        "fileaccessed" => Some(("FileAccessed", None)),
        "filepreviewed" => Some(("FileAccessed", Some("Preview"))),
        "filedeleted" | "filedeletedsecondstagerecyclebin" | "event_category_delete_file" => {
            Some(("FileDeleted", None))
        }
        "filerecycled" | "filedeletedfirststagerecyclebin" => {
            Some(("FileDeleted", Some("Recycled")))
        }
        "filerenamed" | "event_category_rename_file" => Some(("FileRenamed", None)),
        "filemoved" | "event_category_move_file" => Some(("FileMoved", None)),
        "filecopied" => Some(("FileCopied", None)),
        "filemodified" | "filemodifiedextended" | "event_category_edit_file" => {
            Some(("FileModified", None))
        }
        "foldercreated" => Some(("FolderCreated", None)),
        "folderdeleted" => Some(("FolderDeleted", None)),
        "foldermoved" => Some(("FolderMoved", None)),
        "folderrenamed" | "foldermodified" => Some(("FolderModified", None)),
        _ => None,
    };
    if let Some((t, sub)) = file {
        return Some(kind(FileEvent, t, sub));
    }
    // Sharing and permission changes are audited changes whatever the actor's role.
    let sharing = lower.starts_with("sharing")
        || lower.contains("linkcreated")
        || lower.contains("permission")
        || lower.contains("member to role")
        || lower.contains("addedtogroup")
        || lower.contains("accessinvitation");
    if sharing || is_admin || lower.contains("policy") {
        return Some(kind(AuditEvent, audit_event_type(&lower), None));
    }
    None
}

/// AuditEvent's `EventType` from the operation's verb: Exchange cmdlets (`Set-Mailbox`,
/// `New-InboxRule`), Entra's sentences (`Add member to role.`, `Update user.`) and Microsoft
/// 365's names (`SharingSet`, `AnonymousLinkCreated`).
fn audit_event_type(lower: &str) -> &'static str {
    let starts = |p: &[&str]| p.iter().any(|v| lower.starts_with(v));
    let has = |p: &[&str]| p.iter().any(|v| lower.contains(v));
    if starts(&["enable"]) {
        "Enable"
    } else if starts(&["disable"]) {
        "Disable"
    } else if starts(&["remove", "delete"]) || has(&["revoked", "removed", "deleted"]) {
        "Delete"
    } else if starts(&["new-", "add", "create"]) || has(&["created", "added", "invitation"]) {
        "Create"
    } else if starts(&["set", "update", "change", "sharing", "modify"])
        || has(&["changed", "updated"])
        || lower.ends_with("set")
    {
        "Set"
    } else if starts(&["get-", "read"]) {
        "Read"
    } else {
        "Other"
    }
}

/// AuditEvent's `ObjectType` (its documented values) for an activity's changed object.
fn audit_object_type(lower_action: &str, object_type: Option<&str>) -> &'static str {
    if lower_action.contains("policy") {
        "Policy Rule"
    } else if lower_action.contains("role")
        || lower_action.contains("group")
        || lower_action.contains("user")
        || matches!(object_type, Some("User" | "Group" | "Account"))
    {
        "Directory Service Object"
    } else if lower_action.starts_with("set-")
        || lower_action.starts_with("new-")
        || lower_action.contains("setting")
        || lower_action.contains("config")
    {
        "Configuration Atom"
    } else {
        "Other"
    }
}

/// `EventResultDetails` (Authentication's documented values) from an Entra sign-in error
/// code, where the activity carries one, as Microsoft's own ASIM parser of Entra sign-in
/// logs reads the same codes; the code itself goes in `EventOriginalResultDetails`.
fn result_details(code: Option<i64>) -> &'static str {
    match code {
        Some(50034 | 50059 | 50064 | 50126 | 51004 | 500011 | 700016) => "No such user or password",
        Some(50053) => "User locked",
        Some(50056) => "Incorrect password",
        Some(50057) => "User disabled",
        Some(50055 | 50132 | 50133 | 50144 | 50173 | 70008) => "Password expired",
        Some(
            50005 | 50011 | 50020 | 50058 | 50072 | 50074 | 50076 | 50079 | 50105 | 53003 | 80012,
        ) => "Logon violates policy",
        _ => "Other",
    }
}

/// ASIM's `DeviceType` (Computer, Mobile Device, IOT Device, Other) from CloudAppEvents'.
fn device_type(d: &str) -> &'static str {
    match d {
        "Desktop" => "Computer",
        "Mobile" | "Tablet" => "Mobile Device",
        _ => "Other",
    }
}

/// `TargetFilePathType` (Windows Local, Windows Share, Unix, URL) of a path.
fn path_type(p: &str) -> &'static str {
    let b = p.as_bytes();
    if p.contains("://") {
        "URL"
    } else if p.starts_with("\\\\") {
        "Windows Share"
    } else if b.len() > 2
        && b[0].is_ascii_alphabetic()
        && b[1] == b':'
        && matches!(b[2], b'\\' | b'/')
    {
        "Windows Local"
    } else {
        "Unix"
    }
}

/// A username and its `UsernameType`: UPN when it has a domain, else Simple.
fn username(name: &str) -> (&str, &'static str) {
    if name.contains('@') {
        (name, "UPN")
    } else {
        (name, "Simple")
    }
}

/// The ASIM row for an activity's mapped row, or `None` when no ASIM schema describes it
/// (or it names no actor, which FileEvent and AuditEvent require).
pub(crate) fn row(activity: &Record) -> Option<(AsimTable, Value)> {
    row_of(&read(activity))
}

/// The activity row's columns an ASIM row is made from.
const READ: [&str; 22] = [
    "CasTenant",
    "CasTenantId",
    "ActionType",
    "ActivityType",
    "IsAdminOperation",
    "TimeGenerated",
    "ReportId",
    "IPAddress",
    "CountryCode",
    "City",
    "DeviceType",
    "UserAgent",
    "OSPlatform",
    "ISP",
    "Application",
    "ApplicationId",
    "AccountId",
    "AccountDisplayName",
    "AccountObjectId",
    "ObjectId",
    "ObjectName",
    "ObjectType",
];
/// And the members of `RawEventData` it reads.
const READ_RAW: [&str; 4] = ["LoginErrorCode", "ErrorNumber", "UserId", "Upn"];

/// Just those values of an activity row, parsed one by one: the row's bulk
/// (`RawEventData`, `SourceRecord`) stays unparsed text, so a record nested deeper than a
/// JSON reader's recursion limit, or megabytes long, still gets its ASIM row, and the
/// ingest does not build a tree of every row.
fn read(rec: &Record) -> Value {
    let mut m: Map<String, Value> = READ
        .iter()
        .filter_map(|k| Some((k.to_string(), serde_json::from_str(rec.get(k)?.get()).ok()?)))
        .collect();
    let raw: Map<String, Value> = READ_RAW
        .iter()
        .filter_map(|k| Some((k.to_string(), rec.pointer(&format!("/RawEventData/{k}"))?)))
        .collect();
    if !raw.is_empty() {
        m.insert("RawEventData".into(), Value::Object(raw));
    }
    Value::Object(m)
}

/// [`row`] over the columns [`read`] took.
fn row_of(activity: &Value) -> Option<(AsimTable, Value)> {
    let s = |k: &str| {
        activity
            .get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let action = s("ActionType")?;
    let is_admin = activity.get("IsAdminOperation") == Some(&Value::Bool(true));
    let k = classify(action, s("ActivityType").unwrap_or_default(), is_admin)?;
    let time = s("TimeGenerated")?;
    let mut m = Map::new();
    let mut put = |key: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(key.to_string(), v);
        }
    };
    let text = |v: Option<&str>| v.map(|v| json!(v));
    put("TimeGenerated", text(Some(time)));
    put("EventStartTime", text(Some(time)));
    put("EventEndTime", text(Some(time)));
    put("EventCount", Some(json!(1)));
    put("EventType", text(Some(k.event_type)));
    put("EventSubType", text(k.sub_type));
    put(
        "EventResult",
        text(Some(if k.failed { "Failure" } else { "Success" })),
    );
    put(
        "EventSeverity",
        text(Some(if k.failed { "Low" } else { "Informational" })),
    );
    put("EventOriginalType", text(Some(action)));
    put("EventOriginalUid", text(s("ReportId")));
    put("EventProduct", text(Some(EVENT_PRODUCT)));
    put("EventVendor", text(Some(EVENT_VENDOR)));
    put("EventSchemaVersion", text(Some(k.table.schema_version())));
    if k.table == AsimTable::FileEvent {
        // The only one of the three native tables with the column.
        put("EventSchema", text(Some(k.table.schema())));
    }
    // ASIM: "for cloud sources, for which there is no apparent device, use the same value
    // as the Event Product field" for Dvc, which the tables do not store: its DvcId.
    put("DvcId", text(Some(EVENT_PRODUCT)));
    put("DvcIdType", text(Some("Other")));
    put("SrcIpAddr", text(s("IPAddress")));
    put("SrcGeoCountry", text(s("CountryCode")));
    put("SrcGeoCity", text(s("City")));
    put(
        "SrcDeviceType",
        s("DeviceType").map(|d| json!(device_type(d))),
    );
    put("HttpUserAgent", text(s("UserAgent")));
    put("TargetAppName", text(s("Application")));
    put(
        "TargetAppId",
        activity
            .get("ApplicationId")
            .and_then(Value::as_i64)
            .map(|i| json!(i.to_string())),
    );
    put(
        "TargetAppType",
        (s("Application").is_some() || activity.get("ApplicationId").is_some())
            .then(|| json!("SaaS application")),
    );
    // CloudAppEvents' AccountId is a UPN from the REST source and an object id from
    // advanced hunting; a name is a UPN from either, else the display name.
    fn upn(v: Option<&str>) -> Option<&str> {
        v.filter(|u| u.contains('@'))
    }
    let user = upn(s("AccountId"))
        .or(upn(activity
            .pointer("/RawEventData/UserId")
            .and_then(Value::as_str)))
        // A failed sign-in's user is often only in Entra's own record.
        .or(upn(activity
            .pointer("/RawEventData/Upn")
            .and_then(Value::as_str)))
        .or(s("AccountDisplayName"));
    let user_id = s("AccountObjectId");
    let lower = action.to_ascii_lowercase();
    match k.table {
        AsimTable::Authentication => {
            // The account signing in is the target of a sign-in.
            if let Some(u) = user {
                let (name, ty) = username(u);
                put("TargetUsername", text(Some(name)));
                put("TargetUsernameType", text(Some(ty)));
            }
            if let Some(id) = user_id {
                put("TargetUserId", text(Some(id)));
                put("TargetUserIdType", text(Some("AADID")));
            }
            // ASIM's field for the Entra tenant a user belongs to (Microsoft's SigninLogs
            // parser fills it from HomeTenantId).
            put("TargetUserScopeId", text(s("CasTenantId")));
            put("SrcIsp", text(s("ISP")));
            put("SrcDvcOs", text(s("OSPlatform")));
            if k.failed {
                let code = activity
                    .pointer("/RawEventData/LoginErrorCode")
                    .or_else(|| activity.pointer("/RawEventData/ErrorNumber"))
                    .and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok()));
                put("EventResultDetails", text(Some(result_details(code))));
                put(
                    "EventOriginalResultDetails",
                    code.map(|c| json!(c.to_string())),
                );
            }
        }
        AsimTable::FileEvent | AsimTable::AuditEvent => {
            let (name, ty) = username(user?);
            put("ActorUsername", text(Some(name)));
            put("ActorUsernameType", text(Some(ty)));
            put("ActorScopeId", text(s("CasTenantId")));
            if let Some(id) = user_id {
                put("ActorUserId", text(Some(id)));
                put("ActorUserIdType", text(Some("AADID")));
                // ASIM asks for the id in its type's own column as well.
                put("ActorUserAadId", text(Some(id)));
            }
            if k.table == AsimTable::FileEvent {
                // The file is the activity's target object: its id is the path (a URL in
                // SharePoint and OneDrive), else its name alone, as the schema allows.
                let path = s("ObjectId")
                    .filter(|p| p.contains('/') || p.contains('\\'))
                    .or(s("ObjectName"))?;
                put("TargetFilePath", text(Some(path)));
                put("TargetFilePathType", text(Some(path_type(path))));
                let name = s("ObjectName")
                    .unwrap_or(path)
                    .rsplit(['/', '\\'])
                    .next()
                    .filter(|n| !n.is_empty());
                put("TargetFileName", text(name));
            } else {
                put("Operation", text(Some(action)));
                // Mandatory: the changed object's name, else its id, else the app changed.
                put(
                    "Object",
                    Some(json!(s("ObjectName")
                        .or(s("ObjectId"))
                        .or(s("Application"))?)),
                );
                put("ObjectId", text(s("ObjectId")));
                put(
                    "ObjectType",
                    text(Some(audit_object_type(&lower, s("ObjectType")))),
                );
                put("OriginalObjectType", text(s("ObjectType")));
            }
        }
    }
    // The tenant a row came from rides in AdditionalFields: the native tables take no
    // column of ours (its Entra id is also the user's scope, above).
    let extra: Map<String, Value> = [
        ("ReportId", s("ReportId")),
        ("ActivityType", s("ActivityType")),
        ("CasTenant", s("CasTenant")),
        ("CasTenantId", s("CasTenantId")),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_string(), json!(v?))))
    .collect();
    put(
        "AdditionalFields",
        (!extra.is_empty()).then_some(Value::Object(extra)),
    );
    Some((k.table, Value::Object(m)))
}

#[cfg(feature = "sim")]
pub(crate) mod columns {
    //! The columns each ASIM input stream declares: the ones [`super::row`] writes, every
    //! one a column of the native table (with its type there).
    use super::AsimTable;
    use crate::schema::{Column, ColumnType as T};
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    const fn c(name: &'static str, ty: T, source: &'static str) -> Column {
        Column::new(name, ty, source)
    }

    const COMMON: &[Column] = &[
        c("TimeGenerated", T::DateTime, "`TimeGenerated`"),
        c("EventStartTime", T::DateTime, "`TimeGenerated` (an activity is an instant)"),
        c("EventEndTime", T::DateTime, "`TimeGenerated`"),
        c("EventCount", T::Int, "always 1"),
        c("EventType", T::String, "by `ActionType` (the kinds table)"),
        c("EventSubType", T::String, "Upload or Download for file transfers"),
        c("EventResult", T::String, "Failure for failed sign-ins, else Success"),
        c("EventSeverity", T::String, "Low for failed sign-ins, else Informational"),
        c("EventOriginalType", T::String, "`ActionType`"),
        c("EventOriginalUid", T::String, "`ReportId`: the dedupe key"),
        c("EventProduct", T::String, "always \"Microsoft Defender for Cloud Apps\" (ASIM lists no value for it; Microsoft's Defender XDR alert parser writes this)"),
        c("EventVendor", T::String, "always \"Microsoft\""),
        c("EventSchemaVersion", T::String, "the schema's version"),
        c("DvcId", T::String, "the product, as ASIM asks of cloud sources with no device"),
        c("DvcIdType", T::String, "Other"),
        c("SrcIpAddr", T::String, "`IPAddress`"),
        c("SrcGeoCountry", T::String, "`CountryCode`"),
        c("SrcGeoCity", T::String, "`City`"),
        c("SrcDeviceType", T::String, "`DeviceType`: Desktop Computer; Mobile, Tablet Mobile Device; else Other"),
        c("HttpUserAgent", T::String, "`UserAgent`"),
        c("TargetAppName", T::String, "`Application`"),
        c("TargetAppId", T::String, "`ApplicationId`"),
        c("TargetAppType", T::String, "SaaS application"),
        c("AdditionalFields", T::Dynamic, "`ReportId`, `ActivityType`, and for a named tenant `CasTenant` and `CasTenantId`"),
    ];

    const AUTHENTICATION: &[Column] = &[
        c("TargetUsername", T::String, "`AccountId` when a UPN, else `RawEventData.UserId` or `.Upn` when a UPN, else `AccountDisplayName`"),
        c("TargetUsernameType", T::String, "UPN, or Simple without a domain"),
        c("TargetUserId", T::String, "`AccountObjectId`"),
        c("TargetUserIdType", T::String, "AADID"),
        c("TargetUserScopeId", T::String, "`CasTenantId`: the user's Entra tenant (named tenants)"),
        c("SrcIsp", T::String, "`ISP`"),
        c("SrcDvcOs", T::String, "`OSPlatform`"),
        c("EventResultDetails", T::String, "failed sign-ins: from the Entra error code (50126 No such user or password, 50053 User locked…; else Other)"),
        c("EventOriginalResultDetails", T::String, "the Entra error code"),
    ];

    const ACTOR: &[Column] = &[
        c("ActorUsername", T::String, "`AccountId` when a UPN, else `RawEventData.UserId` or `.Upn` when a UPN, else `AccountDisplayName`"),
        c("ActorUsernameType", T::String, "UPN, or Simple without a domain"),
        c("ActorScopeId", T::String, "`CasTenantId`: the user's Entra tenant (named tenants)"),
        c("ActorUserId", T::String, "`AccountObjectId`"),
        c("ActorUserIdType", T::String, "AADID"),
        c("ActorUserAadId", T::String, "`AccountObjectId`"),
    ];

    const FILE: &[Column] = &[
        c("EventSchema", T::String, "FileEvent (this table stores it)"),
        c(
            "TargetFilePath",
            T::String,
            "`ObjectId` when it is a path or URL, else `ObjectName`",
        ),
        c(
            "TargetFilePathType",
            T::String,
            "URL, Windows Share, Windows Local or Unix, by the path's form",
        ),
        c("TargetFileName", T::String, "`ObjectName`'s last segment"),
    ];

    const AUDIT: &[Column] = &[
        c("Operation", T::String, "`ActionType`"),
        c(
            "Object",
            T::String,
            "`ObjectName`, else `ObjectId`, else `Application`",
        ),
        c("ObjectId", T::String, "`ObjectId`"),
        c(
            "ObjectType",
            T::String,
            "Policy Rule, Directory Service Object, Configuration Atom or Other, by the operation",
        ),
        c("OriginalObjectType", T::String, "`ObjectType`"),
    ];

    /// The native ASIM tables' columns and types, by table, as Microsoft's table
    /// reference lists them (tests/fixtures/asim-native-tables.txt), read once.
    pub fn native_tables() -> &'static BTreeMap<String, BTreeMap<String, String>> {
        static TABLES: OnceLock<BTreeMap<String, BTreeMap<String, String>>> = OnceLock::new();
        TABLES.get_or_init(|| {
            let text = include_str!("../../tests/fixtures/asim-native-tables.txt");
            let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            let mut table = String::new();
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    table = t.to_string();
                    continue;
                }
                for (name, ty) in line.split_whitespace().filter_map(|t| t.split_once(':')) {
                    out.entry(table.clone())
                        .or_default()
                        .insert(name.to_string(), ty.to_string());
                }
            }
            out
        })
    }

    /// The columns of a table's input stream.
    pub(crate) fn of(t: AsimTable) -> Vec<Column> {
        let own: &[&[Column]] = match t {
            AsimTable::Authentication => &[AUTHENTICATION],
            AsimTable::FileEvent => &[ACTOR, FILE],
            AsimTable::AuditEvent => &[ACTOR, AUDIT],
        };
        COMMON
            .iter()
            .chain(own.iter().flat_map(|c| c.iter()))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod conformance {
    //! Microsoft's ASIM schema and data testers' rules, as Rust over our rows (our own code,
    //! from the documented schemas): mandatory fields, enumerations, type pairs, times and
    //! counts, schema versions, and no column the native table lacks, no alias, no
    //! constant. Every rule that fails is named with the row.
    use super::*;
    use crate::cas::sim::{activity_of_kind, ACTIVITY_KINDS};
    use crate::schema::{row_bytes, Column};
    use std::collections::{BTreeMap, BTreeSet};

    /// A documented enumeration: the field and its allowed values.
    fn enumerations(t: AsimTable) -> Vec<(&'static str, &'static [&'static str])> {
        let mut e: Vec<(&'static str, &'static [&'static str])> = vec![
            ("EventResult", &["Success", "Partial", "Failure", "NA"]),
            ("EventSeverity", &["Informational", "Low", "Medium", "High"]),
            (
                "DvcIdType",
                &[
                    "MDEid",
                    "AzureResourceId",
                    "MD4IoTid",
                    "VMConnectionId",
                    "AwsVpcId",
                    "VectraId",
                    "AppGateId",
                    "FQDN",
                    "Other",
                ],
            ),
            (
                "SrcDeviceType",
                &["Computer", "Mobile Device", "IOT Device", "Other"],
            ),
            (
                "TargetAppType",
                &[
                    "Process",
                    "Service",
                    "Resource",
                    "URL",
                    "SaaS application",
                    "CSP",
                    "Other",
                ],
            ),
            ("ActorUsernameType", &["UPN", "Windows", "DN", "Simple"]),
            ("TargetUsernameType", &["UPN", "Windows", "DN", "Simple"]),
            (
                "ActorUserIdType",
                &[
                    "SID",
                    "UID",
                    "AADID",
                    "OktaId",
                    "AWSId",
                    "PUID",
                    "SalesforceId",
                ],
            ),
            (
                "TargetUserIdType",
                &[
                    "SID",
                    "UID",
                    "AADID",
                    "OktaId",
                    "AWSId",
                    "PUID",
                    "SalesforceId",
                ],
            ),
        ];
        match t {
            AsimTable::Authentication => {
                e.push(("EventType", &["Logon", "Logoff", "Elevate"]));
                e.push((
                    "EventSubType",
                    &[
                        "System",
                        "Interactive",
                        "RemoteInteractive",
                        "Service",
                        "RemoteService",
                        "Remote",
                        "AssumeRole",
                    ],
                ));
                e.push((
                    "EventResultDetails",
                    &[
                        "No such user or password",
                        "No such user",
                        "Incorrect password",
                        "Incorrect key",
                        "Account expired",
                        "Password expired",
                        "User locked",
                        "User disabled",
                        "Logon violates policy",
                        "Session expired",
                        "Other",
                    ],
                ));
                e.push((
                    "LogonMethod",
                    &[
                        "Managed Identity",
                        "Service Principal",
                        "Username & Password",
                        "Multi factor authentication",
                        "Passwordless",
                        "PKI",
                        "PAM",
                        "Other",
                    ],
                ));
            }
            AsimTable::FileEvent => {
                e.push((
                    "EventType",
                    &[
                        "FileAccessed",
                        "FileCreated",
                        "FileModified",
                        "FileDeleted",
                        "FileRenamed",
                        "FileCopied",
                        "FileMoved",
                        "FolderCreated",
                        "FolderDeleted",
                        "FolderMoved",
                        "FolderModified",
                        "FileCreatedOrModified",
                    ],
                ));
                e.push((
                    "TargetFilePathType",
                    &["Windows Local", "Windows Share", "Unix", "URL"],
                ));
                e.push(("EventSchema", &["FileEvent"]));
            }
            AsimTable::AuditEvent => {
                e.push((
                    "EventType",
                    &[
                        "Set",
                        "Read",
                        "Create",
                        "Delete",
                        "Execute",
                        "Install",
                        "Clear",
                        "Enable",
                        "Disable",
                        "Initialize",
                        "Start",
                        "Stop",
                        "Other",
                    ],
                ));
                e.push((
                    "ObjectType",
                    &[
                        "Cloud Resource",
                        "Configuration Atom",
                        "Policy Rule",
                        "Event Log",
                        "Scheduled Task",
                        "Service",
                        "Directory Service Object",
                        "Other",
                    ],
                ));
            }
        }
        e
    }

    /// FileEvent's sub-types, per event type.
    fn file_sub_types(event_type: &str) -> &'static [&'static str] {
        match event_type {
            "FileCreated" => &["Upload", "Checkin"],
            "FileModified" | "FileCreatedOrModified" => &["Checkin"],
            "FileAccessed" => &["Download", "Preview", "Checkout", "Extended"],
            "FileDeleted" => &["Recycled", "Versions", "Site"],
            _ => &[],
        }
    }

    /// Fields the schema makes mandatory that the native table stores (the stub parsers add
    /// `EventSchema` where the table lacks it, and `Dvc` from the Dvc fields).
    fn mandatory(t: AsimTable) -> Vec<&'static str> {
        let mut m = vec![
            "TimeGenerated",
            "EventCount",
            "EventStartTime",
            "EventEndTime",
            "EventType",
            "EventResult",
            "EventProduct",
            "EventVendor",
            "EventSchemaVersion",
        ];
        match t {
            AsimTable::Authentication => {}
            AsimTable::FileEvent => m.extend([
                "EventSchema",
                "ActorUsername",
                "TargetFilePath",
                "TargetFilePathType",
            ]),
            AsimTable::AuditEvent => m.extend(["Operation", "Object"]),
        }
        m
    }

    /// Conditional fields: when the first is set, the second must be.
    const PAIRS: &[(&str, &str)] = &[
        ("DvcId", "DvcIdType"),
        ("DvcDomain", "DvcDomainType"),
        ("ActorUserId", "ActorUserIdType"),
        ("ActorUsername", "ActorUsernameType"),
        ("TargetUserId", "TargetUserIdType"),
        ("TargetUsername", "TargetUsernameType"),
        ("SrcDvcId", "SrcDvcIdType"),
        ("SrcDomain", "SrcDomainType"),
        ("TargetDvcId", "TargetDvcIdType"),
        ("TargetAppName", "TargetAppType"),
        ("TargetAppId", "TargetAppType"),
    ];

    /// Aliases and the query-time constants: the native tables store none of them.
    const NOT_STORED: &[&str] = &[
        "User",
        "Src",
        "Dst",
        "IpAddr",
        "Application",
        "Dvc",
        "Rule",
        "Value",
        "LogonTarget",
        "FileName",
        "FilePath",
        "Url",
        "Process",
        "Hash",
        "EventUid",
    ];

    /// Every rule's violations for one row.
    fn violations(t: AsimTable, row: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let Some(obj) = row.as_object() else {
            return vec!["not an object".into()];
        };
        let cols = &columns::native_tables()[t.table()];
        let str_of = |k: &str| obj.get(k).and_then(Value::as_str);
        for (k, v) in obj {
            match cols.get(k) {
                None => out.push(format!("{k}: not a column of {}", t.table())),
                Some(ty) => {
                    let ok = match ty.as_str() {
                        "string" => v.is_string(),
                        "int" | "long" => v.is_i64(),
                        "real" => v.is_number(),
                        "bool" => v.is_boolean(),
                        "datetime" => v
                            .as_str()
                            .is_some_and(|s| crate::model::parse_rfc3339_ms(s).is_some()),
                        _ => true,
                    };
                    if !ok {
                        out.push(format!("{k}: {v} is not of the column's type {ty}"));
                    }
                }
            }
            if v.as_str() == Some("") {
                out.push(format!("{k}: empty (leave it out instead)"));
            }
            if NOT_STORED.contains(&k.as_str()) {
                out.push(format!(
                    "{k}: an alias or constant, which the native tables do not store"
                ));
            }
        }
        if t != AsimTable::FileEvent && obj.contains_key("EventSchema") {
            out.push("EventSchema: a constant the stub parser adds".into());
        }
        for m in mandatory(t) {
            if str_of(m).is_none() && obj.get(m).is_none_or(Value::is_null) {
                out.push(format!("{m}: mandatory, missing"));
            }
        }
        if !["DvcId", "DvcHostname", "DvcIpAddr", "DvcFQDN"]
            .iter()
            .any(|d| obj.contains_key(*d))
        {
            out.push("Dvc: mandatory, and no Dvc field to alias".into());
        }
        for (field, allowed) in enumerations(t) {
            if let Some(v) = obj.get(field) {
                if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
                    out.push(format!("{field}: {v} is not one of {allowed:?}"));
                }
            }
        }
        if t == AsimTable::FileEvent {
            if let (Some(et), Some(sub)) = (str_of("EventType"), str_of("EventSubType")) {
                if !file_sub_types(et).contains(&sub) {
                    out.push(format!("EventSubType: {sub} is not one of {et}'s"));
                }
            }
        }
        for (field, ty) in PAIRS {
            if obj.contains_key(*field) && !obj.contains_key(*ty) {
                out.push(format!("{field} without {ty}"));
            }
        }
        match (
            str_of("EventStartTime").and_then(crate::model::parse_rfc3339_ms),
            str_of("EventEndTime").and_then(crate::model::parse_rfc3339_ms),
        ) {
            (Some(a), Some(b)) if a > b => out.push("EventStartTime after EventEndTime".into()),
            _ => {}
        }
        if obj
            .get("EventCount")
            .and_then(Value::as_i64)
            .is_none_or(|n| n < 1)
        {
            out.push("EventCount: must be at least 1".into());
        }
        let versions: &[&str] = match t {
            AsimTable::Authentication => &["0.1.3", "0.1.4"],
            AsimTable::FileEvent => &["0.2.1", "0.2.2"],
            AsimTable::AuditEvent => &["0.1.2"],
        };
        if !str_of("EventSchemaVersion").is_some_and(|v| versions.contains(&v)) {
            out.push(format!(
                "EventSchemaVersion: not a documented version {versions:?}"
            ));
        }
        if let Some(ip) = str_of("SrcIpAddr") {
            if ip.parse::<std::net::IpAddr>().is_err() {
                out.push(format!("SrcIpAddr: {ip} is not an IP address"));
            }
        }
        if let Some(c) = str_of("SrcGeoCountry") {
            if !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())) {
                out.push(format!("SrcGeoCountry: {c} is not ISO 3166-1 alpha-2"));
            }
        }
        if let (Some(u), Some("UPN")) = (
            str_of("ActorUsername").or(str_of("TargetUsername")),
            str_of("ActorUsernameType").or(str_of("TargetUsernameType")),
        ) {
            if !u.contains('@') {
                out.push(format!("{u}: a UPN has a domain"));
            }
        }
        out
    }

    /// [`row`] of a mapped row, read as the ingest reads it.
    fn asim_row(activity: &Value) -> Option<(AsimTable, Value)> {
        let raw = crate::json::record::raw_of(activity);
        row(&crate::json::Record::new(&raw))
    }

    fn mapped(record: &Value) -> Value {
        let raw = crate::json::record::raw_of(record);
        let rec = crate::json::Record::new(&raw);
        serde_json::from_slice(&row_bytes(crate::model::DataType::Activities, &rec, None)).unwrap()
    }

    /// Our rows of every simulated activity kind, the real-shaped fixtures' and a hunted
    /// CloudAppEvents row.
    fn corpus() -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = (0..=ACTIVITY_KINDS.len())
            .map(|k| {
                let name = ACTIVITY_KINDS
                    .get(k)
                    .map_or("failed sign-in", |(op, _)| *op);
                (
                    name.to_string(),
                    mapped(&activity_of_kind(k, 1_796_000_000_000, 1_796_000_060_000)),
                )
            })
            .collect();
        for (name, text) in [
            (
                "real-shaped failed sign-in",
                include_str!("../../tests/fixtures/real-shaped/activity-failed-signin.json"),
            ),
            (
                "real-shaped OneDrive",
                include_str!("../../tests/fixtures/real-shaped/activity-onedrive.json"),
            ),
        ] {
            let v: Value = crate::json::lenient::repair(text)
                .map(|(t, _)| serde_json::from_str(&t).unwrap())
                .unwrap_or_else(|_| serde_json::from_str(text).unwrap());
            out.push((name.to_string(), mapped(&v)));
        }
        for k in 0..3 {
            let mut hunted =
                crate::graph::sim::hunting_row(k, &format!("hunted{k}"), 1_796_000_000_000);
            crate::graph::drop_sidecars(&mut hunted);
            out.push((format!("hunted CloudAppEvents row {k}"), mapped(&hunted)));
        }
        out
    }

    #[test]
    fn every_declared_column_is_a_column_of_its_native_table_with_its_type() {
        for t in AsimTable::ALL {
            let cols = &columns::native_tables()[t.table()];
            for Column { name, ty, .. } in columns::of(t) {
                let want = match ty.as_str() {
                    "boolean" => "bool",
                    other => other,
                };
                assert_eq!(
                    cols.get(name).map(String::as_str),
                    Some(want),
                    "{}.{name}",
                    t.table()
                );
            }
        }
    }

    #[test]
    fn rows_of_every_activity_kind_pass_the_asim_rules() {
        let mut tables = BTreeMap::new();
        let mut nowhere = BTreeSet::new();
        for (name, activity) in corpus() {
            match asim_row(&activity) {
                Some((t, r)) => {
                    let v = violations(t, &r);
                    assert!(v.is_empty(), "{name} → {}: {v:#?}\n{r:#}", t.table());
                    crate::schema::validate_columns(&columns::of(t), &r)
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    *tables.entry(t).or_insert(0) += 1;
                }
                None => {
                    nowhere.insert(name);
                }
            }
        }
        assert!(tables[&AsimTable::Authentication] >= 4, "{tables:?}");
        assert!(tables[&AsimTable::FileEvent] >= 8, "{tables:?}");
        assert!(tables[&AsimTable::AuditEvent] >= 7, "{tables:?}");
        assert_eq!(
            nowhere,
            ["MailItemsAccessed", "PageViewed"].map(String::from).into(),
            "only what no ASIM schema describes stays out"
        );
    }

    #[test]
    fn a_record_nested_past_a_json_readers_limit_still_gets_its_asim_row() {
        // CAS records carry arbitrary nesting (the simulator's hostile records: 300 levels);
        // a serde_json tree of the row stops at 128.
        let rec = activity_of_kind(2, 1_796_000_000_000, 1_796_000_060_000);
        let text = crate::cas::sim::hostile_text(&rec, 2);
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(&text).unwrap();
        let bytes = row_bytes(
            crate::model::DataType::Activities,
            &crate::json::Record::new(&raw),
            None,
        );
        assert!(
            serde_json::from_slice::<Value>(&bytes).is_err(),
            "too deep for a tree"
        );
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(std::str::from_utf8(&bytes).unwrap()).unwrap();
        let (t, r) = row(&crate::json::Record::new(raw)).expect("an ASIM row");
        assert_eq!(t, AsimTable::FileEvent);
        assert!(violations(t, &r).is_empty(), "{r}");
    }

    #[test]
    fn the_tester_catches_what_it_should() {
        let (t, good) = asim_row(&mapped(&activity_of_kind(
            2,
            1_796_000_000_000,
            1_796_000_060_000,
        )))
        .unwrap();
        assert!(violations(t, &good).is_empty());
        let broken = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut r = good.as_object().unwrap().clone();
            edit(&mut r);
            violations(t, &Value::Object(r))
        };
        assert!(
            !broken(&|r| {
                r.remove("ActorUsernameType");
            })
            .is_empty(),
            "a pair"
        );
        assert!(
            !broken(&|r| {
                r.insert("EventType".into(), json!("FileDownloaded"));
            })
            .is_empty(),
            "an enumeration"
        );
        assert!(
            !broken(&|r| {
                r.insert("User".into(), json!("ada"));
            })
            .is_empty(),
            "an alias"
        );
        assert!(
            !broken(&|r| {
                r.insert("EventCount".into(), json!(0));
            })
            .is_empty(),
            "a count"
        );
        assert!(
            !broken(&|r| {
                r.insert("EventEndTime".into(), json!("2020-01-01T00:00:00Z"));
            })
            .is_empty(),
            "the times"
        );
        assert!(
            !broken(&|r| {
                r.insert("EventSchemaVersion".into(), json!("9.9"));
            })
            .is_empty(),
            "the version"
        );
        assert!(
            !broken(&|r| {
                r.remove("TargetFilePath");
            })
            .is_empty(),
            "a mandatory field"
        );
        assert!(
            !broken(&|r| {
                r.insert("Workload".into(), json!("OneDrive"));
            })
            .is_empty(),
            "a column the table lacks"
        );
    }

    #[test]
    fn one_row_per_schema_field_by_field() {
        let at = 1_796_000_000_000;
        let kind = |op: &str| ACTIVITY_KINDS.iter().position(|(o, _)| *o == op).unwrap();
        let (t, r) = asim_row(&mapped(&activity_of_kind(
            ACTIVITY_KINDS.len(),
            at,
            at + 60_000,
        )))
        .unwrap();
        assert_eq!(t, AsimTable::Authentication);
        assert_eq!(r["EventType"], "Logon");
        assert_eq!(r["EventResult"], "Failure");
        assert_eq!(r["EventResultDetails"], "No such user or password");
        assert_eq!(r["EventOriginalResultDetails"], "50126");
        assert!(
            r["TargetUsername"]
                .as_str()
                .unwrap()
                .ends_with("@contoso.example"),
            "{r}"
        );
        assert_eq!(r["TargetUsernameType"], "UPN");
        assert_eq!(r["SrcGeoCountry"], "DE");
        assert_eq!(r["EventSchemaVersion"], "0.1.4");
        assert!(r.get("EventSchema").is_none());

        let (t, r) = asim_row(&mapped(&activity_of_kind(kind("FileDownloaded"), at, at))).unwrap();
        assert_eq!(t, AsimTable::FileEvent);
        assert_eq!(
            (r["EventType"].as_str(), r["EventSubType"].as_str()),
            (Some("FileAccessed"), Some("Download"))
        );
        assert_eq!(r["EventSchema"], "FileEvent");
        assert_eq!(r["TargetFilePathType"], "URL");
        assert!(
            r["TargetFilePath"]
                .as_str()
                .unwrap()
                .starts_with("https://contoso-my.sharepoint.com/"),
            "{r}"
        );
        assert!(
            r["TargetFileName"].as_str().unwrap().ends_with(".docx"),
            "{r}"
        );
        assert_eq!(r["ActorUserIdType"], "AADID");
        assert_eq!(r["ActorUserAadId"], r["ActorUserId"]);
        assert_eq!(r["TargetAppType"], "SaaS application");
        assert_eq!(r["DvcId"], EVENT_PRODUCT);
        assert_eq!(r["EventOriginalType"], "FileDownloaded");

        let (t, r) = asim_row(&mapped(&activity_of_kind(
            kind("Add member to role."),
            at,
            at,
        )))
        .unwrap();
        assert_eq!(t, AsimTable::AuditEvent);
        assert_eq!(r["EventType"], "Create");
        assert_eq!(r["Operation"], "Add member to role.");
        assert_eq!(r["ObjectType"], "Directory Service Object");
        assert_eq!(r["EventSchemaVersion"], "0.1.2");
        let (_, r) = asim_row(&mapped(&activity_of_kind(
            kind("Remove-MailboxPermission"),
            at,
            at,
        )))
        .unwrap();
        assert_eq!(r["EventType"], "Delete");
        let (_, r) = asim_row(&mapped(&activity_of_kind(kind("Set-Mailbox"), at, at))).unwrap();
        assert_eq!(
            (r["EventType"].as_str(), r["ObjectType"].as_str()),
            (Some("Set"), Some("Configuration Atom"))
        );
        let (_, r) = asim_row(&mapped(&activity_of_kind(kind("Update policy."), at, at))).unwrap();
        assert_eq!(
            (r["EventType"].as_str(), r["ObjectType"].as_str()),
            (Some("Set"), Some("Policy Rule"))
        );
    }
}
