//! The embedded SQLite store: one database file, WAL journal, reads through a small pool
//! of their own. SQLite has one writer at a time: the hot writes (events with their
//! deliveries, outcomes, claims, releases and lease renewals) are group-committed by a
//! thread of their own (`group.rs`), and every other write goes through one more
//! connection, waiting its turn in the pool rather than in busy retries, and taking the
//! write lock as its transaction begins (`BEGIN IMMEDIATE`), so that it waits for the
//! group commit instead of failing.
//!
//! `synchronous = NORMAL` in WAL mode: a commit survives the process being killed (the WAL
//! is in the OS's page cache), and only a power loss can take the last commits back.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::oneshot;

use self::group::GroupWrite;
use super::*;
use crate::domain::attempt::{AttemptResult, FailureCategory};
use crate::domain::connector::{DisplayStatus, SyncError, SyncType};
use crate::domain::time::{self, from_micros, to_micros};

mod group;

pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    /// Queue of the group-committed writes (the dispatcher's and the events').
    group: std::sync::mpsc::Sender<GroupWrite>,
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

    fn webhooks_changed(&self, org: OrgId) {
        self.generation.fetch_add(1, AtomicOrdering::AcqRel);
        self.webhooks
            .lock()
            .expect("cache lock")
            .retain(|(o, _), _| *o != org);
    }

    fn connector_changed(&self, id: ConnectorId) {
        self.generation.fetch_add(1, AtomicOrdering::AcqRel);
        self.connectors.lock().expect("cache lock").remove(&id);
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

/// Runs the migrations not yet run, on a connection of their own with foreign keys off:
/// SQLite changes a table's constraints only by making the table anew, and dropping the
/// old one would otherwise cascade to every row referring to it (SQLite's own procedure
/// for schema changes). References are counted before and after, and a migration that
/// left more broken than it found fails the start. (Some may be there before: the group
/// commit does not check foreign keys, and a sync job may outlive its connector.)
async fn migrate(options: &SqliteConnectOptions) -> anyhow::Result<()> {
    use sqlx::Connection;
    let migrator = sqlx::migrate!("./migrations/sqlite");
    let mut conn =
        sqlx::SqliteConnection::connect_with(&options.clone().foreign_keys(false)).await?;
    let recorded: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = '_sqlx_migrations')",
    )
    .fetch_one(&mut conn)
    .await?;
    let applied: Vec<i64> = if recorded {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
            .fetch_all(&mut conn)
            .await?
    } else {
        Vec::new()
    };
    let pending = migrator.iter().any(|m| !applied.contains(&m.version));
    // Counted only when something is to run: it reads every reference of the database.
    let broken = "SELECT count(*) FROM pragma_foreign_key_check";
    let before: Option<i64> = match pending {
        true => Some(sqlx::query_scalar(broken).fetch_one(&mut conn).await?),
        false => None,
    };
    // With nothing to run, sqlx still checks that the ones run are those it knows.
    migrator.run(&mut conn).await?;
    if let Some(before) = before {
        let after: i64 = sqlx::query_scalar(broken).fetch_one(&mut conn).await?;
        if after > before {
            anyhow::bail!(
                "the migrations left {} rows referring to rows that do not exist",
                after - before
            );
        }
    }
    Ok(conn.close().await?)
}

impl SqliteStore {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid SQLite URL '{url}'"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32768");
        migrate(&options)
            .await
            .with_context(|| format!("migrating the SQLite database {url}"))?;
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening SQLite database {url}"))?;
        let group = group::start(options.get_filename())?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await
            .context("opening SQLite read connections")?;
        Ok(Self {
            write,
            read,
            group,
            cache: ReadCache::default(),
        })
    }

    /// Queues a write for the next group commit and waits until it is committed.
    async fn group_write<T>(
        &self,
        write: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> GroupWrite,
    ) -> StoreResult<T> {
        let (done, committed) = oneshot::channel();
        self.group
            .send(write(done))
            .map_err(|_| StoreError::Corrupt("the SQLite writer has stopped".into()))?;
        committed
            .await
            .map_err(|_| StoreError::Corrupt("the SQLite writer has stopped".into()))?
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn parse_id<T: FromStr>(row: &SqliteRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|_| corrupt(format!("bad id in {column}: {text}")))
}

