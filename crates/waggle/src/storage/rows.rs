//! Rows become domain types here, and domain types become bind values here, once for
//! both backends: each backend only says how to read one column of its driver's row
//! ([`Row`]) and how to bind one [`Value`]. A new column is one edit to a mapping below
//! and one to each backend's SQL.
//!
//! The two databases store the same values in their own types (ids as TEXT or UUID,
//! times as microseconds or TIMESTAMPTZ, flags as INTEGER or BOOLEAN); the [`Row`] and
//! [`Value`] impls of each backend translate, so nothing here knows which one it reads.

use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use super::{
    delivery_body, ApiKey, DashboardSession, DashboardUser, DeliveryJob, LogEntry, Organization,
    Remembered, StoreError, StoreResult,
};
use crate::domain::attempt::{Attempt, AttemptResult, FailureCategory};
use crate::domain::connector::{
    Connector, ConnectorStatus, DisplayStatus, SyncError, SyncJob, SyncType,
};
use crate::domain::event::{Environment, EventType};
use crate::domain::recovery::{Recovery, RecoveryStatus};
use crate::domain::retry::RetrySchedule;
use crate::domain::signature::{RetiringKey, SignatureKey};
use crate::domain::time::Timestamp;
use crate::domain::webhook::Webhook;

/// One column of a row, by name, as its backend's driver reads it.
pub(super) trait Row {
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
    fn flag(&self, column: &str) -> StoreResult<bool>;
    fn opt_blob(&self, column: &str) -> StoreResult<Option<Vec<u8>>>;
    fn uuid(&self, column: &str) -> StoreResult<Uuid>;
    fn opt_uuid(&self, column: &str) -> StoreResult<Option<Uuid>>;
    fn opt_time(&self, column: &str) -> StoreResult<Option<Timestamp>>;
}

/// A value to bind, in the domain's terms; each backend binds it in its own type.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Uuid(Option<Uuid>),
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
    Blob(Option<Vec<u8>>),
    Time(Option<Timestamp>),
}

impl From<Uuid> for Value {
    fn from(v: Uuid) -> Self {
        Value::Uuid(Some(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_owned))
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(Some(v.to_vec()))
    }
}
impl From<Timestamp> for Value {
    fn from(v: Timestamp) -> Self {
        Value::Time(Some(v))
    }
}
impl From<Option<Timestamp>> for Value {
    fn from(v: Option<Timestamp>) -> Self {
        Value::Time(v)
    }
}

/// Typed ids bind as their UUID.
macro_rules! id_values {
    ($($id:ty),*) => {$(
        impl From<$id> for Value {
            fn from(v: $id) -> Self {
                Value::Uuid(Some(v.as_uuid()))
            }
        }
    )*};
}
use crate::domain::ids::*;
id_values!(
    OrgId,
    ApiKeyId,
    UserId,
    ConnectorId,
    SyncId,
    WebhookId,
    EventId,
    DeliveryId,
    RecoveryId
);

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn required<T>(column: &str, value: Option<T>) -> StoreResult<T> {
    value.ok_or_else(|| corrupt(format!("{column} is NULL")))
}

fn text(row: &dyn Row, column: &str) -> StoreResult<String> {
    required(column, row.opt_text(column)?)
}

fn int(row: &dyn Row, column: &str) -> StoreResult<i64> {
    required(column, row.opt_int(column)?)
}

fn time(row: &dyn Row, column: &str) -> StoreResult<Timestamp> {
    required(column, row.opt_time(column)?)
}

fn count(row: &dyn Row, column: &str) -> StoreResult<u32> {
    Ok(int(row, column)?.clamp(0, u32::MAX as i64) as u32)
}

fn id<T: From<Uuid>>(row: &dyn Row, column: &str) -> StoreResult<T> {
    Ok(row.uuid(column)?.into())
}

/// One id column, as any of the typed ids.
pub(super) fn id_of<T: From<Uuid>>(row: &dyn Row, column: &str) -> StoreResult<T> {
    id(row, column)
}

/// One text column that must not be NULL.
pub(super) fn text_of(row: &dyn Row, column: &str) -> StoreResult<String> {
    text(row, column)
}

fn json<T: serde::de::DeserializeOwned>(row: &dyn Row, column: &str) -> StoreResult<T> {
    serde_json::from_str(&text(row, column)?).map_err(|e| corrupt(format!("{column}: {e}")))
}

