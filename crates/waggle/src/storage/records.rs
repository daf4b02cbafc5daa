//! The records both backends read and write alike (organizations, keys, users, sessions,
//! webhooks, connectors, sync jobs, logs), implemented once: [`Records`] is implemented
//! for every [`Db`], which only runs statements. A backend implements [`Db`] and the
//! rest of [`Store`](super::Store) (claims, outcomes, events: where its SQL differs).

use async_trait::async_trait;

use super::rows::{self, Row, Value};
use super::sql::{self, Dialect, Sql};
use super::*;

/// Turns one row into a value.
pub(super) type RowMap<T> = fn(&dyn Row) -> StoreResult<T>;

/// What a record write changed, for a backend that keeps reads in memory.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change {
    Webhooks(OrgId),
    Connector(ConnectorId),
}

/// A database the shared records are kept in: it runs statements, reads on whatever
/// connections it reads with, writes on its one write path.
#[async_trait]
pub(super) trait Db: Send + Sync + 'static {
    const DIALECT: Dialect;
    /// The deliveries `d` with where their event's log fields are, and that place's alias.
    const LOGS: &'static str;
    const LOG_EVENT: &'static str;
    /// Selects `shared_body`, the event's shared part of a delivery `d`'s body.
    const SHARED_BODY: &'static str;
    /// Selects the records version of the organization `o`, where the backend keeps one
    /// (see [`Db::saw_records_version`]).
    const RECORDS_VERSION: &'static str;
    /// Ends a `SELECT` of rows a statement will delete, so that several nodes deleting
    /// at once each take rows of their own instead of queueing on the same ones.
    const SKIP_LOCKED: &'static str;
    /// The hour a delivery `d` was made in, as hours since the Unix epoch (an integer).
    const HOUR_OF: &'static str;

    async fn read<T: Send + 'static>(&self, sql: Sql, map: RowMap<T>) -> StoreResult<Vec<T>>;
    /// Runs the statements in one transaction: all or none. Answers the rows each changed.
    async fn write(&self, statements: Vec<Sql>) -> StoreResult<Vec<u64>>;
    /// Runs one write and answers the rows it returns.
    async fn write_returning<T: Send + 'static>(
        &self,
        sql: Sql,
        map: RowMap<T>,
    ) -> StoreResult<Vec<T>>;
    /// Called once a write that changes what `change` names has committed.
    fn changed(&self, _change: Change) {}
    /// Called when a read found an organization's records version: the number its
    /// webhooks' and connectors' changes bump, whichever node made them.
    fn saw_records_version(&self, _org: OrgId, _version: i64) {}

    /// The key whose SHA-256 is `hash`: its id, its organization and the organization's
    /// records version.
    async fn api_key_owner(&self, hash: &str) -> StoreResult<Option<(ApiKeyId, OrgId, i64)>> {
        let mut sql = Self::sql(format!(
            "SELECT k.id, k.org_id, {} AS records_version FROM api_keys k \
             JOIN organizations o ON o.id = k.org_id WHERE k.hash = ",
            Self::RECORDS_VERSION
        ));
        sql.bind(hash);
        self.read_one(sql, rows::api_key_owner).await
    }

    fn sql(text: impl Into<String>) -> Sql {
        Sql::new(Self::DIALECT, text)
    }

    async fn read_one<T: Send + 'static>(
        &self,
        sql: Sql,
        map: RowMap<T>,
    ) -> StoreResult<Option<T>> {
        Ok(self.read(sql, map).await?.into_iter().next())
    }
}

