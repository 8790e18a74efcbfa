//! `cas-sentinel validate`: every setting, then one cheap call to each service, each
//! problem reported with what to change.

use crate::app::App;
use crate::auth::{self, CAS_SCOPE};
use crate::config::Settings;
use crate::retry::Deadline;
use serde_json::json;
use std::time::Duration;

/// One check's outcome.
#[derive(Debug)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// `Ok(detail)` or `Err(problem and fix)`.
    pub outcome: Result<String, String>,
}

/// Discovery: off (and why), or one page of Graph's continuous reports read with the
/// identity discovery uses.
async fn discovery_check(app: &App, deadline: Deadline) -> Check {
    let name = "Microsoft Graph (discovery)";
    if let Some(why) = app.settings.discovery_off {
        return Check {
            name,
            outcome: Ok(why.to_string()),
        };
    }
    if !app
        .settings
        .data_types
        .contains(&crate::model::DataType::Discovery)
    {
        return Check {
            name,
            outcome: Ok("discovery is not in CAS_DATA_TYPES".into()),
        };
    }
    let outcome = match app.graph.url(crate::graph::STREAMS_PATH) {
        Ok(url) => app.graph.page(&url, deadline).await.map(|p| {
            let names: Vec<&str> = p
                .items
                .iter()
                .filter_map(|r| r.get("displayName").and_then(|n| n.as_str()))
                .collect();
            format!(
                "continuous reports readable{}: {}",
                if p.next.is_some() {
                    " (first page)"
                } else {
                    ""
                },
                names.join(", ")
            )
        }),
        Err(e) => Err(e),
    };
    Check {
        name,
        outcome: outcome.map_err(|e| e.to_string()),
    }
}

/// Runs the checks; settings problems stop before any network call.
pub async fn validate(lookup: &dyn Fn(&str) -> Option<String>) -> Vec<Check> {
    let settings = match Settings::from_lookup(lookup) {
        Ok(s) => s,
        Err(errors) => {
            return errors
                .0
                .into_iter()
                .map(|e| Check {
                    name: "settings",
                    outcome: Err(e.to_string()),
                })
                .collect();
        }
    };
    let mut checks = vec![Check {
        name: "settings",
        outcome: Ok(format!(
            "{} data type(s): {:?}",
            settings.data_types.len(),
            settings.data_types
        )),
    }];
    let app = match App::new(settings) {
        Ok(a) => a,
        Err(e) => {
            checks.push(Check {
                name: "clients",
                outcome: Err(e.to_string()),
            });
            return checks;
        }
    };
    let deadline = || Deadline::after(Duration::from_secs(30));
    let credential = auth::credential(&app.settings.identity);
    if app.settings.cas.token.is_none() {
        let outcome = match &credential {
            Ok(c) => auth::bearer(c.as_ref(), CAS_SCOPE).await.map(|_| "token obtained".to_string()).map_err(|e| {
                format!("{e}: give the identity the Microsoft Cloud App Security API application permission Investigation.Read, with admin consent, or set CAS_API_TOKEN")
            }),
            Err(e) => Err(e.to_string()),
        };
        checks.push(Check {
            name: "CAS token (Entra)",
            outcome,
        });
    }
    let body = json!({"filters": {}, "skip": 0, "limit": 1});
    let outcome = app
        .cas
        .list(
            crate::cas::pull::ALERTS_PATH,
            &body,
            crate::cas::ALERT_KEYS,
            deadline(),
        )
        .await
        .map(|p| {
            format!(
                "reachable; alerts readable ({} on the first page)",
                p.records.len()
            )
        })
        .map_err(|e| e.to_string());
    checks.push(Check {
        name: "CAS API",
        outcome,
    });
    checks.push(discovery_check(&app, deadline()).await);
    let scope = crate::sentinel::scope_for(&app.settings.sentinel.endpoint);
    let outcome = match &credential {
        Ok(c) => auth::bearer(c.as_ref(), scope).await.map(|_| format!("token for {scope} obtained")).map_err(|e| format!("{e}: the function app's identity needs the Monitoring Metrics Publisher role on the DCR")),
        Err(e) => Err(e.to_string()),
    };
    checks.push(Check {
        name: "Logs Ingestion token",
        outcome,
    });
    let outcome = match app.ensure_resources().await {
        Ok(()) => Ok(format!("queue {}, {} and container {} ready", app.queue.name(), app.poison.name(), crate::blobs::CONTAINER)),
        Err(e) => Err(format!("{e}: the identity needs Storage Queue Data Contributor and Storage Blob Data Contributor (or a working connection string)")),
    };
    checks.push(Check {
        name: "storage",
        outcome,
    });
    checks
}
