//! CAS's codes in the words Sentinel's own tables use. CAS writes enumerations (`DESKTOP`,
//! `category: 5`, tag ids, `objType: 6`); CloudAppEvents and SecurityAlert rows written by
//! Microsoft hold words (`Desktop`, `Cloud provider`, `Tor`, `User`). Each table below says
//! where its pairs come from; a code none of them names is kept as CAS wrote it, never
//! guessed, so a query can still find it and docs/tables.md says so per column.

/// CloudAppEvents' `DeviceType` for CAS's `userAgent.deviceType` (the activities API's
/// `device.type` filter: DESKTOP, MOBILE, TABLET, OTHER).
pub(crate) fn device_type(cas: &str) -> String {
    match cas {
        "DESKTOP" => "Desktop".into(),
        "MOBILE" => "Mobile".into(),
        "TABLET" => "Tablet".into(),
        "OTHER" => "Other".into(),
        other => other.into(),
    }
}

/// CloudAppEvents' `IPCategory` for CAS's `location.category` number (the activities API's
/// `ip.category` filter: 1 Corporate, 2 Administrative, 3 Risky, 4 VPN, 5 Cloud provider,
/// 6 Other); 0 (CAS's `NONE`) is no category. `categoryValue` is read when the number is
/// absent: `CLOUD_PROXY_NETWORK_IP` is 5 in real records, the others follow the filter's
/// names.
pub(crate) fn ip_category(number: Option<i64>, value: Option<&str>) -> Option<String> {
    // Real records also carry the text "null" for an absent value.
    let value = value.filter(|v| !v.is_empty() && *v != "null");
    let n = match number {
        Some(n) => n,
        None => match value? {
            "NONE" => 0,
            "CORPORATE" => 1,
            "ADMINISTRATIVE" => 2,
            "RISKY" => 3,
            "VPN" => 4,
            "CLOUD_PROXY_NETWORK_IP" => 5,
            "OTHER" => 6,
            _ => -1,
        },
    };
    let word = match n {
        0 => return None,
        1 => "Corporate",
        2 => "Administrative",
        3 => "Risky",
        4 => "VPN",
        5 => "Cloud provider",
        6 => "Other",
        // A code none of the sources names: what CAS wrote.
        _ => return value.map(str::to_string),
    };
    Some(word.into())
}

/// The built-in IP tags' ids (the MCAS PowerShell module's tag table and real records:
/// `000000290000000000000000` on Amazon Web Services addresses) and the names
/// CloudAppEvents' `IPTags` holds. A custom tag's id is kept.
const IP_TAGS: &[(&str, &str)] = &[
    ("000000030000000000000000", "Anonymous proxy"),
    ("000000040000000000000000", "Satellite provider"),
    ("0000000c0000000000000000", "Botnet"),
    ("0000000d0000000000000000", "Malware C&C server"),
    ("0000000e0000000000000000", "Exchange Online"),
    ("000000170000000000000000", "Office 365"),
    ("000000290000000000000000", "Amazon Web Services"),
    ("0000002a0000000000000000", "Microsoft Azure"),
    ("000000380000000000000000", "Brute force attacker"),
    ("2dfa95cd7922d979d66fcff5", "Tor"),
];

/// The built-in user-agent tags: CloudAppEvents documents `UserAgentTags` as "Native
/// client, Outdated browser, Outdated operating system, Robot".
const USER_AGENT_TAGS: &[(&str, &str)] = &[
    ("000000000000000000000000", "Native client"),
    ("000000010000000000000000", "Outdated browser"),
    ("000000020000000000000000", "Outdated operating system"),
    ("0000002b0000000000000000", "Robot"),
];

fn tag_names(ids: &serde_json::Value, table: &[(&str, &str)]) -> Option<serde_json::Value> {
    let names: Vec<serde_json::Value> = ids
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str())
        .map(|id| {
            let name = table.iter().find(|(k, _)| *k == id).map_or(id, |(_, n)| n);
            serde_json::Value::String(name.to_string())
        })
        .collect();
    (!names.is_empty()).then_some(serde_json::Value::Array(names))
}

