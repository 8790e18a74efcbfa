//! The checks only a whole list of settings allows: a name in our namespaces (`CAS_`,
//! `SENTINEL_`, `GRAPH_`) that is no setting, most likely a misspelling, whose value would
//! otherwise be silently ignored; and a Key Vault reference the platform did not resolve,
//! whose literal text would otherwise be used as the value.

use super::doc::SETTINGS;
use super::SettingError;

/// The problems of the names and values in `pairs`.
pub(super) fn check<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    tenants: &[crate::model::TenantName],
) -> Vec<SettingError> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        if let Some(e) = unknown(name).or_else(|| super::tenants::check_scoped(name, tenants)) {
            out.push(e);
        }
        if value.trim_start().starts_with("@Microsoft.KeyVault(") {
            out.push(SettingError::Unrecognised {
                name: name.to_string(),
                reason: "is an unresolved Key Vault reference: the app's identity cannot read the secret (grant it Key Vault Secrets User on the vault), or the reference is malformed; the Functions host passes the literal text then".into(),
            });
        }
    }
    out.dedup();
    out
}

/// Whether `name` is in our settings' namespaces (`CAS_`, `SENTINEL_`, `GRAPH_`), known or not.
pub(super) fn our_prefix(name: &str) -> bool {
    ["CAS_", "SENTINEL_", "GRAPH_"]
        .iter()
        .any(|p| name.starts_with(p))
}

pub(super) fn unknown(name: &str) -> Option<SettingError> {
    let ours = our_prefix(name);
    // CAS_SENTINEL_* are the development tools' own variables (the harness, the benchmark).
    if !ours || name.starts_with("CAS_SENTINEL_") || SETTINGS.iter().any(|s| s.name == name) {
        return None;
    }
    let nearest = SETTINGS
        .iter()
        .map(|s| (distance(name, s.name), s.name))
        .min()
        .filter(|(d, _)| *d <= 3);
    let reason = match nearest {
        Some((_, n)) => format!("is not a setting; did you mean {n}? (the value is not used)"),
        None => "is not a setting (the value is not used); the README lists them".into(),
    };
    Some(SettingError::Unrecognised {
        name: name.to_string(),
        reason,
    })
}

/// Edit distance (insertions, deletions, substitutions) between two ASCII names.
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        check(pairs.iter().copied(), &[])
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn a_misspelt_setting_is_named_with_the_nearest_one() {
        assert_eq!(
            problems(&[("CAS_DATA_TYPE", "alerts")]),
            vec!["CAS_DATA_TYPE: is not a setting; did you mean CAS_DATA_TYPES? (the value is not used)"]
        );
        assert_eq!(problems(&[("SENTINEL_STREAMS", "x")]).len(), 1);
        assert!(problems(&[
            ("CAS_DATA_TYPES", "alerts"),
            ("PATH", "/bin"),
            ("AZURE_CLIENT_ID", "x"),
            ("CAS_SENTINEL_HANDLER_LOG", "x")
        ])
        .is_empty());
    }

    #[test]
    fn an_unresolved_key_vault_reference_is_named() {
        let p = problems(&[(
            "CAS_API_TOKEN",
            "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/cas/)",
        )]);
        assert!(
            p.len() == 1 && p[0].starts_with("CAS_API_TOKEN: is an unresolved Key Vault reference"),
            "{p:?}"
        );
    }

    #[test]
    fn the_whole_environment_is_checked_and_every_problem_reported_at_once() {
        let pairs = [
            (
                "CAS_API_URL",
                "https://contoso.us2.portal.cloudappsecurity.com",
            ),
            (
                "SENTINEL_INGESTION_ENDPOINT",
                "https://x.westeurope-1.ingest.monitor.azure.com",
            ),
            (
                "SENTINEL_DCR_IMMUTABLE_ID",
                "dcr-00000000000000000000000000000001",
            ),
            ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
            ("CAS_LOG_FORMAT", "xml"),
            ("CAS_DATA_TYPE", "alerts"),
            (
                "AZURE_CLIENT_SECRET",
                "@Microsoft.KeyVault(VaultName=kv;SecretName=s)",
            ),
        ];
        let err = super::super::Settings::from_pairs(&pairs)
            .unwrap_err()
            .to_string();
        for part in [
            "CAS_LOG_FORMAT: \"xml\"",
            "did you mean CAS_DATA_TYPES",
            "AZURE_CLIENT_SECRET: is an unresolved Key Vault reference",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }

    #[test]
    fn every_described_setting_is_known() {
        for s in SETTINGS {
            assert!(unknown(s.name).is_none(), "{}", s.name);
        }
        assert_eq!(distance("CAS_DATA_TYPE", "CAS_DATA_TYPES"), 1);
    }
}
