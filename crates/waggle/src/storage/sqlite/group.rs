//! Group commit: API events with their deliveries, and the dispatcher's outcome batches,
//! written by one thread of its own on its own connection.
//!
//! SQLite's cost is mostly per transaction, so whatever is queued when the thread comes
//! round commits together, and under load one commit carries many API calls and outcome
//! batches. The thread runs each transaction start to end with prepared statements, row
//! by row: through an async driver, each statement would be a hop to the driver's thread
//! and a wake-up back on the runtime, and under load those hops, not SQLite, set the pace.
//! Each caller hears back only once its write is committed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::super::*;
use crate::domain::attempt::{Attempt, AttemptResult};
use crate::domain::time::{self, to_micros};

/// A write that waits for the next group commit.
pub(super) enum GroupWrite {
    Events {
        sync: SyncChange,
        events: Arc<[(Event, Vec<NewDelivery>)]>,
        done: oneshot::Sender<StoreResult<()>>,
    },
    Outcomes {
        outcomes: Arc<[DeliveryOutcome]>,
        done: oneshot::Sender<StoreResult<()>>,
    },
}

impl GroupWrite {
    fn into_done(self) -> oneshot::Sender<StoreResult<()>> {
        match self {
            GroupWrite::Events { done, .. } | GroupWrite::Outcomes { done, .. } => done,
        }
    }
}

/// The most writes one group commit carries.
const GROUP_MAX: usize = 256;

/// Opens the writer's connection to the (already migrated) database file and starts its
/// thread, which ends when every sender of the queue is dropped.
pub(super) fn start(path: &Path) -> anyhow::Result<mpsc::Sender<GroupWrite>> {
    use anyhow::Context;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} for the group commit", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // As the store's other connections: see the module of the store.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;",
    )
    .context("setting up the group commit's connection")?;
    let (queue, writes) = mpsc::channel();
    std::thread::Builder::new()
        .name("sqlite-group-commit".into())
        .spawn(move || run(conn, writes))
        .context("starting the group commit thread")?;
    Ok(queue)
}

fn run(mut conn: Connection, writes: mpsc::Receiver<GroupWrite>) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while let Ok(first) = writes.recv() {
        group.push(first);
        group.extend(writes.try_iter().take(GROUP_MAX - 1));
        match commit_group(&mut conn, &group) {
            Ok(results) => {
                for (write, result) in group.drain(..).zip(results) {
                    let _ = write.into_done().send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = group.len(), "group commit failed");
                for write in group.drain(..) {
                    let _ = write
                        .into_done()
                        .send(Err(StoreError::Corrupt(format!("write failed: {e}"))));
                }
            }
        }
    }
}

/// One transaction for the group. Sync changes go first: a refused one (the job had
/// already finished) writes nothing, and its write's events are then left out, so each
/// write is all or nothing while the group shares a commit.
fn commit_group(
    conn: &mut Connection,
    group: &[GroupWrite],
) -> rusqlite::Result<Vec<StoreResult<()>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for write in group {
        results.push(match write {
            GroupWrite::Events { sync, .. } => apply_sync_change(&tx, sync)?,
            GroupWrite::Outcomes { .. } => Ok(()),
        });
    }
    for (write, result) in group.iter().zip(&results) {
        match (write, result) {
            (GroupWrite::Events { events, .. }, Ok(())) => insert_events(&tx, events)?,
            (GroupWrite::Outcomes { outcomes, .. }, _) => write_outcomes(&tx, outcomes)?,
            (GroupWrite::Events { .. }, Err(_)) => {}
        }
    }
    tx.commit()?;
    Ok(results)
}

fn apply_sync_change(conn: &Connection, sync: &SyncChange) -> rusqlite::Result<StoreResult<()>> {
    match sync {
        SyncChange::None => {}
        SyncChange::Started(job) => {
            conn.prepare_cached(
                "INSERT INTO sync_jobs (id, connector_id, initial_sync, sync_type, display_status, \
                 last_sync_start_time) VALUES (?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                job.id.to_string(),
                job.connector_id.to_string(),
                job.initial_sync,
                job.sync_type.as_str(),
                job.display_status.as_str(),
                to_micros(&job.last_sync_start_time),
            ])?;
        }
        SyncChange::Finished(job) => {
            let updated = conn
                .prepare_cached(
                    "UPDATE sync_jobs SET display_status = ?, finished_at = ?, error_message = ?, \
                     error_detail = ? WHERE id = ? AND display_status = 'Syncing'",
                )?
                .execute(params![
                    job.display_status.as_str(),
                    job.finished_at.as_ref().map(to_micros),
                    job.error.as_ref().map(|e| e.message.as_str()),
                    job.error.as_ref().map(|e| e.detail.to_string()),
                    job.id.to_string(),
                ])?;
            if updated == 0 {
                return Ok(Err(StoreError::Conflict(
                    "the sync job has already finished".into(),
                )));
            }
        }
    }
    Ok(Ok(()))
}

