//! Retention (`--retention`): events, deliveries and attempts older than that are removed
//! in the background, so that a long-running store does not grow without end.
//!
//! A round runs at start, then a few times per retention period (at most a minute apart):
//! it removes finished deliveries made before the cutoff, with their attempts, the
//! events no delivery refers to any more and the recoveries finished before it,
//! [`BATCH`] rows to a transaction, pausing
//! between transactions so that the write path (SQLite's one writer) is never held for
//! long. A delivery still pending stays, and so does its event, until it ends. Then a
//! SQLite file gives the pages it freed back, a few at a time too. On several nodes each
//! runs it, and the rows each takes are its own (`SKIP LOCKED`).
//!
//! Whatever `--retention` says, the answers kept under idempotency keys are forgotten a
//! day after they were made, the same way ([`forget_answers`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Purged, Remembered, Store, StoreResult, Turns};
use crate::domain::ids::EventId;
use crate::domain::time;

/// Rows of a table per transaction: about a millisecond of the write path's time.
const BATCH: u32 = 200;
/// Database pages given back per transaction.
const RECLAIM_PAGES: u32 = 256;
/// Between two transactions of a round: the write path's time for everything else.
const PAUSE: Duration = Duration::from_millis(2);

/// Removes what is older than `keep`, until `stop`.
pub async fn run(store: Arc<dyn Store>, keep: Duration, stop: CancellationToken) {
    let Ok(span) = chrono::Duration::from_std(keep) else {
        tracing::error!(
            ?keep,
            "retention: the duration is out of range; keeping everything"
        );
        return;
    };
    let every = (keep / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let mut rounds = Rounds::default();
    // The first round at once: a store that kept everything until now starts shrinking
    // with the process that was given the setting.
    let mut turns = Turns::new(Duration::ZERO, every);
    while turns.next(&*store, &stop).await {
        match rounds.run(&*store, time::now() - span, &stop).await {
            Ok(removed) if removed != Purged::default() => tracing::info!(
                deliveries = removed.deliveries,
                events = removed.events,
                retention = %humantime::format_duration(keep),
                "retention: removed what was older than the retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention: could not remove old rows"),
        }
    }
}

/// What rounds carry from one to the next.
#[derive(Default)]
struct Rounds {
    /// The last event the sweep looked at (see [`Store::sweep_events`]): each round
    /// goes on from there, so that every event is looked at about once.
    swept: Option<EventId>,
}

impl Rounds {
    /// One round: the deliveries made before `before` and their events, batch after
    /// batch, then the events left without deliveries, then the space.
    async fn run(
        &mut self,
        store: &dyn Store,
        before: time::Timestamp,
        stop: &CancellationToken,
    ) -> StoreResult<Purged> {
        let mut removed = Purged::default();
        loop {
            let purged = store.purge(before, BATCH).await?;
            removed.deliveries += purged.deliveries;
            removed.events += purged.events;
            crate::telemetry::metrics::purged(purged);
            let more = purged.deliveries == u64::from(BATCH) || purged.events == u64::from(BATCH);
            if !more || !pause(stop).await {
                break;
            }
        }
        loop {
            let (events, last) = store.sweep_events(self.swept, before, BATCH).await?;
            removed.events += events;
            crate::telemetry::metrics::purged(Purged {
                deliveries: 0,
                events,
            });
            let Some(last) = last else {
                break;
            };
            self.swept = Some(last);
            if !pause(stop).await {
                break;
            }
        }
        // The recoveries finished before the cutoff: their deliveries are gone or going.
        while store.purge_recoveries(before, BATCH).await? == u64::from(BATCH) && pause(stop).await
        {
        }
        if removed != Purged::default() {
            while store.reclaim_space(RECLAIM_PAGES).await? > 0 && pause(stop).await {}
        }
        Ok(removed)
    }
}

/// Waits [`PAUSE`]; `false` when the store is stopping meanwhile.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(PAUSE) => true,
    }
}

/// How often expired answers of idempotency keys are looked for.
const FORGET_EVERY: Duration = Duration::from_secs(600);

/// Forgets the answers kept under idempotency keys once they expire, until `stop`: at
/// start, then every [`FORGET_EVERY`]. (An expired answer is already ignored, and its key
/// free again; this only gives its room back.)
pub async fn forget_answers(store: Arc<dyn Store>, stop: CancellationToken) {
    let mut turns = Turns::new(Duration::ZERO, FORGET_EVERY);
    while turns.next(&*store, &stop).await {
        let before = time::now() - Remembered::KEPT;
        loop {
            match store.forget_remembered(before, BATCH).await {
                Ok(forgotten) if forgotten == u64::from(BATCH) && pause(&stop).await => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not forget expired idempotency keys");
                    break;
                }
            }
        }
    }
}
