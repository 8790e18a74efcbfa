//! Entra tokens through `azure_identity`'s managed-identity credential, against the
//! simulated App Service identity endpoint. One test per binary: it sets process
//! environment variables, which `azure_identity` reads.

use cas_sentinel::testing::auth::sim::{IdentitySim, HEADER_SECRET};
use cas_sentinel::testing::cas::pull::pull;
use cas_sentinel::testing::cas::sim::{client_settings, CasSim, SimConfig};
use cas_sentinel::testing::cas::{CasAuth, CasClient};
use cas_sentinel::testing::config::IdentitySettings;
use cas_sentinel::testing::model::{now_ms, DataType};
use cas_sentinel::testing::retry::Deadline;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn managed_identity_tokens_are_cached_and_an_unreachable_endpoint_is_reported() {
    let (identity, endpoint) = IdentitySim::start().await;
    // SAFETY of intent: this binary has one test, so nothing else reads the environment now.
    std::env::set_var("IDENTITY_ENDPOINT", &endpoint);
    std::env::set_var("IDENTITY_HEADER", HEADER_SECRET);
    let (sim, url) = CasSim::start(SimConfig::default()).await;
    sim.add_alerts((0..5).map(|i| now_ms() - 10_000 + i));
    let cas = client_settings(&url, &[("CAS_ALERT_UPDATES", "off")]);
    let credential = cas_sentinel::testing::auth::credential(&IdentitySettings::default()).unwrap();
    let client = CasClient::new(
        reqwest::Client::new(),
        url.clone(),
        CasAuth::Entra(credential.clone()),
    );
    for _ in 0..10 {
        let p = pull(
            &client,
            &cas,
            DataType::Alerts,
            None,
            now_ms(),
            Deadline::after(Duration::from_secs(30)),
        )
        .await
        .unwrap();
        assert!(p.error.is_none(), "{:?}", p.error);
        assert_eq!(p.records.len(), 5);
    }
    assert_eq!(
        identity.issued.load(Ordering::Relaxed),
        1,
        "one token for ten pulls: the credential caches it"
    );

    // A token for another scope is a separate token; the cached CAS token is untouched.
    cas_sentinel::testing::auth::bearer(credential.as_ref(), "https://monitor.azure.com/.default")
        .await
        .unwrap();
    assert_eq!(identity.issued.load(Ordering::Relaxed), 2);

    // With the endpoint down, a fresh credential fails with an error that says so.
    identity.down.store(true, Ordering::Relaxed);
    let fresh = cas_sentinel::testing::auth::credential(&IdentitySettings::default()).unwrap();
    let client = CasClient::new(reqwest::Client::new(), url, CasAuth::Entra(fresh));
    let p = pull(
        &client,
        &cas,
        DataType::Alerts,
        None,
        now_ms(),
        Deadline::after(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let err = p.error.expect("no token, no pull").to_string();
    assert!(
        err.contains(
            "could not get an Entra token for 05a65629-4c1b-48c1-a78b-804c4abdd4af/.default"
        ),
        "{err}"
    );
}