/// Inserts events and their deliveries.
fn insert_events(conn: &Connection, events: &[(Event, Vec<NewDelivery>)]) -> rusqlite::Result<()> {
    let mut insert_event = conn.prepare_cached(
        "INSERT INTO events (id, org_id, event_type, environment, connector_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )?;
    let mut insert_delivery = conn.prepare_cached(
        "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, connector_id, \
         event_type, integration_name, end_user_name, origin_id, url, body, status, created_at, \
         next_attempt_at, lease_until, attempts_started) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
    )?;
    for (event, deliveries) in events {
        let (event_id, org_id) = (event.id.to_string(), event.org_id.to_string());
        let c = &event.connector;
        let connector_id = c.id.to_string();
        let created = to_micros(&event.created_at);
        insert_event.execute(params![
            event_id,
            org_id,
            event.event_type.as_str(),
            event.environment().as_str(),
            connector_id,
            created,
        ])?;
        for d in deliveries {
            insert_delivery.execute(params![
                d.id.to_string(),
                org_id,
                event_id,
                d.webhook_id.to_string(),
                d.webhook_name,
                connector_id,
                event.event_type.as_str(),
                c.integration_slug,
                c.end_user_name,
                c.origin_id,
                d.url,
                &d.body[..],
                created,
                created,
                d.lease_until.as_ref().map(to_micros),
                d.lease_until.is_some() as i64,
            ])?;
        }
    }
    Ok(())
}

/// Records attempts and the deliveries' new states, one outcome after another: each
/// applies only while its delivery is pending, so of two outcomes of one delivery in a
/// group, the second adds to a scheduled retry and changes nothing after a final one.
fn write_outcomes(conn: &Connection, outcomes: &[DeliveryOutcome]) -> rusqlite::Result<()> {
    let mut insert_attempt = conn.prepare_cached(
        "INSERT OR REPLACE INTO attempts (delivery_id, number, started_at, duration_us, \
         request_url, request_headers, response_status, response_headers, response_body, \
         error_category, error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    let mut update_delivery = conn.prepare_cached(
        "UPDATE deliveries SET status = ?, attempt_count = attempt_count + ?, \
         response_code = ?, last_error = ?, \
         first_attempt_at = COALESCE(first_attempt_at, ?), \
         next_attempt_at = ?, lease_until = ?, finished_at = ? \
         WHERE id = ? AND status = 'pending'",
    )?;
    let now = to_micros(&time::now());
    let mut triggered: HashMap<WebhookId, Timestamp> = HashMap::new();
    for o in outcomes {
        let delivery_id = o.delivery_id.to_string();
        if let Some(a) = &o.attempt {
            insert_attempt.execute(attempt_params(&delivery_id, a))?;
            let at = triggered.entry(o.webhook_id).or_insert(a.started_at);
            *at = (*at).max(a.started_at);
        }
        let (response_code, next_attempt_at, finished) = match o.state {
            DeliveryState::Delivered { status } => (Some(status as i64), None, Some(now)),
            DeliveryState::RetryScheduled { at } => (None, Some(to_micros(&at)), None),
            DeliveryState::Failed => (None, None, Some(now)),
        };
        update_delivery.execute(params![
            o.state.status_str(),
            o.attempt.is_some() as i64,
            response_code,
            o.last_error,
            o.first_attempt_at.as_ref().map(to_micros),
            next_attempt_at,
            o.lease_until.as_ref().map(to_micros),
            finished,
            delivery_id,
        ])?;
    }
    let mut update_webhook = conn.prepare_cached(
        "UPDATE webhooks SET last_triggered_at = MAX(COALESCE(last_triggered_at, 0), ?) \
         WHERE id = ?",
    )?;
    for (webhook, at) in triggered {
        update_webhook.execute(params![to_micros(&at), webhook.to_string()])?;
    }
    Ok(())
}

/// An attempt's row, in the column order of the insert.
fn attempt_params<'a>(delivery_id: &'a str, a: &'a Attempt) -> impl rusqlite::Params + 'a {
    let request_headers = serde_json::to_string(&a.request_headers).expect("headers serialize");
    let (status, response_headers, body, category, message) = match &a.result {
        AttemptResult::Response {
            status,
            headers,
            body,
        } => (
            Some(*status as i64),
            Some(serde_json::to_string(headers).expect("headers serialize")),
            Some(body.as_slice()),
            None,
            None,
        ),
        AttemptResult::Failure { category, message } => (
            None,
            None,
            None,
            Some(category.as_str()),
            Some(message.as_str()),
        ),
    };
    rusqlite::params_from_iter::<[Box<dyn rusqlite::ToSql + 'a>; 11]>([
        Box::new(delivery_id),
        Box::new(a.number as i64),
        Box::new(to_micros(&a.started_at)),
        Box::new(a.duration.as_micros() as i64),
        Box::new(a.request_url.as_str()),
        Box::new(request_headers),
        Box::new(status),
        Box::new(response_headers),
        Box::new(body),
        Box::new(category),
        Box::new(message),
    ])
}