#[async_trait]
pub trait Records: Send + Sync {
    async fn create_organization(
        &self,
        org: &Organization,
        api_key: &NewApiKey,
        admin: Option<&DashboardUser>,
    ) -> StoreResult<()>;
    async fn organization_count(&self) -> StoreResult<u64>;
    async fn organization(&self, org: OrgId) -> StoreResult<Option<Organization>>;
    /// The key's id and organization, by the SHA-256 of the presented key.
    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<(ApiKeyId, OrgId)>>;
    async fn touch_api_key(&self, key: ApiKeyId, at: Timestamp) -> StoreResult<()>;
    /// The organization's keys, oldest first.
    async fn api_keys(&self, org: OrgId) -> StoreResult<Vec<ApiKey>>;
    async fn create_api_key(&self, org: OrgId, key: &NewApiKey) -> StoreResult<ApiKey>;
    /// Deletes one of the organization's keys: `false` when it has no such key, and
    /// `Conflict` when it is the organization's last one (nobody could call the API any
    /// more). Two deletes at once cannot both pass that check.
    async fn delete_api_key(&self, org: OrgId, id: ApiKeyId) -> StoreResult<bool>;
    /// The new key signs every attempt that starts after this returns, on every node
    /// (each reads the key per attempt, see `delivery::keys`).
    /// Replaces the signature key; `retiring`, when given, keeps signing beside it until
    /// its grace ends (and replaces any key retiring before).
    async fn set_signature_key(
        &self,
        org: OrgId,
        key: &SignatureKey,
        retiring: Option<&RetiringKey>,
    ) -> StoreResult<()>;
    async fn dashboard_user_by_email(&self, email: &str) -> StoreResult<Option<DashboardUser>>;
    async fn dashboard_user(&self, id: UserId) -> StoreResult<Option<DashboardUser>>;
    /// Sets a user's password hash and ends every session of theirs but `keep`.
    async fn set_password(&self, id: UserId, hash: &str, keep: &str) -> StoreResult<()>;
    async fn create_session(&self, session: &DashboardSession) -> StoreResult<()>;
    /// The session with this token hash, unless it has expired.
    async fn session(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<DashboardSession>>;
    async fn delete_session(&self, token_hash: &str) -> StoreResult<()>;
    /// Moves a session's expiry to `until`.
    async fn extend_session(&self, token_hash: &str, until: Timestamp) -> StoreResult<()>;
    /// Records a failed sign-in, and forgets those before `forget_before`.
    async fn record_login_failure(
        &self,
        email: &str,
        address: &str,
        at: Timestamp,
        forget_before: Timestamp,
    ) -> StoreResult<()>;
    /// Failed sign-ins after `since`: for this email, and from this address.
    async fn login_failures(
        &self,
        email: &str,
        address: &str,
        since: Timestamp,
    ) -> StoreResult<(u32, u32)>;
    /// Forgets an email's failed sign-ins (after it signed in).
    async fn clear_login_failures(&self, email: &str) -> StoreResult<()>;

    /// Creates a webhook; with `remember`, also the call's answer, made of the webhook,
    /// under its idempotency key (`KeyTaken` when another call holds the key, and then
    /// nothing is written).
    async fn create_webhook(
        &self,
        org: OrgId,
        webhook: &NewWebhook,
        remember: Option<&RememberWith<Webhook>>,
    ) -> StoreResult<Webhook>;
    async fn webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<Option<Webhook>>;
    /// Oldest first, after the cursor.
    async fn list_webhooks(
        &self,
        org: OrgId,
        is_enabled: Option<bool>,
        after: Option<WebhookId>,
        limit: u32,
    ) -> StoreResult<Vec<Webhook>>;
    async fn update_webhook(
        &self,
        org: OrgId,
        id: WebhookId,
        changes: &WebhookChanges,
    ) -> StoreResult<Option<Webhook>>;

    /// Disables every enabled webhook whose attempts have all failed since `failing_before`
    /// or earlier, with `reason`; answers those it disabled.
    async fn disable_failing_webhooks(
        &self,
        failing_before: Timestamp,
        reason: &str,
    ) -> StoreResult<Vec<Webhook>>;

    /// Starts recovering the failed deliveries of `webhook` in `range`, counting them; or,
    /// while a recovery of the same range runs, answers that one.
    async fn start_recovery(
        &self,
        org: OrgId,
        webhook: WebhookId,
        range: &RecoveryRange,
    ) -> StoreResult<Recovery>;
    async fn recovery(
        &self,
        org: OrgId,
        webhook: WebhookId,
        id: RecoveryId,
    ) -> StoreResult<Option<Recovery>>;
    /// Takes a running recovery that no node works on (none has, or its claim ran out),
    /// claimed until `lease_until`.
    async fn claim_recovery(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Option<Recovery>>;
    /// Up to `limit` deliveries `recovery` has still to make anew, oldest first: those of
    /// its range that ended in an error and were not resent since.
    async fn recoverable(&self, recovery: &Recovery, limit: u32) -> StoreResult<Vec<DeliveryId>>;
    /// Counts `made` more deliveries made anew, and extends the claim to `lease_until`;
    /// `None`: the recovery is done.
    async fn record_recovery(
        &self,
        id: RecoveryId,
        made: u64,
        lease_until: Option<Timestamp>,
    ) -> StoreResult<()>;

    /// Each webhook's figures over the last hour and day before `now` (see
    /// `domain::stats`): the organization's webhooks, or the one named.
    async fn stats(
        &self,
        org: OrgId,
        webhook: Option<WebhookId>,
        now: Timestamp,
    ) -> StoreResult<Vec<WebhookStats>>;

    /// Creates a connector; with `remember`, the call's answer too, as for webhooks.
    async fn create_connector(
        &self,
        connector: &Connector,
        remember: Option<&Remembered>,
    ) -> StoreResult<()>;
    async fn list_connectors(
        &self,
        org: OrgId,
        after: Option<ConnectorId>,
        limit: u32,
    ) -> StoreResult<Vec<Connector>>;
    async fn update_connector(
        &self,
        org: OrgId,
        id: ConnectorId,
        changes: &ConnectorChanges,
    ) -> StoreResult<Option<Connector>>;
    async fn delete_connector(&self, org: OrgId, id: ConnectorId) -> StoreResult<bool>;
    async fn sync_job(
        &self,
        org: OrgId,
        connector: ConnectorId,
        id: SyncId,
    ) -> StoreResult<Option<SyncJob>>;

    async fn list_logs(&self, org: OrgId, filter: &LogFilter) -> StoreResult<Vec<LogEntry>>;
    async fn log(&self, org: OrgId, id: DeliveryId) -> StoreResult<Option<LogDetail>>;

    /// The answer kept under an organization's idempotency key, unless it has expired.
    async fn remembered(
        &self,
        org: OrgId,
        key: &str,
        now: Timestamp,
    ) -> StoreResult<Option<Remembered>>;
    /// Forgets up to `batch` answers kept since before `before`; answers how many.
    async fn forget_remembered(&self, before: Timestamp, batch: u32) -> StoreResult<u64>;
    /// Removes up to `batch` recoveries that finished before `before`; answers how many.
    async fn purge_recoveries(&self, before: Timestamp, batch: u32) -> StoreResult<u64>;

    /// The deliveries waiting, of every node, as at `now`: from the indexes of pending
    /// deliveries, for the metrics.
    async fn queue_depth(&self, now: Timestamp) -> StoreResult<QueueDepth>;
}

/// Makes the answer to remember from the record a call creates.
pub type RememberWith<T> = dyn Fn(&T) -> Remembered + Send + Sync;

/// What one [`Records::purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub deliveries: u64,
    pub events: u64,
}

/// Selects `columns` of the deliveries `recovery` makes anew: those of its webhook made in
/// its range that ended in an error and were not resent since. Ids are UUIDv7, so the
/// range is also one of ids, which the index of a webhook's deliveries reads directly;
/// the times are then checked exactly (an id is made a little after its delivery's time).
fn recoverable<D: Db>(columns: &str, recovery: &Recovery) -> Sql {
    let mut sql = D::sql(format!("SELECT {columns} FROM deliveries WHERE org_id = "));
    sql.bind(recovery.org_id);
    sql.push(" AND webhook_id = ").bind(recovery.webhook_id);
    sql.push(" AND id >= ").bind(first_id_at(recovery.since));
    sql.push(" AND id < ")
        .bind(first_id_at(recovery.until + chrono::Duration::seconds(1)));
    sql.push(" AND created_at >= ").bind(recovery.since);
    sql.push(" AND created_at < ").bind(recovery.until);
    sql.push(
        " AND status <> 'pending' AND (status = 'failed' OR response_code >= 400) \
         AND resent_as IS NULL",
    );
    sql
}

/// The webhooks an event of `environment` goes to, oldest first.
pub(super) fn webhooks_for<D: Db>(org: OrgId, environment: Environment) -> Sql {
    let mut sql = D::sql(format!(
        "SELECT {} FROM webhooks WHERE org_id = ",
        rows::WEBHOOK_COLUMNS
    ));
    sql.bind(org)
        .push(" AND type = ")
        .bind(environment.as_str());
    sql.push(" AND is_enabled = ")
        .bind(true)
        .push(" ORDER BY id");
    sql
}

pub(super) fn connector<D: Db>(org: OrgId, id: ConnectorId) -> Sql {
    let mut sql = D::sql(format!(
        "SELECT {} FROM connectors WHERE id = ",
        rows::CONNECTOR_COLUMNS
    ));
    sql.bind(id).push(" AND org_id = ").bind(org);
    sql
}

/// The write a sync change makes, if any: it changes one row, or none when a job to
/// finish is no longer `Syncing` (the change is then refused).
pub(super) fn sync_change(dialect: Dialect, sync: &SyncChange) -> Option<Sql> {
    match sync {
        SyncChange::None => None,
        SyncChange::Started(job) => Some(sql::insert(
            dialect,
            "sync_jobs",
            rows::SYNC_JOB_COLUMNS,
            rows::sync_job_values(job),
        )),
        SyncChange::Finished(job) => {
            let mut sql = Sql::new(dialect, "UPDATE sync_jobs SET display_status = ");
            sql.bind(job.display_status.as_str());
            sql.push(", finished_at = ").bind(job.finished_at);
            sql.push(", error_message = ")
                .bind(job.error.as_ref().map(|e| e.message.as_str()));
            sql.push(", error_detail = ").bind(Value::Text(
                job.error.as_ref().map(|e| e.detail.to_string()),
            ));
            sql.push(" WHERE id = ").bind(job.id);
            sql.push(" AND display_status = 'Syncing'");
            Some(sql)
        }
    }
}

/// A page of an organization's rows of `table`, oldest first, after the cursor.
fn page<D: Db>(
    table: &str,
    columns: &str,
    org: OrgId,
    filter: Option<(&str, Value)>,
    after: Option<Value>,
    limit: u32,
) -> Sql {
    let mut sql = D::sql(format!("SELECT {columns} FROM {table} WHERE org_id = "));
    sql.bind(org);
    if let Some((column, value)) = filter {
        sql.push(" AND ").push(column).push(" = ").bind(value);
    }
    if let Some(after) = after {
        sql.push(" AND id > ").bind(after);
    }
    sql.push(" ORDER BY id LIMIT ").bind(limit as i64);
    sql
}

fn conflict_on_unique(e: StoreError, what: &str) -> StoreError {
    if e.is_unique_violation() {
        StoreError::Conflict(what.into())
    } else {
        e
    }
}

#[async_trait]
impl<D: Db> Records for D {
    async fn create_organization(
        &self,
        org: &Organization,
        api_key: &NewApiKey,
        admin: Option<&DashboardUser>,
    ) -> StoreResult<()> {
        let now = time::now();
        let mut statements = vec![
            sql::insert(
                D::DIALECT,
                "organizations",
                "id, name, signature_key, created_at",
                vec![
                    org.id.into(),
                    (&org.name).into(),
                    org.signature_key.expose().into(),
                    now.into(),
                ],
            ),
            sql::insert(
                D::DIALECT,
                "api_keys",
                rows::NEW_API_KEY_COLUMNS,
                rows::new_api_key_values(org.id, api_key, now),
            ),
        ];
        if let Some(user) = admin {
            statements.push(sql::insert(
                D::DIALECT,
                "dashboard_users",
                "id, org_id, email, password_hash, created_at",
                vec![
                    user.id.into(),
                    org.id.into(),
                    (&user.email).into(),
                    (&user.password_hash).into(),
                    now.into(),
                ],
            ));
        }
        self.write(statements).await.map_err(|e| {
            conflict_on_unique(e, "a dashboard user with this email already exists")
        })?;
        Ok(())
    }

