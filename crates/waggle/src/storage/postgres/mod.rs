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
//! What PostgreSQL costs is mostly per statement and per commit, not per row, so the hot
//! writes are few statements each: the events of the API calls that arrive together are
//! one statement (`events.rs`); a batch of outcomes is one statement, its own
//! transaction; what every event reads is kept in memory and checked against a version
//! the API's key lookup reads anyway (`cache.rs`); and a statement is one round trip, on a
//! connection kept from the statement before (`connections.rs`).
//!
//! Times are bound as the nodes' clocks give them, so nodes must keep their clocks in
//! sync (NTP); a skew eats into the lease's margin.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection as _, PgConnection, Postgres, Row as _};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::records::{self, Db, RowMap};
use super::rows::{self, Row, Value};
use super::sql::{Dialect, Sql};
use super::triggered as storage_triggered;
use super::*;
use crate::domain::attempt::AttemptResult;
use cache::RecordCache;
use connections::Connections;
use events::EventWriter;
use key_lookups::KeyLookups;

mod cache;
mod connections;
mod events;
mod key_lookups;

/// Connections per node. Dispatching needs few (claims and lease renewals are one statement
/// per batch, outcome batches one short transaction); the rest serve the API.
const POOL_SIZE: u32 = 10;
/// Of which kept out of the pool between statements, at most (see [`connections`]).
const KEPT: usize = POOL_SIZE as usize / 2;

/// How long a call waits for one of the pool's connections.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Notified when deliveries are made or given back unclaimed: idle dispatchers claim them.
const WORK_CHANNEL: &str = "waggle_work";

/// The most response bytes one statement of attempts carries.
const ATTEMPT_BYTES: usize = 4 << 20;

pub struct PgStore {
    conns: Arc<Connections>,
    /// This store's id, written in `deliveries.claimed_by` by its claims: only the node
    /// that made a claim renews or releases it. New on every start.
    node: Uuid,
    /// Woken by the listener on `waggle_work`.
    work: Arc<Notify>,
    /// Stops the listener when the store is dropped.
    _listener: DropGuard,
    /// Whether the database answers, as a probe found it a moment ago (see
    /// [`watch_health`]). Never broken for good: the pool reconnects by itself.
    health: watch::Sender<Health>,
    /// Where the API's key lookups are made, together (see [`key_lookups`]).
    key_lookups: KeyLookups,
    /// Where the API's calls that emit events are written, together (see [`events`]).
    events: EventWriter,
    /// What every event reads (see [`cache`]).
    cache: RecordCache,
}

impl PgStore {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .context("invalid PostgreSQL URL")?
            .application_name("waggle");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            // While the database is away, a call waits this long for a connection (the
            // pool retries connecting) before it fails with 503.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(connections::ask_if_idle)
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
        let node = Uuid::new_v4();
        let conns = Arc::new(Connections::new(pool.clone(), KEPT));
        let store = Self {
            events: EventWriter::start(conns.clone(), node),
            key_lookups: KeyLookups::start(conns.clone()),
            cache: RecordCache::default(),
            conns,
            node,
            work: Arc::new(Notify::new()),
            _listener: stop.clone().drop_guard(),
            health: watch::Sender::new(Health::Ok),
        };
        tokio::spawn(watch_health(pool, store.health.clone(), stop.clone()));
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

/// How often a node asks the database whether it answers.
const HEALTH_PROBE: Duration = Duration::from_secs(1);

/// Asks the database `SELECT 1` every [`HEALTH_PROBE`], and says on `health` whether it
/// answered, until `stop`. Calls fail on their own while the database is away; this is
/// what `/healthz` and the dispatcher, which pauses meanwhile, go by.
async fn watch_health(pool: PgPool, health: watch::Sender<Health>, stop: CancellationToken) {
    loop {
        let answered =
            tokio::time::timeout(HEALTH_PROBE * 2, sqlx::query("SELECT 1").execute(&pool)).await;
        let now = match answered {
            Ok(Ok(_)) => Health::Ok,
            Ok(Err(e)) => Health::Unavailable(format!("PostgreSQL does not answer: {e}")),
            Err(_) => Health::Unavailable(format!(
                "PostgreSQL did not answer within {:?}",
                HEALTH_PROBE * 2
            )),
        };
        health.send_if_modified(|was| {
            let changed = std::mem::discriminant(was) != std::mem::discriminant(&now);
            match (&*was, &now) {
                (Health::Ok, Health::Unavailable(why)) => {
                    tracing::error!(reason = %why, "storage unavailable")
                }
                (Health::Unavailable(_), Health::Ok) => tracing::info!("storage available again"),
                _ => {}
            }
            *was = now;
            changed
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HEALTH_PROBE) => {}
        }
    }
}

/// Whether an error says the database cannot be reached or cannot write now, rather
/// than that this statement failed: a connection lost or refused, a pool with no
/// connection to give, a server shutting down, starting up or out of disk.
pub fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") // connection exception
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "53100" | "53200" | "53300")
        }),
        _ => false,
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

