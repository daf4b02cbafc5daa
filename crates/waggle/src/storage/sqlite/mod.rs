//! The embedded SQLite store: one database file, WAL journal, one driver (rusqlite).
//!
//! Every write goes through one thread, the writer (`group.rs`): the hot writes (events
//! with their deliveries, outcomes, claims, releases and lease renewals) are
//! group-committed, every other write is a command of its own; so no write ever waits on
//! SQLite's lock for another. Reads run on a few read-only connections of their own
//! (`readers.rs`). Rows are mapped by the shared layer (`storage/rows.rs`), and the
//! records both backends keep alike are written once (`storage/records.rs`).
//!
//! WAL mode with `synchronous = FULL` by default: a commit is on disk before anyone hears
//! of it (one sync of the WAL per group commit). `--sqlite-sync normal` gives
//! `synchronous = NORMAL`: a commit survives the process being killed (the WAL is in the
//! OS's page cache), and only a power loss can take the last commits back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Mutex as StdMutex;

use async_trait::async_trait;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use self::group::{GroupWrite, Work};
use self::readers::Readers;
use super::records::{self, Change, Db, RowMap};
use super::rows::{self, Row, Value};
use super::sql::{Dialect, Sql};
use super::*;
use crate::domain::time::{from_micros, to_micros};

mod group;
mod migrate;
mod readers;

/// Read connections.
const READERS: usize = 4;

pub struct SqliteStore {
    readers: Readers,
    /// The writer's queue.
    writer: std::sync::mpsc::Sender<GroupWrite>,
    /// Whether the writer can write, as it last found.
    health: watch::Receiver<Health>,
    /// What every event reads, kept in memory: one process owns a SQLite file, so every
    /// change goes through this store, which clears what it changes.
    cache: ReadCache,
}

/// Webhooks by organization and environment, and connectors by id.
#[derive(Default)]
struct ReadCache {
    /// Bumped by every change, so that a read that raced with a change does not put
    /// what it read before the change back into the cache.
    generation: AtomicU64,
    webhooks: StdMutex<HashMap<(OrgId, Environment), Vec<Webhook>>>,
    connectors: StdMutex<HashMap<ConnectorId, Connector>>,
}

impl ReadCache {
    fn generation(&self) -> u64 {
        self.generation.load(AtomicOrdering::Acquire)
    }

    fn changed(&self, change: Change) {
        self.generation.fetch_add(1, AtomicOrdering::AcqRel);
        match change {
            Change::Webhooks(org) => self
                .webhooks
                .lock()
                .expect("cache lock")
                .retain(|(o, _), _| *o != org),
            Change::Connector(id) => {
                self.connectors.lock().expect("cache lock").remove(&id);
            }
        }
    }

    fn keep_webhooks(&self, read_at: u64, key: (OrgId, Environment), webhooks: &[Webhook]) {
        let mut cached = self.webhooks.lock().expect("cache lock");
        if self.generation() == read_at {
            cached.insert(key, webhooks.to_vec());
        }
    }

    fn keep_connector(&self, read_at: u64, connector: &Connector) {
        let mut cached = self.connectors.lock().expect("cache lock");
        if self.generation() == read_at {
            cached.insert(connector.id, connector.clone());
        }
    }
}

/// The file a `sqlite:` URL names (`sqlite://PATH`, `sqlite:PATH`, with or without a
/// `?query`, which is ignored: the store sets its own options).
fn database_path(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| anyhow::anyhow!("invalid SQLite URL '{url}': expected sqlite://PATH"))?;
    let path = rest.split('?').next().unwrap_or_default();
    anyhow::ensure!(!path.is_empty(), "invalid SQLite URL '{url}': no path");
    anyhow::ensure!(
        path != ":memory:",
        "invalid SQLite URL '{url}': the store needs a file"
    );
    Ok(PathBuf::from(path))
}

impl SqliteStore {
    pub async fn open(url: &str, sync: SqliteSync) -> anyhow::Result<Self> {
        let path = database_path(url)?;
        tokio::task::spawn_blocking(move || Self::open_path(&path, sync)).await?
    }

