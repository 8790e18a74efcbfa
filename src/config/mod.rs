//! Settings, read once from the environment (Functions app settings) and checked as a
//! whole, so one start-up reports every problem at once and names the setting to change.
//! One file per section ([`CasSettings`], [`DiscoverySettings`], [`SentinelSettings`],
//! [`StorageSettings`], the host's budget and schedule), the field parsers they share, and
//! [`doc`], which describes each setting once, for the README and the tests. Nothing here
//! imports the code that uses the settings.

mod cas;
pub(crate) mod discovery;
pub(crate) mod doc;
mod fields;
mod host;
mod logs_ingestion;
mod names;
pub(crate) mod storage;
mod tenants;

pub use cas::ApiSource;
pub use cas::CasSettings;
pub use discovery::DiscoverySettings;
pub(crate) use host::DEFAULT_SCHEDULE;
pub(crate) use logs_ingestion::{SentinelSettings, MAX_CALL_BYTES};
pub use storage::StorageSettings;
pub(crate) use storage::{StorageAuth, StorageConfigError};

use crate::model::{DataType, TenantName};
use crate::secret::Secret;
use fields::Collector;
use host::{check_schedule, parse_budget};
use std::time::Duration;
use storage::{check_queue_name, parse_sas_lifetime};

/// Every setting the handler and the CLI use, for one tenant (see [`Settings::all_from_pairs`]).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The tenant's name, when `CAS_TENANTS` names the deployment's tenants; `None` for the
    /// one unnamed tenant of a deployment without it.
    pub tenant: Option<TenantName>,
    /// This named tenant was the deployment's one unnamed tenant before `CAS_TENANTS`
    /// (`CAS_UNNAMED_TENANT`): it goes on from the unnamed tenant's checkpoints and takes
    /// the messages queued without a tenant, so turning `CAS_TENANTS` on sends nothing again.
    pub adopts_unnamed: bool,
    /// Which data types a poll pulls.
    pub data_types: Vec<DataType>,
    /// The CAS tenant and how to read it.
    pub cas: CasSettings,
    /// Shadow IT discovery through Microsoft Graph.
    pub discovery: DiscoverySettings,
    /// Why discovery is off although `CAS_DATA_TYPES` did not leave it out, if it is.
    pub discovery_off: Option<&'static str>,
    /// The Logs Ingestion target.
    pub sentinel: SentinelSettings,
    /// The Entra identity used for CAS (when no legacy token) and Graph: the tenant's own.
    pub identity: IdentitySettings,
    /// The deployment's own identity, for Logs Ingestion and storage, which live in the
    /// deployment's Entra tenant whichever tenant the records come from: the unprefixed
    /// identity settings (for the unnamed tenant, the same as [`Settings::identity`]).
    pub home_identity: IdentitySettings,
    /// The storage account for the queue and the checkpoint blobs.
    pub storage: StorageSettings,
    /// The fan-out queue; its poison queue is `<name>-poison`.
    pub queue_name: String,
    /// How long one invocation may spend (keep it below functionTimeout); a poll stops
    /// there and leaves the rest to the next run, an ingest stops retrying.
    pub invocation_budget: Duration,
    /// The PollCas timer's NCRONTAB schedule (`CAS_SCHEDULE`): the host reads it from the
    /// app setting through `%CAS_SCHEDULE%` in `function.json`; it is checked here so a
    /// typo is named at start-up and by `validate`, not only in the host's own logs.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // read by the tests alone
    pub schedule: String,
}