fn opt_time(row: &SqliteRow, column: &str) -> StoreResult<Option<Timestamp>> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(from_micros))
}

fn json_column<T: serde::de::DeserializeOwned>(row: &SqliteRow, column: &str) -> StoreResult<T> {
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

fn webhook_from_row(row: &SqliteRow) -> StoreResult<Webhook> {
    let environment: String = row.try_get("type")?;
    Ok(Webhook {
        webhook_id: parse_id(row, "id")?,
        org_id: parse_id(row, "org_id")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        is_enabled: row.try_get("is_enabled")?,
        created_at: from_micros(row.try_get("created_at")?),
        last_triggered_at: opt_time(row, "last_triggered_at")?,
        environment: Environment::parse(&environment).map_err(corrupt)?,
        events: json_column(row, "events")?,
    })
}

const CONNECTOR_COLUMNS: &str = "id, org_id, environment, display_name, integration_slug, \
     categories, origin_id, connector_status, end_user_name, end_user_email, created_at";

fn connector_from_row(row: &SqliteRow) -> StoreResult<Connector> {
    let environment: String = row.try_get("environment")?;
    let status: String = row.try_get("connector_status")?;
    Ok(Connector {
        id: parse_id(row, "id")?,
        org_id: parse_id(row, "org_id")?,
        environment: Environment::parse(&environment).map_err(corrupt)?,
        display_name: row.try_get("display_name")?,
        integration_slug: row.try_get("integration_slug")?,
        categories: json_column(row, "categories")?,
        origin_id: row.try_get("origin_id")?,
        connector_status: ConnectorStatus::parse(&status).map_err(corrupt)?,
        end_user_name: row.try_get("end_user_name")?,
        end_user_email: row.try_get("end_user_email")?,
        created_at: from_micros(row.try_get("created_at")?),
    })
}

fn sync_job_from_row(row: &SqliteRow) -> StoreResult<SyncJob> {
    let sync_type: String = row.try_get("sync_type")?;
    let display_status: String = row.try_get("display_status")?;
    let finished_at = opt_time(row, "finished_at")?;
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
        id: parse_id(row, "id")?,
        connector_id: parse_id(row, "connector_id")?,
        initial_sync: row.try_get("initial_sync")?,
        sync_type: SyncType::parse(&sync_type).map_err(corrupt)?,
        display_status: DisplayStatus::parse(&display_status)
            .ok_or_else(|| corrupt(display_status))?,
        last_sync_start_time: from_micros(row.try_get("last_sync_start_time")?),
        finished_at,
        error,
    })
}

/// What a log shows, of a delivery `d` joined with its event `e` ([`LOGS`]).
const LOG_COLUMNS: &str = "d.id, d.webhook_id, d.webhook_name, e.connector_id, e.event_type, \
     d.url, d.status, d.response_code, d.attempt_count, d.last_error, e.integration_name, \
     e.end_user_name, e.origin_id, d.created_at, d.next_attempt_at";

/// Deliveries with their events, in this order (CROSS JOIN keeps SQLite from reordering
/// it): a log is found by its delivery's indexes, then its event by key.
const LOGS: &str = "deliveries d CROSS JOIN events e ON e.id = d.event_id";

fn log_from_row(row: &SqliteRow) -> StoreResult<LogEntry> {
    let event_type: String = row.try_get("event_type")?;
    Ok(LogEntry {
        id: parse_id(row, "id")?,
        webhook_id: parse_id(row, "webhook_id")?,
        webhook_name: row.try_get("webhook_name")?,
        connector_id: parse_id(row, "connector_id")?,
        event_type: EventType::parse(&event_type).map_err(corrupt)?,
        url: row.try_get("url")?,
        status: row.try_get("status")?,
        response_code: row
            .try_get::<Option<i64>, _>("response_code")?
            .map(|c| c as u16),
        attempt_count: row.try_get::<i64, _>("attempt_count")? as u32,
        last_error: row.try_get("last_error")?,
        integration_name: row.try_get("integration_name")?,
        end_user_name: row.try_get("end_user_name")?,
        origin_id: row.try_get("origin_id")?,
        created_at: from_micros(row.try_get("created_at")?),
        next_attempt_at: opt_time(row, "next_attempt_at")?,
    })
}