/// Takes, in one order, the locks of the webhooks and connectors whose ordered deliveries
/// a transaction adds or ends, until it ends. A delivery added waits when another of its
/// webhook and connector is pending, and the end of one lets the next go: under the lock,
/// each sees what the other committed (two nodes at once cannot both find no delivery
/// ahead, nor can an end miss a delivery added at the same moment). Taken before any
/// row lock, and sorted, so that two transactions cannot wait for each other.
pub(super) async fn lock_orders(
    conn: &mut PgConnection,
    orders: impl Iterator<Item = (WebhookId, ConnectorId)>,
) -> StoreResult<()> {
    let mut keys: Vec<i64> = orders
        .map(|(webhook, connector)| {
            let mixed = webhook.as_uuid().as_u128() ^ connector.as_uuid().as_u128().rotate_left(64);
            ((mixed >> 64) as u64 ^ mixed as u64) as i64
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Answers every waiting call of a batch that failed as a whole: the first with the
/// error itself, the others with what it said.
fn fail_all<T>(answers: impl IntoIterator<Item = oneshot::Sender<StoreResult<T>>>, e: StoreError) {
    let why = e.to_string();
    let mut first = Some(e);
    for answer in answers {
        let error = first
            .take()
            .unwrap_or_else(|| StoreError::Unavailable(why.clone()));
        let _ = answer.send(Err(error));
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

/// A row of sqlx's, as the shared layer reads it.
struct PgColumns<'a>(&'a PgRow);

impl Row for PgColumns<'_> {
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        Ok(self.0.try_get(column)?)
    }
    /// INTEGER columns, and BIGINT ones (durations, counts).
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        match self.0.try_get::<Option<i32>, _>(column) {
            Ok(n) => Ok(n.map(i64::from)),
            Err(_) => Ok(self.0.try_get(column)?),
        }
    }
    fn flag(&self, column: &str) -> StoreResult<bool> {
        Ok(self.0.try_get(column)?)
    }
    fn opt_blob(&self, column: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.0.try_get(column)?)
    }
    fn uuid(&self, column: &str) -> StoreResult<Uuid> {
        Ok(self.0.try_get(column)?)
    }
    fn opt_uuid(&self, column: &str) -> StoreResult<Option<Uuid>> {
        Ok(self.0.try_get(column)?)
    }
    fn opt_time(&self, column: &str) -> StoreResult<Option<Timestamp>> {
        Ok(self.0.try_get(column)?)
    }
}

/// A statement of the shared layer, bound for sqlx.
fn query(sql: &Sql) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    let mut q = sqlx::query(sql.text());
    for value in sql.args() {
        q = match value {
            Value::Uuid(id) => q.bind(*id),
            Value::Text(text) => q.bind(text.as_deref()),
            Value::Int(n) => q.bind(*n),
            Value::Bool(flag) => q.bind(*flag),
            Value::Blob(bytes) => q.bind(bytes.as_deref()),
            Value::Time(at) => q.bind(*at),
        };
    }
    q
}

/// A statement over a batch of rows (`= ANY($1)`, `UNNEST`) or a range of times, planned
/// at each execution for its own arguments and the tables as they are. A prepared
/// statement's generic plan is kept by its connection for good, and may have been made
/// while a table was nearly empty: it then scans the whole table for the rows of a batch
/// once the table is not (BENCHMARKS.md: the outcome statement took 10.9 ms a call with
/// it, 3.5 ms without). Such statements run once per batch, so planning each costs less
/// than the plans it avoids; the many small ones per event (a key's lookup, the foreign
/// keys' checks) keep their cached plans.
fn planned(sql: &str) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    sqlx::query(sql).persistent(false)
}

fn map_all<T>(found: &[PgRow], map: RowMap<T>) -> StoreResult<Vec<T>> {
    found.iter().map(|row| map(&PgColumns(row))).collect()
}

/// Due deliveries a claim reads in due order, at most (see [`Store::claim_due`]).
const SCAN: i64 = 4096;

