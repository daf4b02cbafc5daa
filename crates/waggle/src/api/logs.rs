//! `/api/v1/webhooks/logs`: every delivery with its attempts, filtered and paginated as
//! the provider's published API does, and resend.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::ApiAuth;
use super::error::{ApiError, Problems};
use super::pagination::{self, Page};
use super::{parse_bool, parse_path_id, AppState};
use crate::domain::attempt::{Attempt, AttemptResult};
use crate::domain::event::EventType;
use crate::domain::ids::{ConnectorId, DeliveryId, WebhookId};
use crate::domain::time::{self, Timestamp};
use crate::domain::Invalid;
use crate::storage::{LogDetail, LogEntry, LogFilter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/logs", get(list))
        .route("/webhooks/logs/{log_id}", get(read))
        .route("/webhooks/logs/{log_id}/resend", post(resend))
}

/// A log as listed.
#[derive(Debug, Serialize)]
pub struct LogOut {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub webhook_name: String,
    pub connector_id: ConnectorId,
    pub method: &'static str,
    pub url: String,
    pub response_code: Option<u16>,
    #[serde(with = "time::serde_format")]
    pub created_at: Timestamp,
    pub integration_name: String,
    pub end_user_name: String,
    pub origin_id: String,
    pub webhook_action: EventType,
    /// `pending`, `delivered`, `failed` or `cancelled`.
    pub status: String,
    pub attempts: u32,
    /// The failure category of the last attempt, when it got no response.
    pub error: Option<String>,
    #[serde(with = "time::serde_format::option")]
    pub next_attempt_at: Option<Timestamp>,
}

impl From<LogEntry> for LogOut {
    fn from(e: LogEntry) -> Self {
        let pending = e.status == "pending";
        Self {
            id: e.id,
            webhook_id: e.webhook_id,
            webhook_name: e.webhook_name,
            connector_id: e.connector_id,
            method: "POST",
            url: e.url,
            response_code: e.response_code,
            created_at: e.created_at,
            integration_name: e.integration_name,
            end_user_name: e.end_user_name,
            origin_id: e.origin_id,
            webhook_action: e.event_type,
            status: e.status,
            attempts: e.attempt_count,
            error: e.last_error,
            next_attempt_at: e.next_attempt_at.filter(|_| pending),
        }
    }
}

/// Parses the query of the logs list into a filter; shared with the dashboard.
pub fn parse_filter(query: &HashMap<String, String>) -> Result<LogFilter, ApiError> {
    let get = |k: &str| {
        query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };
    let limit = pagination::page_size(query.get("page_size").map(String::as_str), 25, 50)?;
    let before = pagination::decode::<DeliveryId>(get("cursor"))?;
    let mut p = Problems::default();
    let webhook_id = get("webhook_id")
        .and_then(|v| p.check(&["query", "webhook_id"], parse_uuid(v, "webhook_id")));
    let connector_id = get("connector_id")
        .and_then(|v| p.check(&["query", "connector_id"], parse_uuid(v, "connector_id")));
    let event_types = get("webhook_action")
        .and_then(|v| {
            p.check(
                &["query", "webhook_action"],
                v.split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(EventType::parse)
                    .collect::<Result<Vec<_>, _>>(),
            )
        })
        .unwrap_or_default();
    let response_codes = get("response_code")
        .and_then(|v| {
            p.check(
                &["query", "response_code"],
                v.split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|c| match c.trim().parse::<u16>() {
                        Ok(code) if (100..=599).contains(&code) => Ok(code),
                        _ => Err(Invalid::new(
                            "value_error.response_code",
                            format!("'{c}' is not an HTTP status code"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>(),
            )
        })
        .unwrap_or_default();
    let created_from =
        get("created_at_from").and_then(|v| p.check(&["query", "created_at_from"], time::parse(v)));
    let created_to =
        get("created_at_to").and_then(|v| p.check(&["query", "created_at_to"], time::parse(v)));
    let errors_only = get("errors_only")
        .and_then(|v| {
            p.check(
                &["query", "errors_only"],
                parse_bool(v).ok_or_else(|| {
                    Invalid::new("type_error.bool", "errors_only must be true or false")
                }),
            )
        })
        .unwrap_or(false);
    p.finish()?;
    if let (Some(from), Some(to)) = (created_from, created_to) {
        if from > to {
            return Err(ApiError::field(
                &["query", "created_at_from"],
                Invalid::new(
                    "value_error.range",
                    "created_at_from is after created_at_to",
                ),
            ));
        }
    }
    Ok(LogFilter {
        webhook_id,
        connector_id,
        event_types,
        response_codes,
        created_from,
        created_to,
        errors_only,
        before,
        limit,
    })
}

fn parse_uuid<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, Invalid> {
    value
        .trim()
        .parse()
        .map_err(|_| Invalid::new("type_error.uuid", format!("{what} must be a UUID")))
}

async fn list(
    State(state): State<AppState>,
    auth: ApiAuth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Page<LogOut>>, ApiError> {
    let mut filter = parse_filter(&query)?;
    let page_size = filter.limit;
    filter.limit += 1;
    let items = state.store.list_logs(auth.org_id, &filter).await?;
    Ok(Json(
        Page::from_fetched(items, page_size, |e| e.id).map(LogOut::from),
    ))
}

async fn read(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_path_id::<DeliveryId>(&id, "log")?;
    let detail = state
        .store
        .log(auth.org_id, id)
        .await?
        .ok_or(ApiError::NotFound("log"))?;
    Ok(Json(detail_json(detail)))
}

/// A log with one `request` and one `response` entry per attempt.
pub fn detail_json(detail: LogDetail) -> Value {
    let body: Value = serde_json::from_slice(&detail.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&detail.body).into_owned()));
    let request: Vec<Value> = detail
        .attempts
        .iter()
        .map(|a| request_json(a, &body))
        .collect();
    let response: Vec<Value> = detail.attempts.iter().map(response_json).collect();
    let mut out = serde_json::to_value(LogOut::from(detail.entry)).expect("logs serialize");
    out["request"] = Value::Array(request);
    out["response"] = Value::Array(response);
    out
}

fn headers_json(headers: &[(String, String)]) -> Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        map.insert(name.clone(), Value::String(value.clone()));
    }
    Value::Object(map)
}

fn request_json(a: &Attempt, body: &Value) -> Value {
    json!({
        "attempt": a.number,
        "timestamp": time::format(&a.started_at),
        "method": "POST",
        "url": a.request_url,
        "headers": headers_json(&a.request_headers),
        "body": body,
    })
}

fn response_json(a: &Attempt) -> Value {
    let duration_ms = (a.duration.as_secs_f64() * 1e4).round() / 10.0;
    match &a.result {
        AttemptResult::Response {
            status,
            headers,
            body,
        } => json!({
            "attempt": a.number,
            "timestamp": time::format(&a.started_at),
            "status_code": status,
            "headers": headers_json(headers),
            "body": String::from_utf8_lossy(body),
            "error": null,
            "duration_ms": duration_ms,
        }),
        AttemptResult::Failure { category, message } => json!({
            "attempt": a.number,
            "timestamp": time::format(&a.started_at),
            "status_code": null,
            "headers": null,
            "body": null,
            "error": {"category": category.as_str(), "message": message},
            "duration_ms": duration_ms,
        }),
    }
}

async fn resend(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_path_id::<DeliveryId>(&id, "log")?;
    let new_id = state.resend(auth.org_id, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": new_id, "resent_from": id })),
    ))
}