fn attempt_from_row(row: &SqliteRow) -> StoreResult<Attempt> {
    let result = match row.try_get::<Option<i64>, _>("response_status")? {
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
        delivery_id: parse_id(row, "delivery_id")?,
        number: row.try_get::<i64, _>("number")? as u32,
        started_at: from_micros(row.try_get("started_at")?),
        duration: Duration::from_micros(row.try_get::<i64, _>("duration_us")?.max(0) as u64),
        request_url: row.try_get("request_url")?,
        request_headers: json_column(row, "request_headers")?,
        result,
    })
}

/// The body of the delivery in `row`, which has its `body`, `webhook_id` and `url` and
/// its event's `event_type` and `shared_body`.
fn body_from_row(row: &SqliteRow) -> StoreResult<Bytes> {
    delivery_body(
        row.try_get("body")?,
        parse_id(row, "webhook_id")?,
        row.try_get("url")?,
        row.try_get("event_type")?,
        row.try_get::<Option<&[u8]>, _>("shared_body")?,
    )
}

fn job_from_row(row: &SqliteRow) -> StoreResult<DeliveryJob> {
    Ok(DeliveryJob {
        id: parse_id(row, "id")?,
        org_id: parse_id(row, "org_id")?,
        webhook_id: parse_id(row, "webhook_id")?,
        url: row.try_get("url")?,
        body: Bytes::from(row.try_get::<Vec<u8>, _>("body")?),
        attempt_number: row.try_get::<i64, _>("attempts_started")? as u32,
        attempts_recorded: row.try_get::<i64, _>("attempt_count")? as u32,
        first_attempt_at: opt_time(row, "first_attempt_at")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_organization(
        &self,
        org: &Organization,
        api_key: &NewApiKey,
        admin: Option<&DashboardUser>,
    ) -> StoreResult<()> {
        let now = to_micros(&time::now());
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO organizations (id, name, signature_key, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(org.id.to_string())
        .bind(&org.name)
        .bind(org.signature_key.expose())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, prefix, hash, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(api_key.id.to_string())
        .bind(org.id.to_string())
        .bind(&api_key.prefix)
        .bind(&api_key.hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(user) = admin {
            sqlx::query(
                "INSERT INTO dashboard_users (id, org_id, email, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(user.id.to_string())
            .bind(org.id.to_string())
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
            .fetch_one(&self.read)
            .await?;
        Ok(n as u64)
    }

    async fn organization(&self, org: OrgId) -> StoreResult<Option<Organization>> {
        let row = sqlx::query("SELECT id, name, signature_key FROM organizations WHERE id = ?")
            .bind(org.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.map(|row| {
            Ok(Organization {
                id: parse_id(&row, "id")?,
                name: row.try_get("name")?,
                signature_key: SignatureKey::from_stored(row.try_get("signature_key")?),
            })
        })
        .transpose()
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<(ApiKeyId, OrgId)>> {
        let row = sqlx::query("SELECT id, org_id FROM api_keys WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.read)
            .await?;
        row.map(|row| Ok((parse_id(&row, "id")?, parse_id(&row, "org_id")?)))
            .transpose()
    }

    async fn touch_api_key(&self, key: ApiKeyId, at: Timestamp) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(to_micros(&at))
            .bind(key.to_string())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn set_signature_key(&self, org: OrgId, key: &SignatureKey) -> StoreResult<()> {
        sqlx::query("UPDATE organizations SET signature_key = ? WHERE id = ?")
            .bind(key.expose())
            .bind(org.to_string())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn dashboard_user_by_email(&self, email: &str) -> StoreResult<Option<DashboardUser>> {
        let row = sqlx::query(
            "SELECT id, org_id, email, password_hash FROM dashboard_users WHERE email = ?",
        )
        .bind(email.trim())
        .fetch_optional(&self.read)
        .await?;
        row.map(|row| {
            Ok(DashboardUser {
                id: parse_id(&row, "id")?,
                org_id: parse_id(&row, "org_id")?,
                email: row.try_get("email")?,
                password_hash: row.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    async fn create_session(&self, session: &DashboardSession) -> StoreResult<()> {
        let now = time::now();
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= ?")
            .bind(to_micros(&now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (token_hash, user_id, org_id, csrf_token, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.token_hash)
        .bind(session.user_id.to_string())
        .bind(session.org_id.to_string())
        .bind(&session.csrf_token)
        .bind(to_micros(&now))
        .bind(to_micros(&session.expires_at))
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
             WHERE token_hash = ? AND expires_at > ?",
        )
        .bind(token_hash)
        .bind(to_micros(&now))
        .fetch_optional(&self.read)
        .await?;
        row.map(|row| {
            Ok(DashboardSession {
                token_hash: row.try_get("token_hash")?,
                user_id: parse_id(&row, "user_id")?,
                org_id: parse_id(&row, "org_id")?,
                csrf_token: row.try_get("csrf_token")?,
                expires_at: from_micros(row.try_get("expires_at")?),
            })
        })
        .transpose()
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.write)
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
            created_at: time::now(),
            last_triggered_at: None,
            environment: new.environment,
            events: new.events.clone(),
        };
        sqlx::query(
            "INSERT INTO webhooks (id, org_id, name, url, type, events, is_enabled, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(webhook.webhook_id.to_string())
        .bind(org.to_string())
        .bind(&webhook.name)
        .bind(&webhook.url)
        .bind(webhook.environment.as_str())
        .bind(serde_json::to_string(&webhook.events).expect("event types serialize"))
        .bind(webhook.is_enabled)
        .bind(to_micros(&webhook.created_at))
        .execute(&self.write)
        .await?;
        self.cache.webhooks_changed(org);
        Ok(webhook)
    }

    async fn webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<Option<Webhook>> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ? AND org_id = ?"
        ))
        .bind(id.to_string())
        .bind(org.to_string())
        .fetch_optional(&self.read)
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
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = "
        ));
        q.push_bind(org.to_string());
        if let Some(enabled) = is_enabled {
            q.push(" AND is_enabled = ").push_bind(enabled);
        }
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after.to_string());
        }
        q.push(" ORDER BY id LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.read).await?;
        rows.iter().map(webhook_from_row).collect()
    }

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
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = ? AND type = ? AND is_enabled = 1 ORDER BY id"
        ))
        .bind(org.to_string())
        .bind(environment.as_str())
        .fetch_all(&self.read)
        .await?;
        let webhooks = rows
            .iter()
            .map(webhook_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        self.cache
            .keep_webhooks(read_at, (org, environment), &webhooks);
        Ok(webhooks)
    }

    async fn update_webhook(
        &self,
        org: OrgId,
        id: WebhookId,
        changes: &WebhookChanges,
    ) -> StoreResult<Option<Webhook>> {
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE webhooks SET id = id");
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
            .push_bind(id.to_string())
            .push(" AND org_id = ")
            .push_bind(org.to_string())
            .push(format!(" RETURNING {WEBHOOK_COLUMNS}"));
        let row = q.build().fetch_optional(&self.write).await?;
        self.cache.webhooks_changed(org);
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn delete_webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<bool> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let deleted = sqlx::query("DELETE FROM webhooks WHERE id = ? AND org_id = ?")
            .bind(id.to_string())
            .bind(org.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted > 0 {
            // Its pending deliveries, from the two indexes that hold them: the unclaimed
            // and the claimed.
            sqlx::query(
                "UPDATE deliveries SET status = 'cancelled', lease_until = NULL, finished_at = ?1 \
                 WHERE +org_id = ?2 AND rowid IN ( \
                   SELECT rowid FROM deliveries WHERE webhook_id = ?3 AND status = 'pending' \
                     AND lease_until IS NULL \
                   UNION ALL \
                   SELECT rowid FROM deliveries WHERE status = 'pending' \
                     AND lease_until IS NOT NULL AND webhook_id = ?3)",
            )
            .bind(to_micros(&time::now()))
            .bind(org.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.cache.webhooks_changed(org);
        Ok(deleted > 0)
    }

    async fn create_connector(&self, c: &Connector) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO connectors ({CONNECTOR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(c.id.to_string())
        .bind(c.org_id.to_string())
        .bind(c.environment.as_str())
        .bind(&c.display_name)
        .bind(&c.integration_slug)
        .bind(serde_json::to_string(&c.categories).expect("strings serialize"))
        .bind(&c.origin_id)
        .bind(c.connector_status.as_str())
        .bind(&c.end_user_name)
        .bind(&c.end_user_email)
        .bind(to_micros(&c.created_at))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn connector(&self, org: OrgId, id: ConnectorId) -> StoreResult<Option<Connector>> {
        if let Some(cached) = self.cache.connectors.lock().expect("cache lock").get(&id) {
            if cached.org_id == org {
                return Ok(Some(cached.clone()));
            }
        }
        let read_at = self.cache.generation();
        let row = sqlx::query(&format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE id = ? AND org_id = ?"
        ))
        .bind(id.to_string())
        .bind(org.to_string())
        .fetch_optional(&self.read)
        .await?;
        let connector = row.as_ref().map(connector_from_row).transpose()?;
        if let Some(connector) = &connector {
            self.cache.keep_connector(read_at, connector);
        }
        Ok(connector)
    }

    async fn list_connectors(
        &self,
        org: OrgId,
        after: Option<ConnectorId>,
        limit: u32,
    ) -> StoreResult<Vec<Connector>> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE org_id = "
        ));
        q.push_bind(org.to_string());
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after.to_string());
        }
        q.push(" ORDER BY id LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.read).await?;
        rows.iter().map(connector_from_row).collect()
    }

    async fn update_connector(
        &self,
        org: OrgId,
        id: ConnectorId,
        changes: &ConnectorChanges,
    ) -> StoreResult<Option<Connector>> {
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE connectors SET id = id");
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
            .push_bind(id.to_string())
            .push(" AND org_id = ")
            .push_bind(org.to_string())
            .push(format!(" RETURNING {CONNECTOR_COLUMNS}"));
        let row = q.build().fetch_optional(&self.write).await?;
        self.cache.connector_changed(id);
        row.as_ref().map(connector_from_row).transpose()
    }

    async fn delete_connector(&self, org: OrgId, id: ConnectorId) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM connectors WHERE id = ? AND org_id = ?")
            .bind(id.to_string())
            .bind(org.to_string())
            .execute(&self.write)
            .await?
            .rows_affected();
        self.cache.connector_changed(id);
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
             WHERE s.id = ? AND s.connector_id = ? AND c.org_id = ?",
        )
        .bind(id.to_string())
        .bind(connector.to_string())
        .bind(org.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(sync_job_from_row).transpose()
    }

    async fn record_events(&self, sync: SyncChange, events: Arc<[NewEvent]>) -> StoreResult<()> {
        self.group_write(|done| GroupWrite::Events { sync, events, done })
            .await
    }

    async fn resend(
        &self,
        org: OrgId,
        log: DeliveryId,
        new_id: DeliveryId,
        lease_until: Option<Timestamp>,
    ) -> StoreResult<Option<DeliveryJob>> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let source = sqlx::query(&format!(
            "SELECT d.webhook_id, d.url, d.body, e.event_type, e.shared_body, \
             w.url AS webhook_url, w.name AS webhook_name \
             FROM {LOGS} LEFT JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.id = ? AND d.org_id = ?"
        ))
        .bind(log.to_string())
        .bind(org.to_string())
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
        let now = to_micros(&time::now());
        let row = sqlx::query(
            "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, url, body, \
             status, created_at, next_attempt_at, lease_until, attempts_started) \
             SELECT ?, org_id, event_id, webhook_id, ?, ?, ?, 'pending', ?, ?, ?, ? \
             FROM deliveries WHERE id = ? \
             RETURNING id, org_id, webhook_id, url, body, attempt_count, attempts_started, first_attempt_at",
        )
        .bind(new_id.to_string())
        .bind(webhook_name)
        .bind(url)
        .bind(&body[..])
        .bind(now)
        .bind(now)
        .bind(lease_until.as_ref().map(to_micros))
        .bind(lease_until.is_some() as i64)
        .bind(log.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let job = job_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(job))
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
        let released = sqlx::query(
            "UPDATE deliveries SET lease_until = NULL WHERE status = 'pending' AND lease_until IS NOT NULL",
        )
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(released)
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

    async fn list_logs(&self, org: OrgId, f: &LogFilter) -> StoreResult<Vec<LogEntry>> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {LOG_COLUMNS} FROM {LOGS} WHERE d.org_id = "
        ));
        q.push_bind(org.to_string());
        if let Some(webhook) = f.webhook_id {
            q.push(" AND d.webhook_id = ")
                .push_bind(webhook.to_string());
        }
        if let Some(connector) = f.connector_id {
            q.push(" AND e.connector_id = ")
                .push_bind(connector.to_string());
        }
        if !f.event_types.is_empty() {
            q.push(" AND e.event_type IN (");
            let mut list = q.separated(", ");
            for t in &f.event_types {
                list.push_bind(t.as_str());
            }
            q.push(")");
        }
        if !f.response_codes.is_empty() {
            q.push(" AND d.response_code IN (");
            let mut list = q.separated(", ");
            for code in &f.response_codes {
                list.push_bind(*code as i64);
            }
            q.push(")");
        }
        if let Some(from) = f.created_from {
            q.push(" AND d.created_at >= ").push_bind(to_micros(&from));
        }
        if let Some(to) = f.created_to {
            q.push(" AND d.created_at <= ").push_bind(to_micros(&to));
        }
        if f.errors_only {
            q.push(
                " AND (d.response_code >= 400 OR (d.response_code IS NULL AND d.last_error IS NOT NULL))",
            );
        }
        if let Some(before) = f.before {
            q.push(" AND d.id < ").push_bind(before.to_string());
        }
        q.push(" ORDER BY d.id DESC LIMIT ")
            .push_bind(f.limit as i64);
        let rows = q.build().fetch_all(&self.read).await?;
        rows.iter().map(log_from_row).collect()
    }

    async fn log(&self, org: OrgId, id: DeliveryId) -> StoreResult<Option<LogDetail>> {
        let row = sqlx::query(&format!(
            "SELECT {LOG_COLUMNS}, d.body, e.shared_body FROM {LOGS} WHERE d.id = ? AND d.org_id = ?"
        ))
        .bind(id.to_string())
        .bind(org.to_string())
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let attempts = sqlx::query("SELECT * FROM attempts WHERE delivery_id = ? ORDER BY number")
            .bind(id.to_string())
            .fetch_all(&self.read)
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
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A database with the migrations before `version` run, as an older waggle left it.
    async fn migrated_before(url: &str, version: i64) -> SqlitePool {
        let options = SqliteConnectOptions::from_str(url)
            .unwrap()
            .create_if_missing(true);
        let old = SqlitePool::connect_with(options).await.unwrap();
        let mut before = sqlx::migrate!("./migrations/sqlite");
        before.migrations = Cow::Owned(
            before
                .migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        );
        before.run(&old).await.unwrap();
        old
    }

    #[tokio::test]
    async fn the_deliveries_made_anew_keep_their_rows_attempts_and_status_rule() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let old = migrated_before(&url, 8).await;
        let (org, delivery) = (OrgId::new(), DeliveryId::new());
        sqlx::query(
            "INSERT INTO organizations (id, name, signature_key, created_at) VALUES (?1, 'o', 'k', 0); \
             INSERT INTO events (id, org_id, event_type, environment, connector_id, created_at, \
             shared_body) VALUES ('e', ?1, 'connector_sync_started', 'production', ?4, 0, x'7b7d'); \
             INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, url, body, \
             status, attempt_count, attempts_started, response_code, created_at, first_attempt_at, \
             finished_at) VALUES (?2, ?1, 'e', ?3, 'h', 'http://then/', x'7b7d', 'delivered', 1, 1, \
             204, 0, 5, 9); \
             INSERT INTO attempts (delivery_id, number, started_at, duration_us, request_url, \
             request_headers, response_status, response_headers, response_body) \
             VALUES (?2, 1, 5, 4, 'http://then/', '[]', 204, '[]', x'')",
        )
        .bind(org.to_string())
        .bind(delivery.to_string())
        .bind(WebhookId::new().to_string())
        .bind(ConnectorId::new().to_string())
        .execute(&old)
        .await
        .unwrap();
        // A sync job that outlived its connector (the group commit checks no foreign
        // keys) is a broken reference the migration did not make: it does not stop it.
        sqlx::query(
            "PRAGMA foreign_keys = OFF; \
             INSERT INTO sync_jobs (id, connector_id, initial_sync, sync_type, display_status, \
             last_sync_start_time) VALUES ('s', 'gone', 0, 'MANUAL', 'Syncing', 0); \
             PRAGMA foreign_keys = ON;",
        )
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let store = SqliteStore::open(&url).await.unwrap();
        let log = store.log(org, delivery).await.unwrap().unwrap();
        assert_eq!(log.entry.status, "delivered");
        assert_eq!(log.entry.response_code, Some(204));
        // Making the table anew did not cascade to the attempts that refer to it.
        assert_eq!(log.attempts.len(), 1);
        assert_eq!(log.attempts[0].number, 1);
        // The status rule holds as before, and checking it builds nothing per row.
        let insert = |status: &'static str| {
            sqlx::query(
                "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, url, \
                 status, created_at) VALUES (?, ?, 'e', 'w', 'h', 'http://x/', ?, 0)",
            )
            .bind(DeliveryId::new().to_string())
            .bind(org.to_string())
            .bind(status)
        };
        let refused = insert("lost").execute(&store.write).await.unwrap_err();
        assert!(refused.to_string().contains("CHECK"), "{refused}");
        insert("pending").execute(&store.write).await.unwrap();
        // (A read-only connection compiles no constraint at all: the writer's is asked.)
        let plan: Vec<(String, Option<String>)> =
            sqlx::query("EXPLAIN UPDATE deliveries SET status = ? WHERE id = 'x'")
                .bind("failed")
                .fetch_all(&store.write)
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get(1), row.try_get(5).ok().flatten()))
                .collect();
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
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let old = migrated_before(&url, 6).await;
        let (org, delivery, connector) = (OrgId::new(), DeliveryId::new(), ConnectorId::new());
        let exact = br#"{"webhook":{"url":"http://then/"},"data":"as sent \u00e9"}"#;
        sqlx::query(
            "INSERT INTO organizations (id, name, signature_key, created_at) VALUES (?1, 'o', 'k', 0); \
             INSERT INTO events (id, org_id, event_type, environment, connector_id, created_at) \
             VALUES ('e', ?1, 'connector_sync_started', 'production', ?5, 0); \
             INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, connector_id, \
             event_type, integration_name, end_user_name, origin_id, url, body, status, created_at, \
             next_attempt_at) VALUES (?2, ?1, 'e', ?3, 'h', ?5, 'connector_sync_started', 's', \
             'n', 'u', 'http://now/', ?4, 'pending', 0, 0)",
        )
        .bind(org.to_string())
        .bind(delivery.to_string())
        .bind(WebhookId::new().to_string())
        .bind(&exact[..])
        .bind(connector.to_string())
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let store = SqliteStore::open(&url).await.unwrap();
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
}