/// A column holding one of an enum's names.
fn named<T, E: std::fmt::Display>(
    row: &dyn Row,
    column: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T> {
    let name = text(row, column)?;
    parse(&name).map_err(|e| corrupt(format!("{column} '{name}': {e}")))
}

/// For the enums whose parse answers `None` on an unknown name.
fn known<T>(parse: fn(&str) -> Option<T>) -> impl FnOnce(&str) -> Result<T, &'static str> {
    move |name| parse(name).ok_or("unknown")
}

/// A list of event types or categories, as stored: a JSON array.
pub(super) fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("lists of strings serialize")
}

pub(super) const ORGANIZATION_COLUMNS: &str =
    "id, name, signature_key, retiring_signature_key, retiring_key_until";

pub(super) fn organization(row: &dyn Row) -> StoreResult<Organization> {
    Ok(Organization {
        id: id(row, "id")?,
        name: text(row, "name")?,
        signature_key: SignatureKey::from_stored(text(row, "signature_key")?),
        retiring_key: match (
            row.opt_text("retiring_signature_key")?,
            row.opt_time("retiring_key_until")?,
        ) {
            (Some(key), Some(until)) => Some(RetiringKey {
                key: SignatureKey::from_stored(key),
                until,
            }),
            _ => None,
        },
    })
}

/// A key's id, its organization and the organization's records version.
pub(super) fn api_key_owner(row: &dyn Row) -> StoreResult<(ApiKeyId, OrgId, i64)> {
    Ok((
        id(row, "id")?,
        id(row, "org_id")?,
        int(row, "records_version")?,
    ))
}

pub(super) const API_KEY_COLUMNS: &str = "id, name, prefix, created_at, last_used_at";

pub(super) fn api_key(row: &dyn Row) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: id(row, "id")?,
        name: text(row, "name")?,
        prefix: text(row, "prefix")?,
        created_at: time(row, "created_at")?,
        last_used_at: row.opt_time("last_used_at")?,
    })
}

/// The columns a new key of `org` is written with, created `now`.
pub(super) const NEW_API_KEY_COLUMNS: &str = "id, org_id, name, prefix, hash, created_at";

pub(super) fn new_api_key_values(org: OrgId, key: &super::NewApiKey, now: Timestamp) -> Vec<Value> {
    vec![
        key.id.into(),
        org.into(),
        (&key.name).into(),
        (&key.prefix).into(),
        (&key.hash).into(),
        now.into(),
    ]
}

pub(super) const USER_COLUMNS: &str = "id, org_id, email, password_hash";

pub(super) fn dashboard_user(row: &dyn Row) -> StoreResult<DashboardUser> {
    Ok(DashboardUser {
        id: id(row, "id")?,
        org_id: id(row, "org_id")?,
        email: text(row, "email")?,
        password_hash: text(row, "password_hash")?,
    })
}

pub(super) const SESSION_COLUMNS: &str =
    "token_hash, user_id, org_id, csrf_token, created_at, expires_at";

pub(super) fn session(row: &dyn Row) -> StoreResult<DashboardSession> {
    Ok(DashboardSession {
        token_hash: text(row, "token_hash")?,
        user_id: id(row, "user_id")?,
        org_id: id(row, "org_id")?,
        csrf_token: text(row, "csrf_token")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
    })
}

/// An answer kept under an idempotency key (see `records::REMEMBERED_COLUMNS`).
pub(super) fn remembered(row: &dyn Row) -> StoreResult<Remembered> {
    Ok(Remembered {
        org_id: id(row, "org_id")?,
        key: text(row, "key")?,
        fingerprint: text(row, "fingerprint")?,
        status: u16::try_from(int(row, "status")?).map_err(|_| corrupt("status out of range"))?,
        body: required("body", row.opt_blob("body")?)?,
        created_at: time(row, "created_at")?,
    })
}

pub(super) const WEBHOOK_COLUMNS: &str = "id, org_id, name, url, type, events, is_enabled, \
     created_at, last_triggered_at, disabled_reason, disabled_at, retry_policy, retry_on_status, \
     ordered";

pub(super) fn webhook(row: &dyn Row) -> StoreResult<Webhook> {
    Ok(Webhook {
        webhook_id: id(row, "id")?,
        org_id: id(row, "org_id")?,
        name: text(row, "name")?,
        url: text(row, "url")?,
        is_enabled: row.flag("is_enabled")?,
        created_at: time(row, "created_at")?,
        last_triggered_at: row.opt_time("last_triggered_at")?,
        environment: named(row, "type", Environment::parse)?,
        events: json(row, "events")?,
        disabled_reason: row.opt_text("disabled_reason")?,
        disabled_at: row.opt_time("disabled_at")?,
        retry_policy: RetrySchedule::parse(&json(row, "retry_policy")?)
            .map_err(|e| corrupt(format!("retry_policy: {e}")))?,
        retry_on_status: json(row, "retry_on_status")?,
        ordered: row.flag("ordered")?,
    })
}

