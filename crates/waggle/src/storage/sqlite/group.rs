//! Group commit: API events with their deliveries, and the dispatcher's claims, outcome
//! batches, releases and lease renewals, written by one thread of its own on its own
//! connection.
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

use bytes::Bytes;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::super::*;
use crate::domain::attempt::{Attempt, AttemptResult};
use crate::domain::time::{self, to_micros};

/// Where a write's answer goes once its group is committed.
type Done<T> = oneshot::Sender<StoreResult<T>>;

/// A write that waits for the next group commit: every write of the hot path, so that
/// none of them waits on SQLite's lock for another (a busy wait sleeps for milliseconds).
pub(super) enum GroupWrite {
    Events {
        sync: SyncChange,
        events: Arc<[(Event, Vec<NewDelivery>)]>,
        done: Done<()>,
    },
    Outcomes {
        outcomes: Arc<[DeliveryOutcome]>,
        done: Done<()>,
    },
    Claim {
        claim: Claim,
        done: Done<Vec<DeliveryJob>>,
    },
    Release {
        ids: Vec<DeliveryId>,
        unstarted: bool,
        done: Done<()>,
    },
    Renew {
        ids: Vec<DeliveryId>,
        until: Timestamp,
        done: Done<u64>,
    },
}

/// The arguments of [`Store::claim_due`].
pub(super) struct Claim {
    pub now: Timestamp,
    pub lease_until: Timestamp,
    pub limit: u32,
    pub skip: Vec<WebhookId>,
}

/// A write's answer, sent once the group is committed.
enum Answer {
    Done(StoreResult<()>),
    Jobs(StoreResult<Vec<DeliveryJob>>),
    Count(u64),
}

impl GroupWrite {
    fn answer(self, answer: Answer) {
        // A caller that gave up waiting is no reason to stop.
        let _ = match (self, answer) {
            (GroupWrite::Events { done, .. }, Answer::Done(r))
            | (GroupWrite::Outcomes { done, .. }, Answer::Done(r))
            | (GroupWrite::Release { done, .. }, Answer::Done(r)) => done.send(r).map_err(drop),
            (GroupWrite::Claim { done, .. }, Answer::Jobs(r)) => done.send(r).map_err(drop),
            (GroupWrite::Renew { done, .. }, Answer::Count(n)) => done.send(Ok(n)).map_err(drop),
            (write, _) => write.fail("the group commit answered out of kind"),
        };
    }

    fn fail(self, why: &str) -> Result<(), ()> {
        let error = || StoreError::Corrupt(format!("write failed: {why}"));
        match self {
            GroupWrite::Events { done, .. }
            | GroupWrite::Outcomes { done, .. }
            | GroupWrite::Release { done, .. } => done.send(Err(error())).map_err(drop),
            GroupWrite::Claim { done, .. } => done.send(Err(error())).map_err(drop),
            GroupWrite::Renew { done, .. } => done.send(Err(error())).map_err(drop),
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
            Ok(answers) => {
                for (write, answer) in group.drain(..).zip(answers) {
                    write.answer(answer);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = group.len(), "group commit failed");
                for write in group.drain(..) {
                    let _ = write.fail(&e.to_string());
                }
            }
        }
    }
}

