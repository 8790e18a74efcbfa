//! Several Defender for Cloud Apps tenants from one deployment. `CAS_TENANTS` names them;
//! each reads its settings as `<name>__<SETTING>`, falling back to the unprefixed setting,
//! so what the tenants share is set once and what differs (the API URL, the Entra tenant,
//! a secret, a DCR) per tenant. App settings, not a file: a Key Vault reference works for
//! any one value.
//!
//! A few settings belong to the deployment, not to a tenant (the storage account and its
//! queue, the schedule and budget of the invocations they share, the log format): one
//! value serves every tenant, and a `<name>__` copy of one is refused rather than ignored.

use super::SettingError;
use crate::model::TenantName;

/// The settings one deployment holds for all its tenants.
const DEPLOYMENT_WIDE: &[&str] = &[
    "CAS_TENANTS",
    "CAS_UNNAMED_TENANT",
    "CAS_QUEUE_NAME",
    "CAS_INVOCATION_BUDGET",
    "CAS_SCHEDULE",
    "CAS_LOG_FORMAT",
    "CAS_STORAGE_SAS_LIFETIME",
    "CAS_FEDERATED_IDENTITY_CLIENT_ID",
    "IDENTITY_ENDPOINT",
    "MSI_ENDPOINT",
];

/// Whether `name` is the deployment's alone (see the module's comment).
pub(crate) fn deployment_wide(name: &str) -> bool {
    DEPLOYMENT_WIDE.contains(&name) || name.starts_with("AzureWebJobsStorage")
}

/// `CAS_TENANTS`: `None` when unset (one unnamed tenant, as before the setting existed).
pub(crate) fn parse_tenants(
    value: Option<String>,
) -> Result<Option<Vec<TenantName>>, SettingError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let invalid = |reason: String| SettingError::Invalid {
        name: "CAS_TENANTS",
        reason,
    };
    let mut out: Vec<TenantName> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let name: TenantName = part.parse().map_err(|e| invalid(format!("{e}")))?;
        if out.contains(&name) {
            return Err(invalid(format!("names {name} twice")));
        }
        out.push(name);
    }
    if out.is_empty() {
        return Err(invalid(
            "names no tenant (leave it unset for one unnamed tenant)".into(),
        ));
    }
    Ok(Some(out))
}

/// The settings a named tenant must give as its own: which CAS it reads. A tenant that
/// fell back to the shared URL would read another tenant's CAS and send its records again
/// under its own name.
const OWN: &[&str] = &["CAS_API_URL"];

/// How a tenant signs in, read as one: a tenant that gives any of them as `<name>__` reads
/// all of them so, and one that gives none signs in as the deployment does. Mixing would
/// pair a tenant's own choice with the deployment's secret or token (which wins over it)
/// and send one tenant's credential to another's API.
const CREDENTIAL: &[&str] = &[
    "CAS_API_TOKEN",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "CAS_CREDENTIAL",
];

/// The lookup a named tenant reads its settings through: its own `<name>__` value, else
/// the shared one, but for [`OWN`] and the [`CREDENTIAL`] group (see each); a
/// deployment-wide setting is always the shared one. The tenant that adopts the unnamed
/// tenant (`CAS_UNNAMED_TENANT`) reads the unprefixed settings as its own.
pub(crate) fn scoped<'a>(
    tenant: &'a TenantName,
    adopter: bool,
    get: &'a dyn Fn(&str) -> Option<String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    let own_credential = CREDENTIAL
        .iter()
        .any(|n| get(&format!("{tenant}__{n}")).is_some());
    move |name: &str| {
        if deployment_wide(name) {
            return get(name);
        }
        let own = get(&format!("{tenant}__{name}"));
        // The adopter's own settings are the unprefixed ones, but for its credential: one
        // it gives its own of is read whole from its own, as any tenant's.
        let shared =
            !(own_credential && CREDENTIAL.contains(&name)) && (adopter || !OWN.contains(&name));
        if shared {
            own.or_else(|| get(name))
        } else {
            own
        }
    }
}

/// A `<prefix>__<SETTING>` name split in two, when `SETTING` is one of ours (so an
/// unrelated `AzureWebJobsStorage__accountName` is left alone).
pub(super) fn split_scoped(name: &str) -> Option<(&str, &str)> {
    let (prefix, setting) = name.split_once("__")?;
    let ours =
        super::doc::SETTINGS.iter().any(|s| s.name == setting) || super::names::our_prefix(setting);
    (ours && !prefix.is_empty()).then_some((prefix, setting))
}