/// The columns of [`WEBHOOK_COLUMNS`] a new webhook is written with, in that order.
pub(super) fn webhook_values(w: &Webhook) -> Vec<Value> {
    vec![
        w.webhook_id.into(),
        w.org_id.into(),
        (&w.name).into(),
        (&w.url).into(),
        w.environment.as_str().into(),
        json_text(&w.events).into(),
        w.is_enabled.into(),
        w.created_at.into(),
        w.last_triggered_at.into(),
        w.disabled_reason.as_deref().into(),
        w.disabled_at.into(),
        json_text(&w.retry_policy).into(),
        json_text(&w.retry_on_status).into(),
        w.ordered.into(),
    ]
}

pub(super) const RECOVERY_COLUMNS: &str = "id, org_id, webhook_id, since, until, status, \
     deliveries, recovered, created_at, finished_at";

pub(super) fn recovery(row: &dyn Row) -> StoreResult<Recovery> {
    Ok(Recovery {
        id: id(row, "id")?,
        org_id: id(row, "org_id")?,
        webhook_id: id(row, "webhook_id")?,
        since: time(row, "since")?,
        until: time(row, "until")?,
        status: named(row, "status", RecoveryStatus::parse)?,
        deliveries: int(row, "deliveries")?.max(0) as u64,
        recovered: int(row, "recovered")?.max(0) as u64,
        created_at: time(row, "created_at")?,
        finished_at: row.opt_time("finished_at")?,
    })
}

/// The columns of [`RECOVERY_COLUMNS`] a new recovery is written with, in that order.
pub(super) fn recovery_values(r: &Recovery) -> Vec<Value> {
    vec![
        r.id.into(),
        r.org_id.into(),
        r.webhook_id.into(),
        r.since.into(),
        r.until.into(),
        r.status.as_str().into(),
        (r.deliveries as i64).into(),
        (r.recovered as i64).into(),
        r.created_at.into(),
        r.finished_at.into(),
    ]
}

pub(super) const CONNECTOR_COLUMNS: &str = "id, org_id, environment, display_name, \
     integration_slug, categories, origin_id, connector_status, end_user_name, end_user_email, \
     created_at";

pub(super) fn connector(row: &dyn Row) -> StoreResult<Connector> {
    Ok(Connector {
        id: id(row, "id")?,
        org_id: id(row, "org_id")?,
        environment: named(row, "environment", Environment::parse)?,
        display_name: text(row, "display_name")?,
        integration_slug: text(row, "integration_slug")?,
        categories: json(row, "categories")?,
        origin_id: text(row, "origin_id")?,
        connector_status: named(row, "connector_status", ConnectorStatus::parse)?,
        end_user_name: text(row, "end_user_name")?,
        end_user_email: text(row, "end_user_email")?,
        created_at: time(row, "created_at")?,
    })
}

/// The columns of [`CONNECTOR_COLUMNS`], in that order.
pub(super) fn connector_values(c: &Connector) -> Vec<Value> {
    vec![
        c.id.into(),
        c.org_id.into(),
        c.environment.as_str().into(),
        (&c.display_name).into(),
        (&c.integration_slug).into(),
        json_text(&c.categories).into(),
        (&c.origin_id).into(),
        c.connector_status.as_str().into(),
        (&c.end_user_name).into(),
        (&c.end_user_email).into(),
        c.created_at.into(),
    ]
}

pub(super) const SYNC_JOB_COLUMNS: &str = "id, connector_id, initial_sync, sync_type, \
     display_status, last_sync_start_time, finished_at, error_message, error_detail";

pub(super) fn sync_job(row: &dyn Row) -> StoreResult<SyncJob> {
    let finished_at = row.opt_time("finished_at")?;
    let error = match row.opt_text("error_message")? {
        Some(message) => Some(SyncError {
            failed_at: finished_at.unwrap_or_default(),
            message,
            detail: row
                .opt_text("error_detail")?
                .map(|d| serde_json::from_str(&d))
                .transpose()
                .map_err(|e| corrupt(format!("error_detail: {e}")))?
                .unwrap_or(serde_json::Value::Null),
        }),
        None => None,
    };
    Ok(SyncJob {
        id: id(row, "id")?,
        connector_id: id(row, "connector_id")?,
        initial_sync: row.flag("initial_sync")?,
        sync_type: named(row, "sync_type", SyncType::parse)?,
        display_status: named(row, "display_status", known(DisplayStatus::parse))?,
        last_sync_start_time: time(row, "last_sync_start_time")?,
        finished_at,
        error,
    })
}

