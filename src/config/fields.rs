//! Parsers for one setting each, shared by the sections: switches, durations, counts,
//! service URLs; and the [`Collector`] that gathers every problem instead of the first.

use super::SettingError;
use crate::duration::parse_iso8601;
use crate::loopback::{check_https_or_loopback, is_loopback};
use std::time::Duration;
use url::Url;

/// An on/off setting (`on`, `true`, `1`, `yes` / `off`, `false`, `0`, `no`).
pub(crate) fn parse_switch(
    name: &'static str,
    value: Option<String>,
    default: bool,
) -> Result<bool, SettingError> {
    match value.map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("on" | "true" | "1" | "yes") => Ok(true),
        Some("off" | "false" | "0" | "no") => Ok(false),
        Some(other) => Err(SettingError::Invalid {
            name,
            reason: format!("{other:?}: expected on or off"),
        }),
    }
}

/// A placeholder URL for a setting that failed (never used: a failure returns).
pub(crate) fn placeholder_url() -> Url {
    Url::parse("http://127.0.0.1/").expect("a valid URL")
}

/// A duration setting (`default` when unset) that must lie in `range` (in seconds); the
/// error says `why` after the value.
pub(crate) fn parse_duration_within(
    name: &'static str,
    value: Option<String>,
    default: &str,
    range: std::ops::RangeInclusive<u64>,
    why: impl FnOnce(Duration) -> String,
) -> Result<Duration, SettingError> {
    let d = parse_duration(name, value, default)?;
    if range.contains(&d.as_secs()) {
        return Ok(d);
    }
    Err(SettingError::Invalid {
        name,
        reason: why(d),
    })
}

/// Gathers every setting error instead of stopping at the first.
pub(crate) struct Collector(pub(crate) Vec<SettingError>);

impl Collector {
    /// The value, or `placeholder` with the error recorded.
    pub(crate) fn take<T>(&mut self, r: Result<T, SettingError>, placeholder: T) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(e);
            placeholder
        })
    }
}

pub(super) fn required(
    get: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    hint: &'static str,
) -> Result<String, SettingError> {
    get(name).ok_or(SettingError::Missing { name, hint })
}

/// A whole number setting within `range`, `default` when unset; `explain` completes the
/// error, after the value given.
pub(crate) fn parse_count<T>(
    name: &'static str,
    value: Option<String>,
    default: T,
    range: std::ops::RangeInclusive<T>,
    explain: &str,
) -> Result<T, SettingError>
where
    T: std::str::FromStr + PartialOrd,
{
    let Some(v) = value else { return Ok(default) };
    match v.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(SettingError::Invalid {
            name,
            reason: format!("{v:?}: {explain}"),
        }),
    }
}

/// A service's base URL: https on a host `known` accepts (a token for the service is sent
/// there), or http(s) on a loopback address for local work; `hosts` says which in the error.
pub(crate) fn parse_service_url(
    name: &'static str,
    text: &str,
    known: impl Fn(&str) -> bool,
    hosts: &str,
) -> Result<Url, SettingError> {
    let bad = |reason: String| SettingError::Invalid { name, reason };
    let url = Url::parse(text).map_err(|e| bad(format!("{text:?} is not a URL: {e}")))?;
    if is_loopback(&url) && matches!(url.scheme(), "http" | "https") {
        return Ok(url);
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if url.scheme() != "https" || !known(&host) {
        return Err(bad(format!(
            "{text:?} must be https on {hosts} (or http on a loopback address for local work)"
        )));
    }
    Ok(url)
}

pub(super) fn parse_https_url(name: &'static str, text: &str) -> Result<Url, SettingError> {
    let url = Url::parse(text).map_err(|e| SettingError::Invalid {
        name,
        reason: format!("{text:?} is not a URL: {e}"),
    })?;
    check_https_or_loopback(&url).map_err(|reason| SettingError::Invalid { name, reason })?;
    Ok(url)
}

/// An ISO 8601 duration setting, `default` when unset.
pub(crate) fn parse_duration(
    name: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<Duration, SettingError> {
    parse_iso8601(value.as_deref().unwrap_or(default)).map_err(|e| SettingError::Invalid {
        name,
        reason: e.to_string(),
    })
}
