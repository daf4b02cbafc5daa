//! Recoveries at work: each node takes the running recoveries no node works on and makes
//! their deliveries anew, a batch at a time, each new delivery in the transaction that
//! marks its source as resent. A recovery's claim is extended with every batch; when the
//! node working it dies, the claim runs out and another node (or this one, restarted)
//! goes on from where it was, since what was made anew is no longer recoverable.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::ids::DeliveryId;
use crate::domain::recovery::Recovery;
use crate::domain::time::{self, to_delta};
use crate::storage::{Store, StoreError, StoreResult};

/// How long a recovery stays with the node working it without a batch done.
pub const LEASE: Duration = Duration::from_secs(30);

/// Deliveries made anew between two progress records.
const BATCH: u32 = 100;

/// How often the store is asked for recoveries nobody works on, when nothing wakes this
/// node sooner (a recovery started through its API does).
const POLL: Duration = Duration::from_secs(1);

/// Works on recoveries until `stop`.
pub async fn run(store: Arc<dyn Store>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let now = time::now();
        match store.claim_recovery(now, now + to_delta(LEASE)).await {
            Ok(Some(recovery)) => {
                if let Err(e) = work(&*store, &recovery, &stop).await {
                    tracing::warn!(recovery_id = %recovery.id, error = %e, "recovery interrupted; it goes on once its claim runs out");
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not look for recoveries"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn work(store: &dyn Store, recovery: &Recovery, stop: &CancellationToken) -> StoreResult<()> {
    if held(recovery) {
        return Ok(());
    }
    tracing::info!(recovery_id = %recovery.id, webhook_id = %recovery.webhook_id, deliveries = recovery.deliveries, "recovering failed deliveries");
    while !stop.is_cancelled() {
        let sources = store.recoverable(recovery, BATCH).await?;
        if sources.is_empty() {
            break;
        }
        let mut made = 0;
        for source in sources {
            match store
                .resend(recovery.org_id, source, DeliveryId::new(), None, None)
                .await
            {
                Ok(found) => made += found.is_some() as u64,
                // The webhook was deleted: nothing more to deliver to.
                Err(StoreError::Conflict(_)) => {
                    store.record_recovery(recovery.id, made, None).await?;
                    return Ok(());
                }
                Err(e) => {
                    store
                        .record_recovery(recovery.id, made, Some(time::now()))
                        .await?;
                    return Err(e);
                }
            }
        }
        store
            .record_recovery(recovery.id, made, Some(time::now() + to_delta(LEASE)))
            .await?;
    }
    if stop.is_cancelled() {
        // Given back for another node, or this one once restarted.
        return store
            .record_recovery(recovery.id, 0, Some(time::now()))
            .await;
    }
    store.record_recovery(recovery.id, 0, None).await?;
    tracing::info!(recovery_id = %recovery.id, "recovery done");
    Ok(())
}

/// Whether a test holds this recovery where it starts (it stays running, claimed), with
/// `fail::cfg("recover-hold", "return(<webhook id>)")`; never in a build without the
/// `failpoints` feature of `fail`.
fn held(recovery: &Recovery) -> bool {
    fail::fail_point!("recover-hold", |arg: Option<String>| {
        arg.as_deref() == Some(recovery.webhook_id.to_string().as_str())
    });
    let _ = recovery;
    false
}