/// The Entra identity: a client secret when given, else managed identity in Azure, else
/// (a laptop) the operator's own Azure CLI login.
#[derive(Clone, Debug, Default)]
pub struct IdentitySettings {
    /// `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_ID`: the app with a secret, or a user-assigned managed identity.
    pub client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`.
    pub client_secret: Option<Secret>,
    /// Without a secret: managed identity, the Azure CLI login, or the app signed in by
    /// the managed identity (`CAS_CREDENTIAL`).
    pub without_secret: Credential,
    /// With [`Credential::Federated`]: the user-assigned managed identity whose token is
    /// the app's assertion (`CAS_FEDERATED_IDENTITY_CLIENT_ID`); `None`, the system-assigned.
    pub federated_identity: Option<String>,
}

/// What stands in for a client secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Credential {
    /// The platform's managed identity (App Service, Functions, a VM).
    #[default]
    ManagedIdentity,
    /// The operator's `az login`, for the CLI commands run from a laptop.
    AzureCli,
    /// The Entra app `AZURE_CLIENT_ID`, consented in `AZURE_TENANT_ID`, signed in with a
    /// token of the deployment's managed identity as its client assertion: the app trusts
    /// the identity as a federated credential, so there is no secret to store or rotate.
    /// Microsoft's way for one deployment to read other tenants.
    Federated,
}

/// `CAS_CREDENTIAL`: `managed-identity`, `azure-cli`, or `auto` (unset): managed identity
/// where the platform offers one (App Service and Functions set `IDENTITY_ENDPOINT`, older
/// hosts `MSI_ENDPOINT`), the Azure CLI login elsewhere.
fn parse_credential(
    value: Option<String>,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Credential, SettingError> {
    match value.map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("auto") => Ok(
            if get("IDENTITY_ENDPOINT").is_some() || get("MSI_ENDPOINT").is_some() {
                Credential::ManagedIdentity
            } else {
                Credential::AzureCli
            },
        ),
        Some("managed-identity") => Ok(Credential::ManagedIdentity),
        Some("azure-cli") => Ok(Credential::AzureCli),
        Some("federated") => Ok(Credential::Federated),
        Some(other) => Err(SettingError::Invalid {
            name: "CAS_CREDENTIAL",
            reason: format!("{other:?}: expected auto, managed-identity, azure-cli or federated"),
        }),
    }
}

/// One problem with one setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingError {
    /// A required setting is absent.
    #[error("{name} is not set: {hint}")]
    Missing {
        /// The setting.
        name: &'static str,
        /// What it should hold.
        hint: &'static str,
    },
    /// A setting is present but unusable.
    #[error("{name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// The storage setting is unusable.
    #[error(transparent)]
    Storage(#[from] StorageConfigError),
    /// A named tenant's setting is unusable (read as `<tenant>__<SETTING>`, else the
    /// shared `<SETTING>`).
    #[error("tenant {tenant}: {error}")]
    Tenant {
        /// The tenant.
        tenant: TenantName,
        /// Its problem.
        error: Box<SettingError>,
    },
    /// A name or value only the whole list of settings reveals: a name in our namespaces
    /// that is no setting, or a Key Vault reference the platform did not resolve.
    #[error("{name}: {reason}")]
    Unrecognised {
        /// The name as given.
        name: String,
        /// What is wrong and what would be right.
        reason: String,
    },
}

/// Every problem found in the settings.
#[derive(Debug, thiserror::Error)]
#[error("{} setting problem(s): {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct SettingsErrors(pub Vec<SettingError>);

/// Default for `CAS_QUEUE_NAME`.
pub(crate) const DEFAULT_QUEUE: &str = "cas-batches";

impl Settings {
    /// Reads the process environment: every tenant's settings.
    pub fn all_from_env() -> Result<Vec<Self>, SettingsErrors> {
        let pairs: Vec<(String, String)> = std::env::vars().collect();
        Self::all_from_pairs(&pairs)
    }

    /// The environment, for the commands that touch storage alone (`status`, `replay`): the
    /// CAS and Logs Ingestion settings they never use are not demanded. Placeholders on a
    /// closed loopback port stand in for the unset ones, and no call is ever made to them;
    /// a setting that is set is still checked.
    pub fn all_from_env_for_storage() -> Result<Vec<Self>, SettingsErrors> {
        let mut pairs: Vec<(String, String)> = [
            ("CAS_API_URL", "http://127.0.0.1:9/"),
            ("SENTINEL_INGESTION_ENDPOINT", "http://127.0.0.1:9/"),
            (
                "SENTINEL_DCR_IMMUTABLE_ID",
                "dcr-00000000000000000000000000000000",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        pairs.extend(std::env::vars());
        Self::all_from_pairs(&pairs)
    }

    /// Reads settings from name/value pairs (a later pair overrides an earlier one): the
    /// environment, or what the local harness, the benchmark and tests build. Unlike
    /// [`Settings::from_lookup`], it sees every name, so a misspelt setting and a Key Vault
    /// reference the platform did not resolve are reported too.
    ///
    /// With `CAS_TENANTS` it is the first tenant's; [`Settings::all_from_pairs`] reads them all.
    #[cfg(any(test, feature = "sim"))]
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: &[(K, V)],
    ) -> Result<Self, SettingsErrors> {
        Self::all_from_pairs(pairs).map(|mut all| all.swap_remove(0))
    }

    /// Every tenant's settings from name/value pairs: one unnamed tenant without
    /// `CAS_TENANTS`, else one per name it lists, each read through its `<name>__` prefix
    /// (see `config::tenants`). Never empty.
    pub fn all_from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: &[(K, V)],
    ) -> Result<Vec<Self>, SettingsErrors> {
        let get = |name: &str| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k.as_ref() == name)
                .map(|(_, v)| v.as_ref().to_string())
        };
        let tenants = match Self::tenant_names(&get) {
            Ok(t) => t,
            Err(e) => return Err(SettingsErrors(vec![e])),
        };
        let named = names::check(
            pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
            tenants.as_deref().unwrap_or(&[]),
        );
        match (Self::read_all(tenants.as_deref(), &get), named.is_empty()) {
            (Ok(s), true) => Ok(s),
            (Ok(_), false) => Err(SettingsErrors(named)),
            (Err(mut e), _) => {
                e.0.extend(named);
                Err(e)
            }
        }
    }

    /// `CAS_TENANTS`, read through `get`.
    fn tenant_names(
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Vec<TenantName>>, SettingError> {
        tenants::parse_tenants(trimmed(get)("CAS_TENANTS"))
    }

    /// Every tenant's settings through `get` (see [`Settings::all_from_pairs`], which also
    /// checks the names of the whole list). Never empty.
    #[cfg(test)]
    pub fn all_from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Self>, SettingsErrors> {
        let tenants = Self::tenant_names(get).map_err(|e| SettingsErrors(vec![e]))?;
        Self::read_all(tenants.as_deref(), get)
    }

    /// The unnamed tenant's settings, or each of `tenants`'.
    fn read_all(
        tenants: Option<&[TenantName]>,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Self>, SettingsErrors> {
        match tenants {
            None => Self::from_lookup(get).map(|s| vec![s]),
            Some(list) => Self::read_tenants(list, get),
        }
    }

    /// Each named tenant's settings through its scoped lookup; every tenant's problems at
    /// once, each under its name.
    fn read_tenants(
        list: &[TenantName],
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Settings>, SettingsErrors> {
        let home = Self::from_lookup_identity(get);
        let (mut out, mut errs) = (Vec::new(), Vec::new());
        let adopter = trimmed(get)("CAS_UNNAMED_TENANT");
        if let Some(a) = &adopter {
            if !list.iter().any(|t| t.as_str() == a) {
                errs.push(SettingError::Invalid {
                    name: "CAS_UNNAMED_TENANT",
                    reason: format!("{a:?} is not in CAS_TENANTS"),
                });
            }
        }
        for t in list {
            let adopts = adopter.as_deref() == Some(t.as_str());
            let scoped = tenants::scoped(t, adopts, get);
            match Self::from_lookup(&scoped) {
                Ok(mut s) => {
                    s.tenant = Some(t.clone());
                    s.adopts_unnamed = adopts;
                    // A problem with the home identity is reported once, below.
                    if let Ok(h) = &home {
                        s.home_identity = h.clone();
                        if let Some(e) = default_federated_identity(&mut s.identity, h) {
                            errs.push(SettingError::Tenant {
                                tenant: t.clone(),
                                error: Box::new(e),
                            });
                        }
                    }
                    out.push(s);
                }
                Err(e) => errs.extend(e.0.into_iter().map(|error| SettingError::Tenant {
                    tenant: t.clone(),
                    error: Box::new(error),
                })),
            }
        }
        if let Err(e) = home {
            errs.push(e);
        }
        // Two tenants reading one CAS would send its records twice, under two names.
        for (i, a) in out.iter().enumerate() {
            if let Some(b) = out[..i].iter().find(|b| b.cas.api_url == a.cas.api_url) {
                errs.push(SettingError::Invalid {
                    name: "CAS_TENANTS",
                    reason: format!(
                        "tenants {} and {} read the same CAS API ({}): each tenant's <name>__CAS_API_URL is its own",
                        b.tenant.as_ref().map_or("", TenantName::as_str),
                        a.tenant.as_ref().map_or("", TenantName::as_str),
                        a.cas.api_url
                    ),
                });
            }
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(SettingsErrors(errs))
        }
    }

    /// The deployment's own identity (the unprefixed settings), for a named tenant's Logs
    /// Ingestion and storage.
    fn from_lookup_identity(
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<IdentitySettings, SettingError> {
        let get = trimmed(get);
        let mut errs = Collector(Vec::new());
        let identity = read_identity(&get, &mut errs);
        if identity.without_secret == Credential::Federated {
            return Err(SettingError::Invalid {
                name: "CAS_CREDENTIAL",
                reason: "federated is for the tenants' CAS and Graph reads; the deployment's own identity (Logs Ingestion, storage) is its managed identity or a client secret: set federated as <tenant>__CAS_CREDENTIAL".into(),
            });
        }
        match errs.0.pop() {
            None => Ok(identity),
            Some(e) => Err(e),
        }
    }

    /// Reads settings through `get` (a map in tests, the environment in production), as
    /// the one unnamed tenant.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsErrors> {
        let get = trimmed(get);
        let mut errs = Collector(Vec::new());
        let mut data_types = errs.take(parse_data_types(get("CAS_DATA_TYPES")), Vec::new());
        let discovery = DiscoverySettings::read(&get, &mut errs);
        // Discovery reads Graph with the Entra identity, never with CAS_API_TOKEN. A
        // deployment that chose the legacy token and did not ask for discovery by name has
        // most likely not granted that identity Graph's permission: leave discovery out
        // and say so, rather than fail every run with 403.
        let discovery_off = (get("CAS_API_TOKEN").is_some() && get("CAS_DATA_TYPES").is_none())
            .then_some(DISCOVERY_NEEDS_ENTRA);
        if discovery_off.is_some() {
            data_types.retain(|d| *d != DataType::Discovery);
        }
        let cas = CasSettings::from_lookup(&get, &mut errs);
        let sentinel = SentinelSettings::from_lookup(&get, &mut errs);
        let invocation_budget =
            errs.take(parse_budget(get("CAS_INVOCATION_BUDGET")), Duration::ZERO);
        let queue_name = errs.take(
            check_queue_name(get("CAS_QUEUE_NAME").unwrap_or_else(|| DEFAULT_QUEUE.into())),
            String::new(),
        );
        // Read by the logging set-up before the settings (which falls back to text on any
        // other value); checked here so a typo is named instead of silently changing the
        // format the monitor alerts read.
        if let Some(f) = get("CAS_LOG_FORMAT") {
            if !matches!(f.to_ascii_lowercase().as_str(), "json" | "text") {
                errs.0.push(SettingError::Invalid {
                    name: "CAS_LOG_FORMAT",
                    reason: format!(
                        "{f:?}: expected json or text (the monitor alerts read the JSON lines)"
                    ),
                });
            }
        }
        let schedule = errs.take(
            check_schedule(get("CAS_SCHEDULE").unwrap_or_else(|| DEFAULT_SCHEDULE.into())),
            String::new(),
        );
        let sas_lifetime = errs.take(
            parse_sas_lifetime(get("CAS_STORAGE_SAS_LIFETIME")),
            Duration::ZERO,
        );
        let storage = StorageSettings::from_lookup(&get)
            .map(|s| StorageSettings { sas_lifetime, ..s })
            .map_err(|e| errs.0.push(e.into()))
            .ok();

        let identity = read_identity(&get, &mut errs);
        // Placeholders stand in for failed settings only until here: any failure returns.
        let (Some(storage), true) = (storage, errs.0.is_empty()) else {
            return Err(SettingsErrors(errs.0));
        };
        Ok(Settings {
            tenant: None,
            adopts_unnamed: false,
            home_identity: identity.clone(),
            identity,
            data_types,
            discovery,
            discovery_off,
            cas,
            sentinel,
            storage,
            queue_name,
            invocation_budget,
            schedule,
        })
    }

    /// The tenant this tenant's queue messages, batch ids, checkpoints and ledger entries
    /// name, and its rows carry: none for the unnamed tenant and for the tenant that
    /// adopted it (`CAS_UNNAMED_TENANT`), which go on exactly as the unnamed one did, so
    /// nothing is sent twice and no query sees its alerts change tenant.
    pub fn message_tenant(&self) -> Option<&TenantName> {
        self.tenant.as_ref().filter(|_| !self.adopts_unnamed)
    }

    /// The poison queue the host moves failed messages to.
    pub fn poison_queue_name(&self) -> String {
        format!("{}-poison", self.queue_name)
    }
}

/// A federated tenant whose assertion identity is not named takes the deployment's own
/// managed identity: the user-assigned one (`AZURE_CLIENT_ID`, as infra/ deploys it) or
/// the system-assigned one. Returns the problem if the app it signs in is that identity.
fn default_federated_identity(
    identity: &mut IdentitySettings,
    home: &IdentitySettings,
) -> Option<SettingError> {
    if identity.without_secret != Credential::Federated || identity.federated_identity.is_some() {
        return None;
    }
    if home.client_secret.is_none() && home.without_secret == Credential::ManagedIdentity {
        identity.federated_identity = home.client_id.clone();
    }
    match (&identity.client_id, &identity.federated_identity) {
        (Some(app), Some(mi)) if app == mi => Some(SettingError::Invalid {
            name: "AZURE_CLIENT_ID",
            reason: format!("{app} is the deployment's managed identity, which signs the app in (CAS_CREDENTIAL=federated); set <tenant>__AZURE_CLIENT_ID to the multi-tenant app's id"),
        }),
        _ => None,
    }
}

/// The identity settings, checked: a federated sign-in names its app and tenant, and an app
/// that is not the managed identity signing it in.
fn read_identity(get: &dyn Fn(&str) -> Option<String>, errs: &mut Collector) -> IdentitySettings {
    let without_secret = errs.take(
        parse_credential(get("CAS_CREDENTIAL"), get),
        Credential::ManagedIdentity,
    );
    let identity = IdentitySettings {
        tenant_id: get("AZURE_TENANT_ID"),
        client_id: get("AZURE_CLIENT_ID"),
        client_secret: get("AZURE_CLIENT_SECRET").map(Secret::new),
        without_secret,
        federated_identity: get("CAS_FEDERATED_IDENTITY_CLIENT_ID"),
    };
    if without_secret == Credential::Federated && identity.client_secret.is_some() {
        errs.0.push(SettingError::Invalid {
            name: "CAS_CREDENTIAL",
            reason: "federated and AZURE_CLIENT_SECRET are both set, and the secret would sign in instead: remove one".into(),
        });
    }
    if without_secret == Credential::Federated && identity.client_secret.is_none() {
        let problem = match (&identity.tenant_id, &identity.client_id) {
            (None, _) | (_, None) => Some("federated signs in as the Entra app AZURE_CLIENT_ID in the tenant AZURE_TENANT_ID: set both".to_string()),
            (_, Some(app)) if identity.federated_identity.as_ref() == Some(app) => Some(format!(
                "federated: AZURE_CLIENT_ID {app} is the managed identity CAS_FEDERATED_IDENTITY_CLIENT_ID itself; set AZURE_CLIENT_ID to the multi-tenant app the identity signs in"
            )),
            _ => None,
        };
        if let Some(reason) = problem {
            errs.0.push(SettingError::Invalid {
                name: "CAS_CREDENTIAL",
                reason,
            });
        }
    }
    identity
}

/// Why discovery is off when only a legacy CAS token is configured, and what to grant.
pub(crate) const DISCOVERY_NEEDS_ENTRA: &str = "discovery is off: it reads Microsoft Graph with the Entra identity (managed identity or AZURE_CLIENT_SECRET), not CAS_API_TOKEN. To turn it on, grant that identity the Microsoft Graph application permission CloudApp-Discovery.Read.All (docs/deploy.md) and list discovery in CAS_DATA_TYPES";

/// `get`, its values trimmed, and an empty one as none: an app setting left blank in the
/// portal is a setting not given.
fn trimmed<'a>(get: &'a dyn Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> + 'a {
    move |k: &str| {
        get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
}

fn parse_data_types(value: Option<String>) -> Result<Vec<DataType>, SettingError> {
    let Some(value) = value else {
        return Ok(DataType::ALL.to_vec());
    };
    let mut out = Vec::new();
    for part in value.split(',').filter(|p| !p.trim().is_empty()) {
        let dt = part
            .parse::<DataType>()
            .map_err(|e| SettingError::Invalid {
                name: "CAS_DATA_TYPES",
                reason: e.to_string(),
            })?;
        if !out.contains(&dt) {
            out.push(dt);
        }
    }
    if out.is_empty() {
        return Err(SettingError::Invalid {
            name: "CAS_DATA_TYPES",
            reason: "names no data type".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::cas::parse_cas_url;
    use super::host::function_timeout;
    use super::logs_ingestion::check_stream;
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (
                "CAS_API_URL",
                "https://contoso.us2.portal.cloudappsecurity.com",
            ),
            (
                "SENTINEL_INGESTION_ENDPOINT",
                "https://dcr-x.westeurope-1.ingest.monitor.azure.com",
            ),
            (
                "SENTINEL_DCR_IMMUTABLE_ID",
                "dcr-0123456789abcdef0123456789abcdef",
            ),
            ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
        ])
    }

    fn read(map: &HashMap<&'static str, &'static str>) -> Result<Settings, SettingsErrors> {
        Settings::from_lookup(&|k| map.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn minimal_settings_get_documented_defaults() {
        let s = read(&base()).unwrap();
        assert_eq!(s.data_types, DataType::ALL.to_vec());
        assert_eq!(s.queue_name, "cas-batches");
        assert_eq!(s.poison_queue_name(), "cas-batches-poison");
        assert_eq!(s.cas.lookback, Duration::from_secs(86_400));
        assert_eq!(
            s.sentinel.stream(DataType::Discovery),
            "Custom-McasShadowItReporting"
        );
        assert!(s.cas.token.is_none());
        assert_eq!(s.schedule, DEFAULT_SCHEDULE);
        assert_eq!(
            s.storage.sas_lifetime,
            crate::config::storage::DEFAULT_SAS_LIFETIME
        );
    }

    #[test]
    fn the_budget_must_end_a_minute_before_the_hosts_function_timeout() {
        let host = |t: &str| format!(r#"{{"version": "2.0", "functionTimeout": "{t}"}}"#);
        assert_eq!(
            function_timeout(&host("00:10:00")),
            Ok(Some(Duration::from_secs(600)))
        );
        assert_eq!(
            function_timeout(&host("1.02:00:00")),
            Ok(Some(Duration::from_secs(93_600)))
        );
        assert_eq!(function_timeout(&host("-1")), Ok(None));
        assert_eq!(function_timeout(r#"{"version": "2.0"}"#), Ok(None));
        assert!(function_timeout(&host("ten minutes")).is_err());
        let with = |budget: &'static str| {
            let mut m = base();
            m.insert("CAS_INVOCATION_BUDGET", budget);
            read(&m)
        };
        let ok = with("PT9M").unwrap();
        assert!(ok.check_against_host(&host("00:10:00")).is_ok());
        let e = with("PT9M30S")
            .unwrap()
            .check_against_host(&host("00:10:00"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("CAS_INVOCATION_BUDGET") && e.contains("at most 540s"),
            "{e}"
        );
        assert!(
            with("PT2H")
                .unwrap()
                .check_against_host(&host("-1"))
                .is_ok(),
            "no limit"
        );
        assert!(
            with("PT0S").is_err() && with("PT4S").is_err(),
            "too short to do anything"
        );
        // The host.json we ship leaves the default budget its margin.
        assert!(read(&base())
            .unwrap()
            .check_against_host(crate::package::HOST_JSON)
            .is_ok());
    }

    #[test]
    fn a_legacy_token_alone_turns_discovery_off_and_says_what_to_grant() {
        let mut m = base();
        m.insert("CAS_API_TOKEN", "legacy");
        let s = read(&m).unwrap();
        assert_eq!(s.data_types, vec![DataType::Alerts, DataType::Activities]);
        let why = s.discovery_off.unwrap();
        assert!(
            why.contains("CloudApp-Discovery.Read.All") && why.contains("CAS_DATA_TYPES"),
            "{why}"
        );
        // Named explicitly, discovery reads Graph with the Entra identity.
        m.insert("CAS_DATA_TYPES", "alerts,discovery");
        let s = read(&m).unwrap();
        assert_eq!(s.data_types, vec![DataType::Alerts, DataType::Discovery]);
        assert!(s.discovery_off.is_none());
        // Without a legacy token discovery is on by default.
        assert!(read(&base()).unwrap().discovery_off.is_none());
    }

    #[test]
    fn schedules_and_sas_lifetimes_are_checked_and_the_fix_named() {
        for (value, why) in [
            ("*/5 * * * *", "has 5 fields"),
            ("* */2 * * * *", "more than once a minute"),
            ("*/10 * * * * *", "more than once a minute"),
            ("0 */2 * * * ?", "not NCRONTAB"),
        ] {
            let mut m = base();
            m.insert("CAS_SCHEDULE", value);
            let err = read(&m).unwrap_err().to_string();
            assert!(
                err.contains("CAS_SCHEDULE") && err.contains(why),
                "{value}: {err}"
            );
        }
        let mut m = base();
        m.insert("CAS_SCHEDULE", "30  */10 * * * Mon-Fri");
        assert_eq!(read(&m).unwrap().schedule, "30 */10 * * * Mon-Fri");
        for bad in ["PT5S", "P30D"] {
            let mut m = base();
            m.insert("CAS_STORAGE_SAS_LIFETIME", bad);
            let err = read(&m).unwrap_err().to_string();
            assert!(err.contains("CAS_STORAGE_SAS_LIFETIME"), "{err}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_and_named() {
        let mut m = base();
        m.insert("CAS_API_URL", "http://evil.example.com");
        m.insert("CAS_DATA_TYPES", "alerts,files");
        m.insert("CAS_LOOKBACK", "1 day");
        m.remove("SENTINEL_DCR_IMMUTABLE_ID");
        let err = read(&m).unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        let text = err.to_string();
        for name in [
            "CAS_API_URL",
            "CAS_DATA_TYPES",
            "CAS_LOOKBACK",
            "SENTINEL_DCR_IMMUTABLE_ID",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }

    #[test]
    fn filters_must_be_objects_and_leave_window_fields_alone() {
        let mut m = base();
        m.insert("CAS_ALERTS_FILTER", r#"{"severity":{"eq":[2]}}"#);
        m.insert(
            "CAS_ACTIVITIES_FILTER",
            r#"{"filters":{"service":{"eq":[15600]}}}"#,
        );
        let s = read(&m).unwrap();
        assert!(s.cas.alerts_filter.contains_key("severity"));
        assert!(s.cas.activities_filter.contains_key("service"));

        m.insert("CAS_ALERTS_FILTER", r#"{"date":{"gte":0}}"#);
        assert!(read(&m).unwrap_err().to_string().contains("window"));
        m.insert("CAS_ALERTS_FILTER", "{not json");
        assert!(read(&m).unwrap_err().to_string().contains("not valid JSON"));
    }

    #[test]
    fn cas_url_must_be_a_known_domain_or_loopback() {
        assert!(parse_cas_url("https://x.eu2.portal.cloudappsecurity.com").is_ok());
        assert!(parse_cas_url("https://portal.cloudappsecuritygov.com").is_ok());
        assert!(parse_cas_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_cas_url("http://x.portal.cloudappsecurity.com").is_err());
        assert!(parse_cas_url("https://portal.cloudappsecurity.com.evil.example").is_err());
    }

    fn all(extra: &[(&str, &str)]) -> Result<Vec<Settings>, SettingsErrors> {
        let mut pairs: Vec<(&str, &str)> = base().into_iter().collect();
        pairs.extend_from_slice(extra);
        Settings::all_from_pairs(&pairs)
    }

    #[test]
    fn each_tenant_reads_its_own_settings_then_the_shared_ones() {
        let t = all(&[
            ("CAS_TENANTS", "contoso,fabrikam"),
            ("CAS_LOOKBACK", "PT6H"),
            // The deployment's user-assigned identity (on the platform, which sets
            // IDENTITY_ENDPOINT): the federated tenant's signer.
            ("AZURE_CLIENT_ID", "uami"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            (
                "contoso__CAS_API_URL",
                "https://contoso.us2.portal.cloudappsecurity.com",
            ),
            (
                "fabrikam__CAS_API_URL",
                "https://fabrikam.eu2.portal.cloudappsecurity.com",
            ),
            ("fabrikam__CAS_LOOKBACK", "P2D"),
            (
                "fabrikam__AZURE_TENANT_ID",
                "22222222-2222-4222-8222-222222222222",
            ),
            ("fabrikam__AZURE_CLIENT_ID", "app"),
            ("fabrikam__CAS_CREDENTIAL", "federated"),
            (
                "fabrikam__SENTINEL_DCR_IMMUTABLE_ID",
                "dcr-11111111111111111111111111111111",
            ),
        ])
        .unwrap();
        let names: Vec<&str> = t
            .iter()
            .map(|s| s.tenant.as_ref().unwrap().as_str())
            .collect();
        assert_eq!(names, ["contoso", "fabrikam"]);
        let (c, f) = (&t[0], &t[1]);
        assert_eq!(
            c.cas.api_url.host_str(),
            Some("contoso.us2.portal.cloudappsecurity.com")
        );
        assert_eq!(
            f.cas.api_url.host_str(),
            Some("fabrikam.eu2.portal.cloudappsecurity.com")
        );
        assert_eq!(
            (c.cas.lookback.as_secs(), f.cas.lookback.as_secs()),
            (6 * 3600, 2 * 86_400)
        );
        assert_eq!(
            f.sentinel.dcr_immutable_id,
            "dcr-11111111111111111111111111111111"
        );
        assert_eq!(f.identity.without_secret, Credential::Federated);
        assert_eq!(f.identity.client_id.as_deref(), Some("app"));
        assert_eq!(f.identity.federated_identity.as_deref(), Some("uami"));
        // contoso gives no credential of its own: it signs in as the deployment does.
        assert_eq!(c.identity.client_id.as_deref(), Some("uami"));
        // Logs Ingestion and storage stay the deployment's own identity.
        assert_ne!(f.home_identity.without_secret, Credential::Federated);
        assert_eq!(f.home_identity.tenant_id, None);
        assert!(!c.adopts_unnamed && !f.adopts_unnamed);
        // Without CAS_TENANTS: one unnamed tenant, as before.
        let one = all(&[]).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].tenant.is_none());
    }

    #[test]
    fn a_tenants_problems_are_named_with_the_tenant_all_at_once() {
        let err = all(&[
            ("CAS_TENANTS", "contoso,fabrikam"),
            ("fabrikam__CAS_LOOKBACK", "two days"),
            ("contoso__CAS_CREDENTIAL", "federated"),
            ("CAS_UNNAMED_TENANT", "northwind"),
            ("fabrikam__CAS_SCHEDULE", "0 */5 * * * *"),
        ])
        .unwrap_err()
        .to_string();
        for part in [
            "tenant fabrikam: CAS_LOOKBACK",
            "tenant contoso: CAS_CREDENTIAL: federated signs in as the Entra app AZURE_CLIENT_ID",
            "CAS_UNNAMED_TENANT: \"northwind\" is not in CAS_TENANTS",
            "fabrikam__CAS_SCHEDULE: CAS_SCHEDULE is the deployment's",
        ] {
            assert!(err.contains(part), "{part:?} not in {err}");
        }
        let err = all(&[("CAS_CREDENTIAL", "federated"), ("CAS_TENANTS", "a")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("set federated as <tenant>__CAS_CREDENTIAL"),
            "{err}"
        );
        let err = all(&[
            ("CAS_TENANTS", "a"),
            ("a__CAS_CREDENTIAL", "federated"),
            ("a__AZURE_TENANT_ID", "t"),
            ("a__AZURE_CLIENT_ID", "mi"),
            (
                "a__CAS_API_URL",
                "https://a.us2.portal.cloudappsecurity.com",
            ),
            ("CAS_FEDERATED_IDENTITY_CLIENT_ID", "mi"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("is the managed identity"), "{err}");
        let adopted = all(&[
            ("CAS_TENANTS", "main,b"),
            ("CAS_UNNAMED_TENANT", "main"),
            (
                "b__CAS_API_URL",
                "https://b.us2.portal.cloudappsecurity.com",
            ),
        ])
        .unwrap();
        assert!(adopted[0].adopts_unnamed && !adopted[1].adopts_unnamed);
        assert_eq!(
            adopted[0].message_tenant(),
            None,
            "main goes on as the unnamed tenant"
        );
        assert_eq!(adopted[1].message_tenant().unwrap().as_str(), "b");
        // Each tenant names its own CAS; two naming one are refused.
        let err = all(&[("CAS_TENANTS", "a,b")]).unwrap_err().to_string();
        assert!(err.contains("tenant a: CAS_API_URL is not set"), "{err}");
        let err = all(&[
            ("CAS_TENANTS", "a,b"),
            (
                "a__CAS_API_URL",
                "https://x.us2.portal.cloudappsecurity.com",
            ),
            (
                "b__CAS_API_URL",
                "https://x.us2.portal.cloudappsecurity.com",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tenants a and b read the same CAS API"),
            "{err}"
        );
        // A tenant's own federated sign-in is not overridden by the deployment's secret.
        let err = all(&[
            ("CAS_TENANTS", "a"),
            (
                "a__CAS_API_URL",
                "https://a.us2.portal.cloudappsecurity.com",
            ),
            ("AZURE_CLIENT_SECRET", "shared"),
            ("AZURE_TENANT_ID", "home"),
            ("AZURE_CLIENT_ID", "home-app"),
            ("a__CAS_CREDENTIAL", "federated"),
            ("a__AZURE_TENANT_ID", "t"),
            ("a__AZURE_CLIENT_ID", "app"),
            ("a__AZURE_CLIENT_SECRET", "own"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("federated and AZURE_CLIENT_SECRET are both set"),
            "{err}"
        );
    }

    #[test]
    fn stream_and_queue_names_are_checked() {
        assert!(check_stream("S", "Custom-McasAlerts").is_ok());
        assert!(check_stream("S", "McasAlerts").is_err());
        assert!(check_stream("S", "Custom-").is_err());
        assert!(check_queue_name("cas-batches".into()).is_ok());
        assert!(check_queue_name("Cas_Batches".into()).is_err());
    }
}
