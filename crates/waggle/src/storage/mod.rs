//! Persistence behind one [`Store`] trait, so the API and the dispatcher never see which
//! database holds the data. SQLite is the embedded default (`sqlite/`); PostgreSQL
//! (`postgres/`) lets several nodes share one database.
//!
//! Where things are: rows become domain types, and domain types bind values, in
//! `rows.rs`, for both backends; the records both keep alike (organizations, keys,
//! sessions, webhooks, connectors, logs) are read and written once, in `records.rs`, for
//! any backend that can run a statement (`sql.rs` renders it in its dialect). Each
//! backend writes its own SQL only for the delivery path (events, claims, outcomes),
//! where the dialects really differ. Migrations are under `migrations/<backend>/`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{watch, Notify};

use crate::domain::attempt::{Attempt, DeliveryState};
use crate::domain::connector::{Connector, ConnectorStatus, SyncJob};
use crate::domain::event::{Environment, EventType};
use crate::domain::ids::{
    ApiKeyId, ConnectorId, DeliveryId, EventId, OrgId, RecoveryId, SyncId, UserId, WebhookId,
};
use crate::domain::payload::{self, Event};
use crate::domain::recovery::{Recovery, RecoveryRange, RecoveryStatus};
use crate::domain::signature::{RetiringKey, SignatureKey, SigningKeys};
use crate::domain::stats::{self, WebhookStats};
use crate::domain::time::{self, Timestamp};
use crate::domain::webhook::{NewWebhook, Webhook, WebhookChanges};

pub mod postgres;
mod records;
mod rows;
mod sql;
pub mod sqlite;

pub mod retention;

pub use records::{Purged, Records, RememberWith};

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A rule of the data refused the write (a uniqueness rule, a sync already finished).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The call's `Idempotency-Key` was taken, by a call that committed first: nothing of
    /// this one was written.
    #[error("the idempotency key was used by another call")]
    KeyTaken,
    /// The store cannot write now, or ever again (see [`Store::health`]).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Whether the store can write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Health {
    #[default]
    Ok,
    /// Writes fail now and may work again by themselves (a full disk, a database server
    /// out of reach): each answers [`StoreError::Unavailable`] meanwhile, and the store
    /// keeps trying.
    Unavailable(String),
    /// The write path is gone for good (the SQLite writer panicked, the file is corrupt):
    /// the process should stop, to be restarted.
    Broken(String),
}

impl Health {
    /// Why the store cannot write, when it cannot.
    pub fn trouble(&self) -> Option<&str> {
        match self {
            Health::Ok => None,
            Health::Unavailable(why) | Health::Broken(why) => Some(why),
        }
    }
}

impl StoreError {
    /// Whether the store, not this call, failed: it cannot be reached or cannot write.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(e) => postgres::unreachable(e),
            _ => false,
        }
    }

    /// Whether a uniqueness rule of the schema refused the write.
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            _ => false,
        }
    }
}

/// When a SQLite commit counts as done, and so when the API may answer for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SqliteSync {
    /// On disk (the WAL is synced at every group commit): a commit survives a power
    /// loss, as PostgreSQL's default gives.
    #[default]
    Full,
    /// Handed to the operating system (the disk is synced at checkpoints): a commit
    /// survives the process being killed, but a power loss can take the last ones back.
    Normal,
}

impl SqliteSync {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(Self::Full),
            "normal" => Ok(Self::Normal),
            other => Err(format!(
                "unknown SQLite sync mode '{other}': full or normal"
            )),
        }
    }

    /// The value of SQLite's `synchronous` pragma.
    pub fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// The turns of the store's background upkeep (retention, auto-disable): the first after
/// `first`, then one every `every`, skipping those that come while the store cannot write
/// (their writes would only fail).
pub struct Turns {
    wait: std::time::Duration,
    every: std::time::Duration,
}

impl Turns {
    pub fn new(first: std::time::Duration, every: std::time::Duration) -> Self {
        Self { wait: first, every }
    }