/// One transaction for the group, its writes in the order they came. Sync changes go
/// first: a refused one (the job had already finished) writes nothing, and its write's
/// events are then left out, so each write is all or nothing while the group shares a
/// commit.
fn commit_group(conn: &mut Connection, group: &[GroupWrite]) -> rusqlite::Result<Vec<Answer>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut synced = Vec::with_capacity(group.len());
    for write in group {
        synced.push(match write {
            GroupWrite::Events { sync, .. } => apply_sync_change(&tx, sync)?,
            _ => Ok(()),
        });
    }
    let mut answers = Vec::with_capacity(group.len());
    for (write, synced) in group.iter().zip(synced) {
        answers.push(match write {
            GroupWrite::Events { events, .. } => {
                if synced.is_ok() {
                    insert_events(&tx, events)?;
                }
                Answer::Done(synced)
            }
            GroupWrite::Outcomes { outcomes, .. } => {
                write_outcomes(&tx, outcomes)?;
                Answer::Done(Ok(()))
            }
            GroupWrite::Claim { claim, .. } => Answer::Jobs(claim_due(&tx, claim)?),
            GroupWrite::Release { ids, unstarted, .. } => {
                release(&tx, ids, *unstarted)?;
                Answer::Done(Ok(()))
            }
            GroupWrite::Renew { ids, until, .. } => Answer::Count(renew(&tx, ids, until)?),
        });
    }
    tx.commit()?;
    Ok(answers)
}

/// Claims due deliveries (see [`Store::claim_due`]); a row that does not parse is a
/// corrupt store, answered to the caller rather than failing the whole group.
fn claim_due(conn: &Connection, claim: &Claim) -> rusqlite::Result<StoreResult<Vec<DeliveryJob>>> {
    let skip = vec!["?"; claim.skip.len()].join(", ");
    let sql = format!(
        "UPDATE deliveries SET attempts_started = attempts_started + 1, lease_until = ? \
         WHERE rowid IN (SELECT rowid FROM deliveries WHERE status = 'pending' \
         AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?) \
         AND webhook_id NOT IN ({skip}) ORDER BY next_attempt_at LIMIT ?) \
         RETURNING id, org_id, webhook_id, url, body, attempt_count, attempts_started, \
         first_attempt_at"
    );
    let now = to_micros(&claim.now);
    let mut values: Vec<Value> = vec![
        Value::Integer(to_micros(&claim.lease_until)),
        Value::Integer(now),
        Value::Integer(now),
    ];
    values.extend(claim.skip.iter().map(|w| Value::Text(w.to_string())));
    values.push(Value::Integer(claim.limit.into()));
    let mut statement = conn.prepare_cached(&sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(values))?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next()? {
        let text = |column: usize| row.get::<_, String>(column);
        let (delivery, org, webhook) = (text(0)?, text(1)?, text(2)?);
        let (Ok(id), Ok(org_id), Ok(webhook_id)) = (delivery.parse(), org.parse(), webhook.parse())
        else {
            return Ok(Err(StoreError::Corrupt(format!(
                "bad id in claimed delivery {delivery} (org {org}, webhook {webhook})"
            ))));
        };
        jobs.push(DeliveryJob {
            id,
            org_id,
            webhook_id,
            url: row.get(3)?,
            body: Bytes::from(row.get::<_, Vec<u8>>(4)?),
            attempts_recorded: row.get::<_, i64>(5)? as u32,
            attempt_number: row.get::<_, i64>(6)? as u32,
            first_attempt_at: row.get::<_, Option<i64>>(7)?.map(time::from_micros),
        });
    }
    Ok(Ok(jobs))
}

/// Gives claims back (see [`Store::release`]).
fn release(conn: &Connection, ids: &[DeliveryId], unstarted: bool) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "UPDATE deliveries SET lease_until = NULL, \
         attempts_started = MAX(attempts_started - ?, 0) WHERE id = ? AND status = 'pending'",
    )?;
    for id in ids {
        statement.execute(params![unstarted as i64, id.to_string()])?;
    }
    Ok(())
}

/// Extends claims still held (see [`Store::renew_leases`]); answers how many.
fn renew(conn: &Connection, ids: &[DeliveryId], until: &Timestamp) -> rusqlite::Result<u64> {
    let mut statement = conn.prepare_cached(
        "UPDATE deliveries SET lease_until = ? \
         WHERE id = ? AND status = 'pending' AND lease_until IS NOT NULL",
    )?;
    let until = to_micros(until);
    let mut renewed = 0;
    for id in ids {
        renewed += statement.execute(params![until, id.to_string()])? as u64;
    }
    Ok(renewed)
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
