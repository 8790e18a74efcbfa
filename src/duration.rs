//! ISO 8601 durations (`P1D`, `PT5M`, `P1DT12H`), the form the settings use.

use std::time::Duration;

/// A duration setting that is not of the form `PnDTnHnMnS`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an ISO 8601 duration such as P1D, PT30M or P1DT12H (years, months and weeks are not accepted: their length varies)")]
pub(crate) struct InvalidDuration(pub String);

/// Parses `PnDTnHnMnS` (each part optional, seconds may have a fraction).
pub(crate) fn parse_iso8601(text: &str) -> Result<Duration, InvalidDuration> {
    let bad = || InvalidDuration(text.to_string());
    let rest = text.trim().strip_prefix(['P', 'p']).ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    let mut secs = 0f64;
    secs += parse_parts(date, &[('D', 86_400.0)]).ok_or_else(bad)?;
    if let Some(t) = time {
        secs += parse_parts(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)]).ok_or_else(bad)?;
    }
    if !secs.is_finite() || !(0.0..=10.0 * 365.0 * 86_400.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Sums `<number><unit>` runs whose units appear in `units`, in that order.
fn parse_parts(mut s: &str, units: &[(char, f64)]) -> Option<f64> {
    let mut total = 0.0;
    let mut next_unit = 0;
    while !s.is_empty() {
        let end = s.find(|c: char| c.is_ascii_alphabetic())?;
        let number: f64 = s[..end].parse().ok()?;
        let unit = s[end..].chars().next()?.to_ascii_uppercase();
        let pos = units[next_unit..].iter().position(|(u, _)| *u == unit)? + next_unit;
        total += number * units[pos].1;
        next_unit = pos + 1;
        s = &s[end + 1..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_days_hours_minutes_seconds() {
        assert_eq!(parse_iso8601("P1D"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_iso8601("PT5M"), Ok(Duration::from_secs(300)));
        assert_eq!(
            parse_iso8601("P1DT1H1M1.5S"),
            Ok(Duration::from_secs_f64(90_061.5))
        );
        assert_eq!(parse_iso8601("PT0S"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_and_variable_length_units() {
        for bad in [
            "", "P", "PT", "1D", "P1M", "P1Y", "PT1D", "PT5M1H", "P-1D", "PxD",
        ] {
            assert!(parse_iso8601(bad).is_err(), "{bad} should be rejected");
        }
    }
}