/// The webhooks that have unclaimed pending deliveries, each once: a walk of their
/// queues' index that jumps from one webhook to the next, reading an entry per such
/// webhook however many deliveries each holds and however many other webhooks exist
/// (every webhook of the table would be a probe per webhook per claim).
const QUEUED_WEBHOOKS: &str = "WITH RECURSIVE queued (webhook_id) AS ( \
       (SELECT webhook_id FROM deliveries WHERE status = 'pending' AND lease_until IS NULL \
        ORDER BY webhook_id LIMIT 1) \
       UNION ALL \
       SELECT (SELECT d.webhook_id FROM deliveries d WHERE d.status = 'pending' \
               AND d.lease_until IS NULL AND d.webhook_id > q.webhook_id \
               ORDER BY d.webhook_id LIMIT 1) \
       FROM queued q WHERE q.webhook_id IS NOT NULL) \
     SELECT webhook_id FROM queued WHERE webhook_id IS NOT NULL";

/// A claim of the deliveries of `due` (`$1` the lease, `$2` this node), and what it
/// answers: the rows [`rows::job`] reads. `due`'s ids are taken as an array, so that the
/// update finds each by its primary key: joined to `due`, it was planned as a hash join
/// over a scan of the whole table whenever `due` could hold thousands of rows.
const CLAIM: &str = "UPDATE deliveries d SET lease_until = $1, claimed_by = $2, \
     attempts_started = d.attempts_started + 1 WHERE d.id = ANY(ARRAY(SELECT id FROM due))";
