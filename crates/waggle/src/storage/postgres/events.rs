//! The event writer: every API call that emits events hands them to one task per node,
//! which commits the calls that arrived together in one transaction and one WAL flush,
//! and answers each only once that commit returned (a 2xx still means committed).
//!
//! Why: a call's events are two small inserts, and PostgreSQL's cost for them is mostly
//! per statement and per transaction (parse, bind, lock the organization's row for its
//! foreign keys, flush the WAL), not per row. Calls that come together share all of it.
//! One batch commits at a time ([`IN_FLIGHT`]), and the calls that arrive meanwhile
//! gather into the next: the busier the node, the more calls share a commit. With two
//! at once, a commit's round trips overlapped the other's, batches came out half as
//! large, and each call cost PostgreSQL more (BENCHMARKS.md).
//!
//! A batch that fails is written again call by call, so one bad call (a connector deleted
//! meanwhile) fails alone; a database out of reach fails them all at once.

use std::sync::Arc;

use sqlx::Connection as _;
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use super::connections::Connections;
use super::{column, query, WORK_CHANNEL};
use crate::storage::records;
use crate::storage::sql::Dialect;
use crate::storage::{
    Event, NewDelivery, NewEvent, Remembered, StoreError, StoreResult, SyncChange,
};

/// Batches committing at once.
const IN_FLIGHT: usize = 1;
/// Calls in one batch, at most.
const MAX_CALLS: usize = 256;
/// Deliveries in one batch, at most (a call with more makes a batch of its own).
const MAX_DELIVERIES: usize = 8192;
/// Event bodies in one batch, in bytes, at most (as for [`super::ATTEMPT_BYTES`]: a
/// connection keeps the buffer of its largest statement).
const MAX_BYTES: usize = 4 << 20;
/// Calls waiting for a batch; more wait to be queued.
const QUEUE: usize = 4096;

/// One call's events, waiting to be written.
struct Call {
    sync: SyncChange,
    events: Arc<[NewEvent]>,
    remember: Option<Remembered>,
    done: oneshot::Sender<StoreResult<()>>,
}

impl Call {
    fn deliveries(&self) -> usize {
        self.events.iter().map(|e| e.deliveries.len()).sum()
    }

    fn bytes(&self) -> usize {
        self.events.iter().map(|e| e.shared_body.len()).sum()
    }
}

/// The handle of the node's event writer; the task stops when it is dropped.
pub(super) struct EventWriter {
    calls: mpsc::Sender<Call>,
}

impl EventWriter {
    /// Starts the writer's task. `node` is the claimant of deliveries made with a lease.
    pub(super) fn start(conns: Arc<Connections>, node: Uuid) -> Self {
        let (calls, queue) = mpsc::channel(QUEUE);
        tokio::spawn(Batches { conns, node }.run(queue));
        Self { calls }
    }

