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
                format!("{e}: give the identity the Microsoft Cloud App Security API application permission Investigation.Read (and Discovery.read), with admin consent, or set CAS_API_TOKEN")
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