const CLAIMED: &str = "RETURNING d.id, d.org_id, d.webhook_id, d.url, d.body, d.event_type, \
     (SELECT e.shared_body FROM events e WHERE e.id = d.event_id) AS shared_body, \
     d.attempt_count, d.attempts_started, d.first_attempt_at, d.ordered_by, d.traceparent";

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
    /// Runs one statement and maps the rows it returns.
    async fn fetch_all<T>(&self, sql: &Sql, map: RowMap<T>) -> StoreResult<Vec<T>> {
        let mut conn = self.conns.get().await?;
        let rows = query(sql).fetch_all(&mut *conn).await?;
        conn.keep();
        map_all(&rows, map)
    }

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
        let mut conn = self.conns.get().await?;
        for webhook in sqlx::query_scalar::<_, Uuid>(QUEUED_WEBHOOKS)
            .fetch_all(&mut *conn)
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
        let rows = planned(&format!(
            "WITH due AS (SELECT q.id FROM unnest($5::uuid[], $6::bigint[]) AS w (webhook_id, room) \
               CROSS JOIN LATERAL (SELECT id FROM deliveries \
                 WHERE webhook_id >= w.webhook_id AND webhook_id <= w.webhook_id \
                 AND status = 'pending' AND lease_until IS NULL AND next_attempt_at <= $3 \
                 ORDER BY webhook_id, next_attempt_at LIMIT w.room FOR UPDATE SKIP LOCKED) q \
               LIMIT $4) \
             {CLAIM} {CLAIMED}"
        ))
        .bind(lease_until)
        .bind(self.node)
        .bind(now)
        .bind(room.limit as i64 - claimed.len() as i64)
        .bind(&webhooks)
        .bind(&rooms)
        .fetch_all(&mut *conn)
        .await?;
        conn.keep();
        map_all(&rows, rows::job)
    }

    /// The claim a new delivery starts with: this node's, or none.
    fn claimant(&self, lease_until: Option<Timestamp>) -> Option<Uuid> {
        lease_until.map(|_| self.node)
    }

    /// Records attempts and the deliveries' new states. `sorted` is in delivery id order.
    /// A batch whose answers fit in one statement (see [`ATTEMPT_BYTES`]) is written by
    /// one statement, its own transaction; a larger one by a transaction of a few.
    async fn write_outcomes(&self, sorted: &[&DeliveryOutcome]) -> StoreResult<()> {
        let changes = delivery_changes(sorted);
        let attempts = distinct_attempts(sorted);
        let mut chunks = attempt_chunks(&attempts);
        let last = chunks.pop().unwrap_or_default();
        let next_go: Vec<(WebhookId, ConnectorId)> =
            sorted.iter().filter_map(|o| o.lets_next_go()).collect();
        let mut conn = self.conns.get().await?;
        if chunks.is_empty() && next_go.is_empty() {
            self.apply_outcomes(&mut conn, &changes, last, sorted)
                .await?;
            conn.keep();
            return Ok(());
        }
        let mut tx = conn.begin().await?;
        lock_orders(&mut tx, next_go.iter().copied()).await?;
        // The deliveries are locked first, in id order (see `apply_outcomes`), and only
        // the attempts of those still there are written: a delivery retention removed
        // meanwhile keeps none.
        planned("SELECT 1 FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(column(&changes, |c| c.outcome.delivery_id.as_uuid()))
            .execute(&mut *tx)
            .await?;
        for chunk in chunks {
            AttemptColumns::of(chunk)
                .bind(planned(&insert_attempts(
                    1,
                    " WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)",
                )))
                .execute(&mut *tx)
                .await?;
        }
        self.apply_outcomes(&mut tx, &changes, last, sorted).await?;
        // Of each webhook and connector, the first pending delivery, when it waits; in
        // one statement, however many orders the batch ended.
        let let_go = match next_go.is_empty() {
            true => 0,
            false => planned(
                "UPDATE deliveries SET next_attempt_at = $3 WHERE id IN (SELECT (SELECT id \
                 FROM deliveries WHERE webhook_id = v.webhook_id AND ordered_by = v.connector \
                 AND status = 'pending' ORDER BY id LIMIT 1) \
                 FROM UNNEST($1::uuid[], $2::uuid[]) AS v (webhook_id, connector)) \
                 AND next_attempt_at IS NULL",
            )
            .bind(column(&next_go, |(w, _)| w.as_uuid()))
            .bind(column(&next_go, |(_, c)| c.as_uuid()))
            .bind(time::now())
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if let_go > 0 {
            notify(&mut tx, WORK_CHANNEL, "").await?;
        }
        tx.commit().await?;
        conn.keep();
        Ok(())
    }

    /// One statement: the deliveries' new states, `attempts`, and the webhooks' last
    /// trigger.
    async fn apply_outcomes(
        &self,
        conn: &mut PgConnection,
        changes: &[DeliveryChange<'_>],
        attempts: &[&Attempt],
        sorted: &[&DeliveryOutcome],
    ) -> StoreResult<()> {
        let now = time::now();
        let states = column(changes, |c| match c.outcome.state {
            DeliveryState::Delivered { status } => (Some(status as i32), None, Some(now)),
            DeliveryState::RetryScheduled { at, status } => (status.map(i32::from), Some(at), None),
            DeliveryState::Failed => (None, None, Some(now)),
        });
        // Every attempt triggers its webhook, whether or not its outcome still applied.
        let triggered: Vec<(WebhookId, Triggered)> = storage_triggered(sorted.iter().copied())
            .into_iter()
            .collect();
        let failing = column(&triggered, |(_, t)| t.failing.columns());
        // Rows are locked in id order, as every other multi-row write that waits for
        // locks does, so that two of them cannot deadlock: the deliveries (`locked`,
        // which `changed` reads, and the main query reads `changed`, so both run first),
        // then the webhooks, each in id order (as `delete_webhook` takes them), by the
        // statements PostgreSQL runs after the main query. Only the webhooks the batch
        // must write are locked (see [`TRIGGERED_PRECISION`]); a row changed meanwhile is
        // checked again once locked. Attempts are written of the deliveries `locked`
        // found: one that retention removed meanwhile keeps none (no foreign key checks
        // them, see migration 0015). GREATEST skips NULL: the first trigger sets it.
        // Which deliveries are still pending is read from `locked` (the versions its lock
        // waited for): tested on `changed`'s own scan, it let the planner find the batch
        // through the index of every pending delivery, read whole, whenever the table's
        // statistics were older than its backlog.
        let statement = format!(
            "WITH locked AS MATERIALIZED (SELECT id, status FROM deliveries WHERE id = ANY($1) \
               ORDER BY id FOR UPDATE), \
             changed AS (UPDATE deliveries d SET status = v.status, \
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
               WHERE d.id = v.id AND d.id IN (SELECT id FROM locked WHERE status = 'pending') \
               RETURNING d.id), \
             tried AS ({}), \
             triggered AS (UPDATE webhooks w \
               SET last_triggered_at = GREATEST(w.last_triggered_at, v.at), \
               failing_since = CASE WHEN NOT v.failing THEN NULL WHEN v.afresh THEN v.since \
                 ELSE COALESCE(w.failing_since, v.since) END \
               FROM UNNEST($22::uuid[], $23::timestamptz[], $24::bool[], $25::timestamptz[], \
               $26::bool[]) AS v (id, at, failing, since, afresh) \
               WHERE w.id = v.id AND w.id IN ( \
                 SELECT l.id FROM webhooks l JOIN UNNEST($22::uuid[], $23::timestamptz[], \
                 $24::bool[], $25::timestamptz[], $26::bool[]) \
                 AS u (id, at, failing, since, afresh) ON l.id = u.id \
                 WHERE l.last_triggered_at IS NULL \
                 OR u.at >= l.last_triggered_at + $27 * interval '1 microsecond' \
                 OR (l.failing_since IS NULL) = u.failing \
                 OR (u.afresh AND l.failing_since IS DISTINCT FROM u.since) \
                 ORDER BY l.id FOR UPDATE OF l)) \
             SELECT count(*) FROM changed",
            insert_attempts(11, " WHERE a.delivery_id IN (SELECT id FROM locked)")
        );
        let q = planned(&statement)
            .bind(column(changes, |c| c.outcome.delivery_id.as_uuid()))
            .bind(column(changes, |c| c.outcome.state.status_str()))
            .bind(column(changes, |c| c.recorded))
            .bind(column(&states, |s| s.0))
            .bind(column(changes, |c| c.outcome.last_error.as_deref()))
            .bind(column(changes, |c| c.first_attempt_at))
            .bind(column(&states, |s| s.1))
            .bind(column(changes, |c| c.outcome.lease_until))
            .bind(column(changes, |c| self.claimant(c.outcome.lease_until)))
            .bind(column(&states, |s| s.2));
        AttemptColumns::of(attempts)
            .bind(q)
            .bind(column(&triggered, |(w, _)| w.as_uuid()))
            .bind(column(&triggered, |(_, t)| t.at))
            .bind(column(&failing, |f| f.0))
            .bind(column(&failing, |f| f.1))
            .bind(column(&failing, |f| f.2))
            .bind(TRIGGERED_PRECISION.as_micros() as i64)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// The attempts of a batch, one per attempt number: the last written wins, as it did one
/// at a time.
fn distinct_attempts<'a>(sorted: &[&'a DeliveryOutcome]) -> Vec<&'a Attempt> {
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
    attempts
}