/// The columns of [`SYNC_JOB_COLUMNS`], in that order.
pub(super) fn sync_job_values(job: &SyncJob) -> Vec<Value> {
    vec![
        job.id.into(),
        job.connector_id.into(),
        job.initial_sync.into(),
        job.sync_type.as_str().into(),
        job.display_status.as_str().into(),
        job.last_sync_start_time.into(),
        job.finished_at.into(),
        job.error.as_ref().map(|e| e.message.as_str()).into(),
        Value::Text(job.error.as_ref().map(|e| e.detail.to_string())),
    ]
}

/// What a log shows of a delivery: the names [`log_entry`] reads, each backend selecting
/// them from where it keeps them.
pub(super) fn log_entry(row: &dyn Row) -> StoreResult<LogEntry> {
    Ok(LogEntry {
        id: id(row, "id")?,
        webhook_id: id(row, "webhook_id")?,
        webhook_name: text(row, "webhook_name")?,
        connector_id: id(row, "connector_id")?,
        event_type: named(row, "event_type", EventType::parse)?,
        url: text(row, "url")?,
        status: text(row, "status")?,
        response_code: row.opt_int("response_code")?.map(|c| c as u16),
        attempt_count: count(row, "attempt_count")?,
        last_error: row.opt_text("last_error")?,
        integration_name: text(row, "integration_name")?,
        end_user_name: text(row, "end_user_name")?,
        origin_id: text(row, "origin_id")?,
        created_at: time(row, "created_at")?,
        next_attempt_at: row.opt_time("next_attempt_at")?,
    })
}

/// A delivery's exact body, from a row with its `body`, `webhook_id` and `url` and its
/// event's `event_type` and `shared_body`.
pub(super) fn body(row: &dyn Row) -> StoreResult<Bytes> {
    delivery_body(
        row.opt_blob("body")?,
        id(row, "webhook_id")?,
        &text(row, "url")?,
        // None where the delivery keeps its own body.
        &row.opt_text("event_type")?.unwrap_or_default(),
        row.opt_blob("shared_body")?.as_deref(),
    )
}

/// A claimed delivery, from a row with [`body`]'s columns, `id`, `org_id`, the counts
/// `attempt_count` and `attempts_started` (this claim's included), `first_attempt_at`,
/// `ordered_by` and `traceparent`.
pub(super) fn job(row: &dyn Row) -> StoreResult<DeliveryJob> {
    Ok(DeliveryJob {
        id: id(row, "id")?,
        org_id: id(row, "org_id")?,
        webhook_id: id(row, "webhook_id")?,
        url: text(row, "url")?,
        body: body(row)?,
        attempt_number: count(row, "attempts_started")?,
        attempts_recorded: count(row, "attempt_count")?,
        first_attempt_at: row.opt_time("first_attempt_at")?,
        ordered_by: row.opt_uuid("ordered_by")?.map(ConnectorId::from),
        event_type: row
            .opt_text("event_type")?
            .and_then(|t| EventType::parse(&t).ok()),
        traceparent: row.opt_text("traceparent")?.map(Into::into),
    })
}

pub(super) const ATTEMPT_COLUMNS: &str = "delivery_id, number, started_at, duration_us, \
     request_url, request_headers, response_status, response_headers, response_body, \
     error_category, error_message";

pub(super) fn attempt(row: &dyn Row) -> StoreResult<Attempt> {
    let result = match row.opt_int("response_status")? {
        Some(status) => AttemptResult::Response {
            status: status as u16,
            headers: row
                .opt_text("response_headers")?
                .map(|h| serde_json::from_str(&h))
                .transpose()
                .map_err(|e| corrupt(format!("response_headers: {e}")))?
                .unwrap_or_default(),
            body: row.opt_blob("response_body")?.unwrap_or_default(),
        },
        None => AttemptResult::Failure {
            category: named(row, "error_category", known(FailureCategory::parse))?,
            message: row.opt_text("error_message")?.unwrap_or_default(),
        },
    };
    Ok(Attempt {
        delivery_id: id(row, "delivery_id")?,
        number: count(row, "number")?,
        started_at: time(row, "started_at")?,
        duration: Duration::from_micros(int(row, "duration_us")?.max(0) as u64),
        request_url: text(row, "request_url")?,
        request_headers: json(row, "request_headers")?,
        result,
    })
}