    fn open_path(path: &Path, sync: SqliteSync) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut conn = Connection::open(path)
            .with_context(|| format!("opening SQLite database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {};",
            sync.pragma()
        ))?;
        migrate::run(&mut conn)
            .with_context(|| format!("migrating the SQLite database {}", path.display()))?;
        drop(conn);
        let (health, healthy) = watch::channel(Health::Ok);
        let readers = Readers::open(path, READERS)?;
        let writer = group::start(path, sync, health, readers.reopen())?;
        Ok(Self {
            readers,
            writer,
            health: healthy,
            cache: ReadCache::default(),
        })
    }

    /// Queues a write for the writer and waits until it is committed.
    async fn group_write<T>(
        &self,
        write: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> GroupWrite,
    ) -> StoreResult<T> {
        let stopped = || {
            let health = self.health.borrow();
            let why = health.trouble().unwrap_or("the SQLite writer stopped");
            StoreError::Unavailable(why.to_owned())
        };
        let (done, committed) = oneshot::channel();
        self.writer.send(write(done)).map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }

    /// Runs `work` on the writer's connection, in a transaction of its own.
    async fn command<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.group_write(|done| GroupWrite::Command(Box::new(Work::new(work, done))))
            .await
    }
}

/// A row of rusqlite's, as the shared layer reads it: ids as text, times as microseconds.
struct SqliteRow<'a, 'stmt>(&'a rusqlite::Row<'stmt>);

impl Row for SqliteRow<'_, '_> {
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        Ok(self.0.get(column)?)
    }
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        Ok(self.0.get(column)?)
    }
    fn flag(&self, column: &str) -> StoreResult<bool> {
        Ok(self.0.get(column)?)
    }
    fn opt_blob(&self, column: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.0.get(column)?)
    }
    fn uuid(&self, column: &str) -> StoreResult<Uuid> {
        let text = self
            .0
            .get_ref(column)?
            .as_str()
            .map_err(|e| rows::corrupt(format!("{column}: {e}")))?;
        Uuid::parse_str(text).map_err(|_| rows::corrupt(format!("bad id in {column}: {text}")))
    }
    fn opt_uuid(&self, column: &str) -> StoreResult<Option<Uuid>> {
        match self.0.get_ref(column)? {
            rusqlite::types::ValueRef::Null => Ok(None),
            _ => self.uuid(column).map(Some),
        }
    }
    fn opt_time(&self, column: &str) -> StoreResult<Option<Timestamp>> {
        Ok(self.0.get::<_, Option<i64>>(column)?.map(from_micros))
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as Sqlite;
        Ok(match self {
            Value::Uuid(Some(id)) => ToSqlOutput::Owned(Sqlite::Text(id.hyphenated().to_string())),
            Value::Text(Some(text)) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Int(Some(n)) => ToSqlOutput::Owned(Sqlite::Integer(*n)),
            Value::Bool(flag) => ToSqlOutput::Owned(Sqlite::Integer(*flag as i64)),
            Value::Blob(Some(bytes)) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
            Value::Time(Some(at)) => ToSqlOutput::Owned(Sqlite::Integer(to_micros(at))),
            Value::Uuid(None)
            | Value::Text(None)
            | Value::Int(None)
            | Value::Blob(None)
            | Value::Time(None) => ToSqlOutput::Owned(Sqlite::Null),
        })
    }
}

/// Runs a statement and maps each row it answers.
fn fetch<T>(conn: &Connection, sql: &Sql, map: RowMap<T>) -> StoreResult<Vec<T>> {
    let mut statement = conn.prepare_cached(sql.text())?;
    let mut rows = statement.query(params_from_iter(sql.args()))?;
    let mut mapped = Vec::new();
    while let Some(row) = rows.next()? {
        mapped.push(map(&SqliteRow(row))?);
    }
    Ok(mapped)
}

