//! A simulated App Service managed-identity endpoint (`IDENTITY_ENDPOINT` /
//! `IDENTITY_HEADER`), so `azure_identity`'s own managed-identity code runs unchanged in
//! the local pipeline and the tests.
//!
//! Tokens look like `sim|<resource>|<expiry secs>|<serial>` so the other simulators can check
//! the audience and the expiry the way the real services do, and refuse one token alone.

use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use warp::Filter;

/// The header secret the simulated endpoint expects.
pub const HEADER_SECRET: &str = "local-identity-header";

/// Shared state of the simulated identity endpoint.
#[derive(Default)]
pub struct IdentitySim {
    /// When set, every request fails with 500 (the endpoint is "down").
    pub down: AtomicBool,
    /// Tokens issued.
    pub issued: AtomicU64,
    /// Lifetime of issued tokens, in seconds (default one hour).
    pub lifetime_secs: AtomicU64,
}

#[derive(Deserialize)]
struct TokenQuery {
    resource: String,
    #[serde(rename = "api-version")]
    api_version: String,
}

impl IdentitySim {
    /// Starts the endpoint on a free loopback port; returns its URL for `IDENTITY_ENDPOINT`.
    pub async fn start() -> (Arc<IdentitySim>, String) {
        let sim = Arc::new(IdentitySim {
            lifetime_secs: AtomicU64::new(3600),
            ..Default::default()
        });
        let state = sim.clone();
        let route = warp::get()
            .and(warp::path!("msi" / "token"))
            .and(warp::query::<TokenQuery>())
            .and(warp::header::optional::<String>("x-identity-header"))
            .map(move |q: TokenQuery, secret: Option<String>| state.answer(q, secret));
        let addr = crate::loopback::serve(route, 0)
            .await
            .expect("bind a loopback port");
        (sim, format!("http://{addr}/msi/token"))
    }

    fn answer(&self, q: TokenQuery, secret: Option<String>) -> warp::reply::Response {
        use warp::http::StatusCode;
        use warp::Reply;
        if self.down.load(Ordering::Relaxed) {
            return warp::reply::with_status(
                "identity endpoint unavailable",
                StatusCode::INTERNAL_SERVER_ERROR,
            )
            .into_response();
        }
        if secret.as_deref() != Some(HEADER_SECRET) || q.api_version != "2019-08-01" {
            return warp::reply::with_status(
                "bad identity header or api-version",
                StatusCode::BAD_REQUEST,
            )
            .into_response();
        }
        // A serial makes every token issued distinct, as real ones are, so a service can
        // refuse one of them (revoked) and accept the next.
        let serial = self.issued.fetch_add(1, Ordering::Relaxed);
        let expires = time::OffsetDateTime::now_utc().unix_timestamp()
            + self.lifetime_secs.load(Ordering::Relaxed) as i64;
        warp::reply::json(&serde_json::json!({
            "access_token": format!("sim|{}|{expires}|{serial}", q.resource),
            "expires_on": expires.to_string(),
            "resource": q.resource,
            "token_type": "Bearer",
        }))
        .into_response()
    }
}

/// A credential that hands out simulated tokens for any scope, as Entra would for a granted
/// one: for the clients in tests that run without the identity endpoint.
#[derive(Debug)]
pub struct SimCredential;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for SimCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        let resource = scopes
            .first()
            .map(|s| s.trim_end_matches("/.default"))
            .unwrap_or_default();
        let token = format!("sim|{resource}|{}", expires.unix_timestamp());
        Ok(azure_core::credentials::AccessToken::new(token, expires))
    }
}

/// Checks an `Authorization` header carrying a simulated token for `resource`.
/// The simulated credential behind a [`crate::auth::Renewable`], as the clients take it.
#[cfg(test)]
pub(crate) fn renewable() -> Arc<crate::auth::Renewable> {
    Arc::new(
        crate::auth::Renewable::new(|| Ok(Arc::new(SimCredential) as _))
            .expect("building is local"),
    )
}

pub(crate) fn check_bearer(header: Option<&str>, resource: &str) -> Result<(), &'static str> {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or("no bearer token")?;
    let mut parts = token.split('|');
    let (Some("sim"), Some(res), Some(exp)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("malformed token");
    };
    if res.trim_end_matches('/') != resource.trim_end_matches('/') {
        return Err("token is for another audience");
    }
    let exp: i64 = exp.parse().map_err(|_| "malformed token")?;
    if exp <= time::OffsetDateTime::now_utc().unix_timestamp() {
        return Err("token expired");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_check_enforces_audience_and_expiry() {
        let future = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
        let ok = format!("Bearer sim|https://monitor.azure.com|{future}");
        assert!(check_bearer(Some(&ok), "https://monitor.azure.com/").is_ok());
        assert!(check_bearer(Some(&ok), "05a65629-4c1b-48c1-a78b-804c4abdd4af").is_err());
        assert!(check_bearer(
            Some("Bearer sim|https://monitor.azure.com|1"),
            "https://monitor.azure.com"
        )
        .is_err());
        assert!(check_bearer(None, "x").is_err());
    }
}
