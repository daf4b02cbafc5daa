//! The PostgreSQL store, shared by several `waggle serve` nodes: any node accepts API calls
//! and any node delivers.
//!
//! Work is claimed with `FOR UPDATE SKIP LOCKED`, so nodes polling at once never take the
//! same delivery, and every claim carries a lease and the claiming node's id: the holder
//! renews it while the job is in its memory ([`Store::renew_leases`]), and once a dead
//! node's leases run out any node takes its work. One dedicated connection LISTENs on
//! `waggle_work`, notified when deliveries are made or given back unclaimed, to wake the
//! dispatcher at once; it reconnects on failure, and polling stays the fallback.
//!
//! Times are bound as the nodes' clocks give them, so nodes must keep their clocks in
//! sync (NTP); a skew eats into the lease's margin.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::*;
use crate::domain::attempt::{AttemptResult, FailureCategory};
use crate::domain::connector::{DisplayStatus, SyncError, SyncType};
use crate::domain::time;

/// Connections per node. Dispatching needs few (claims and lease renewals are one statement
/// per batch, outcome batches one short transaction); the rest serve the API.
const POOL_SIZE: u32 = 10;
/// Notified when deliveries are made or given back unclaimed: idle dispatchers claim them.
const WORK_CHANNEL: &str = "waggle_work";

pub struct PgStore {
    pool: PgPool,
    /// This store's id, written in `deliveries.claimed_by` by its claims: only the node
    /// that made a claim renews or releases it. New on every start.
    node: Uuid,
    /// Woken by the listener on `waggle_work`.
    work: Arc<Notify>,
    /// Stops the listener when the store is dropped.
    _listener: DropGuard,
}

impl PgStore {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .context("invalid PostgreSQL URL")?
            .application_name("waggle");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .with_context(|| {
                format!(
                    "connecting to PostgreSQL database '{}' on {}:{}",
                    options.get_database().unwrap_or("postgres"),
                    options.get_host(),
                    options.get_port()
                )
            })?;
        // Nodes starting together migrate one at a time: sqlx holds an advisory lock.
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("migrating the PostgreSQL database")?;
        // The listener's own pool of one, so it never waits behind queries, and a dropped
        // connection is replaced by a fresh one.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let listener = listen(&listen_pool)
            .await
            .context("listening for PostgreSQL notifications")?;
        let stop = CancellationToken::new();
        let store = Self {
            pool,
            node: Uuid::new_v4(),
            work: Arc::new(Notify::new()),
            _listener: stop.clone().drop_guard(),
        };
        tokio::spawn(
            Notifications {
                pool: listen_pool,
                work: store.work.clone(),
            }
            .run(listener, stop),
        );
        Ok(store)
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is replaced by `Notifications::run`, which must know of the loss.
    listener.eager_reconnect(false);
    listener.listen(WORK_CHANNEL).await?;
    Ok(listener)
}

/// The listener's side of the store's notification state.
struct Notifications {
    pool: PgPool,
    work: Arc<Notify>,
}

impl Notifications {
    /// Passes notifications on until `stop`; reconnects, with a growing pause, whenever
    /// the connection fails. Notifications sent while it was down are lost, so every
    /// reconnect wakes the dispatcher (and its polling catches up meanwhile).
    async fn run(self, first: PgListener, stop: CancellationToken) {
        let mut listener = Some(first);
        let mut pause = Duration::from_millis(100);
        loop {
            let mut connected = match listener.take() {
                Some(l) => l,
                None => match listen(&self.pool).await {
                    Ok(l) => {
                        tracing::info!("listening for PostgreSQL notifications again");
                        pause = Duration::from_millis(100);
                        l
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?pause, "cannot listen for PostgreSQL notifications");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            self.work.notify_one();
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = connected.try_recv() => next,
                };
                match next {
                    Ok(Some(_)) => self.work.notify_one(),
                    Ok(None) | Err(_) => {
                        if let Err(e) = next {
                            tracing::warn!(error = %e, "PostgreSQL notifications failed");
                        } else {
                            tracing::warn!("lost the PostgreSQL notification connection");
                        }
                        break;
                    }
                }
            }
        }
    }
}

async fn notify(conn: &mut PgConnection, channel: &str, payload: &str) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn id<T: From<Uuid>>(row: &PgRow, column: &str) -> StoreResult<T> {
    Ok(row.try_get::<Uuid, _>(column)?.into())
}

fn json_column<T: serde::de::DeserializeOwned>(row: &PgRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(format!("{column}: {e}")))
}

fn unique_violation(e: sqlx::Error, what: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what.into()),
        _ => StoreError::Database(e),
    }
}

const WEBHOOK_COLUMNS: &str =
    "id, org_id, name, url, type, events, is_enabled, created_at, last_triggered_at";

fn webhook_from_row(row: &PgRow) -> StoreResult<Webhook> {
    let environment: String = row.try_get("type")?;
    Ok(Webhook {
        webhook_id: id(row, "id")?,
        org_id: id(row, "org_id")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        is_enabled: row.try_get("is_enabled")?,
        created_at: row.try_get("created_at")?,
        last_triggered_at: row.try_get("last_triggered_at")?,
        environment: Environment::parse(&environment).map_err(corrupt)?,
        events: json_column(row, "events")?,
    })
}

const CONNECTOR_COLUMNS: &str = "id, org_id, environment, display_name, integration_slug, \
     categories, origin_id, connector_status, end_user_name, end_user_email, created_at";

fn connector_from_row(row: &PgRow) -> StoreResult<Connector> {
    let environment: String = row.try_get("environment")?;
    let status: String = row.try_get("connector_status")?;
    Ok(Connector {
        id: id(row, "id")?,
        org_id: id(row, "org_id")?,
        environment: Environment::parse(&environment).map_err(corrupt)?,
        display_name: row.try_get("display_name")?,
        integration_slug: row.try_get("integration_slug")?,
        categories: json_column(row, "categories")?,
        origin_id: row.try_get("origin_id")?,
        connector_status: ConnectorStatus::parse(&status).map_err(corrupt)?,
        end_user_name: row.try_get("end_user_name")?,
        end_user_email: row.try_get("end_user_email")?,
        created_at: row.try_get("created_at")?,
    })
}