    /// Records one call's events (see [`Store::record_events`](crate::storage::Store)).
    pub(super) async fn record(
        &self,
        sync: SyncChange,
        events: Arc<[NewEvent]>,
        remember: Option<Remembered>,
    ) -> StoreResult<()> {
        let (done, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the event writer has stopped".into());
        self.calls
            .send(Call {
                sync,
                events,
                remember,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// What one call writes: its sync change, its events, its answer to remember.
type CallWrites = (SyncChange, Arc<[NewEvent]>, Option<Remembered>);

struct Batches {
    conns: Arc<Connections>,
    node: Uuid,
}

impl Batches {
    async fn run(self, mut queue: mpsc::Receiver<Call>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        // A slot first: while every slot is busy, calls gather in the queue.
        while let Ok(slot) = slots.clone().acquire_owned().await {
            let Some(first) = queue.recv().await else {
                return;
            };
            let (mut deliveries, mut bytes) = (first.deliveries(), first.bytes());
            let mut batch = vec![first];
            while batch.len() < MAX_CALLS && deliveries < MAX_DELIVERIES && bytes < MAX_BYTES {
                let Ok(next) = queue.try_recv() else {
                    break;
                };
                deliveries += next.deliveries();
                bytes += next.bytes();
                batch.push(next);
            }
            let this = this.clone();
            tokio::spawn(async move {
                this.commit(batch).await;
                drop(slot);
            });
        }
    }

    /// Writes a batch and answers each call; on a failure that is not the database's,
    /// writes each call alone.
    async fn commit(&self, batch: Vec<Call>) {
        let (calls, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|c| ((c.sync, c.events, c.remember), c.done))
            .unzip();
        match self.write(&calls).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) if calls.len() == 1 || e.is_unavailable() => super::fail_all(answers, e),
            Err(_) => {
                for (call, answer) in calls.into_iter().zip(answers) {
                    let result = match self.write(std::slice::from_ref(&call)).await {
                        Ok(mut results) => results.pop().unwrap_or(Ok(())),
                        Err(e) => Err(e),
                    };
                    let _ = answer.send(result);
                }
            }
        }
    }

    /// Writes the calls' idempotency keys, sync changes and events in one transaction. A
    /// call whose key another call holds (`KeyTaken`) or whose sync job has already
    /// finished (`Conflict`) is refused and writes nothing; the others are written.
    /// Without keys or sync changes, the transaction is one statement.
    async fn write(&self, calls: &[CallWrites]) -> StoreResult<Vec<StoreResult<()>>> {
        let mut results: Vec<StoreResult<()>> = Vec::with_capacity(calls.len());
        let changes: Vec<_> = calls
            .iter()
            .map(|(sync, _, _)| records::sync_change(Dialect::Postgres, sync))
            .collect();
        let orders = calls
            .iter()
            .flat_map(|(_, events, _)| events.iter())
            .flat_map(|e| e.deliveries.iter())
            .filter_map(|d| Some((d.webhook_id, d.ordered_by?)));
        let mut conn = self.conns.get().await?;
        if changes.iter().all(Option::is_none)
            && calls.iter().all(|(_, _, r)| r.is_none())
            && orders.clone().next().is_none()
        {
            let events: Vec<&NewEvent> = calls.iter().flat_map(|(_, e, _)| e.iter()).collect();
            self.insert(&mut conn, &events).await?;
            conn.keep();
            results.resize_with(calls.len(), || Ok(()));
            return Ok(results);
        }
        let mut tx = conn.begin().await?;
        super::lock_orders(&mut tx, orders).await?;
        let mut events: Vec<&NewEvent> = Vec::new();
        for ((_, call_events, remember), change) in calls.iter().zip(&changes) {
            // Two nodes given one key at once: its row orders them, and the second finds
            // the first's answer there.
            if let Some(r) = remember {
                let remember = records::remember(Dialect::Postgres, r);
                if query(&remember).execute(&mut *tx).await?.rows_affected() == 0 {
                    results.push(Err(StoreError::KeyTaken));
                    continue;
                }
            }
            if let Some(change) = change {
                // Two nodes finishing one sync at once: the row lock orders them, and the
                // second sees it no longer `Syncing`.
                if query(change).execute(&mut *tx).await?.rows_affected() == 0 {
                    if let Some(r) = remember {
                        let unremember = records::unremember(Dialect::Postgres, r);
                        query(&unremember).execute(&mut *tx).await?;
                    }
                    results.push(Err(StoreError::Conflict(
                        "the sync job has already finished".into(),
                    )));
                    continue;
                }
            }
            events.extend(call_events.iter());
            results.push(Ok(()));
        }
        self.insert(&mut tx, &events).await?;
        tx.commit().await?;
        conn.keep();
        Ok(results)
    }

    /// Inserts events and their deliveries in one statement, whatever their number, and
    /// wakes the nodes' dispatchers if any delivery was made unclaimed. Its own
    /// transaction, unless `conn` is in one.
    async fn insert(&self, conn: &mut sqlx::PgConnection, events: &[&NewEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let deliveries: Vec<(&Event, &NewDelivery)> = events
            .iter()
            .flat_map(|r| r.deliveries.iter().map(move |d| (&r.event, d)))
            .collect();
        let traceparents: Vec<Option<&str>> = events
            .iter()
            .flat_map(|r| r.deliveries.iter().map(|_| r.traceparent.as_deref()))
            .collect();
        let unclaimed = deliveries.iter().any(|(_, d)| d.lease_until.is_none());
        // A delivery behind another of the same order in this very statement waits: the
        // statement does not see its own rows.
        let mut orders = std::collections::HashSet::new();
        let behind: Vec<bool> = deliveries
            .iter()
            .map(|(_, d)| {
                d.ordered_by
                    .is_some_and(|c| !orders.insert((d.webhook_id, c)))
            })
            .collect();
        let claimant = |d: &NewDelivery| d.lease_until.map(|_| self.node);
        // Data-modifying CTEs all run, in one statement: the deliveries' foreign key to
        // their event is checked at its end, when the events are there.
        sqlx::query(
            "WITH new_events AS (INSERT INTO events (id, org_id, event_type, environment, \
               connector_id, created_at, shared_body) \
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], \
               $5::uuid[], $6::timestamptz[], $7::bytea[])), \
             new_deliveries AS (INSERT INTO deliveries (id, org_id, event_id, webhook_id, \
               webhook_name, connector_id, event_type, integration_name, end_user_name, \
               origin_id, url, status, created_at, next_attempt_at, lease_until, claimed_by, \
               attempts_started, ordered_by, traceparent) \
               SELECT id, org_id, event_id, webhook_id, webhook_name, connector_id, event_type, \
               integration_name, end_user_name, origin_id, url, 'pending', created_at, \
               CASE WHEN behind OR (ordered_by IS NOT NULL AND EXISTS (SELECT 1 FROM deliveries p \
                 WHERE p.webhook_id = v.webhook_id AND p.ordered_by = v.ordered_by \
                 AND p.status = 'pending')) THEN NULL ELSE created_at END, \
               lease_until, claimed_by, attempts_started, ordered_by, traceparent \
               FROM UNNEST($8::uuid[], $9::uuid[], $10::uuid[], $11::uuid[], $12::text[], \
               $13::uuid[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
               $19::timestamptz[], $20::timestamptz[], $21::uuid[], $22::int4[], $25::uuid[], \
               $26::bool[], $27::text[]) \
               AS v (id, org_id, event_id, webhook_id, webhook_name, connector_id, event_type, \
               integration_name, end_user_name, origin_id, url, created_at, lease_until, \
               claimed_by, attempts_started, ordered_by, behind, traceparent)) \
             SELECT pg_notify($23, '') WHERE $24",
        )
        .bind(column(events, |r| r.event.id.as_uuid()))
        .bind(column(events, |r| r.event.org_id.as_uuid()))
        .bind(column(events, |r| r.event.event_type.as_str()))
        .bind(column(events, |r| r.event.environment().as_str()))
        .bind(column(events, |r| r.event.connector.id.as_uuid()))
        .bind(column(events, |r| r.event.created_at))
        .bind(column(events, |r| r.shared_body.as_ref()))
        .bind(column(&deliveries, |(_, d)| d.id.as_uuid()))
        .bind(column(&deliveries, |(e, _)| e.org_id.as_uuid()))
        .bind(column(&deliveries, |(e, _)| e.id.as_uuid()))
        .bind(column(&deliveries, |(_, d)| d.webhook_id.as_uuid()))
        .bind(column(&deliveries, |(_, d)| d.webhook_name.as_str()))
        .bind(column(&deliveries, |(e, _)| e.connector.id.as_uuid()))
        .bind(column(&deliveries, |(e, _)| e.event_type.as_str()))
        .bind(column(&deliveries, |(e, _)| {
            e.connector.integration_slug.as_str()
        }))
        .bind(column(&deliveries, |(e, _)| {
            e.connector.end_user_name.as_str()
        }))
        .bind(column(&deliveries, |(e, _)| e.connector.origin_id.as_str()))
        .bind(column(&deliveries, |(_, d)| d.url.as_str()))
        .bind(column(&deliveries, |(e, _)| e.created_at))
        .bind(column(&deliveries, |(_, d)| d.lease_until))
        .bind(column(&deliveries, |(_, d)| claimant(d)))
        .bind(column(&deliveries, |(_, d)| d.lease_until.is_some() as i32))
        .bind(WORK_CHANNEL)
        .bind(unclaimed)
        .bind(column(&deliveries, |(_, d)| {
            d.ordered_by.map(|c| c.as_uuid())
        }))
        .bind(&behind)
        .bind(&traceparents)
        .execute(conn)
        .await?;
        Ok(())
    }
}