/// Runs a statement; answers the rows it changed.
fn execute(conn: &Connection, sql: &Sql) -> rusqlite::Result<u64> {
    let mut statement = conn.prepare_cached(sql.text())?;
    Ok(statement.execute(params_from_iter(sql.args()))? as u64)
}

#[async_trait]
impl Db for SqliteStore {
    const DIALECT: Dialect = Dialect::Sqlite;
    /// CROSS JOIN keeps SQLite from reordering the join: a log is found by its
    /// delivery's indexes, then its event by key.
    const LOGS: &'static str = "deliveries d CROSS JOIN events e ON e.id = d.event_id";
    const LOG_EVENT: &'static str = "e";
    const SHARED_BODY: &'static str = "e.shared_body";
    /// None: one process owns the file, and clears its cache itself ([`Db::changed`]).
    const RECORDS_VERSION: &'static str = "0";
    /// One writer: no other deletes at once.
    const SKIP_LOCKED: &'static str = "";
    const HOUR_OF: &'static str = "d.created_at / 3600000000";

    async fn read<T: Send + 'static>(&self, sql: Sql, map: RowMap<T>) -> StoreResult<Vec<T>> {
        self.readers.run(move |conn| fetch(conn, &sql, map)).await
    }

    async fn write(&self, statements: Vec<Sql>) -> StoreResult<Vec<u64>> {
        self.command(move |conn| {
            let changed = statements.iter().map(|s| execute(conn, s));
            Ok(changed.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn write_returning<T: Send + 'static>(
        &self,
        sql: Sql,
        map: RowMap<T>,
    ) -> StoreResult<Vec<T>> {
        self.command(move |conn| fetch(conn, &sql, map)).await
    }

    fn changed(&self, change: Change) {
        self.cache.changed(change);
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn webhooks_for(
        &self,
        org: OrgId,
        environment: Environment,
    ) -> StoreResult<Vec<Webhook>> {
        if let Some(cached) = self
            .cache
            .webhooks
            .lock()
            .expect("cache lock")
            .get(&(org, environment))
        {
            return Ok(cached.clone());
        }
        let read_at = self.cache.generation();
        let webhooks = self
            .read(
                records::webhooks_for::<Self>(org, environment),
                rows::webhook,
            )
            .await?;
        self.cache
            .keep_webhooks(read_at, (org, environment), &webhooks);
        Ok(webhooks)
    }

    async fn delete_webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<bool> {
        let now = to_micros(&time::now());
        let (org_text, id_text) = (org.to_string(), id.to_string());
        let deleted = self
            .command(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM webhooks WHERE id = ? AND org_id = ?")?
                    .execute([&id_text, &org_text])?;
                if deleted > 0 {
                    // Its pending deliveries, from the two indexes that hold them: the
                    // unclaimed and the claimed.
                    conn.prepare_cached(
                        "UPDATE deliveries SET status = 'cancelled', lease_until = NULL, \
                         finished_at = ?1 WHERE +org_id = ?2 AND rowid IN ( \
                           SELECT rowid FROM deliveries WHERE webhook_id = ?3 \
                             AND status = 'pending' AND lease_until IS NULL \
                           UNION ALL \
                           SELECT rowid FROM deliveries WHERE status = 'pending' \
                             AND lease_until IS NOT NULL AND webhook_id = ?3)",
                    )?
                    .execute(rusqlite::params![now, org_text, id_text])?;
                }
                Ok(deleted > 0)
            })
            .await?;
        self.cache.changed(Change::Webhooks(org));
        Ok(deleted)
    }

    async fn connector(&self, org: OrgId, id: ConnectorId) -> StoreResult<Option<Connector>> {
        if let Some(cached) = self.cache.connectors.lock().expect("cache lock").get(&id) {
            if cached.org_id == org {
                return Ok(Some(cached.clone()));
            }
        }
        let read_at = self.cache.generation();
        let connector = self
            .read_one(records::connector::<Self>(org, id), rows::connector)
            .await?;
        if let Some(connector) = &connector {
            self.cache.keep_connector(read_at, connector);
        }
        Ok(connector)
    }

    async fn record_events(
        &self,
        sync: SyncChange,
        events: Arc<[NewEvent]>,
        remember: Option<Remembered>,
    ) -> StoreResult<()> {
        self.group_write(|done| GroupWrite::Events {
            sync,
            events,
            remember: remember.map(Box::new),
            done,
        })
        .await
    }

    async fn resend(
        &self,
        org: OrgId,
        log: DeliveryId,
        new_id: DeliveryId,
        lease_until: Option<Timestamp>,
        traceparent: Option<Arc<str>>,
    ) -> StoreResult<Option<DeliveryJob>> {
        let (log, org) = (log.to_string(), org.to_string());
        self.command(move |conn| {
            let source = conn
                .prepare_cached(
                    "SELECT d.webhook_id, d.url, d.body, e.event_type, e.shared_body, \
                     w.url AS webhook_url, w.name AS webhook_name \
                     FROM deliveries d CROSS JOIN events e ON e.id = d.event_id \
                     LEFT JOIN webhooks w ON w.id = d.webhook_id \
                     WHERE d.id = ? AND d.org_id = ?",
                )?
                .query_row([&log, &org], |row| {
                    let body = rows::body(&SqliteRow(row));
                    Ok((
                        body,
                        row.get::<_, Option<String>>("webhook_url")?,
                        row.get::<_, Option<String>>("webhook_name")?,
                    ))
                })
                .optional()?;
            let Some((body, url, name)) = source else {
                return Ok(None);
            };
            let (Some(url), Some(name)) = (url, name) else {
                return Err(StoreError::Conflict(
                    "the webhook of this log has been deleted".into(),
                ));
            };
            // The exact bytes sent before, kept with the new delivery: its URL may differ.
            let body = body?;
            let now = to_micros(&time::now());
            let job = conn
                .prepare_cached(
                    "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, url, \
                     body, status, created_at, next_attempt_at, lease_until, attempts_started, \
                     traceparent) \
                     SELECT ?, org_id, event_id, webhook_id, ?, ?, ?, 'pending', ?, ?, ?, ?, ? \
                     FROM deliveries WHERE id = ? \
                     RETURNING id, org_id, webhook_id, url, body, NULL AS event_type, \
                     NULL AS shared_body, attempt_count, attempts_started, first_attempt_at, \
                     NULL AS ordered_by, traceparent",
                )?
                .query_row(
                    rusqlite::params![
                        new_id.to_string(),
                        name,
                        url,
                        &body[..],
                        now,
                        now,
                        lease_until.as_ref().map(to_micros),
                        lease_until.is_some() as i64,
                        traceparent.as_deref(),
                        log,
                    ],
                    |row| Ok(rows::job(&SqliteRow(row))),
                )??;
            conn.prepare_cached("UPDATE deliveries SET resent_as = ? WHERE id = ?")?
                .execute(rusqlite::params![new_id.to_string(), log])?;
            Ok(Some(job))
        })
        .await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        room: &ClaimRoom,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let claim = group::Claim {
            now,
            lease_until,
            room: room.clone(),
        };
        self.group_write(|done| GroupWrite::Claim { claim, done })
            .await
    }

    async fn release(&self, ids: &[DeliveryId], unstarted: bool) -> StoreResult<()> {
        let ids = ids.to_vec();
        self.group_write(|done| GroupWrite::Release {
            ids,
            unstarted,
            done,
        })
        .await
    }

    async fn release_all(&self) -> StoreResult<u64> {
        self.command(|conn| {
            Ok(conn.execute(
                "UPDATE deliveries SET lease_until = NULL \
                 WHERE status = 'pending' AND lease_until IS NOT NULL",
                [],
            )? as u64)
        })
        .await
    }

    async fn renew_leases(&self, ids: &[DeliveryId], until: Timestamp) -> StoreResult<u64> {
        let ids = ids.to_vec();
        self.group_write(|done| GroupWrite::Renew { ids, until, done })
            .await
    }

    async fn record_outcomes(&self, outcomes: Arc<[DeliveryOutcome]>) -> StoreResult<()> {
        self.group_write(|done| GroupWrite::Outcomes { outcomes, done })
            .await
    }

    /// Events go by the ids of the deliveries removed, each when no delivery refers to
    /// it any more (the logs read their fields there, resends included), looked up by the
    /// deliveries' index on their event.
    async fn purge(&self, before: Timestamp, batch: u32) -> StoreResult<Purged> {
        let mut events = records::purge_deliveries(self, before, batch).await?;
        let deliveries = events.len() as u64;
        events.sort_unstable();
        events.dedup();
        let events = records::forget_events(self, &events).await?;
        Ok(Purged { deliveries, events })
    }

    async fn sweep_events(
        &self,
        after: Option<EventId>,
        before: Timestamp,
        batch: u32,
    ) -> StoreResult<(u64, Option<EventId>)> {
        records::sweep_events(self, after, before, batch).await
    }

    async fn reclaim_space(&self, pages: u32) -> StoreResult<u64> {
        self.command(move |conn| {
            // Only a file made with incremental vacuum can shrink while open (see
            // `migrate.rs`); one made before keeps its free pages for its new rows.
            let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |row| row.get(0))?;
            if mode != INCREMENTAL_VACUUM {
                return Ok(0);
            }
            conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
            let free: i64 = conn.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
            Ok(free as u64)
        })
        .await
    }

    fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }
}