    /// Waits for the next turn; `false` once `stop` fires.
    pub async fn next(
        &mut self,
        store: &dyn Store,
        stop: &tokio_util::sync::CancellationToken,
    ) -> bool {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(self.wait) => {}
            }
            self.wait = self.every;
            if store.health().borrow().trouble().is_none() {
                return true;
            }
        }
    }
}

/// Opens the store named by a database URL (`sqlite://…`, `postgres://…` or
/// `postgresql://…`), migrated to the latest schema. `sqlite_sync` is for SQLite.
pub async fn open(database_url: &str, sqlite_sync: SqliteSync) -> anyhow::Result<Arc<dyn Store>> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(database_url, sqlite_sync).await?,
        ))
    } else if is_postgres(database_url) {
        Ok(Arc::new(postgres::PgStore::open(database_url).await?))
    } else {
        anyhow::bail!(
            "unsupported database URL: expected sqlite://PATH or postgres://USER@HOST/DATABASE"
        )
    }
}

/// Whether a database URL names a PostgreSQL database (shared by several nodes).
pub fn is_postgres(database_url: &str) -> bool {
    database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")
}

#[derive(Debug, Clone)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    pub signature_key: SignatureKey,
    /// The key `signature_key` replaced, while it still signs beside it.
    pub retiring_key: Option<RetiringKey>,
}

impl Organization {
    pub fn signing_keys(&self) -> SigningKeys {
        SigningKeys {
            current: self.signature_key.clone(),
            retiring: self.retiring_key.clone(),
        }
    }
}

/// An API key as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub prefix: String,
    pub hash: String,
}

/// An API key as its organization sees it: never the secret nor its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    /// The key's first characters, to recognize it by.
    pub prefix: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct DashboardUser {
    pub id: UserId,
    pub org_id: OrgId,
    pub email: String,
    pub password_hash: String,
}

/// A dashboard login session; the cookie's token is stored only as its SHA-256.
#[derive(Debug, Clone)]
pub struct DashboardSession {
    pub token_hash: String,
    pub user_id: UserId,
    pub org_id: OrgId,
    pub csrf_token: String,
    pub created_at: Timestamp,
    /// Moved later while the session is used, never past its absolute end.
    pub expires_at: Timestamp,
}

/// The answer to a call made with an `Idempotency-Key`, written in the transaction of the
/// call's effects (see [`Records::remembered`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered {
    pub org_id: OrgId,
    pub key: String,
    /// Of the call: its method, path and body.
    pub fingerprint: String,
    pub status: u16,
    pub body: Vec<u8>,
    pub created_at: Timestamp,
}

impl Remembered {
    /// How long a key holds its answer.
    pub const KEPT: chrono::Duration = chrono::Duration::hours(24);

    /// Before this, an answer under the same key is forgotten and the key free again.
    pub fn expired_before(&self) -> Timestamp {
        self.created_at - Self::KEPT
    }
}

/// Changes to a connector, every present field parsed.
#[derive(Debug, Clone, Default)]
pub struct ConnectorChanges {
    pub display_name: Option<String>,
    pub integration_slug: Option<String>,
    pub categories: Option<Vec<String>>,
    pub origin_id: Option<String>,
    pub connector_status: Option<ConnectorStatus>,
    pub end_user_name: Option<String>,
    pub end_user_email: Option<String>,
}

/// What an event records besides itself, in the same transaction.
#[derive(Debug, Clone)]
pub enum SyncChange {
    None,
    /// A new sync job.
    Started(SyncJob),
    /// A sync job that was `Syncing` and now is `Done` or `Failed`.
    Finished(SyncJob),
}