/// Attempts in statements of at most [`ATTEMPT_BYTES`] of answers: a connection keeps
/// the buffer its largest statement needed, and a batch of 64 KiB answers would leave
/// each pooled connection holding tens of megabytes.
fn attempt_chunks<'a, 'b>(attempts: &'b [&'a Attempt]) -> Vec<&'b [&'a Attempt]> {
    let mut chunks = Vec::new();
    let mut rest = attempts;
    while !rest.is_empty() {
        let mut bytes = 0;
        let take = rest
            .iter()
            .position(|a| {
                bytes += match &a.result {
                    AttemptResult::Response { body, .. } => body.len(),
                    AttemptResult::Failure { message, .. } => message.len(),
                };
                bytes > ATTEMPT_BYTES
            })
            .unwrap_or(rest.len())
            .max(1);
        let (chunk, after) = rest.split_at(take);
        chunks.push(chunk);
        rest = after;
    }
    chunks
}

/// Inserts the attempts bound by [`AttemptColumns::bind`] from parameter `$first` on,
/// those of them `filter` keeps (a `WHERE` on `a`, the attempts' columns, or nothing).
fn insert_attempts(first: usize, filter: &str) -> String {
    let types = [
        "uuid",
        "int4",
        "timestamptz",
        "int8",
        "text",
        "text",
        "int4",
        "text",
        "bytea",
        "text",
        "text",
    ];
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    format!(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_us, \
         request_url, request_headers, response_status, response_headers, response_body, \
         error_category, error_message) SELECT a.* FROM UNNEST({}) AS a (delivery_id) {filter} \
         ON CONFLICT (delivery_id, number) DO UPDATE SET started_at = EXCLUDED.started_at, \
         duration_us = EXCLUDED.duration_us, request_url = EXCLUDED.request_url, \
         request_headers = EXCLUDED.request_headers, \
         response_status = EXCLUDED.response_status, \
         response_headers = EXCLUDED.response_headers, \
         response_body = EXCLUDED.response_body, \
         error_category = EXCLUDED.error_category, error_message = EXCLUDED.error_message",
        arrays.join(", ")
    )
}

/// Attempts as the columns of [`insert_attempts`].
struct AttemptColumns<'a> {
    attempts: &'a [&'a Attempt],
    status: Vec<Option<i32>>,
    headers: Vec<Option<String>>,
    body: Vec<Option<&'a [u8]>>,
    category: Vec<Option<&'static str>>,
    message: Vec<Option<&'a str>>,
}