/// `PRAGMA auto_vacuum`'s value for incremental vacuum.
const INCREMENTAL_VACUUM: i64 = 2;

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;

    /// A database with the migrations before `version` run, as an older waggle left it.
    fn migrated_before(path: &Path, version: i64) -> Connection {
        let mut old = Connection::open(path).unwrap();
        migrate::run_before(&mut old, version).unwrap();
        old
    }

    #[tokio::test]
    async fn the_deliveries_made_anew_keep_their_rows_attempts_and_status_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = migrated_before(&path, 8);
        let (org, delivery) = (OrgId::new(), DeliveryId::new());
        old.execute_batch(&format!(
            "INSERT INTO organizations (id, name, signature_key, created_at) VALUES ('{org}', 'o', 'k', 0); \
             INSERT INTO events (id, org_id, event_type, environment, connector_id, created_at, \
             shared_body) VALUES ('e', '{org}', 'connector_sync_started', 'production', '{c}', 0, x'7b7d'); \
             INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, url, body, \
             status, attempt_count, attempts_started, response_code, created_at, first_attempt_at, \
             finished_at) VALUES ('{delivery}', '{org}', 'e', '{w}', 'h', 'http://then/', x'7b7d', \
             'delivered', 1, 1, 204, 0, 5, 9); \
             INSERT INTO attempts (delivery_id, number, started_at, duration_us, request_url, \
             request_headers, response_status, response_headers, response_body) \
             VALUES ('{delivery}', 1, 5, 4, 'http://then/', '[]', 204, '[]', x'')",
            w = WebhookId::new(),
            c = ConnectorId::new(),
        ))
        .unwrap();
        // A sync job that outlived its connector (the group commit checks no foreign
        // keys) is a broken reference the migration did not make: it does not stop it.
        old.execute_batch(
            "PRAGMA foreign_keys = OFF; \
             INSERT INTO sync_jobs (id, connector_id, initial_sync, sync_type, display_status, \
             last_sync_start_time) VALUES ('s', 'gone', 0, 'MANUAL', 'Syncing', 0);",
        )
        .unwrap();
        drop(old);

        let store = SqliteStore::open(&format!("sqlite://{}", path.display()), SqliteSync::Full)
            .await
            .unwrap();
        let log = store.log(org, delivery).await.unwrap().unwrap();
        assert_eq!(log.entry.status, "delivered");
        assert_eq!(log.entry.response_code, Some(204));
        // Making the table anew did not cascade to the attempts that refer to it.
        assert_eq!(log.attempts.len(), 1);
        assert_eq!(log.attempts[0].number, 1);
        // The status rule holds as before, and checking it builds nothing per row.
        let conn = Connection::open(&path).unwrap();
        let insert = |status: &str| {
            conn.execute(
                "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, url, \
                 status, created_at) VALUES (?, ?, 'e', 'w', 'h', 'http://x/', ?, 0)",
                params![DeliveryId::new().to_string(), org.to_string(), status],
            )
        };
        let refused = insert("lost").unwrap_err();
        assert!(refused.to_string().contains("CHECK"), "{refused}");
        insert("pending").unwrap();
        let plan: Vec<(String, Option<String>)> = conn
            .prepare("EXPLAIN UPDATE deliveries SET status = ? WHERE id = 'x'")
            .unwrap()
            .query_map(["failed"], |row| {
                Ok((row.get(1)?, row.get(5).ok().flatten()))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let checked = |(op, p4): &(String, Option<String>)| {
            op == "Halt"
                && p4
                    .as_deref()
                    .is_some_and(|c| c.contains("status = 'pending'"))
        };
        assert!(plan.iter().any(checked), "{plan:?}");
        assert!(
            !plan.iter().any(|(op, _)| op == "OpenEphemeral"),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn deliveries_made_before_their_events_kept_the_shared_parts_read_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = migrated_before(&path, 6);
        let (org, delivery, connector) = (OrgId::new(), DeliveryId::new(), ConnectorId::new());
        let exact = br#"{"webhook":{"url":"http://then/"},"data":"as sent \u00e9"}"#;
        old.execute_batch(&format!(
            "INSERT INTO organizations (id, name, signature_key, created_at) VALUES ('{org}', 'o', 'k', 0); \
             INSERT INTO events (id, org_id, event_type, environment, connector_id, created_at) \
             VALUES ('e', '{org}', 'connector_sync_started', 'production', '{connector}', 0);"
        ))
        .unwrap();
        old.execute(
            "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, connector_id, \
             event_type, integration_name, end_user_name, origin_id, url, body, status, created_at, \
             next_attempt_at) VALUES (?1, ?2, 'e', ?3, 'h', ?5, 'connector_sync_started', 's', \
             'n', 'u', 'http://now/', ?4, 'pending', 0, 0)",
            params![
                delivery.to_string(),
                org.to_string(),
                WebhookId::new().to_string(),
                &exact[..],
                connector.to_string()
            ],
        )
        .unwrap();
        drop(old);

        let store = SqliteStore::open(&format!("sqlite://{}", path.display()), SqliteSync::Full)
            .await
            .unwrap();
        let log = store.log(org, delivery).await.unwrap().unwrap();
        assert_eq!(&log.body[..], &exact[..]);
        // The event's fields, moved from the delivery to the event, read as they were.
        let e = &log.entry;
        assert_eq!(e.connector_id, connector);
        assert_eq!(e.event_type, EventType::ConnectorSyncStarted);
        assert_eq!(
            (
                e.integration_name.as_str(),
                e.end_user_name.as_str(),
                e.origin_id.as_str()
            ),
            ("s", "n", "u")
        );
        assert_eq!(
            (e.url.as_str(), e.webhook_name.as_str()),
            ("http://now/", "h")
        );
        let room = ClaimRoom {
            limit: 10,
            webhooks: HashMap::new(),
            otherwise: 10,
        };
        let jobs = store
            .claim_due(time::now(), time::now(), &room)
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(&jobs[0].body[..], &exact[..]);
    }

    #[test]
    fn a_migration_changed_after_it_ran_is_refused() {
        // The record sqlx kept is the one read and checked.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let mut conn = migrated_before(&path, 2);
        conn.execute("UPDATE _sqlx_migrations SET checksum = x'00'", [])
            .unwrap();
        let refused = migrate::run(&mut conn).unwrap_err();
        assert!(refused.to_string().contains("changed"), "{refused}");
    }
}