/// An event to record, with its deliveries.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event: Event,
    /// What every body of the event holds after its `webhook` object
    /// ([`RenderedEvent::shared`](crate::domain::payload::RenderedEvent::shared)): a store
    /// may keep it once and remake each delivery's body from it and the delivery's columns.
    pub shared_body: Bytes,
    pub deliveries: Vec<NewDelivery>,
    /// The trace context of the API request that made the event, kept with each of its
    /// deliveries so that their attempts join its trace (see `telemetry::traces`).
    pub traceparent: Option<Arc<str>>,
}

/// A delivery's exact body as the stores keep it: its own when it has one, else remade
/// from its webhook, URL and event type and its event's shared part ([`NewEvent`]).
fn delivery_body(
    own: Option<Vec<u8>>,
    webhook_id: WebhookId,
    url: &str,
    event_type: &str,
    shared: Option<&[u8]>,
) -> StoreResult<Bytes> {
    if let Some(own) = own {
        return Ok(own.into());
    }
    let (Ok(event_type), Some(shared)) = (EventType::parse(event_type), shared) else {
        return Err(StoreError::Corrupt(format!(
            "a delivery to webhook {webhook_id} has no body and no event to remake it from"
        )));
    };
    Ok(payload::body(webhook_id, url, event_type, shared).into())
}

/// One delivery to create with an event.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub webhook_name: String,
    pub url: String,
    /// The exact body, as the first attempt sends it; the stores keep the event's shared
    /// part instead and remake it (see [`NewEvent::shared_body`]).
    pub body: Bytes,
    /// Set when the creating node hands the delivery to its own dispatcher at once.
    pub lease_until: Option<Timestamp>,
    /// The connector whose events its webhook wants in order: the delivery waits until
    /// the ones before it, to that webhook and of that connector, have ended.
    pub ordered_by: Option<ConnectorId>,
}

/// A delivery's next attempt, as the dispatcher needs it.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub id: DeliveryId,
    pub org_id: OrgId,
    pub webhook_id: WebhookId,
    pub url: String,
    pub body: Bytes,
    /// The number of the attempt this claim allows (1 for the first); claims count even
    /// when a crash interrupts them, so the retry budget holds across nodes and restarts.
    pub attempt_number: u32,
    /// Attempts whose outcome is recorded.
    pub attempts_recorded: u32,
    /// When the first recorded attempt started: the retry window's origin.
    pub first_attempt_at: Option<Timestamp>,
    /// See [`NewDelivery::ordered_by`]: its end lets the next one go.
    pub ordered_by: Option<ConnectorId>,
    /// Its event's type, for the attempt metrics; `None` where the claim did not read it
    /// (a resend on SQLite keeps its own body and reads no event).
    pub event_type: Option<EventType>,
    /// The trace context of the API request that made the delivery, when traces are
    /// exported.
    pub traceparent: Option<Arc<str>>,
}

/// How much one claim may take (see [`Store::claim_due`]): the room the dispatcher has
/// in all, and in each webhook's lane.
#[derive(Debug, Clone)]
pub struct ClaimRoom {
    /// Deliveries in all.
    pub limit: u32,
    /// Deliveries of each webhook listed; 0 for those with no room.
    pub webhooks: HashMap<WebhookId, u32>,
    /// Deliveries of a webhook not listed.
    pub otherwise: u32,
}

impl ClaimRoom {
    /// The webhooks with no room.
    pub fn full(&self) -> Vec<WebhookId> {
        self.webhooks
            .iter()
            .filter(|(_, room)| **room == 0)
            .map(|(webhook, _)| *webhook)
            .collect()
    }
}

/// The result of an attempt (or of deciding not to make one), written in batches.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub attempt: Option<Attempt>,
    pub first_attempt_at: Option<Timestamp>,
    pub state: DeliveryState,
    /// For failures: the category's name, kept on the delivery for the errors filter.
    pub last_error: Option<String>,
    /// How long a scheduled retry stays claimed by this node.
    pub lease_until: Option<Timestamp>,
    /// The job's: a final outcome makes the next delivery of this connector due.
    pub ordered_by: Option<ConnectorId>,
}