impl<'a> AttemptColumns<'a> {
    fn of(attempts: &'a [&'a Attempt]) -> Self {
        let n = attempts.len();
        let mut columns = Self {
            attempts,
            status: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            body: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
            message: Vec::with_capacity(n),
        };
        for a in attempts {
            match &a.result {
                AttemptResult::Response {
                    status,
                    headers,
                    body,
                } => {
                    columns.status.push(Some(*status as i32));
                    columns.headers.push(Some(
                        serde_json::to_string(headers).expect("headers serialize"),
                    ));
                    columns.body.push(Some(body.as_slice()));
                    columns.category.push(None);
                    columns.message.push(None);
                }
                AttemptResult::Failure { category, message } => {
                    columns.status.push(None);
                    columns.headers.push(None);
                    columns.body.push(None);
                    columns.category.push(Some(category.as_str()));
                    columns.message.push(Some(message.as_str()));
                }
            }
        }
        columns
    }

    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, Postgres, PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, PgArguments>
    where
        'a: 'q,
    {
        let attempts = self.attempts;
        q.bind(column(attempts, |a| a.delivery_id.as_uuid()))
            .bind(column(attempts, |a| a.number as i32))
            .bind(column(attempts, |a| a.started_at))
            .bind(column(attempts, |a| a.duration.as_micros() as i64))
            .bind(column(attempts, |a| a.request_url.as_str()))
            .bind(column(attempts, |a| {
                serde_json::to_string(&a.request_headers).expect("headers serialize")
            }))
            .bind(self.status)
            .bind(self.headers)
            .bind(self.body)
            .bind(self.category)
            .bind(self.message)
    }
}

/// How much older than the retention's cutoff an event must be to go: far more than the
/// moment between its id and those of the deliveries made with it (see `purge`).
const FAN_OUT_MARGIN: chrono::Duration = chrono::Duration::seconds(1);

#[async_trait]
impl Db for PgStore {
    const DIALECT: Dialect = Dialect::Postgres;
    /// Deliveries keep a copy of their event's log fields: the logs' filters and order
    /// are then one table's indexes.
    const LOGS: &'static str = "deliveries d";
    const LOG_EVENT: &'static str = "d";
    const SHARED_BODY: &'static str =
        "(SELECT e.shared_body FROM events e WHERE e.id = d.event_id) AS shared_body";
    const RECORDS_VERSION: &'static str = "o.records_version";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const HOUR_OF: &'static str = "floor(extract(epoch FROM d.created_at) / 3600)::bigint";

    async fn read<T: Send + 'static>(&self, sql: Sql, map: RowMap<T>) -> StoreResult<Vec<T>> {
        self.fetch_all(&sql, map).await
    }

    async fn write(&self, statements: Vec<Sql>) -> StoreResult<Vec<u64>> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await?;
        let mut changed = Vec::with_capacity(statements.len());
        for sql in &statements {
            changed.push(query(sql).execute(&mut *tx).await?.rows_affected());
        }
        tx.commit().await?;
        conn.keep();
        Ok(changed)
    }

    async fn write_returning<T: Send + 'static>(
        &self,
        sql: Sql,
        map: RowMap<T>,
    ) -> StoreResult<Vec<T>> {
        self.fetch_all(&sql, map).await
    }

    async fn api_key_owner(&self, hash: &str) -> StoreResult<Option<(ApiKeyId, OrgId, i64)>> {
        self.key_lookups.find(hash).await
    }

    fn saw_records_version(&self, org: OrgId, version: i64) {
        self.cache.saw(org, version);
    }
}

#[async_trait]
impl Store for PgStore {
    async fn webhooks_for(
        &self,
        org: OrgId,
        environment: Environment,
    ) -> StoreResult<Vec<Webhook>> {
        let at = self.cache.version(org);
        if let Some(cached) = at.and_then(|at| self.cache.webhooks(org, environment, at)) {
            return Ok(cached);
        }
        let webhooks = self
            .read(
                records::webhooks_for::<Self>(org, environment),
                rows::webhook,
            )
            .await?;
        if let Some(at) = at {
            self.cache.keep_webhooks(org, environment, at, &webhooks);
        }
        Ok(webhooks)
    }

    async fn delete_webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<bool> {
        // Deliveries first, in id order, then the webhook: the order in which outcome
        // writers lock them, so the two cannot deadlock. Its pending deliveries are found
        // in the two indexes that hold them: the unclaimed and the claimed.
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', lease_until = NULL, claimed_by = NULL, \
             finished_at = $1 WHERE id IN ( \
               SELECT d.id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id \
               WHERE w.id = $2 AND w.org_id = $3 AND d.id IN ( \
                 SELECT id FROM deliveries WHERE webhook_id = $2 AND status = 'pending' \
                   AND lease_until IS NULL \
                 UNION ALL \
                 SELECT id FROM deliveries WHERE status = 'pending' \
                   AND lease_until IS NOT NULL AND webhook_id = $2) \
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
        conn.keep();
        Ok(deleted > 0)
    }