/// The problem with a `<prefix>__<SETTING>` name, if it has one: a tenant `CAS_TENANTS`
/// does not list, or a setting no tenant may have its own of.
pub(super) fn check_scoped(name: &str, tenants: &[TenantName]) -> Option<SettingError> {
    let (prefix, setting) = split_scoped(name)?;
    let reason = if !tenants.iter().any(|t| t.as_str() == prefix) {
        match tenants {
            [] => format!("is for tenant {prefix:?}, but CAS_TENANTS is not set (the value is not used)"),
            _ => format!(
                "is for tenant {prefix:?}, which CAS_TENANTS does not list ({}); the value is not used",
                tenants.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",")
            ),
        }
    } else if deployment_wide(setting) {
        format!("{setting} is the deployment's, one value for every tenant: set {setting} itself")
    } else if !super::doc::SETTINGS.iter().any(|s| s.name == setting) {
        return super::names::unknown(setting).map(|e| SettingError::Unrecognised {
            name: name.to_string(),
            reason: e.to_string(),
        });
    } else {
        return None;
    };
    Some(SettingError::Unrecognised {
        name: name.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<TenantName> {
        parse_tenants(Some(list.into())).unwrap().unwrap()
    }

    #[test]
    fn the_list_is_checked_and_each_problem_named() {
        assert_eq!(parse_tenants(None), Ok(None));
        assert_eq!(names(" contoso, fabrikam-eu ,").len(), 2);
        for (bad, why) in [
            ("contoso,Fabrikam", "invalid tenant name \"Fabrikam\""),
            ("contoso,contoso", "names contoso twice"),
            (" , ", "names no tenant"),
            ("con_toso", "lowercase letters, digits and '-'"),
        ] {
            let e = parse_tenants(Some(bad.into())).unwrap_err().to_string();
            assert!(
                e.starts_with("CAS_TENANTS") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_tenant_reads_its_own_value_then_the_shared_one_but_never_its_own_storage() {
        let pairs = [
            ("CAS_API_URL", "https://shared"),
            ("contoso__CAS_API_URL", "https://contoso"),
            ("CAS_QUEUE_NAME", "q"),
            ("contoso__CAS_QUEUE_NAME", "mine"),
            ("CAS_LOOKBACK", "PT1H"),
            ("AZURE_CLIENT_SECRET", "the deployment's"),
            ("AZURE_TENANT_ID", "home"),
            ("fabrikam__CAS_CREDENTIAL", "federated"),
        ];
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let [contoso, fabrikam] = [names("contoso"), names("fabrikam")].map(|mut v| v.remove(0));
        let c = scoped(&contoso, false, &get);
        let f = scoped(&fabrikam, false, &get);
        assert_eq!(c("CAS_API_URL").as_deref(), Some("https://contoso"));
        assert_eq!(
            f("CAS_API_URL"),
            None,
            "which CAS a tenant reads is its own to say"
        );
        assert_eq!(c("CAS_QUEUE_NAME").as_deref(), Some("q"));
        assert_eq!(f("CAS_LOOKBACK").as_deref(), Some("PT1H"));
        // contoso gives no credential of its own: it signs in as the deployment does;
        // fabrikam gives one: the deployment's secret and tenant are not mixed into it.
        assert_eq!(
            c("AZURE_CLIENT_SECRET").as_deref(),
            Some("the deployment's")
        );
        assert_eq!(f("AZURE_CLIENT_SECRET"), None);
        assert_eq!(f("AZURE_TENANT_ID"), None);
        // The adopter of the unnamed tenant reads the unprefixed settings as its own.
        let a = scoped(&fabrikam, true, &get);
        assert_eq!(a("CAS_API_URL").as_deref(), Some("https://shared"));
        // But for a credential it gives its own of, read whole from its own.
        assert_eq!(a("AZURE_CLIENT_SECRET"), None);
        assert_eq!(a("CAS_CREDENTIAL").as_deref(), Some("federated"));
        let a = scoped(&contoso, true, &get);
        assert_eq!(a("AZURE_TENANT_ID").as_deref(), Some("home"));
    }

    #[test]
    fn a_scoped_name_for_no_tenant_or_a_deployment_setting_is_named() {
        let t = names("contoso,fabrikam");
        let msg = |n: &str| check_scoped(n, &t).map(|e| e.to_string());
        assert_eq!(msg("contoso__CAS_API_URL"), None);
        assert_eq!(msg("fabrikam__AZURE_CLIENT_SECRET"), None);
        assert_eq!(msg("AzureWebJobsStorage__accountName"), None);
        let e = msg("contosso__CAS_API_URL").unwrap();
        assert!(
            e.contains("CAS_TENANTS does not list (contoso,fabrikam)"),
            "{e}"
        );
        let e = msg("contoso__CAS_QUEUE_NAME").unwrap();
        assert!(e.contains("the deployment's"), "{e}");
        let e = msg("contoso__CAS_LOOKBAK").unwrap();
        assert!(e.contains("did you mean CAS_LOOKBACK"), "{e}");
        let e = check_scoped("contoso__CAS_API_URL", &[])
            .unwrap()
            .to_string();
        assert!(e.contains("CAS_TENANTS is not set"), "{e}");
    }
}