impl DeliveryOutcome {
    /// The webhook and connector whose next delivery this outcome lets go, if it ends an
    /// ordered delivery.
    pub fn lets_next_go(&self) -> Option<(WebhookId, ConnectorId)> {
        match self.state {
            DeliveryState::RetryScheduled { .. } => None,
            _ => self.ordered_by.map(|c| (self.webhook_id, c)),
        }
    }
}

/// How far a webhook's `last_triggered_at` may lag its latest attempt: a batch of
/// outcomes writes the webhook's row only when it moves `last_triggered_at` by this much
/// or more, or changes `failing_since`. Otherwise every batch of a busy webhook would
/// wait, on that one row, for the batch before it to commit (BENCHMARKS.md).
pub const TRIGGERED_PRECISION: std::time::Duration = std::time::Duration::from_secs(1);

/// What a batch of outcomes says of each webhook it made attempts to: when it was last
/// triggered, and since when its attempts have all failed (`webhooks.failing_since`,
/// which `--auto-disable-after` goes by).
#[derive(Debug, Clone, PartialEq)]
pub struct Triggered {
    /// The latest attempt's start.
    pub at: Timestamp,
    pub failing: Failing,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Failing {
    /// The latest attempt succeeded: the webhook is not failing.
    No,
    /// The batch's attempts failed from `since` on; `afresh` when an attempt succeeded
    /// before them in the batch, so that an earlier `failing_since` no longer holds.
    Since { since: Timestamp, afresh: bool },
}

impl Failing {
    /// As the stores bind it: whether failing, since when, and whether afresh.
    pub fn columns(&self) -> (bool, Option<Timestamp>, bool) {
        match *self {
            Failing::No => (false, None, false),
            Failing::Since { since, afresh } => (true, Some(since), afresh),
        }
    }
}

/// Each attempted webhook's [`Triggered`], from a batch of outcomes in any order.
pub fn triggered<'a>(
    outcomes: impl IntoIterator<Item = &'a DeliveryOutcome>,
) -> std::collections::BTreeMap<WebhookId, Triggered> {
    let mut attempts: Vec<(WebhookId, Timestamp, bool)> = outcomes
        .into_iter()
        .filter_map(|o| {
            let a = o.attempt.as_ref()?;
            Some((o.webhook_id, a.started_at, a.result.is_error()))
        })
        .collect();
    attempts.sort_by_key(|(webhook, at, _)| (*webhook, *at));
    // Each webhook's figures so far, and whether an attempt of the batch succeeded.
    let mut found: std::collections::BTreeMap<WebhookId, (Triggered, bool)> =
        std::collections::BTreeMap::new();
    for (webhook, at, error) in attempts {
        let (t, succeeded) = found.entry(webhook).or_insert((
            Triggered {
                at,
                failing: Failing::No,
            },
            false,
        ));
        t.at = at;
        if !error {
            t.failing = Failing::No;
            *succeeded = true;
        } else if t.failing == Failing::No {
            // A success earlier in the batch ends any failing spell before it.
            t.failing = Failing::Since {
                since: at,
                afresh: *succeeded,
            };
        }
    }
    found.into_iter().map(|(w, (t, _))| (w, t)).collect()
}

/// The deliveries waiting, of every node (see [`Records::queue_depth`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Pending, unclaimed and due: waiting for a dispatcher with room.
    pub due: u64,
    /// Pending, unclaimed and due later: retries waiting for their time.
    pub scheduled: u64,
    /// Pending and claimed by a node: being attempted, or held for it.
    pub claimed: u64,
    /// When the earliest unclaimed delivery was due (or will be).
    pub earliest: Option<Timestamp>,
}

/// Filters of `GET /api/v1/webhooks/logs`; all present ones must hold.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub webhook_id: Option<WebhookId>,
    pub connector_id: Option<ConnectorId>,
    pub event_types: Vec<EventType>,
    pub response_codes: Vec<u16>,
    pub created_from: Option<Timestamp>,
    pub created_to: Option<Timestamp>,
    pub errors_only: bool,
    /// Cursor: only deliveries older than this one.
    pub before: Option<DeliveryId>,
    pub limit: u32,
}

