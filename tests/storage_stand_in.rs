//! The benchmark's storage stand-in (`blobs::sim`) answers every operation cas-sentinel
//! makes as Azurite does: the same sequence, through the same SDK and the same `Blobs`
//! layer, must give the same outcomes on both, and the handler must ingest through it.

mod common;

use cas_sentinel::testing::config::StorageSettings;
use cas_sentinel::testing::local::azurite::Azurite;
use cas_sentinel::testing::storage::blobs::{BlobError, Blobs, WriteCondition};
use cas_sentinel::testing::storage::queue::Queue;
use cas_sentinel::testing::storage::sim::StorageSim;

/// What each step of the contract came to, as comparable text.
async fn contract(storage: &StorageSettings) -> Vec<String> {
    let blobs = Blobs::new(storage.container_client("contract", None).unwrap());
    let queue = Queue::open(storage, "contract-q", None).unwrap();
    let mut out = Vec::new();
    let mut note = |step: &str, r: String| out.push(format!("{step}: {r}"));
    let kind = |r: Result<String, BlobError>| match r {
        Ok(etag) => format!("ok etag={}", !etag.is_empty()),
        Err(BlobError::Conflict(_)) => "conflict".into(),
        Err(e) => format!("error {e}"),
    };
    note(
        "ensure container",
        format!("{:?}", blobs.ensure_container().await),
    );
    note(
        "ensure container again",
        format!("{:?}", blobs.ensure_container().await),
    );
    note(
        "ensure queue",
        format!("{:?}", queue.ensure().await.is_ok()),
    );
    note(
        "ensure queue again",
        format!("{:?}", queue.ensure().await.is_ok()),
    );
    note(
        "get missing",
        format!("{:?}", blobs.get("a/b").await.map(|o| o.is_none())),
    );
    note(
        "exists missing",
        format!("{:?}", blobs.exists("a/b").await.ok()),
    );
    let created = blobs
        .put("a/b", b"one".to_vec(), WriteCondition::IfAbsent)
        .await;
    let etag = created.as_ref().cloned().unwrap_or_default();
    note("create", kind(created));
    note(
        "create again",
        kind(
            blobs
                .put("a/b", b"two".to_vec(), WriteCondition::IfAbsent)
                .await,
        ),
    );
    note(
        "replace with a stale etag",
        kind(
            blobs
                .put(
                    "a/b",
                    b"two".to_vec(),
                    WriteCondition::IfMatch("\"0x1234\"".into()),
                )
                .await,
        ),
    );
    let replaced = blobs
        .put(
            "a/b",
            b"two".to_vec(),
            WriteCondition::IfMatch(etag.clone()),
        )
        .await;
    let new_etag = replaced.as_ref().cloned().unwrap_or_default();
    note("replace with its etag", kind(replaced));
    note("etag changed", format!("{}", new_etag != etag));
    let got = blobs.get("a/b").await.unwrap().unwrap();
    note(
        "get",
        format!(
            "{} same etag={}",
            String::from_utf8_lossy(&got.0),
            got.1 == new_etag
        ),
    );
    let big = vec![7u8; 300_000];
    note(
        "overwrite",
        kind(
            blobs
                .put("a/c d", big.clone(), WriteCondition::Always)
                .await,
        ),
    );
    note(
        "get big",
        format!("{}", blobs.get("a/c d").await.unwrap().unwrap().0 == big),
    );
    note("exists", format!("{:?}", blobs.exists("a/b").await.ok()));
    note("delete", format!("{:?}", blobs.delete("a/b").await.is_ok()));
    note(
        "delete again",
        format!("{:?}", blobs.delete("a/b").await.is_ok()),
    );
    note(
        "get deleted",
        format!("{:?}", blobs.get("a/b").await.map(|o| o.is_none())),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_answers_as_azurite_does() {
    let azurite = Azurite::start(&common::scratch("stand-in-contract"))
        .await
        .unwrap();
    let real = contract(&azurite.storage()).await;
    let (sim, settings) = StorageSim::start().await;
    let stand_in = contract(&settings).await;
    assert_eq!(stand_in, real);
    assert!(
        real.iter().any(|l| l == "create again: conflict"),
        "{real:?}"
    );
    assert!(sim.calls() >= 17, "{}", sim.calls());
    println!("{}", real.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_refuses_what_it_does_not_implement_by_name() {
    let (_sim, settings) = StorageSim::start().await;
    let queue = Queue::open(&settings, "q", None).unwrap();
    queue.ensure().await.unwrap();
    let err = queue.send_text("hello").await.unwrap_err().to_string();
    assert!(
        err.contains("501") || err.contains("NotImplementedByStandIn"),
        "{err}"
    );
}