    async fn connector(&self, org: OrgId, id: ConnectorId) -> StoreResult<Option<Connector>> {
        let at = self.cache.version(org);
        if let Some(cached) = at.and_then(|at| self.cache.connector(org, id, at)) {
            return Ok(Some(cached));
        }
        let connector = self
            .read_one(records::connector::<Self>(org, id), rows::connector)
            .await?;
        if let (Some(at), Some(connector)) = (at, &connector) {
            self.cache.keep_connector(at, connector);
        }
        Ok(connector)
    }

    async fn record_events(
        &self,
        sync: SyncChange,
        events: Arc<[NewEvent]>,
        remember: Option<Remembered>,
    ) -> StoreResult<()> {
        self.events.record(sync, events, remember).await
    }

    async fn resend(
        &self,
        org: OrgId,
        log: DeliveryId,
        new_id: DeliveryId,
        lease_until: Option<Timestamp>,
        traceparent: Option<Arc<str>>,
    ) -> StoreResult<Option<DeliveryJob>> {
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await?;
        let source = sqlx::query(&format!(
            "SELECT d.webhook_id, d.url, d.event_type, d.body, {}, w.url AS webhook_url, \
             w.name AS webhook_name FROM deliveries d LEFT JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.id = $1 AND d.org_id = $2",
            Self::SHARED_BODY
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
        let body = rows::body(&PgColumns(&source))?;
        let row = sqlx::query(
            "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, connector_id, \
             event_type, integration_name, end_user_name, origin_id, url, body, status, created_at, \
             next_attempt_at, lease_until, claimed_by, attempts_started, traceparent) \
             SELECT $1, org_id, event_id, webhook_id, $2, connector_id, event_type, integration_name, \
             end_user_name, origin_id, $3, $9, 'pending', $4, $4, $5, $6, $7, $10 FROM deliveries \
             WHERE id = $8 RETURNING id, org_id, webhook_id, url, body, event_type, \
             NULL::bytea AS shared_body, attempt_count, attempts_started, first_attempt_at, \
             NULL::uuid AS ordered_by, traceparent",
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
        .bind(traceparent.as_deref())
        .fetch_one(&mut *tx)
        .await?;
        let job = rows::job(&PgColumns(&row))?;
        sqlx::query("UPDATE deliveries SET resent_as = $1 WHERE id = $2")
            .bind(new_id.as_uuid())
            .bind(log.as_uuid())
            .execute(&mut *tx)
            .await?;
        if lease_until.is_none() {
            notify(&mut tx, WORK_CHANNEL, "").await?;
        }
        tx.commit().await?;
        conn.keep();
        Ok(Some(job))
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        room: &ClaimRoom,
    ) -> StoreResult<Vec<DeliveryJob>> {
        // Only the webhooks with no room are left out: the dispatcher gives back what a
        // lane cannot take. Claims that ran out are read from their own index (they are
        // due already, and it holds nothing else); the unclaimed deliveries in due order,
        // [`SCAN`] far at most (the look ahead is materialized, so that the planner cannot
        // trade it for a scan of the whole table, and is read once); past them, each
        // webhook with room has its own queue looked up. Both together, in due order, are
        // locked one by one by primary key until the claim has its fill. The one row of
        // its count comes back even when nothing was claimed, with the claimed rows'
        // columns NULL.
        // SKIP LOCKED: nodes claiming at the same moment each take different rows instead
        // of queueing behind one another's locks.
        let full: Vec<Uuid> = room.full().iter().map(|w| w.as_uuid()).collect();
        let mut conn = self.conns.get().await?;
        let rows = planned(&format!(
            "WITH ran_out AS MATERIALIZED (SELECT id, webhook_id, next_attempt_at \
               FROM deliveries WHERE status = 'pending' AND lease_until IS NOT NULL \
               AND lease_until <= $3 ORDER BY lease_until LIMIT $4), \
             ahead AS MATERIALIZED (SELECT id, webhook_id, next_attempt_at \
               FROM deliveries WHERE status = 'pending' AND lease_until IS NULL \
               AND next_attempt_at <= $3 ORDER BY next_attempt_at LIMIT $6), \
             due AS (SELECT l.id FROM (SELECT id, next_attempt_at \
                 FROM (SELECT * FROM ran_out UNION ALL SELECT * FROM ahead) u \
                 WHERE u.webhook_id <> ALL($5) ORDER BY next_attempt_at) a \
               CROSS JOIN LATERAL (SELECT d.id FROM deliveries d WHERE d.id = a.id \
                 AND d.status = 'pending' AND d.next_attempt_at <= $3 \
                 AND (d.lease_until IS NULL OR d.lease_until <= $3) FOR UPDATE SKIP LOCKED) l \
               LIMIT $4), \
             claimed AS ({CLAIM} {CLAIMED}) \
             SELECT c.*, n.looked FROM (SELECT count(*) AS looked FROM ahead) n \
               LEFT JOIN claimed c ON true"
        ))
        .bind(lease_until)
        .bind(self.node)
        .bind(now)
        .bind(room.limit as i64)
        .bind(&full)
        .bind(SCAN)
        .fetch_all(&mut *conn)
        .await?;
        conn.keep();
        let mut jobs = Vec::with_capacity(rows.len());
        let mut looked = 0;
        for row in &rows {
            looked = row.try_get::<i64, _>("looked")?;
            if row.try_get::<Option<Uuid>, _>("id")?.is_some() {
                jobs.push(rows::job(&PgColumns(row))?);
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
        let mut conn = self.conns.get().await?;
        let mut tx = conn.begin().await?;
        let released = planned(
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
        conn.keep();
        Ok(())
    }

    /// Only this store's own claims: other nodes' claims are live or run out by themselves.
    async fn release_all(&self) -> StoreResult<u64> {
        let mut conn = self.conns.get().await?;
        let released = sqlx::query(
            "UPDATE deliveries SET lease_until = NULL, claimed_by = NULL \
             WHERE status = 'pending' AND claimed_by = $1",
        )
        .bind(self.node)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        conn.keep();
        Ok(released)
    }

    async fn record_outcomes(&self, outcomes: Arc<[DeliveryOutcome]>) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        // Stable: a delivery's outcomes keep their order.
        let mut sorted: Vec<&DeliveryOutcome> = outcomes.iter().collect();
        sorted.sort_by_key(|o| o.delivery_id);
        self.write_outcomes(&sorted).await
    }

    /// Events go by age: no key refers from deliveries to events (see migration 0009),
    /// and the logs read nothing of an event. A delivery needs its event only to remake its
    /// body, and only one made with it does (a resend keeps its own). Those are made in
    /// the event's transaction, with ids of the same moment: once the finished ones made
    /// before `before` are gone, an event made a little earlier than that
    /// ([`FAN_OUT_MARGIN`]) is needed only by a pending delivery, if any. A delivery's
    /// attempts go with it, in the same statement (no foreign key cascades to them, see
    /// migration 0015).
    async fn purge(&self, before: Timestamp, batch: u32) -> StoreResult<Purged> {
        let mut purge = records::delete_purged::<Self>("WITH gone AS (", before, batch);
        purge.push(
            " RETURNING id), \
             attempts_gone AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM gone)) \
             SELECT count(*) AS purged FROM gone",
        );
        let purged = self
            .fetch_all(&purge, |row| Ok(row.opt_int("purged")?.unwrap_or(0)))
            .await?;
        let deliveries = purged.first().copied().unwrap_or(0) as u64;
        if deliveries == u64::from(batch) {
            return Ok(Purged {
                deliveries,
                events: 0,
            });
        }
        let mut conn = self.conns.get().await?;
        let events = planned(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < $1 \
             AND id NOT IN (SELECT event_id FROM deliveries WHERE status = 'pending' \
               AND lease_until IS NULL AND body IS NULL AND event_id < $1 \
               UNION ALL SELECT event_id FROM deliveries WHERE status = 'pending' \
               AND lease_until IS NOT NULL AND body IS NULL AND event_id < $1) \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(records::first_id_at(before - FAN_OUT_MARGIN))
        .bind(i64::from(batch))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        conn.keep();
        Ok(Purged { deliveries, events })
    }

    fn pool_usage(&self) -> Option<(u32, usize)> {
        Some(self.conns.usage())
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
        let mut conn = self.conns.get().await?;
        let renewed = planned(
            "UPDATE deliveries SET lease_until = $1 WHERE id IN ( \
               SELECT id FROM deliveries WHERE id = ANY($2) AND claimed_by = $3 \
               AND lease_until IS NOT NULL AND status = 'pending' FOR UPDATE SKIP LOCKED)",
        )
        .bind(until)
        .bind(uuids(ids))
        .bind(self.node)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        conn.keep();
        Ok(renewed)
    }

    fn work_notifications(&self) -> Option<Arc<Notify>> {
        Some(self.work.clone())
    }

    fn shared(&self) -> bool {
        true
    }

    fn health(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::attempt::FailureCategory;

    fn outcome(id: DeliveryId, state: DeliveryState, attempted: bool) -> DeliveryOutcome {
        let started_at = time::now();
        DeliveryOutcome {
            ordered_by: None,
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
        let retry = DeliveryState::RetryScheduled {
            at: time::now(),
            status: None,
        };
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