/// A delivery as the logs show it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub webhook_name: String,
    pub connector_id: ConnectorId,
    pub event_type: EventType,
    pub url: String,
    pub status: String,
    pub response_code: Option<u16>,
    pub attempt_count: u32,
    pub last_error: Option<String>,
    pub integration_name: String,
    pub end_user_name: String,
    pub origin_id: String,
    pub created_at: Timestamp,
    pub next_attempt_at: Option<Timestamp>,
}

/// A delivery with its body and every attempt.
#[derive(Debug, Clone)]
pub struct LogDetail {
    pub entry: LogEntry,
    pub body: Bytes,
    pub attempts: Vec<Attempt>,
}

/// The store the API and the dispatcher see: the [`Records`] every backend keeps alike,
/// and the writes of the delivery path, which each backend makes its own way.
#[async_trait]
pub trait Store: Records + Send + Sync + 'static {
    // Webhooks and connectors; the rest of their records is in [`Records`].
    /// The enabled webhooks of one environment, for fan-out.
    async fn webhooks_for(&self, org: OrgId, environment: Environment)
        -> StoreResult<Vec<Webhook>>;
    /// Deletes the webhook and cancels its pending deliveries; its logs stay.
    async fn delete_webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<bool>;

    async fn connector(&self, org: OrgId, id: ConnectorId) -> StoreResult<Option<Connector>>;

    /// Records events, the sync change that caused them and their deliveries, and the
    /// call's answer under its idempotency key, atomically: once this returns, nothing of
    /// it can be lost. A `Finished` change applies only to a job still `Syncing`;
    /// otherwise nothing is written and this answers `Conflict`. A key another call holds
    /// writes nothing either, and answers `KeyTaken`.
    async fn record_events(
        &self,
        sync: SyncChange,
        events: Arc<[NewEvent]>,
        remember: Option<Remembered>,
    ) -> StoreResult<()>;
    /// A new delivery of a logged delivery's exact body to the same webhook.
    async fn resend(
        &self,
        org: OrgId,
        log: DeliveryId,
        new_id: DeliveryId,
        lease_until: Option<Timestamp>,
        traceparent: Option<Arc<str>>,
    ) -> StoreResult<Option<DeliveryJob>>;

    // Dispatching.
    /// Claims pending deliveries that are due and unclaimed (or whose claim ran out),
    /// until `lease_until`, earliest due first, within `room`: never more than its limit
    /// in all, nor for a webhook with no room. A backend may hold each webhook to its
    /// own room too; the dispatcher gives back what its lanes cannot take. Each claim
    /// counts as an attempt started.
    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        room: &ClaimRoom,
    ) -> StoreResult<Vec<DeliveryJob>>;
    /// Gives claims back, so any dispatcher may take the deliveries when due. With
    /// `unstarted`, their attempts never began and no longer count against the budget.
    async fn release(&self, ids: &[DeliveryId], unstarted: bool) -> StoreResult<()>;
    /// Drops every claim: for a single-node store after a crash, when no claim can be live.
    async fn release_all(&self) -> StoreResult<u64>;
    async fn record_outcomes(&self, outcomes: Arc<[DeliveryOutcome]>) -> StoreResult<()>;

    // Several nodes on one database.
    /// Extends this node's claims on `ids` to `until`, for deliveries it still holds in
    /// memory, so that no other node takes them while they are worked on. Claims that ran
    /// out and were taken by another node, and deliveries that are no longer claimed
    /// (finished, or a retry given back), are left alone. Answers how many were extended.
    async fn renew_leases(&self, ids: &[DeliveryId], until: Timestamp) -> StoreResult<u64>;
    /// Fires when another node made work available now (deliveries created or given back
    /// unclaimed), so an idle dispatcher claims it without waiting for its next poll.
    /// `None` where no other process shares the store.
    fn work_notifications(&self) -> Option<Arc<Notify>> {
        None
    }
    /// Whether other processes (nodes) write to this store too, so that nothing read
    /// from it may be cached on the strength of this process's own writes.
    fn shared(&self) -> bool {
        false
    }

    // Retention.
    /// Removes up to `batch` finished deliveries made before `before` (their attempts
    /// go with them), and the events made before it that no delivery needs any more, in
    /// short transactions of their own. Pending deliveries stay, and so do their events,
    /// however old. A round calls this until both counts are below `batch`.
    async fn purge(&self, before: Timestamp, batch: u32) -> StoreResult<Purged>;
    /// Removes, of the next `batch` events after `after` (in id order) made before
    /// `before`, those no delivery refers to, where [`Store::purge`] leaves some: events
    /// that went to no webhook, or whose deliveries went without them (a crash between
    /// two transactions). Answers how many it removed, and the last event it looked at
    /// (none when there was none left to look at).
    async fn sweep_events(
        &self,
        _after: Option<EventId>,
        _before: Timestamp,
        _batch: u32,
    ) -> StoreResult<(u64, Option<EventId>)> {
        Ok((0, None))
    }
    /// Gives the space of removed rows back to the file system, up to `pages` database
    /// pages per call, and answers how many free pages are left to give back. Where the
    /// database server manages its own space (PostgreSQL), there is none to give.
    async fn reclaim_space(&self, _pages: u32) -> StoreResult<u64> {
        Ok(0)
    }

    /// The connection pool's size and idle connections, where the store has one.
    fn pool_usage(&self) -> Option<(u32, usize)> {
        None
    }

    /// Whether the store can write now (see [`Health`]).
    fn health(&self) -> watch::Receiver<Health>;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::attempt::{AttemptResult, FailureCategory};

    fn attempt(webhook: WebhookId, at: Timestamp, status: Option<u16>) -> DeliveryOutcome {
        let delivery_id = DeliveryId::new();
        DeliveryOutcome {
            ordered_by: None,
            delivery_id,
            webhook_id: webhook,
            attempt: Some(Attempt {
                delivery_id,
                number: 1,
                started_at: at,
                duration: Duration::ZERO,
                request_url: String::new(),
                request_headers: Vec::new(),
                result: match status {
                    Some(status) => AttemptResult::Response {
                        status,
                        headers: Vec::new(),
                        body: Vec::new(),
                    },
                    None => AttemptResult::Failure {
                        category: FailureCategory::ConnectError,
                        message: String::new(),
                    },
                },
            }),
            first_attempt_at: Some(at),
            state: DeliveryState::Failed,
            last_error: None,
            lease_until: None,
        }
    }

    #[test]
    fn a_batch_says_since_when_each_webhook_fails() {
        let (a, b, c) = (WebhookId::new(), WebhookId::new(), WebhookId::new());
        let t0 = time::now();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        // In no particular order, as batches come.
        let outcomes = [
            attempt(a, at(2), Some(500)),
            attempt(a, at(1), None),
            attempt(b, at(1), Some(500)),
            attempt(b, at(2), Some(204)),
            attempt(b, at(3), Some(404)),
            attempt(c, at(1), None),
            attempt(c, at(4), Some(302)),
        ];
        let found = triggered(&outcomes);
        assert_eq!(
            found[&a],
            Triggered {
                at: at(2),
                failing: Failing::Since {
                    since: at(1),
                    afresh: false
                }
            }
        );
        // After a success in the batch, the failing spell starts afresh.
        assert_eq!(
            found[&b].failing,
            Failing::Since {
                since: at(3),
                afresh: true
            }
        );
        // The latest attempt succeeded (a redirect is no error).
        assert_eq!(
            found[&c],
            Triggered {
                at: at(4),
                failing: Failing::No
            }
        );
    }
}