    async fn organization_count(&self) -> StoreResult<u64> {
        let sql = D::sql("SELECT COUNT(*) AS n FROM organizations");
        let counts = self
            .read(sql, |row| Ok(row.opt_int("n")?.unwrap_or(0)))
            .await?;
        Ok(counts.first().copied().unwrap_or(0) as u64)
    }

    async fn organization(&self, org: OrgId) -> StoreResult<Option<Organization>> {
        let mut sql = D::sql(format!(
            "SELECT {} FROM organizations WHERE id = ",
            rows::ORGANIZATION_COLUMNS
        ));
        sql.bind(org);
        self.read_one(sql, rows::organization).await
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<(ApiKeyId, OrgId)>> {
        let Some((key, org, version)) = self.api_key_owner(hash).await? else {
            return Ok(None);
        };
        self.saw_records_version(org, version);
        Ok(Some((key, org)))
    }

    async fn touch_api_key(&self, key: ApiKeyId, at: Timestamp) -> StoreResult<()> {
        let mut sql = D::sql("UPDATE api_keys SET last_used_at = ");
        sql.bind(at).push(" WHERE id = ").bind(key);
        self.write(vec![sql]).await?;
        Ok(())
    }

    async fn api_keys(&self, org: OrgId) -> StoreResult<Vec<ApiKey>> {
        let mut sql = D::sql(format!(
            "SELECT {} FROM api_keys WHERE org_id = ",
            rows::API_KEY_COLUMNS
        ));
        sql.bind(org).push(" ORDER BY id");
        self.read(sql, rows::api_key).await
    }

    async fn create_api_key(&self, org: OrgId, key: &NewApiKey) -> StoreResult<ApiKey> {
        // Stored with microseconds: keep the answer equal to what a read gives.
        let now = time::from_micros(time::to_micros(&time::now()));
        let insert = sql::insert(
            D::DIALECT,
            "api_keys",
            rows::NEW_API_KEY_COLUMNS,
            rows::new_api_key_values(org, key, now),
        );
        self.write(vec![insert]).await?;
        Ok(ApiKey {
            id: key.id,
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            created_at: now,
            last_used_at: None,
        })
    }

    async fn delete_api_key(&self, org: OrgId, id: ApiKeyId) -> StoreResult<bool> {
        // The organization's row, written to no effect, orders deletes of its keys (a row
        // lock on PostgreSQL; SQLite has one writer): each counts what the last left.
        let mut lock = D::sql("UPDATE organizations SET id = id WHERE id = ");
        lock.bind(org);
        let mut delete = D::sql("DELETE FROM api_keys WHERE id = ");
        delete.bind(id).push(" AND org_id = ").bind(org);
        delete
            .push(" AND (SELECT count(*) FROM api_keys WHERE org_id = ")
            .bind(org)
            .push(") > 1");
        let changed = self.write(vec![lock, delete]).await?;
        if changed.get(1).is_some_and(|n| *n > 0) {
            return Ok(true);
        }
        let exists = self.api_keys(org).await?.iter().any(|k| k.id == id);
        match exists {
            true => Err(StoreError::Conflict(
                "this is the organization's last API key: create another one before deleting it"
                    .into(),
            )),
            false => Ok(false),
        }
    }

    async fn set_signature_key(
        &self,
        org: OrgId,
        key: &SignatureKey,
        retiring: Option<&RetiringKey>,
    ) -> StoreResult<()> {
        let mut sql = D::sql("UPDATE organizations SET signature_key = ");
        sql.bind(key.expose());
        sql.push(", retiring_signature_key = ")
            .bind(retiring.map(|r| r.key.expose()));
        sql.push(", retiring_key_until = ")
            .bind(retiring.map(|r| r.until));
        sql.push(" WHERE id = ").bind(org);
        self.write(vec![sql]).await?;
        Ok(())
    }

    async fn dashboard_user_by_email(&self, email: &str) -> StoreResult<Option<DashboardUser>> {
        let mut sql = D::sql(format!(
            "SELECT {} FROM dashboard_users WHERE lower(email) = lower(",
            rows::USER_COLUMNS
        ));
        sql.bind(email.trim()).push(")");
        self.read_one(sql, rows::dashboard_user).await
    }

    async fn dashboard_user(&self, id: UserId) -> StoreResult<Option<DashboardUser>> {
        let mut sql = D::sql(format!(
            "SELECT {} FROM dashboard_users WHERE id = ",
            rows::USER_COLUMNS
        ));
        sql.bind(id);
        self.read_one(sql, rows::dashboard_user).await
    }

    async fn set_password(&self, id: UserId, hash: &str, keep: &str) -> StoreResult<()> {
        let mut set = D::sql("UPDATE dashboard_users SET password_hash = ");
        set.bind(hash).push(" WHERE id = ").bind(id);
        let mut others = D::sql("DELETE FROM dashboard_sessions WHERE user_id = ");
        others.bind(id).push(" AND token_hash <> ").bind(keep);
        self.write(vec![set, others]).await?;
        Ok(())
    }

    async fn create_session(&self, session: &DashboardSession) -> StoreResult<()> {
        let mut expired = D::sql("DELETE FROM dashboard_sessions WHERE expires_at <= ");
        expired.bind(session.created_at);
        let insert = sql::insert(
            D::DIALECT,
            "dashboard_sessions",
            "token_hash, user_id, org_id, csrf_token, created_at, expires_at",
            vec![
                (&session.token_hash).into(),
                session.user_id.into(),
                session.org_id.into(),
                (&session.csrf_token).into(),
                session.created_at.into(),
                session.expires_at.into(),
            ],
        );
        self.write(vec![expired, insert]).await?;
        Ok(())
    }

    async fn session(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<DashboardSession>> {
        let mut sql = D::sql(format!(
            "SELECT {} FROM dashboard_sessions WHERE token_hash = ",
            rows::SESSION_COLUMNS
        ));
        sql.bind(token_hash).push(" AND expires_at > ").bind(now);
        self.read_one(sql, rows::session).await
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        let mut sql = D::sql("DELETE FROM dashboard_sessions WHERE token_hash = ");
        sql.bind(token_hash);
        self.write(vec![sql]).await?;
        Ok(())
    }

    async fn extend_session(&self, token_hash: &str, until: Timestamp) -> StoreResult<()> {
        let mut sql = D::sql("UPDATE dashboard_sessions SET expires_at = ");
        sql.bind(until)
            .push(" WHERE token_hash = ")
            .bind(token_hash);
        self.write(vec![sql]).await?;
        Ok(())
    }

    async fn record_login_failure(
        &self,
        email: &str,
        address: &str,
        at: Timestamp,
        forget_before: Timestamp,
    ) -> StoreResult<()> {
        let mut old = D::sql("DELETE FROM login_failures WHERE failed_at < ");
        old.bind(forget_before);
        let failure = sql::insert(
            D::DIALECT,
            "login_failures",
            "email, address, failed_at",
            vec![email.into(), address.into(), at.into()],
        );
        self.write(vec![old, failure]).await?;
        Ok(())
    }

    async fn login_failures(
        &self,
        email: &str,
        address: &str,
        since: Timestamp,
    ) -> StoreResult<(u32, u32)> {
        let mut sql = D::sql("SELECT (SELECT count(*) FROM login_failures WHERE email = ");
        sql.bind(email).push(" AND failed_at > ").bind(since);
        sql.push(") AS by_email, (SELECT count(*) FROM login_failures WHERE address = ");
        sql.bind(address).push(" AND failed_at > ").bind(since);
        sql.push(") AS by_address");
        let counts = self
            .read_one(sql, |row| {
                let n = |column| -> StoreResult<u32> {
                    Ok(row.opt_int(column)?.unwrap_or(0).clamp(0, 1 << 20) as u32)
                };
                Ok((n("by_email")?, n("by_address")?))
            })
            .await?;
        Ok(counts.unwrap_or((0, 0)))
    }

    async fn clear_login_failures(&self, email: &str) -> StoreResult<()> {
        let mut sql = D::sql("DELETE FROM login_failures WHERE email = ");
        sql.bind(email);
        self.write(vec![sql]).await?;
        Ok(())
    }

    async fn create_webhook(
        &self,
        org: OrgId,
        new: &NewWebhook,
        remember: Option<&RememberWith<Webhook>>,
    ) -> StoreResult<Webhook> {
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
            disabled_reason: None,
            disabled_at: None,
            retry_policy: new.retry.schedule.clone(),
            retry_on_status: new.retry.on_status.clone(),
            ordered: new.ordered,
        };
        let insert = sql::insert(
            D::DIALECT,
            "webhooks",
            rows::WEBHOOK_COLUMNS,
            rows::webhook_values(&webhook),
        );
        let remember = remember.map(|with| with(&webhook));
        write_remembering(self, remember.as_ref(), vec![insert]).await?;
        self.changed(Change::Webhooks(org));
        Ok(webhook)
    }

    async fn webhook(&self, org: OrgId, id: WebhookId) -> StoreResult<Option<Webhook>> {
        let mut sql = D::sql(format!(
            "SELECT {} FROM webhooks WHERE id = ",
            rows::WEBHOOK_COLUMNS
        ));
        sql.bind(id).push(" AND org_id = ").bind(org);
        self.read_one(sql, rows::webhook).await
    }

    async fn list_webhooks(
        &self,
        org: OrgId,
        is_enabled: Option<bool>,
        after: Option<WebhookId>,
        limit: u32,
    ) -> StoreResult<Vec<Webhook>> {
        let sql = page::<D>(
            "webhooks",
            rows::WEBHOOK_COLUMNS,
            org,
            is_enabled.map(|e| ("is_enabled", e.into())),
            after.map(Value::from),
            limit,
        );
        self.read(sql, rows::webhook).await
    }

    async fn update_webhook(
        &self,
        org: OrgId,
        id: WebhookId,
        changes: &WebhookChanges,
    ) -> StoreResult<Option<Webhook>> {
        let mut set: Vec<(&str, Value)> = Vec::new();
        if let Some(name) = &changes.name {
            set.push(("name", name.into()));
        }
        if let Some(url) = &changes.url {
            set.push(("url", url.as_str().into()));
        }
        if let Some(environment) = changes.environment {
            set.push(("type", environment.as_str().into()));
        }
        if let Some(events) = &changes.events {
            set.push(("events", rows::json_text(events).into()));
        }
        if let Some(enabled) = changes.is_enabled {
            set.push(("is_enabled", enabled.into()));
            // Enabled or disabled by hand: no longer disabled by waggle, and failing
            // afresh from the next failure.
            set.push(("disabled_reason", Option::<&str>::None.into()));
            set.push(("disabled_at", Option::<Timestamp>::None.into()));
            set.push(("failing_since", Option::<Timestamp>::None.into()));
        }
        if let Some(policy) = &changes.retry_policy {
            set.push(("retry_policy", rows::json_text(policy).into()));
        }
        if let Some(statuses) = &changes.retry_on_status {
            set.push(("retry_on_status", rows::json_text(statuses).into()));
        }
        if let Some(ordered) = changes.ordered {
            set.push(("ordered", ordered.into()));
        }
        let update = sql::update(
            D::DIALECT,
            "webhooks",
            set,
            id.into(),
            org.into(),
            rows::WEBHOOK_COLUMNS,
        );
        let updated = self.write_returning(update, rows::webhook).await?;
        self.changed(Change::Webhooks(org));
        Ok(updated.into_iter().next())
    }

    async fn disable_failing_webhooks(
        &self,
        failing_before: Timestamp,
        reason: &str,
    ) -> StoreResult<Vec<Webhook>> {
        let mut sql = D::sql("UPDATE webhooks SET is_enabled = ");
        sql.bind(false).push(", disabled_reason = ").bind(reason);
        sql.push(", disabled_at = ").bind(time::now());
        sql.push(" WHERE is_enabled = ").bind(true);
        sql.push(" AND failing_since <= ").bind(failing_before);
        sql.push(" RETURNING ").push(rows::WEBHOOK_COLUMNS);
        let disabled = self.write_returning(sql, rows::webhook).await?;
        for webhook in &disabled {
            self.changed(Change::Webhooks(webhook.org_id));
        }
        Ok(disabled)
    }

    async fn start_recovery(
        &self,
        org: OrgId,
        webhook: WebhookId,
        range: &RecoveryRange,
    ) -> StoreResult<Recovery> {
        let running = || async {
            let mut sql = D::sql(format!(
                "SELECT {} FROM recoveries WHERE webhook_id = ",
                rows::RECOVERY_COLUMNS
            ));
            sql.bind(webhook).push(" AND org_id = ").bind(org);
            sql.push(" AND range_key = ").bind(range.key.as_str());
            sql.push(" AND status = 'running'");
            self.read_one(sql, rows::recovery).await
        };
        if let Some(recovery) = running().await? {
            return Ok(recovery);
        }
        let recovery = Recovery {
            id: RecoveryId::new(),
            org_id: org,
            webhook_id: webhook,
            since: range.since,
            until: range.until,
            status: RecoveryStatus::Running,
            deliveries: 0,
            recovered: 0,
            // Stored with microseconds: keep the answer equal to what a read gives.
            created_at: time::from_micros(time::to_micros(&time::now())),
            finished_at: None,
        };
        let found = self
            .read_one(recoverable::<D>("count(*) AS found", &recovery), |row| {
                Ok(row.opt_int("found")?.unwrap_or(0))
            })
            .await?
            .unwrap_or(0);
        let recovery = Recovery {
            deliveries: found.max(0) as u64,
            ..recovery
        };
        let mut values = rows::recovery_values(&recovery);
        values.push(range.key.as_str().into());
        let insert = sql::insert(
            D::DIALECT,
            "recoveries",
            &format!("{}, range_key", rows::RECOVERY_COLUMNS),
            values,
        );
        match self.write(vec![insert]).await {
            Ok(_) => Ok(recovery),
            // The same range, asked at the same moment: the first one made answers both.
            Err(e) if e.is_unique_violation() => running().await?.ok_or(e),
            Err(e) => Err(e),
        }
    }

    async fn recovery(
        &self,
        org: OrgId,
        webhook: WebhookId,
        id: RecoveryId,
    ) -> StoreResult<Option<Recovery>> {
        let mut sql = D::sql(format!(
            "SELECT {} FROM recoveries WHERE id = ",
            rows::RECOVERY_COLUMNS
        ));
        sql.bind(id).push(" AND org_id = ").bind(org);
        sql.push(" AND webhook_id = ").bind(webhook);
        self.read_one(sql, rows::recovery).await
    }

    async fn claim_recovery(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Option<Recovery>> {
        // Asked every second by every delivering node, and nearly always for nothing: a
        // read finds that out without a write.
        let mut free = D::sql("SELECT id FROM recoveries WHERE status = 'running' AND ");
        free.push("(lease_until IS NULL OR lease_until <= ")
            .bind(now)
            .push(") LIMIT 1");
        if self
            .read(free, |row| rows::id_of::<RecoveryId>(row, "id"))
            .await?
            .is_empty()
        {
            return Ok(None);
        }
        let mut sql = D::sql("UPDATE recoveries SET lease_until = ");
        sql.bind(lease_until);
        sql.push(" WHERE id = (SELECT id FROM recoveries WHERE status = 'running' AND ");
        sql.push("(lease_until IS NULL OR lease_until <= ")
            .bind(now);
        sql.push(format!(") ORDER BY created_at LIMIT 1{})", D::SKIP_LOCKED).as_str());
        sql.push(" AND status = 'running' AND (lease_until IS NULL OR lease_until <= ");
        sql.bind(now)
            .push(") RETURNING ")
            .push(rows::RECOVERY_COLUMNS);
        Ok(self
            .write_returning(sql, rows::recovery)
            .await?
            .into_iter()
            .next())
    }

    async fn recoverable(&self, recovery: &Recovery, limit: u32) -> StoreResult<Vec<DeliveryId>> {
        let mut sql = recoverable::<D>("id", recovery);
        sql.push(" ORDER BY id LIMIT ").bind(limit as i64);
        self.read(sql, |row| rows::id_of(row, "id")).await
    }

    async fn record_recovery(
        &self,
        id: RecoveryId,
        made: u64,
        lease_until: Option<Timestamp>,
    ) -> StoreResult<()> {
        let mut sql = D::sql("UPDATE recoveries SET recovered = recovered + ");
        sql.bind(made as i64)
            .push(", lease_until = ")
            .bind(lease_until);
        if lease_until.is_none() {
            sql.push(", status = 'done', finished_at = ")
                .bind(time::now());
        }
        sql.push(" WHERE id = ").bind(id);
        self.write(vec![sql]).await?;
        Ok(())
    }

    async fn stats(
        &self,
        org: OrgId,
        webhook: Option<WebhookId>,
        now: Timestamp,
    ) -> StoreResult<Vec<WebhookStats>> {
        let (day, hour) = (
            now - chrono::Duration::days(1),
            now - chrono::Duration::hours(1),
        );
        let mut webhooks = D::sql("SELECT id, name FROM webhooks WHERE org_id = ");
        webhooks.bind(org);
        if let Some(webhook) = webhook {
            webhooks.push(" AND id = ").bind(webhook);
        }
        webhooks.push(" ORDER BY id");
        let webhooks = self
            .read(webhooks, |row| {
                Ok((
                    rows::id_of::<WebhookId>(row, "id")?,
                    rows::text_of(row, "name")?,
                ))
            })
            .await?;
        // The deliveries made since `day`, of the one webhook or all, each flagged when
        // made in the last hour; ids are UUIDv7, so the range is one of the index too.
        let made_since = |select: &str, from: &str| {
            let mut sql = D::sql("SELECT d.webhook_id, CASE WHEN d.created_at >= ");
            sql.bind(hour);
            sql.push(
                format!(" THEN 1 ELSE 0 END AS recent, {select} FROM {from} WHERE d.org_id = ")
                    .as_str(),
            );
            sql.bind(org);
            sql.push(" AND d.id >= ").bind(first_id_at(day));
            sql.push(" AND d.created_at >= ").bind(day);
            if let Some(webhook) = webhook {
                sql.push(" AND d.webhook_id = ").bind(webhook);
            }
            sql
        };
        let mut counts = made_since(
            &format!(
                "{} AS hour, count(*) AS deliveries, \
                 SUM(CASE WHEN d.status = 'delivered' AND d.response_code >= 200 \
                   AND d.response_code < 300 THEN 1 ELSE 0 END) AS succeeded, \
                 SUM(CASE WHEN d.status = 'failed' OR (d.status = 'delivered' \
                   AND (d.response_code < 200 OR d.response_code >= 300)) THEN 1 ELSE 0 END) \
                   AS failed",
                D::HOUR_OF
            ),
            "deliveries d",
        );
        counts.push(" GROUP BY 1, 2, 3");
        let counts = self
            .read(counts, |row| {
                let n = |column| -> StoreResult<u64> {
                    Ok(row.opt_int(column)?.unwrap_or(0).max(0) as u64)
                };
                Ok((
                    rows::id_of::<WebhookId>(row, "webhook_id")?,
                    n("recent")? == 1,
                    row.opt_int("hour")?.unwrap_or(0),
                    stats::Counts {
                        deliveries: n("deliveries")?,
                        succeeded: n("succeeded")?,
                        failed: n("failed")?,
                    },
                ))
            })
            .await?;
        let mut latencies = made_since(
            &format!("{} AS bucket, count(*) AS answered", stats::BUCKET_SQL),
            "deliveries d JOIN attempts a ON a.delivery_id = d.id",
        );
        latencies.push(" AND a.response_status IS NOT NULL GROUP BY 1, 2, 3");
        let latencies = self
            .read(latencies, |row| {
                Ok((
                    rows::id_of::<WebhookId>(row, "webhook_id")?,
                    row.opt_int("recent")? == Some(1),
                    row.opt_int("bucket")?.unwrap_or(0),
                    row.opt_int("answered")?.unwrap_or(0).max(0) as u64,
                ))
            })
            .await?;
        Ok(webhooks
            .into_iter()
            .map(|(id, name)| stats::of_webhook(id, name, now, &counts, &latencies))
            .collect())
    }

    async fn create_connector(
        &self,
        c: &Connector,
        remember: Option<&Remembered>,
    ) -> StoreResult<()> {
        let insert = sql::insert(
            D::DIALECT,
            "connectors",
            rows::CONNECTOR_COLUMNS,
            rows::connector_values(c),
        );
        write_remembering(self, remember, vec![insert]).await?;
        Ok(())
    }

    async fn list_connectors(
        &self,
        org: OrgId,
        after: Option<ConnectorId>,
        limit: u32,
    ) -> StoreResult<Vec<Connector>> {
        let sql = page::<D>(
            "connectors",
            rows::CONNECTOR_COLUMNS,
            org,
            None,
            after.map(Value::from),
            limit,
        );
        self.read(sql, rows::connector).await
    }

    async fn update_connector(
        &self,
        org: OrgId,
        id: ConnectorId,
        changes: &ConnectorChanges,
    ) -> StoreResult<Option<Connector>> {
        let texts = [
            ("display_name", &changes.display_name),
            ("integration_slug", &changes.integration_slug),
            ("origin_id", &changes.origin_id),
            ("end_user_name", &changes.end_user_name),
            ("end_user_email", &changes.end_user_email),
        ];
        let mut set: Vec<(&str, Value)> = texts
            .into_iter()
            .filter_map(|(column, value)| Some((column, value.as_ref()?.into())))
            .collect();
        if let Some(categories) = &changes.categories {
            set.push(("categories", rows::json_text(categories).into()));
        }
        if let Some(status) = changes.connector_status {
            set.push(("connector_status", status.as_str().into()));
        }
        let update = sql::update(
            D::DIALECT,
            "connectors",
            set,
            id.into(),
            org.into(),
            rows::CONNECTOR_COLUMNS,
        );
        let updated = self.write_returning(update, rows::connector).await?;
        self.changed(Change::Connector(id));
        Ok(updated.into_iter().next())
    }

    async fn delete_connector(&self, org: OrgId, id: ConnectorId) -> StoreResult<bool> {
        let mut sql = D::sql("DELETE FROM connectors WHERE id = ");
        sql.bind(id).push(" AND org_id = ").bind(org);
        let deleted = self.write(vec![sql]).await?;
        self.changed(Change::Connector(id));
        Ok(deleted.first().is_some_and(|n| *n > 0))
    }

    async fn sync_job(
        &self,
        org: OrgId,
        connector: ConnectorId,
        id: SyncId,
    ) -> StoreResult<Option<SyncJob>> {
        let mut sql = D::sql(
            "SELECT s.* FROM sync_jobs s JOIN connectors c ON c.id = s.connector_id WHERE s.id = ",
        );
        sql.bind(id).push(" AND s.connector_id = ").bind(connector);
        sql.push(" AND c.org_id = ").bind(org);
        self.read_one(sql, rows::sync_job).await
    }

    async fn list_logs(&self, org: OrgId, f: &LogFilter) -> StoreResult<Vec<LogEntry>> {
        let e = D::LOG_EVENT;
        let mut q = D::sql(format!(
            "SELECT {} FROM {} WHERE d.org_id = ",
            log_columns(e),
            D::LOGS
        ));
        q.bind(org);
        if let Some(webhook) = f.webhook_id {
            q.push(" AND d.webhook_id = ").bind(webhook);
        }
        if let Some(connector) = f.connector_id {
            q.push(&format!(" AND {e}.connector_id = ")).bind(connector);
        }
        if !f.event_types.is_empty() {
            q.push(&format!(" AND {e}.event_type IN "));
            q.bind_list(f.event_types.iter().map(|t| t.as_str().into()));
        }
        if !f.response_codes.is_empty() {
            q.push(" AND d.response_code IN ");
            q.bind_list(f.response_codes.iter().map(|c| (*c as i64).into()));
        }
        if let Some(from) = f.created_from {
            q.push(" AND d.created_at >= ").bind(from);
        }
        if let Some(to) = f.created_to {
            q.push(" AND d.created_at <= ").bind(to);
        }
        if f.errors_only {
            q.push(
                " AND (d.response_code >= 400 OR (d.response_code IS NULL AND d.last_error IS NOT NULL))",
            );
        }
        if let Some(before) = f.before {
            q.push(" AND d.id < ").bind(before);
        }
        q.push(" ORDER BY d.id DESC LIMIT ").bind(f.limit as i64);
        self.read(q, rows::log_entry).await
    }

    async fn log(&self, org: OrgId, id: DeliveryId) -> StoreResult<Option<LogDetail>> {
        let mut q = D::sql(format!(
            "SELECT {}, d.body, {} FROM {} WHERE d.id = ",
            log_columns(D::LOG_EVENT),
            D::SHARED_BODY,
            D::LOGS
        ));
        q.bind(id).push(" AND d.org_id = ").bind(org);
        let found = self
            .read_one(q, |row| Ok((rows::log_entry(row)?, rows::body(row)?)))
            .await?;
        let Some((entry, body)) = found else {
            return Ok(None);
        };
        let mut q = D::sql(format!(
            "SELECT {} FROM attempts WHERE delivery_id = ",
            rows::ATTEMPT_COLUMNS
        ));
        q.bind(id).push(" ORDER BY number");
        let attempts = self.read(q, rows::attempt).await?;
        Ok(Some(LogDetail {
            entry,
            body,
            attempts,
        }))
    }

    async fn remembered(
        &self,
        org: OrgId,
        key: &str,
        now: Timestamp,
    ) -> StoreResult<Option<Remembered>> {
        let mut q = D::sql(format!(
            "SELECT {REMEMBERED_COLUMNS} FROM idempotency_keys WHERE org_id = "
        ));
        q.bind(org).push(" AND key = ").bind(key);
        q.push(" AND created_at >= ").bind(now - Remembered::KEPT);
        self.read_one(q, rows::remembered).await
    }

    async fn queue_depth(&self, now: Timestamp) -> StoreResult<QueueDepth> {
        const UNCLAIMED: &str = "FROM deliveries WHERE status = 'pending' AND lease_until IS NULL";
        let mut q = D::sql(format!(
            "SELECT (SELECT count(*) {UNCLAIMED} AND next_attempt_at <= "
        ));
        q.bind(now);
        q.push(&format!(
            ") AS due, (SELECT count(*) {UNCLAIMED} AND next_attempt_at > "
        ));
        q.bind(now);
        q.push(&format!(
            ") AS scheduled, (SELECT count(*) FROM deliveries WHERE status = 'pending' \
             AND lease_until IS NOT NULL) AS claimed, \
             (SELECT min(next_attempt_at) {UNCLAIMED}) AS earliest"
        ));
        let depth = self
            .read_one(q, |row| {
                let count = |column| -> StoreResult<u64> {
                    Ok(row.opt_int(column)?.unwrap_or(0).max(0) as u64)
                };
                Ok(QueueDepth {
                    due: count("due")?,
                    scheduled: count("scheduled")?,
                    claimed: count("claimed")?,
                    earliest: row.opt_time("earliest")?,
                })
            })
            .await?;
        Ok(depth.unwrap_or_default())
    }

    async fn forget_remembered(&self, before: Timestamp, batch: u32) -> StoreResult<u64> {
        let mut q = D::sql(
            "DELETE FROM idempotency_keys WHERE (org_id, key) IN (SELECT org_id, key \
             FROM idempotency_keys WHERE created_at < ",
        );
        q.bind(before)
            .push(" ORDER BY created_at LIMIT ")
            .bind(batch as i64)
            .push(D::SKIP_LOCKED)
            .push(")");
        Ok(self.write(vec![q]).await?[0])
    }

    async fn purge_recoveries(&self, before: Timestamp, batch: u32) -> StoreResult<u64> {
        // A running recovery has no `finished_at`, so it stays.
        let mut q = D::sql(
            "DELETE FROM recoveries WHERE id IN (SELECT id FROM recoveries WHERE finished_at < ",
        );
        q.bind(before)
            .push(" ORDER BY id LIMIT ")
            .bind(batch as i64)
            .push(D::SKIP_LOCKED)
            .push(")");
        Ok(self.write(vec![q]).await?[0])
    }
}

/// Removes up to `batch` finished deliveries made before `before`, with their attempts;
/// answers the events they were of. By id, which orders by creation: the primary key
/// finds the oldest rows first.
pub(super) async fn purge_deliveries<D: Db>(
    db: &D,
    before: Timestamp,
    batch: u32,
) -> StoreResult<Vec<EventId>> {
    let mut deliveries = delete_purged::<D>("", before, batch);
    deliveries.push(" RETURNING event_id");
    db.write_returning(deliveries, |row| rows::id_of(row, "event_id"))
        .await
}

/// `lead`, then the delete of up to `batch` finished deliveries made before `before`
/// (see [`purge_deliveries`]), for the caller to end.
pub(super) fn delete_purged<D: Db>(lead: &str, before: Timestamp, batch: u32) -> Sql {
    let mut deliveries = D::sql(lead);
    deliveries
        .push("DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE id < ")
        .bind(first_id_at(before))
        .push(" AND status <> 'pending' ORDER BY id LIMIT ")
        .bind(batch as i64)
        .push(D::SKIP_LOCKED)
        .push(")");
    deliveries
}

/// Of the next `batch` events after `after` made before `before`, removes those no
/// delivery refers to (see [`Store::sweep_events`]).
pub(super) async fn sweep_events<D: Db>(
    db: &D,
    after: Option<EventId>,
    before: Timestamp,
    batch: u32,
) -> StoreResult<(u64, Option<EventId>)> {
    let mut next = D::sql("SELECT id FROM events WHERE id < ");
    next.bind(first_id_at(before));
    if let Some(after) = after {
        next.push(" AND id > ").bind(after);
    }
    next.push(" ORDER BY id LIMIT ").bind(batch as i64);
    let events = db.read(next, |row| rows::id_of(row, "id")).await?;
    Ok((forget_events(db, &events).await?, events.last().copied()))
}

/// Removes those of `events` that no delivery refers to; answers how many. By their ids,
/// so that each is a lookup of the deliveries' index on their event (a join of every old
/// event with every delivery is what PostgreSQL's planner picks otherwise).
pub(super) async fn forget_events<D: Db>(db: &D, events: &[EventId]) -> StoreResult<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut forget = D::sql("DELETE FROM events WHERE id IN ");
    forget.bind_list(events.iter().map(|e| Value::from(*e)));
    forget.push(" AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)");
    Ok(db.write(vec![forget]).await?[0])
}

/// Runs `statements` in one transaction with, first, the call's answer under its
/// idempotency key: an answer under that key that has expired is replaced, and a live one
/// refuses the write, all of it (`KeyTaken`). Answers the rows each of `statements` changed.
async fn write_remembering<D: Db>(
    db: &D,
    remember: Option<&Remembered>,
    mut statements: Vec<Sql>,
) -> StoreResult<Vec<u64>> {
    let Some(r) = remember else {
        return db.write(statements).await;
    };
    let mut forget = unremember(D::DIALECT, r);
    forget.push(" AND created_at < ").bind(r.expired_before());
    let insert = sql::insert(
        D::DIALECT,
        "idempotency_keys",
        REMEMBERED_COLUMNS,
        remembered_values(r),
    );
    statements.splice(0..0, [forget, insert]);
    match db.write(statements).await {
        Err(e) if e.is_unique_violation() => Err(StoreError::KeyTaken),
        written => written.map(|mut changed| changed.split_off(2)),
    }
}

pub(super) const REMEMBERED_COLUMNS: &str = "org_id, key, fingerprint, status, body, created_at";

pub(super) fn remembered_values(r: &Remembered) -> Vec<Value> {
    vec![
        r.org_id.into(),
        r.key.as_str().into(),
        r.fingerprint.as_str().into(),
        (r.status as i64).into(),
        r.body.as_slice().into(),
        r.created_at.into(),
    ]
}

/// The call's answer under its idempotency key, in a statement that changes one row, or
/// none when another call's answer lives under the key (an expired one is replaced): for
/// writes that go on with the rest of their transaction either way.
pub(super) fn remember(dialect: Dialect, r: &Remembered) -> Sql {
    let mut sql = sql::insert(
        dialect,
        "idempotency_keys",
        REMEMBERED_COLUMNS,
        remembered_values(r),
    );
    sql.push(
        " ON CONFLICT (org_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
         status = excluded.status, body = excluded.body, created_at = excluded.created_at \
         WHERE idempotency_keys.created_at < ",
    )
    .bind(r.expired_before());
    sql
}

/// Takes back a [`remember`] whose call was refused after it: the answer under the key.
pub(super) fn unremember(dialect: Dialect, r: &Remembered) -> Sql {
    let mut sql = Sql::new(dialect, "DELETE FROM idempotency_keys WHERE org_id = ");
    sql.bind(r.org_id).push(" AND key = ").bind(r.key.as_str());
    sql
}

/// The smallest id made at `at`: every id (a UUIDv7) made before sorts below it, as text
/// and as a UUID, and every one made at or after it sorts above.
pub(super) fn first_id_at(at: Timestamp) -> uuid::Uuid {
    let millis = at.timestamp_millis().max(0) as u64;
    uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid()
}

/// What [`rows::log_entry`] reads, of a delivery `d` whose event's fields are in `e`.
fn log_columns(e: &str) -> String {
    format!(
        "d.id, d.webhook_id, d.webhook_name, {e}.connector_id, {e}.event_type, d.url, \
         CASE WHEN d.status = 'pending' AND d.next_attempt_at IS NULL THEN 'blocked' \
         ELSE d.status END AS status, d.response_code, d.attempt_count, d.last_error, {e}.integration_name, \
         {e}.end_user_name, {e}.origin_id, d.created_at, d.next_attempt_at"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_at_a_time_sorts_after_every_id_made_before_it() {
        let before = DeliveryId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let cut = first_id_at(time::now());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let after = DeliveryId::new();
        for (earlier, later) in [(before.as_uuid(), cut), (cut, after.as_uuid())] {
            assert!(earlier < later);
            // As SQLite compares them: the text, hyphenated.
            assert!(earlier.hyphenated().to_string() < later.hyphenated().to_string());
        }
    }
}
