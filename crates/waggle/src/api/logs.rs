//! `/api/v1/webhooks/logs`: every delivery with its attempts, filtered and paginated as
//! the provider's published API does, and resend.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::ApiAuth;
use super::error::{ApiError, ErrorOut, Problems};
use super::pagination::{self, Page};
use super::{parse_bool, parse_path_id, AppState};
use crate::domain::attempt::{Attempt, AttemptResult};
use crate::domain::event::EventType;
use crate::domain::ids::{ConnectorId, DeliveryId, WebhookId};
use crate::domain::time::{self, Timestamp};
use crate::domain::Invalid;
use crate::storage::{LogDetail, LogEntry, LogFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read))
        .routes(routes!(resend))
}

/// A log as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogOut {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub webhook_name: String,
    pub connector_id: ConnectorId,
    pub method: &'static str,
    pub url: String,
    pub response_code: Option<u16>,
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    pub integration_name: String,
    pub end_user_name: String,
    pub origin_id: String,
    pub webhook_action: EventType,
    /// `pending`, `blocked` (waiting for an earlier delivery of its connector, to a webhook
    /// that wants them in order), `delivered`, `failed` or `cancelled`.
    #[schema(example = "delivered")]
    pub status: String,
    pub attempts: u32,
    /// The failure category of the last attempt, when it got no response.
    pub error: Option<String>,
    #[serde(with = "time::serde_format::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
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

/// Parses the query of the logs list into a filter; shared with the dashboard, whose
/// form leaves the fields it does not filter on empty and drops them before. A text
/// field given empty filters on nothing, as documented; `errors_only=` is no boolean,
/// and is refused.
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
    let errors_only = query
        .get("errors_only")
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

#[utoipa::path(
    get,
    path = "/webhooks/logs",
    tag = "logs",
    operation_id = "list_logs",
    params(
        ("webhook_id" = Option<String>, Query, description = "A webhook's id (a UUID); empty for any"),
        ("connector_id" = Option<String>, Query, description = "A connector's id (a UUID); empty for any"),
        ("webhook_action" = Option<String>, Query, description = "Event types, comma-separated"),
        ("response_code" = Option<String>, Query, description = "HTTP statuses, comma-separated"),
        ("created_at_from" = Option<String>, Query, description = "ISO 8601; UTC when it has no offset"),
        ("created_at_to" = Option<String>, Query, description = "ISO 8601; UTC when it has no offset"),
        ("errors_only" = Option<bool>, Query, description = "Only HTTP statuses from 400 and network failures"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 50, description = "Default 25"),
        ("cursor" = Option<String>, Query, description = "The `cursor` of the previous page"),
    ),
    responses((status = 200, description = "One page of logs, newest first", body = Page<LogOut>))
)]
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

#[utoipa::path(
    get,
    path = "/webhooks/logs/{log_id}",
    tag = "logs",
    operation_id = "get_log",
    params(("log_id" = String, Path, format = Uuid)),
    responses((status = 200, description = "The log with its attempts", body = LogDetailOut))
)]
async fn read(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<Json<LogDetailOut>, ApiError> {
    let id = parse_path_id::<DeliveryId>(&id, "log")?;
    let detail = state
        .store
        .log(auth.org_id, id)
        .await?
        .ok_or(ApiError::NotFound("log"))?;
    Ok(Json(LogDetailOut::from(detail)))
}

/// A log with one `request` and one `response` entry per attempt.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LogDetailOut {
    #[serde(flatten)]
    log: LogOut,
    request: Vec<RequestOut>,
    response: Vec<ResponseOut>,
}

/// What one attempt sent.
#[derive(Serialize, utoipa::ToSchema)]
struct RequestOut {
    attempt: u32,
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    timestamp: Timestamp,
    method: &'static str,
    url: String,
    #[schema(value_type = HashMap<String, String>)]
    headers: serde_json::Map<String, Value>,
    /// The body sent: the event's JSON (text where it is not JSON).
    body: Value,
}

/// What one attempt got back: a response, or the failure that stopped it.
#[derive(Serialize, utoipa::ToSchema)]
struct ResponseOut {
    attempt: u32,
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    timestamp: Timestamp,
    status_code: Option<u16>,
    #[schema(value_type = Option<HashMap<String, String>>)]
    headers: Option<serde_json::Map<String, Value>>,
    /// At most the first 64 KiB.
    body: Option<String>,
    error: Option<FailureOut>,
    duration_ms: f64,
}

/// A network-layer failure: its category (`connect_error`, `read_timeout`, …) and what
/// happened.
#[derive(Serialize, utoipa::ToSchema)]
struct FailureOut {
    category: &'static str,
    message: String,
}

impl From<LogDetail> for LogDetailOut {
    fn from(detail: LogDetail) -> Self {
        let body: Value = serde_json::from_slice(&detail.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&detail.body).into_owned()));
        let request = detail
            .attempts
            .iter()
            .map(|a| RequestOut {
                attempt: a.number,
                timestamp: a.started_at,
                method: "POST",
                url: a.request_url.clone(),
                headers: headers_json(&a.request_headers),
                body: body.clone(),
            })
            .collect();
        let response = detail.attempts.iter().map(ResponseOut::from).collect();
        Self {
            log: LogOut::from(detail.entry),
            request,
            response,
        }
    }
}

fn headers_json(headers: &[(String, String)]) -> serde_json::Map<String, Value> {
    headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect()
}

impl From<&Attempt> for ResponseOut {
    fn from(a: &Attempt) -> Self {
        let mut out = ResponseOut {
            attempt: a.number,
            timestamp: a.started_at,
            status_code: None,
            headers: None,
            body: None,
            error: None,
            duration_ms: (a.duration.as_secs_f64() * 1e4).round() / 10.0,
        };
        match &a.result {
            AttemptResult::Response {
                status,
                headers,
                body,
            } => {
                out.status_code = Some(*status);
                out.headers = Some(headers_json(headers));
                out.body = Some(String::from_utf8_lossy(body).into_owned());
            }
            AttemptResult::Failure { category, message } => {
                out.error = Some(FailureOut {
                    category: category.as_str(),
                    message: message.clone(),
                });
            }
        }
        out
    }
}

/// The answer of a resend.
#[derive(Serialize, utoipa::ToSchema)]
struct ResendOut {
    /// The new delivery's id, a log of its own.
    id: DeliveryId,
    resent_from: DeliveryId,
}

#[utoipa::path(
    post,
    path = "/webhooks/logs/{log_id}/resend",
    tag = "logs",
    operation_id = "resend_log",
    params(("log_id" = String, Path, format = Uuid)),
    responses(
        (status = 202, description = "A new delivery of the same body, started", body = ResendOut),
        (status = 409, description = "The log's webhook has been deleted", body = ErrorOut),
    )
)]
async fn resend(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<ResendOut>), ApiError> {
    let id = parse_path_id::<DeliveryId>(&id, "log")?;
    let new_id = state.resend(auth.org_id, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ResendOut {
            id: new_id,
            resent_from: id,
        }),
    ))
}
