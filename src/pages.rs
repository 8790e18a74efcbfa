//! The bound on pages in memory across every tenant's poll.
//!
//! A page costs memory from when its body starts to arrive until its records are enqueued.
//! The waits before that (for a CAS request permit, a retry's back-off, a slow service's
//! headers) cost nothing and must not count: a lane that held a share of the bound while it
//! slept would let four tenants catching up a backlog (twelve lanes, each waiting out its
//! tenant's 30 requests a minute) stall every other tenant. So the permit is taken where a
//! successful answer's body starts to be read (`retry::read_answer`), and given back by the
//! poll loop once the step's records are enqueued.
//!
//! The two ends are far apart in the call tree (each source and its client sit between), so
//! a lane's hold travels as a task-local that the poll loop scopes around each read. A read
//! outside a poll (validate, ingest) finds none and is not bounded: it holds one answer.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How many pages the lanes of all tenants hold at once. Without a bound a deployment's
/// peak memory grows with its tenants (2.6 MB each in the benchmark's 100-tenant poll).
pub(crate) const PAGES_AT_ONCE: usize = 12;

tokio::task_local! {
    static HOLD: Hold;
}

/// One lane's hold on the bound for one step: at most one permit, taken by the step's first
/// answer and kept through the step's later answers until the last clone of the hold is
/// dropped.
#[derive(Clone)]
pub(crate) struct Hold {
    pages: Arc<Semaphore>,
    /// Past this the lane stops waiting for a permit (its invocation's deadline).
    until: Instant,
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl Hold {
    /// A hold on `pages` that waits for a permit until `until` at the latest.
    pub(crate) fn new(pages: Arc<Semaphore>, until: Instant) -> Hold {
        Hold {
            pages,
            until,
            permit: Default::default(),
        }
    }

    /// Runs `read` with this hold as its task's: the answers it reads take their permit here.
    pub(crate) async fn scope<F: Future>(&self, read: F) -> F::Output {
        HOLD.scope(self.clone(), read).await
    }

    /// Whether a permit is held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> bool {
        self.slot().is_some()
    }

    fn slot(&self) -> MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        // Nothing panics while holding it; a poisoned lock still holds a valid Option.
        self.permit.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Gives back the current task's page permit, if it holds one: the lane has dropped what
/// it read, or is about to sleep (a retry's back-off) and must not keep others waiting. Its
/// next answer takes a permit again.
pub(crate) fn release() {
    let _ = HOLD.try_with(|hold| hold.slot().take());
}

/// Takes a page permit for the current task's lane, unless it has one or is not bounded:
/// false when its deadline comes first.
pub(crate) async fn take() -> bool {
    let Ok(hold) = HOLD.try_with(Hold::clone) else {
        return true;
    };
    if hold.slot().is_some() {
        return true;
    }
    match tokio::time::timeout_at(hold.until, hold.pages.clone().acquire_owned()).await {
        Ok(Ok(permit)) => {
            *hold.slot() = Some(permit);
            true
        }
        // The semaphore is never closed; were it, there would be no bound to keep.
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_step_holds_one_permit_from_its_first_answer_until_it_is_dropped() {
        let pages = Arc::new(Semaphore::new(2));
        let until = Instant::now() + Duration::from_secs(5);
        let hold = Hold::new(pages.clone(), until);
        assert!(!hold.held(), "nothing is held before an answer");
        let taken = hold
            .scope(async {
                // Two answers in one step: one permit.
                take().await && take().await
            })
            .await;
        assert!(taken && hold.held());
        assert_eq!(pages.available_permits(), 1);
        drop(hold);
        assert_eq!(pages.available_permits(), 2, "given back with the hold");
        assert!(take().await, "outside a poll nothing is bounded");
        release();
        assert_eq!(pages.available_permits(), 2);
    }

    #[tokio::test]
    async fn a_lane_that_finds_every_permit_held_waits_only_until_its_deadline() {
        let pages = Arc::new(Semaphore::new(1));
        let first = Hold::new(pages.clone(), Instant::now() + Duration::from_secs(5));
        assert!(first.scope(take()).await);
        let second = Hold::new(pages.clone(), Instant::now() + Duration::from_millis(50));
        assert!(!second.scope(take()).await, "out of time, no permit");
        assert!(!second.held());
        // A lane that sleeps gives its permit back; its next answer takes one again.
        first.scope(async { release() }).await;
        assert!(!first.held());
        let third = Hold::new(pages, Instant::now() + Duration::from_secs(5));
        assert!(third.scope(take()).await);
    }
}