/// `location.ipTags` as tag names.
pub(crate) fn ip_tags(ids: &serde_json::Value) -> Option<serde_json::Value> {
    tag_names(ids, IP_TAGS)
}

/// `userAgent.tags` as tag names.
pub(crate) fn user_agent_tags(ids: &serde_json::Value) -> Option<serde_json::Value> {
    tag_names(ids, USER_AGENT_TAGS)
}

/// CloudAppEvents' `ActivityType` for CAS's `genericEventType`: the generic type's own word
/// (`ENUM_ACTIVITY_GENERIC_TYPE_BASIC` → `Basic`, `…_ASSIGNPRIVILEGE` → `Assignprivilege`,
/// as real rows spell it).
pub(crate) fn activity_type(generic: &str) -> String {
    let word = generic
        .strip_prefix("ENUM_ACTIVITY_GENERIC_TYPE_")
        .unwrap_or(generic)
        .replace('_', "")
        .to_ascii_lowercase();
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// CloudAppEvents' `Role` of an activity object, for CAS's `role` number. Real records show
/// the pairs: the acting user is role 2 (as `resolvedActor.role` says), the app or item acted
/// on role 1, and request details role 3. Other numbers are kept as text.
pub(crate) fn object_role(role: i64) -> String {
    match role {
        1 => "Target object".into(),
        2 => "Actor".into(),
        3 => "Parameter".into(),
        other => other.to_string(),
    }
}

/// CloudAppEvents' `Type` of an activity object, for CAS's `objType` number, where real
/// records show it: 2 a user (an Entra object id), 6 an application, 21 and 23 the actor's
/// account (its UPN, its Entra object id), 22 an external account. Others are kept as text.
pub(crate) fn object_type(obj_type: i64) -> String {
    match obj_type {
        2 => "User".into(),
        6 => "Application".into(),
        21..=23 => "Account".into(),
        other => other.to_string(),
    }
}

/// SecurityAlert's `AlertType` for a CAS alert: the internal alert names Microsoft documents
/// for Defender for Cloud Apps' alerts ("Microsoft Cloud App Security alerts not imported
/// into Microsoft Sentinel", and the anomaly detections' names as Graph's `category` and
/// SecurityAlert rows carry them), found from the policy's type and, for built-in anomaly
/// detections, its name. `None` when no documented name fits; the caller keeps the policy
/// type then.
pub(crate) fn alert_type(
    policy_type: Option<&str>,
    policy_label: Option<&str>,
) -> Option<&'static str> {
    let label = policy_label.unwrap_or_default().to_ascii_lowercase();
    match policy_type? {
        "ANOMALY_DETECTION" => ANOMALY_NAMES
            .iter()
            .find(|(l, _)| label == *l)
            .map(|(_, n)| *n),
        "FILE" => Some("ALERT_CABINET_EVENT_MATCH_FILE"),
        "AUDIT" => Some("ALERT_CABINET_EVENT_MATCH_AUDIT"),
        "INLINE" | "SESSION" | "ACCESS" => Some("ALERT_CABINET_INLINE_EVENT_MATCH"),
        "APP_PERMISSION" | "OAUTH" => Some("ALERT_CABINET_APP_PERMISSION"),
        "NEW_SERVICE" | "DISCOVERY" => Some("ALERT_CABINET_DISCOVERY_NEW_SERVICE"),
        _ => None,
    }
}

/// Built-in anomaly detection policies (their names as CAS lists them, lowercased) and
/// their documented alert names.
const ANOMALY_NAMES: &[(&str, &str)] = &[
    ("impossible travel", "MCAS_ALERT_ANUBIS_DETECTION_VELOCITY"),
    (
        "activity from infrequent country",
        "MCAS_ALERT_ANUBIS_DETECTION_NEW_COUNTRY",
    ),
    (
        "activity from anonymous ip addresses",
        "MCAS_ALERT_ANUBIS_DETECTION_RISKY_IP_ANONYMOUS",
    ),
    (
        "mass download",
        "MCAS_ALERT_ANUBIS_DETECTION_REPEATED_ACTIVITY_DOWNLOAD",
    ),
    (
        "multiple failed login attempts",
        "MCAS_ALERT_ANUBIS_DETECTION_REPEATED_ACTIVITY_FAILED_LOGIN",
    ),
    (
        "unusual region for cloud resource",
        "MCAS_ALERT_ANUBIS_DETECTION_UNCOMMON_CLOUD_REGION",
    ),
    ("ransomware activity", "ALERT_ANUBIS_DETECTION_RANSOMWARE"),
];