fn sync_job_from_row(row: &PgRow) -> StoreResult<SyncJob> {
    let sync_type: String = row.try_get("sync_type")?;
    let display_status: String = row.try_get("display_status")?;
    let finished_at: Option<Timestamp> = row.try_get("finished_at")?;
    let error = match row.try_get::<Option<String>, _>("error_message")? {
        Some(message) => Some(SyncError {
            failed_at: finished_at.unwrap_or_default(),
            message,
            detail: row
                .try_get::<Option<String>, _>("error_detail")?
                .map(|d| serde_json::from_str(&d))
                .transpose()
                .map_err(corrupt)?
                .unwrap_or(serde_json::Value::Null),
        }),
        None => None,
    };
    Ok(SyncJob {
        id: id(row, "id")?,
        connector_id: id(row, "connector_id")?,
        initial_sync: row.try_get("initial_sync")?,
        sync_type: SyncType::parse(&sync_type).map_err(corrupt)?,
        display_status: DisplayStatus::parse(&display_status)
            .ok_or_else(|| corrupt(display_status))?,
        last_sync_start_time: row.try_get("last_sync_start_time")?,
        finished_at,
        error,
    })
}

const LOG_COLUMNS: &str = "id, webhook_id, webhook_name, connector_id, event_type, url, status, \
     response_code, attempt_count, last_error, integration_name, end_user_name, origin_id, \
     created_at, next_attempt_at";

fn log_from_row(row: &PgRow) -> StoreResult<LogEntry> {
    let event_type: String = row.try_get("event_type")?;
    Ok(LogEntry {
        id: id(row, "id")?,
        webhook_id: id(row, "webhook_id")?,
        webhook_name: row.try_get("webhook_name")?,
        connector_id: id(row, "connector_id")?,
        event_type: EventType::parse(&event_type).map_err(corrupt)?,
        url: row.try_get("url")?,
        status: row.try_get("status")?,
        response_code: row
            .try_get::<Option<i32>, _>("response_code")?
            .map(|c| c as u16),
        attempt_count: row.try_get::<i32, _>("attempt_count")? as u32,
        last_error: row.try_get("last_error")?,
        integration_name: row.try_get("integration_name")?,
        end_user_name: row.try_get("end_user_name")?,
        origin_id: row.try_get("origin_id")?,
        created_at: row.try_get("created_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
    })
}

fn attempt_from_row(row: &PgRow) -> StoreResult<Attempt> {
    let result = match row.try_get::<Option<i32>, _>("response_status")? {
        Some(status) => AttemptResult::Response {
            status: status as u16,
            headers: row
                .try_get::<Option<String>, _>("response_headers")?
                .map(|h| serde_json::from_str(&h))
                .transpose()
                .map_err(corrupt)?
                .unwrap_or_default(),
            body: row
                .try_get::<Option<Vec<u8>>, _>("response_body")?
                .unwrap_or_default(),
        },
        None => {
            let category: String = row.try_get("error_category")?;
            AttemptResult::Failure {
                category: FailureCategory::parse(&category).ok_or_else(|| corrupt(category))?,
                message: row
                    .try_get::<Option<String>, _>("error_message")?
                    .unwrap_or_default(),
            }
        }
    };
    Ok(Attempt {
        delivery_id: id(row, "delivery_id")?,
        number: row.try_get::<i32, _>("number")? as u32,
        started_at: row.try_get("started_at")?,
        duration: Duration::from_micros(row.try_get::<i64, _>("duration_us")?.max(0) as u64),
        request_url: row.try_get("request_url")?,
        request_headers: json_column(row, "request_headers")?,
        result,
    })
}

/// Reads, beside a delivery's columns, its event's shared part of the body.
const SHARED_BODY: &str =
    "(SELECT e.shared_body FROM events e WHERE e.id = deliveries.event_id) AS shared_body";

/// The body of the delivery in `row`, which has its columns and [`SHARED_BODY`].
fn body_from_row(row: &PgRow) -> StoreResult<Bytes> {
    delivery_body(
        row.try_get("body")?,
        id(row, "webhook_id")?,
        row.try_get("url")?,
        row.try_get("event_type")?,
        row.try_get::<Option<&[u8]>, _>("shared_body")?,
    )
}

/// Due deliveries a claim reads in due order, at most (see [`Store::claim_due`]).
const SCAN: i64 = 4096;

/// The webhooks that have pending deliveries, each once: a walk of their queues' index
/// that jumps from one webhook to the next, reading an entry per such webhook however
/// many deliveries each holds and however many other webhooks exist (every webhook of
/// the table would be a probe per webhook per claim).
const QUEUED_WEBHOOKS: &str = "WITH RECURSIVE queued (webhook_id) AS ( \
       (SELECT webhook_id FROM deliveries WHERE status = 'pending' \
        ORDER BY webhook_id LIMIT 1) \
       UNION ALL \
       SELECT (SELECT d.webhook_id FROM deliveries d WHERE d.status = 'pending' \
               AND d.webhook_id > q.webhook_id ORDER BY d.webhook_id LIMIT 1) \
       FROM queued q WHERE q.webhook_id IS NOT NULL) \
     SELECT webhook_id FROM queued WHERE webhook_id IS NOT NULL";

/// A claim of the deliveries of `due` (`$1` the lease, `$2` this node), and what it
/// answers: the rows [`job_from_row`] reads.
const CLAIM: &str = "UPDATE deliveries d SET lease_until = $1, claimed_by = $2, \
     attempts_started = d.attempts_started + 1";
const CLAIMED: &str = "RETURNING d.id, d.org_id, d.webhook_id, d.url, d.body, d.event_type, \
     (SELECT e.shared_body FROM events e WHERE e.id = d.event_id) AS shared_body, \
     d.attempt_count, d.attempts_started, d.first_attempt_at";

fn job_from_row(row: &PgRow) -> StoreResult<DeliveryJob> {
    Ok(DeliveryJob {
        id: id(row, "id")?,
        org_id: id(row, "org_id")?,
        webhook_id: id(row, "webhook_id")?,
        url: row.try_get("url")?,
        body: body_from_row(row)?,
        attempt_number: row.try_get::<i32, _>("attempts_started")? as u32,
        attempts_recorded: row.try_get::<i32, _>("attempt_count")? as u32,
        first_attempt_at: row.try_get("first_attempt_at")?,
    })
}

fn uuids(ids: &[DeliveryId]) -> Vec<Uuid> {
    ids.iter().map(DeliveryId::as_uuid).collect()
}

/// One column of a multi-row write, bound as an array: `UNNEST` turns the columns back
/// into rows, so one statement writes any number of them.
fn column<'a, R, T>(rows: &'a [R], f: impl FnMut(&'a R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// A delivery's change from the outcomes of one batch, as writing them one after another
/// would leave it: each applies only while the delivery is pending, so an outcome after a
/// scheduled retry adds to it and one after a final outcome changes nothing.
struct DeliveryChange<'a> {
    outcome: &'a DeliveryOutcome,
    /// Attempts recorded.
    recorded: i32,
    first_attempt_at: Option<Timestamp>,
}

/// Merges outcomes sorted by delivery id into one change per delivery (a delivery taken
/// again after its claim ran out can have two outcomes in a batch).
fn delivery_changes<'a>(sorted: &[&'a DeliveryOutcome]) -> Vec<DeliveryChange<'a>> {
    let mut changes: Vec<DeliveryChange<'a>> = Vec::with_capacity(sorted.len());
    for &o in sorted {
        let recorded = o.attempt.is_some() as i32;
        match changes.last_mut() {
            Some(c) if c.outcome.delivery_id == o.delivery_id => {
                if matches!(c.outcome.state, DeliveryState::RetryScheduled { .. }) {
                    c.outcome = o;
                    c.recorded += recorded;
                    c.first_attempt_at = c.first_attempt_at.or(o.first_attempt_at);
                }
            }
            _ => changes.push(DeliveryChange {
                outcome: o,
                recorded,
                first_attempt_at: o.first_attempt_at,
            }),
        }
    }
    changes
}