/// CAS's alert description as plain text: HTML tags dropped, the common entities decoded,
/// the `__siteIcon__` markers removed, runs of spaces closed up.
pub(crate) fn plain_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        match rest[i..].find('>') {
            Some(j) => {
                // A block boundary reads as a space.
                out.push(' ');
                rest = &rest[i + j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    let out = out
        .replace("__siteIcon__", "")
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A `location.carrier` as CAS writes it, percent-encoded (`amazon.com%2C inc`).
pub(crate) fn decode_carrier(carrier: &str) -> String {
    percent_encoding::percent_decode_str(carrier)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_become_the_words_sentinel_rows_hold_and_unknown_codes_are_kept() {
        assert_eq!(device_type("DESKTOP"), "Desktop");
        assert_eq!(device_type("SMART_TV"), "SMART_TV");
        assert_eq!(
            ip_category(Some(5), Some("CLOUD_PROXY_NETWORK_IP")).as_deref(),
            Some("Cloud provider")
        );
        assert_eq!(ip_category(Some(3), None).as_deref(), Some("Risky"));
        assert_eq!(ip_category(Some(0), Some("NONE")), None);
        assert_eq!(ip_category(None, Some("RISKY")).as_deref(), Some("Risky"));
        assert_eq!(ip_category(None, Some("null")), None);
        assert_eq!(
            ip_category(Some(9), Some("NEW_KIND")).as_deref(),
            Some("NEW_KIND")
        );
        assert_eq!(ip_category(None, None), None);
        assert_eq!(
            ip_tags(&json!([
                "000000290000000000000000",
                "5f01dbbc68df27c17aa6ca81"
            ])),
            Some(json!(["Amazon Web Services", "5f01dbbc68df27c17aa6ca81"]))
        );
        assert_eq!(
            user_agent_tags(&json!(["000000000000000000000000"])),
            Some(json!(["Native client"]))
        );
        assert_eq!(ip_tags(&json!([])), None);
        assert_eq!(activity_type("ENUM_ACTIVITY_GENERIC_TYPE_BASIC"), "Basic");
        assert_eq!(
            activity_type("ENUM_ACTIVITY_GENERIC_TYPE_FAILED_LOGIN"),
            "Failedlogin"
        );
        assert_eq!(
            (object_role(2), object_role(1), object_role(9)),
            ("Actor".into(), "Target object".into(), "9".into())
        );
        assert_eq!(
            (object_type(2), object_type(22), object_type(1)),
            ("User".into(), "Account".into(), "1".into())
        );
        assert_eq!(decode_carrier("amazon.com%2C inc"), "amazon.com, inc");
    }

    #[test]
    fn alert_types_are_the_documented_names_or_none() {
        assert_eq!(
            alert_type(Some("ANOMALY_DETECTION"), Some("Impossible travel")),
            Some("MCAS_ALERT_ANUBIS_DETECTION_VELOCITY")
        );
        assert_eq!(
            alert_type(Some("FILE"), Some("block png files")),
            Some("ALERT_CABINET_EVENT_MATCH_FILE")
        );
        assert_eq!(
            alert_type(Some("ANOMALY_DETECTION"), Some("A custom one")),
            None
        );
        assert_eq!(alert_type(None, None), None);
    }

    #[test]
    fn descriptions_lose_their_html_and_markers() {
        assert_eq!(
            plain_text("<p>The user <b>John</b> &amp; co __siteIcon__ signed in from <a href=\"#/subnet\">IP range</a>.</p>"),
            "The user John & co signed in from IP range ."
        );
        assert_eq!(
            plain_text("File policy 'x' __siteIcon__ was matched"),
            "File policy 'x' was matched"
        );
        assert_eq!(plain_text("a < b"), "a < b");
    }
}