impl PgStore {
    /// The rest of a claim, once the due order's first [`SCAN`] deliveries were not enough:
    /// each webhook with room has its own queue looked up, beside the jobs `claimed`.
    async fn claim_each_webhook(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        room: &ClaimRoom,
        claimed: &[DeliveryJob],
    ) -> StoreResult<Vec<DeliveryJob>> {
        let mut taken: HashMap<WebhookId, u32> = HashMap::new();
        for job in claimed {
            *taken.entry(job.webhook_id).or_default() += 1;
        }
        let (mut webhooks, mut rooms) = (Vec::new(), Vec::new());
        for webhook in sqlx::query_scalar::<_, Uuid>(QUEUED_WEBHOOKS)
            .fetch_all(&self.pool)
            .await?
        {
            let webhook = WebhookId::from(webhook);
            let left = room
                .webhooks
                .get(&webhook)
                .copied()
                .unwrap_or(room.otherwise)
                .saturating_sub(taken.get(&webhook).copied().unwrap_or(0));
            if left > 0 {
                webhooks.push(webhook.as_uuid());
                rooms.push(left as i64);
            }
        }
        if webhooks.is_empty() {
            return Ok(Vec::new());
        }
        // The webhook is matched as a range of one, not by equality: with equality the
        // planner may read the due order (the index of every webhook) and filter it, the
        // very read this lookup is there to avoid.
        let rows = sqlx::query(&format!(
            "WITH due AS (SELECT q.id FROM unnest($5::uuid[], $6::bigint[]) AS w (webhook_id, room) \
               CROSS JOIN LATERAL (SELECT id FROM deliveries \
                 WHERE webhook_id >= w.webhook_id AND webhook_id <= w.webhook_id \
                 AND status = 'pending' AND next_attempt_at <= $3 \
                 AND (lease_until IS NULL OR lease_until <= $3) \
                 ORDER BY webhook_id, next_attempt_at LIMIT w.room FOR UPDATE SKIP LOCKED) q \
               LIMIT $4) \
             {CLAIM} FROM due WHERE d.id = due.id {CLAIMED}"
        ))
        .bind(lease_until)
        .bind(self.node)
        .bind(now)
        .bind(room.limit as i64 - claimed.len() as i64)
        .bind(&webhooks)
        .bind(&rooms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The claim a new delivery starts with: this node's, or none.
    fn claimant(&self, lease_until: Option<Timestamp>) -> Option<Uuid> {
        lease_until.map(|_| self.node)
    }

    /// Inserts events and their deliveries, one statement for each table whatever their
    /// number. Returns whether any delivery was made unclaimed.
    async fn insert_events(
        &self,
        conn: &mut PgConnection,
        events: &[NewEvent],
    ) -> StoreResult<bool> {
        if events.is_empty() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO events (id, org_id, event_type, environment, connector_id, created_at, \
             shared_body) SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], \
             $5::uuid[], $6::timestamptz[], $7::bytea[])",
        )
        .bind(column(events, |r| r.event.id.as_uuid()))
        .bind(column(events, |r| r.event.org_id.as_uuid()))
        .bind(column(events, |r| r.event.event_type.as_str()))
        .bind(column(events, |r| r.event.environment().as_str()))
        .bind(column(events, |r| r.event.connector.id.as_uuid()))
        .bind(column(events, |r| r.event.created_at))
        .bind(column(events, |r| r.shared_body.as_ref()))
        .execute(&mut *conn)
        .await?;
        let deliveries: Vec<(&Event, &NewDelivery)> = events
            .iter()
            .flat_map(|r| r.deliveries.iter().map(move |d| (&r.event, d)))
            .collect();
        if deliveries.is_empty() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, connector_id, \
             event_type, integration_name, end_user_name, origin_id, url, status, created_at, \
             next_attempt_at, lease_until, claimed_by, attempts_started) \
             SELECT id, org_id, event_id, webhook_id, webhook_name, connector_id, event_type, \
             integration_name, end_user_name, origin_id, url, 'pending', created_at, \
             created_at, lease_until, claimed_by, attempts_started \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::uuid[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
             $12::timestamptz[], $13::timestamptz[], $14::uuid[], $15::int4[]) \
             AS v (id, org_id, event_id, webhook_id, webhook_name, connector_id, event_type, \
             integration_name, end_user_name, origin_id, url, created_at, lease_until, \
             claimed_by, attempts_started)",
        )
        .bind(column(&deliveries, |(_, d)| d.id.as_uuid()))
        .bind(column(&deliveries, |(e, _)| e.org_id.as_uuid()))
        .bind(column(&deliveries, |(e, _)| e.id.as_uuid()))
        .bind(column(&deliveries, |(_, d)| d.webhook_id.as_uuid()))
        .bind(column(&deliveries, |(_, d)| d.webhook_name.as_str()))
        .bind(column(&deliveries, |(e, _)| e.connector.id.as_uuid()))
        .bind(column(&deliveries, |(e, _)| e.event_type.as_str()))
        .bind(column(&deliveries, |(e, _)| e.connector.integration_slug.as_str()))
        .bind(column(&deliveries, |(e, _)| e.connector.end_user_name.as_str()))
        .bind(column(&deliveries, |(e, _)| e.connector.origin_id.as_str()))
        .bind(column(&deliveries, |(_, d)| d.url.as_str()))
        .bind(column(&deliveries, |(e, _)| e.created_at))
        .bind(column(&deliveries, |(_, d)| d.lease_until))
        .bind(column(&deliveries, |(_, d)| self.claimant(d.lease_until)))
        .bind(column(&deliveries, |(_, d)| d.lease_until.is_some() as i32))
        .execute(&mut *conn)
        .await?;
        Ok(deliveries.iter().any(|(_, d)| d.lease_until.is_none()))
    }

    /// Records attempts and the deliveries' new states, a fixed number of statements per
    /// batch. `sorted` is in delivery id order.
    async fn write_outcomes(
        &self,
        conn: &mut PgConnection,
        sorted: &[&DeliveryOutcome],
    ) -> StoreResult<()> {
        let changes = delivery_changes(sorted);
        let ids = column(&changes, |c| c.outcome.delivery_id.as_uuid());
        // Rows are locked in id order, as every other multi-row write that waits for
        // locks does, so that two of them cannot deadlock. First, since the attempts'
        // foreign keys lock these rows too, and a join gives no order of its own.
        sqlx::query("SELECT 1 FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;

        // One row per attempt number: the last written wins, as it did one at a time.
        let mut attempts: Vec<&Attempt> = Vec::new();
        let mut numbered: HashMap<(DeliveryId, u32), usize> = HashMap::new();
        for a in sorted.iter().filter_map(|o| o.attempt.as_ref()) {
            match numbered.entry((a.delivery_id, a.number)) {
                Entry::Occupied(at) => attempts[*at.get()] = a,
                Entry::Vacant(at) => {
                    at.insert(attempts.len());
                    attempts.push(a);
                }
            }
        }
        if !attempts.is_empty() {
            let n = attempts.len();
            let mut status = Vec::with_capacity(n);
            let mut headers = Vec::with_capacity(n);
            let mut body = Vec::with_capacity(n);
            let mut category = Vec::with_capacity(n);
            let mut message = Vec::with_capacity(n);
            for a in &attempts {
                match &a.result {
                    AttemptResult::Response {
                        status: s,
                        headers: h,
                        body: b,
                    } => {
                        status.push(Some(*s as i32));
                        headers.push(Some(serde_json::to_string(h).expect("headers serialize")));
                        body.push(Some(b.as_slice()));
                        category.push(None);
                        message.push(None);
                    }
                    AttemptResult::Failure {
                        category: c,
                        message: m,
                    } => {
                        status.push(None);
                        headers.push(None);
                        body.push(None);
                        category.push(Some(c.as_str()));
                        message.push(Some(m.as_str()));
                    }
                }
            }
            sqlx::query(
                "INSERT INTO attempts (delivery_id, number, started_at, duration_us, \
                 request_url, request_headers, response_status, response_headers, response_body, \
                 error_category, error_message) \
                 SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::timestamptz[], $4::int8[], \
                 $5::text[], $6::text[], $7::int4[], $8::text[], $9::bytea[], $10::text[], \
                 $11::text[]) \
                 ON CONFLICT (delivery_id, number) DO UPDATE SET started_at = EXCLUDED.started_at, \
                 duration_us = EXCLUDED.duration_us, request_url = EXCLUDED.request_url, \
                 request_headers = EXCLUDED.request_headers, \
                 response_status = EXCLUDED.response_status, \
                 response_headers = EXCLUDED.response_headers, \
                 response_body = EXCLUDED.response_body, \
                 error_category = EXCLUDED.error_category, error_message = EXCLUDED.error_message",
            )
            .bind(column(&attempts, |a| a.delivery_id.as_uuid()))
            .bind(column(&attempts, |a| a.number as i32))
            .bind(column(&attempts, |a| a.started_at))
            .bind(column(&attempts, |a| a.duration.as_micros() as i64))
            .bind(column(&attempts, |a| a.request_url.as_str()))
            .bind(column(&attempts, |a| {
                serde_json::to_string(&a.request_headers).expect("headers serialize")
            }))
            .bind(status)
            .bind(headers)
            .bind(body)
            .bind(category)
            .bind(message)
            .execute(&mut *conn)
            .await?;
        }

        let now = time::now();
        let states = column(&changes, |c| match c.outcome.state {
            DeliveryState::Delivered { status } => (Some(status as i32), None, Some(now)),
            DeliveryState::RetryScheduled { at } => (None, Some(at), None),
            DeliveryState::Failed => (None, None, Some(now)),
        });
        sqlx::query(
            "UPDATE deliveries d SET status = v.status, \
             attempt_count = d.attempt_count + v.recorded, response_code = v.response_code, \
             last_error = v.last_error, \
             first_attempt_at = COALESCE(d.first_attempt_at, v.first_attempt_at), \
             next_attempt_at = v.next_attempt_at, lease_until = v.lease_until, \
             claimed_by = v.claimed_by, finished_at = v.finished_at \
             FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::int4[], $5::text[], \
             $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::uuid[], \
             $10::timestamptz[]) \
             AS v (id, status, recorded, response_code, last_error, first_attempt_at, \
             next_attempt_at, lease_until, claimed_by, finished_at) \
             WHERE d.id = v.id AND d.status = 'pending'",
        )
        .bind(&ids)
        .bind(column(&changes, |c| c.outcome.state.status_str()))
        .bind(column(&changes, |c| c.recorded))
        .bind(column(&states, |s| s.0))
        .bind(column(&changes, |c| c.outcome.last_error.as_deref()))
        .bind(column(&changes, |c| c.first_attempt_at))
        .bind(column(&states, |s| s.1))
        .bind(column(&changes, |c| c.outcome.lease_until))
        .bind(column(&changes, |c| self.claimant(c.outcome.lease_until)))
        .bind(column(&states, |s| s.2))
        .execute(&mut *conn)
        .await?;

        // Every attempt triggers its webhook, whether or not its outcome still applied.
        let mut triggered: BTreeMap<WebhookId, Timestamp> = BTreeMap::new();
        for o in sorted {
            if let Some(a) = &o.attempt {
                let at = triggered.entry(o.webhook_id).or_insert(a.started_at);
                *at = (*at).max(a.started_at);
            }
        }
        if !triggered.is_empty() {
            // Webhooks after deliveries, each in id order (as `delete_webhook` takes them),
            // locked by the subquery before the join reaches them. GREATEST skips NULL:
            // the first trigger sets it.
            sqlx::query(
                "UPDATE webhooks w SET last_triggered_at = GREATEST(w.last_triggered_at, v.at) \
                 FROM UNNEST($1::uuid[], $2::timestamptz[]) AS v (id, at) \
                 WHERE w.id = v.id AND w.id IN ( \
                   SELECT id FROM webhooks WHERE id = ANY($1) ORDER BY id FOR UPDATE)",
            )
            .bind(triggered.keys().map(|w| w.as_uuid()).collect::<Vec<_>>())
            .bind(triggered.values().copied().collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_organization(
        &self,
        org: &Organization,
        api_key: &NewApiKey,
        admin: Option<&DashboardUser>,
    ) -> StoreResult<()> {
        let now = time::now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO organizations (id, name, signature_key, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org.id.as_uuid())
        .bind(&org.name)
        .bind(org.signature_key.expose())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, prefix, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(api_key.id.as_uuid())
        .bind(org.id.as_uuid())
        .bind(&api_key.prefix)
        .bind(&api_key.hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(user) = admin {
            sqlx::query(
                "INSERT INTO dashboard_users (id, org_id, email, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user.id.as_uuid())
            .bind(org.id.as_uuid())
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique_violation(e, "a dashboard user with this email already exists"))?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn organization_count(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn organization(&self, org: OrgId) -> StoreResult<Option<Organization>> {
        let row = sqlx::query("SELECT id, name, signature_key FROM organizations WHERE id = $1")
            .bind(org.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Organization {
                id: id(&row, "id")?,
                name: row.try_get("name")?,
                signature_key: SignatureKey::from_stored(row.try_get("signature_key")?),
            })
        })
        .transpose()
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<(ApiKeyId, OrgId)>> {
        let row = sqlx::query("SELECT id, org_id FROM api_keys WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((id(&row, "id")?, id(&row, "org_id")?)))
            .transpose()
    }

    async fn touch_api_key(&self, key: ApiKeyId, at: Timestamp) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(key.as_uuid())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every node reads the key per attempt (see `delivery::keys`), so the new key signs
    /// everywhere from the commit on.
    async fn set_signature_key(&self, org: OrgId, key: &SignatureKey) -> StoreResult<()> {
        sqlx::query("UPDATE organizations SET signature_key = $1 WHERE id = $2")
            .bind(key.expose())
            .bind(org.as_uuid())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn dashboard_user_by_email(&self, email: &str) -> StoreResult<Option<DashboardUser>> {
        let row = sqlx::query(
            "SELECT id, org_id, email, password_hash FROM dashboard_users \
             WHERE lower(email) = lower($1)",
        )
        .bind(email.trim())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(DashboardUser {
                id: id(&row, "id")?,
                org_id: id(&row, "org_id")?,
                email: row.try_get("email")?,
                password_hash: row.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    async fn create_session(&self, session: &DashboardSession) -> StoreResult<()> {
        let now = time::now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (token_hash, user_id, org_id, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&session.token_hash)
        .bind(session.user_id.as_uuid())
        .bind(session.org_id.as_uuid())
        .bind(&session.csrf_token)
        .bind(now)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<DashboardSession>> {
        let row = sqlx::query(
            "SELECT token_hash, user_id, org_id, csrf_token, expires_at FROM dashboard_sessions \
             WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(DashboardSession {
                token_hash: row.try_get("token_hash")?,
                user_id: id(&row, "user_id")?,
                org_id: id(&row, "org_id")?,
                csrf_token: row.try_get("csrf_token")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_webhook(&self, org: OrgId, new: &NewWebhook) -> StoreResult<Webhook> {
        let webhook = Webhook {
            webhook_id: WebhookId::new(),
            org_id: org,
            name: new.name.clone(),
            url: new.url.as_str().to_owned(),
            is_enabled: new.is_enabled,
            // Stored with microseconds: keep the answer equal to what a read gives.
            created_at: time::from_micros(time::to_micros(&time::now())),
            last_triggered_at: None,
            environment: new.environment,
            events: new.events.clone(),
        };
        sqlx::query(
            "INSERT INTO webhooks (id, org_id, name, url, type, events, is_enabled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(webhook.webhook_id.as_uuid())
        .bind(org.as_uuid())
        .bind(&webhook.name)
        .bind(&webhook.url)
        .bind(webhook.environment.as_str())
        .bind(serde_json::to_string(&webhook.events).expect("event types serialize"))
        .bind(webhook.is_enabled)
        .bind(webhook.created_at)
        .execute(&self.pool)
        .await?;
        Ok(webhook)
    }

    async fn webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<Option<Webhook>> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND org_id = $2"
        ))
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn list_webhooks(
        &self,
        org: OrgId,
        is_enabled: Option<bool>,
        after: Option<WebhookId>,
        limit: u32,
    ) -> StoreResult<Vec<Webhook>> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = "
        ));
        q.push_bind(org.as_uuid());
        if let Some(enabled) = is_enabled {
            q.push(" AND is_enabled = ").push_bind(enabled);
        }
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after.as_uuid());
        }
        q.push(" ORDER BY id LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn webhooks_for(
        &self,
        org: OrgId,
        environment: Environment,
    ) -> StoreResult<Vec<Webhook>> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = $1 AND type = $2 AND is_enabled \
             ORDER BY id"
        ))
        .bind(org.as_uuid())
        .bind(environment.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn update_webhook(
        &self,
        org: OrgId,
        id: WebhookId,
        changes: &WebhookChanges,
    ) -> StoreResult<Option<Webhook>> {
        let mut q = QueryBuilder::<Postgres>::new("UPDATE webhooks SET id = id");
        if let Some(name) = &changes.name {
            q.push(", name = ").push_bind(name.clone());
        }
        if let Some(url) = &changes.url {
            q.push(", url = ").push_bind(url.as_str().to_owned());
        }
        if let Some(environment) = changes.environment {
            q.push(", type = ").push_bind(environment.as_str());
        }
        if let Some(events) = &changes.events {
            q.push(", events = ")
                .push_bind(serde_json::to_string(events).expect("event types serialize"));
        }
        if let Some(enabled) = changes.is_enabled {
            q.push(", is_enabled = ").push_bind(enabled);
        }
        q.push(" WHERE id = ")
            .push_bind(id.as_uuid())
            .push(" AND org_id = ")
            .push_bind(org.as_uuid())
            .push(format!(" RETURNING {WEBHOOK_COLUMNS}"));
        let row = q.build().fetch_optional(&self.pool).await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn delete_webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<bool> {
        // Deliveries first, in id order, then the webhook: the order in which outcome
        // writers lock them, so the two cannot deadlock.
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', lease_until = NULL, claimed_by = NULL, \
             finished_at = $1 WHERE id IN ( \
               SELECT d.id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id \
               WHERE w.id = $2 AND w.org_id = $3 AND d.status = 'pending' \
               ORDER BY d.id FOR UPDATE OF d)",
        )
        .bind(time::now())
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND org_id = $2")
            .bind(id.as_uuid())
            .bind(org.as_uuid())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn create_connector(&self, c: &Connector) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO connectors ({CONNECTOR_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(c.id.as_uuid())
        .bind(c.org_id.as_uuid())
        .bind(c.environment.as_str())
        .bind(&c.display_name)
        .bind(&c.integration_slug)
        .bind(serde_json::to_string(&c.categories).expect("strings serialize"))
        .bind(&c.origin_id)
        .bind(c.connector_status.as_str())
        .bind(&c.end_user_name)
        .bind(&c.end_user_email)
        .bind(c.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn connector(&self, org: OrgId, id: ConnectorId) -> StoreResult<Option<Connector>> {
        let row = sqlx::query(&format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE id = $1 AND org_id = $2"
        ))
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(connector_from_row).transpose()
    }

    async fn list_connectors(
        &self,
        org: OrgId,
        after: Option<ConnectorId>,
        limit: u32,
    ) -> StoreResult<Vec<Connector>> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE org_id = "
        ));
        q.push_bind(org.as_uuid());
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after.as_uuid());
        }
        q.push(" ORDER BY id LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(connector_from_row).collect()
    }

    async fn update_connector(
        &self,
        org: OrgId,
        id: ConnectorId,
        changes: &ConnectorChanges,
    ) -> StoreResult<Option<Connector>> {
        let mut q = QueryBuilder::<Postgres>::new("UPDATE connectors SET id = id");
        let texts = [
            ("display_name", &changes.display_name),
            ("integration_slug", &changes.integration_slug),
            ("origin_id", &changes.origin_id),
            ("end_user_name", &changes.end_user_name),
            ("end_user_email", &changes.end_user_email),
        ];
        for (column, value) in texts {
            if let Some(value) = value {
                q.push(format!(", {column} = ")).push_bind(value.clone());
            }
        }
        if let Some(categories) = &changes.categories {
            q.push(", categories = ")
                .push_bind(serde_json::to_string(categories).expect("strings serialize"));
        }
        if let Some(status) = changes.connector_status {
            q.push(", connector_status = ").push_bind(status.as_str());
        }
        q.push(" WHERE id = ")
            .push_bind(id.as_uuid())
            .push(" AND org_id = ")
            .push_bind(org.as_uuid())
            .push(format!(" RETURNING {CONNECTOR_COLUMNS}"));
        let row = q.build().fetch_optional(&self.pool).await?;
        row.as_ref().map(connector_from_row).transpose()
    }

    async fn delete_connector(&self, org: OrgId, id: ConnectorId) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM connectors WHERE id = $1 AND org_id = $2")
            .bind(id.as_uuid())
            .bind(org.as_uuid())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn sync_job(
        &self,
        org: OrgId,
        connector: ConnectorId,
        id: SyncId,
    ) -> StoreResult<Option<SyncJob>> {
        let row = sqlx::query(
            "SELECT s.* FROM sync_jobs s JOIN connectors c ON c.id = s.connector_id \
             WHERE s.id = $1 AND s.connector_id = $2 AND c.org_id = $3",
        )
        .bind(id.as_uuid())
        .bind(connector.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sync_job_from_row).transpose()
    }

    async fn record_events(&self, sync: SyncChange, events: Arc<[NewEvent]>) -> StoreResult<()> {
        let (sync, events) = (&sync, &events[..]);
        let mut tx = self.pool.begin().await?;
        match sync {
            SyncChange::None => {}
            SyncChange::Started(job) => {
                sqlx::query(
                    "INSERT INTO sync_jobs (id, connector_id, initial_sync, sync_type, display_status, \
                     last_sync_start_time) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(job.id.as_uuid())
                .bind(job.connector_id.as_uuid())
                .bind(job.initial_sync)
                .bind(job.sync_type.as_str())
                .bind(job.display_status.as_str())
                .bind(job.last_sync_start_time)
                .execute(&mut *tx)
                .await?;
            }
            SyncChange::Finished(job) => {
                // Two nodes finishing one sync at once: the row lock orders them, and the
                // second sees it no longer `Syncing`.
                let updated = sqlx::query(
                    "UPDATE sync_jobs SET display_status = $1, finished_at = $2, error_message = $3, \
                     error_detail = $4 WHERE id = $5 AND display_status = 'Syncing'",
                )
                .bind(job.display_status.as_str())
                .bind(job.finished_at)
                .bind(job.error.as_ref().map(|e| e.message.clone()))
                .bind(job.error.as_ref().map(|e| e.detail.to_string()))
                .bind(job.id.as_uuid())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return Err(StoreError::Conflict(
                        "the sync job has already finished".into(),
                    ));
                }
            }
        }
        let unclaimed = self.insert_events(&mut tx, events).await?;
        if unclaimed {
            notify(&mut tx, WORK_CHANNEL, "").await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn resend(
        &self,
        org: OrgId,
        log: DeliveryId,
        new_id: DeliveryId,
        lease_until: Option<Timestamp>,
    ) -> StoreResult<Option<DeliveryJob>> {
        let mut tx = self.pool.begin().await?;
        let source = sqlx::query(&format!(
            "SELECT deliveries.webhook_id, deliveries.url, deliveries.event_type, \
             deliveries.body, {SHARED_BODY}, w.url AS webhook_url, w.name AS webhook_name \
             FROM deliveries LEFT JOIN webhooks w ON w.id = deliveries.webhook_id \
             WHERE deliveries.id = $1 AND deliveries.org_id = $2"
        ))
        .bind(log.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(source) = source else {
            return Ok(None);
        };
        let Some(url) = source.try_get::<Option<String>, _>("webhook_url")? else {
            return Err(StoreError::Conflict(
                "the webhook of this log has been deleted".into(),
            ));
        };
        let webhook_name: String = source.try_get("webhook_name")?;
        // The exact bytes sent before, kept with the new delivery: its URL may differ.
        let body = body_from_row(&source)?;
        let row = sqlx::query(
            "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, connector_id, \
             event_type, integration_name, end_user_name, origin_id, url, body, status, created_at, \
             next_attempt_at, lease_until, claimed_by, attempts_started) \
             SELECT $1, org_id, event_id, webhook_id, $2, connector_id, event_type, integration_name, \
             end_user_name, origin_id, $3, $9, 'pending', $4, $4, $5, $6, $7 FROM deliveries \
             WHERE id = $8 RETURNING id, org_id, webhook_id, url, body, event_type, \
             NULL::bytea AS shared_body, attempt_count, attempts_started, first_attempt_at",
        )
        .bind(new_id.as_uuid())
        .bind(webhook_name)
        .bind(url)
        .bind(time::now())
        .bind(lease_until)
        .bind(self.claimant(lease_until))
        .bind(lease_until.is_some() as i32)
        .bind(log.as_uuid())
        .bind(&body[..])
        .fetch_one(&mut *tx)
        .await?;
        let job = job_from_row(&row)?;
        if lease_until.is_none() {
            notify(&mut tx, WORK_CHANNEL, "").await?;
        }
        tx.commit().await?;
        Ok(Some(job))
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        room: &ClaimRoom,
    ) -> StoreResult<Vec<DeliveryJob>> {
        // Only the webhooks with no room are left out: the dispatcher gives back what a
        // lane cannot take. The due order is read [`SCAN`] deliveries far at most (the
        // look ahead is materialized, so that the planner cannot trade it for a scan of
        // the whole table, and is read once); past them, each webhook with room has its
        // own queue looked up. The one row of its count comes back even when nothing was
        // claimed, with the claimed rows' columns NULL.
        // SKIP LOCKED: nodes claiming at the same moment each take different rows instead
        // of queueing behind one another's locks.
        let full: Vec<Uuid> = room.full().iter().map(|w| w.as_uuid()).collect();
        let rows = sqlx::query(&format!(
            "WITH ahead AS MATERIALIZED (SELECT id, webhook_id, lease_until, next_attempt_at \
               FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $3 \
               ORDER BY next_attempt_at LIMIT $6), \
             due AS (SELECT d.id FROM ahead a JOIN deliveries d ON d.id = a.id \
               WHERE (a.lease_until IS NULL OR a.lease_until <= $3) AND a.webhook_id <> ALL($5) \
               AND d.status = 'pending' AND d.next_attempt_at <= $3 \
               AND (d.lease_until IS NULL OR d.lease_until <= $3) \
               ORDER BY a.next_attempt_at LIMIT $4 FOR UPDATE OF d SKIP LOCKED), \
             claimed AS ({CLAIM} FROM due WHERE d.id = due.id {CLAIMED}) \
             SELECT c.*, n.looked FROM (SELECT count(*) AS looked FROM ahead) n \
               LEFT JOIN claimed c ON true"
        ))
        .bind(lease_until)
        .bind(self.node)
        .bind(now)
        .bind(room.limit as i64)
        .bind(&full)
        .bind(SCAN)
        .fetch_all(&self.pool)
        .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut looked = 0;
        for row in &rows {
            looked = row.try_get::<i64, _>("looked")?;
            if row.try_get::<Option<Uuid>, _>("id")?.is_some() {
                jobs.push(job_from_row(row)?);
            }
        }
        if jobs.len() >= room.limit as usize || looked < SCAN {
            return Ok(jobs);
        }
        let more = self
            .claim_each_webhook(now, lease_until, room, &jobs)
            .await?;
        jobs.extend(more);
        Ok(jobs)
    }

    async fn release(&self, ids: &[DeliveryId], unstarted: bool) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let released = sqlx::query(
            "UPDATE deliveries SET lease_until = NULL, claimed_by = NULL, \
               attempts_started = GREATEST(attempts_started - $3, 0) WHERE id IN ( \
               SELECT id FROM deliveries WHERE id = ANY($1) AND status = 'pending' \
               AND claimed_by = $2 ORDER BY id FOR UPDATE)",
        )
        .bind(uuids(ids))
        .bind(self.node)
        .bind(unstarted as i32)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if released > 0 {
            notify(&mut tx, WORK_CHANNEL, "").await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Only this store's own claims: other nodes' claims are live or run out by themselves.
    async fn release_all(&self) -> StoreResult<u64> {
        let released = sqlx::query(
            "UPDATE deliveries SET lease_until = NULL, claimed_by = NULL \
             WHERE status = 'pending' AND claimed_by = $1",
        )
        .bind(self.node)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(released)
    }

    async fn record_outcomes(&self, outcomes: Arc<[DeliveryOutcome]>) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        // Stable: a delivery's outcomes keep their order.
        let mut sorted: Vec<&DeliveryOutcome> = outcomes.iter().collect();
        sorted.sort_by_key(|o| o.delivery_id);
        let mut tx = self.pool.begin().await?;
        self.write_outcomes(&mut tx, &sorted).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_logs(&self, org: OrgId, f: &LogFilter) -> StoreResult<Vec<LogEntry>> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {LOG_COLUMNS} FROM deliveries WHERE org_id = "
        ));
        q.push_bind(org.as_uuid());
        if let Some(webhook) = f.webhook_id {
            q.push(" AND webhook_id = ").push_bind(webhook.as_uuid());
        }
        if let Some(connector) = f.connector_id {
            q.push(" AND connector_id = ")
                .push_bind(connector.as_uuid());
        }
        if !f.event_types.is_empty() {
            q.push(" AND event_type IN (");
            let mut list = q.separated(", ");
            for t in &f.event_types {
                list.push_bind(t.as_str());
            }
            q.push(")");
        }
        if !f.response_codes.is_empty() {
            q.push(" AND response_code IN (");
            let mut list = q.separated(", ");
            for code in &f.response_codes {
                list.push_bind(*code as i32);
            }
            q.push(")");
        }
        if let Some(from) = f.created_from {
            q.push(" AND created_at >= ").push_bind(from);
        }
        if let Some(to) = f.created_to {
            q.push(" AND created_at <= ").push_bind(to);
        }
        if f.errors_only {
            q.push(
                " AND (response_code >= 400 OR (response_code IS NULL AND last_error IS NOT NULL))",
            );
        }
        if let Some(before) = f.before {
            q.push(" AND id < ").push_bind(before.as_uuid());
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit as i64);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(log_from_row).collect()
    }

    async fn log(&self, org: OrgId, id: DeliveryId) -> StoreResult<Option<LogDetail>> {
        let row = sqlx::query(&format!(
            "SELECT {LOG_COLUMNS}, body, {SHARED_BODY} FROM deliveries WHERE id = $1 AND org_id = $2"
        ))
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let attempts = sqlx::query("SELECT * FROM attempts WHERE delivery_id = $1 ORDER BY number")
            .bind(id.as_uuid())
            .fetch_all(&self.pool)
            .await?;
        Ok(Some(LogDetail {
            entry: log_from_row(&row)?,
            body: body_from_row(&row)?,
            attempts: attempts
                .iter()
                .map(attempt_from_row)
                .collect::<StoreResult<_>>()?,
        }))
    }

    async fn renew_leases(&self, ids: &[DeliveryId], until: Timestamp) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        // Only this node's live claims: a claim another node took after ours ran out is
        // theirs, and a retry given back (no lease) stays free for whoever is first.
        // SKIP LOCKED: a row locked now is being finished by this node's outcome writer;
        // waiting for it could deadlock with the writer's batch, and should the writer
        // fail, the next renewal comes a quarter of a lease later.
        let renewed = sqlx::query(
            "UPDATE deliveries SET lease_until = $1 WHERE id IN ( \
               SELECT id FROM deliveries WHERE id = ANY($2) AND claimed_by = $3 \
               AND lease_until IS NOT NULL AND status = 'pending' FOR UPDATE SKIP LOCKED)",
        )
        .bind(until)
        .bind(uuids(ids))
        .bind(self.node)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed)
    }

    fn work_notifications(&self) -> Option<Arc<Notify>> {
        Some(self.work.clone())
    }

    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: DeliveryId, state: DeliveryState, attempted: bool) -> DeliveryOutcome {
        let started_at = time::now();
        DeliveryOutcome {
            delivery_id: id,
            webhook_id: WebhookId::new(),
            attempt: attempted.then(|| Attempt {
                delivery_id: id,
                number: 1,
                started_at,
                duration: Duration::ZERO,
                request_url: "https://example.com".into(),
                request_headers: Vec::new(),
                result: AttemptResult::Failure {
                    category: FailureCategory::ConnectError,
                    message: String::new(),
                },
            }),
            first_attempt_at: attempted.then_some(started_at),
            state,
            last_error: None,
            lease_until: None,
        }
    }

    #[test]
    fn a_batch_changes_each_delivery_as_its_outcomes_would_one_by_one() {
        let (a, b, c) = (DeliveryId::new(), DeliveryId::new(), DeliveryId::new());
        let retry = DeliveryState::RetryScheduled { at: time::now() };
        let outcomes = [
            outcome(a, retry, true),
            outcome(a, DeliveryState::Failed, true),
            outcome(b, DeliveryState::Delivered { status: 200 }, true),
            outcome(b, DeliveryState::Failed, false),
            outcome(c, DeliveryState::Failed, false),
        ];
        let sorted: Vec<&DeliveryOutcome> = outcomes.iter().collect();
        let changes = delivery_changes(&sorted);
        let summary: Vec<_> = changes
            .iter()
            .map(|c| {
                (
                    c.outcome.delivery_id,
                    c.outcome.state.status_str(),
                    c.recorded,
                )
            })
            .collect();
        // After a retry the next outcome adds to it; after a final one nothing changes.
        assert_eq!(
            summary,
            [(a, "failed", 2), (b, "delivered", 1), (c, "failed", 0)]
        );
        assert_eq!(changes[0].first_attempt_at, outcomes[0].first_attempt_at);
    }
}
