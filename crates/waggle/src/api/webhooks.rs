//! `/api/v1/webhooks`: configure webhooks, try a URL, read and regenerate the signature key.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::ApiAuth;
use super::error::{ApiError, JsonBody, Problems};
use super::idempotency::{Once, Required};
use super::pagination::{self, Page};
use super::{parse_path_id, AppState};
use crate::domain::attempt::AttemptResult;
use crate::domain::destination::{DestinationPolicy, WebhookUrl};
use crate::domain::event::{Environment, EventType};
use crate::domain::ids::WebhookId;
use crate::domain::retry::{self, RetryPolicyForm, RetryRules, RetrySchedule};
use crate::domain::signature::{parse_grace, SignatureKey, SigningKeys};
use crate::domain::time::{self, Timestamp};
use crate::domain::webhook::{self, NewWebhook, Webhook, WebhookChanges};
use crate::domain::Invalid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(test_url))
        .routes(routes!(signature_key))
        .routes(routes!(regenerate_signature_key))
        .routes(routes!(read, update, remove))
}

/// A new webhook. Fields are read as text and parsed into the domain's types, so that
/// every problem is named at once (422).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "url": "https://example.com/hooks",
    "name": "Employee data",
    "type": "production",
    "events": ["connector_sync_started", "connector_synced"]
}))]
pub struct WebhookIn {
    /// An http(s) URL; private, loopback and link-local destinations are refused unless
    /// the operator allows them.
    #[schema(format = "uri", max_length = 2048)]
    url: String,
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    /// The environment whose connectors' events this webhook receives.
    #[serde(rename = "type")]
    #[schema(value_type = Environment)]
    environment: String,
    /// The event types to send, at least one.
    #[schema(value_type = Vec<EventType>, min_items = 1, max_items = 50)]
    events: Vec<String>,
    /// Defaults to true.
    is_enabled: Option<bool>,
    /// Defaults to `"standard"`, the provider's rule.
    #[schema(value_type = Option<RetryPolicyForm>)]
    retry_policy: Option<serde_json::Value>,
    /// Statuses among 408, 425, 429, 500, 502, 503 and 504; defaults to none.
    #[schema(max_items = 7)]
    retry_on_status: Option<Vec<u16>>,
    /// Each connector's events in the order accepted; defaults to false.
    ordered: Option<bool>,
}

/// Changes to a webhook: any of its fields; those absent stay as they are.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Employee data (v2)", "is_enabled": false}))]
pub struct WebhookPatch {
    #[schema(format = "uri", max_length = 2048)]
    url: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    name: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = Option<Environment>)]
    environment: Option<String>,
    #[schema(value_type = Option<Vec<EventType>>, min_items = 1, max_items = 50)]
    events: Option<Vec<String>>,
    is_enabled: Option<bool>,
    #[schema(value_type = Option<RetryPolicyForm>)]
    retry_policy: Option<serde_json::Value>,
    #[schema(max_items = 7)]
    retry_on_status: Option<Vec<u16>>,
    ordered: Option<bool>,
}

impl WebhookIn {
    pub fn parse(&self, destinations: &DestinationPolicy) -> Result<NewWebhook, ApiError> {
        let mut p = Problems::default();
        let url = p.check(&["body", "url"], WebhookUrl::parse(&self.url, destinations));
        let name = p.check(&["body", "name"], webhook::parse_name(&self.name));
        let environment = p.check(&["body", "type"], Environment::parse(&self.environment));
        let events = p.check(&["body", "events"], EventType::parse_set(&self.events));
        let schedule = parse_retry_policy(&mut p, self.retry_policy.as_ref());
        let on_status = parse_retry_on_status(&mut p, self.retry_on_status.as_deref());
        p.finish()?;
        Ok(NewWebhook {
            url: url.expect("checked"),
            name: name.expect("checked"),
            environment: environment.expect("checked"),
            events: events.expect("checked"),
            is_enabled: self.is_enabled.unwrap_or(true),
            retry: RetryRules {
                schedule: schedule.unwrap_or_default(),
                on_status: on_status.unwrap_or_default(),
            },
            ordered: self.ordered.unwrap_or(false),
        })
    }
}

impl WebhookPatch {
    fn parse(&self, destinations: &DestinationPolicy) -> Result<WebhookChanges, ApiError> {
        let mut p = Problems::default();
        let changes = WebhookChanges {
            url: self
                .url
                .as_deref()
                .and_then(|u| p.check(&["body", "url"], WebhookUrl::parse(u, destinations))),
            name: self
                .name
                .as_deref()
                .and_then(|n| p.check(&["body", "name"], webhook::parse_name(n))),
            environment: self
                .environment
                .as_deref()
                .and_then(|t| p.check(&["body", "type"], Environment::parse(t))),
            events: self
                .events
                .as_deref()
                .and_then(|e| p.check(&["body", "events"], EventType::parse_set(e))),
            is_enabled: self.is_enabled,
            retry_policy: parse_retry_policy(&mut p, self.retry_policy.as_ref()),
            retry_on_status: parse_retry_on_status(&mut p, self.retry_on_status.as_deref()),
            ordered: self.ordered,
        };
        p.finish()?;
        Ok(changes)
    }
}

fn parse_retry_policy(
    p: &mut Problems,
    value: Option<&serde_json::Value>,
) -> Option<RetrySchedule> {
    p.check(&["body", "retry_policy"], RetrySchedule::parse(value?))
}

fn parse_retry_on_status(p: &mut Problems, statuses: Option<&[u16]>) -> Option<Vec<u16>> {
    p.check(
        &["body", "retry_on_status"],
        retry::parse_retry_on_status(statuses?),
    )
}

#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    operation_id = "list_webhooks",
    params(
        ("is_active" = Option<bool>, Query, description = "Only enabled (true) or disabled (false) webhooks"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Default 20"),
        ("cursor" = Option<String>, Query, description = "The `cursor` of the previous page"),
    ),
    responses((status = 200, description = "One page of webhooks, oldest first", body = Page<Webhook>))
)]
async fn list(
    State(state): State<AppState>,
    auth: ApiAuth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Page<Webhook>>, ApiError> {
    let page_size = pagination::page_size(query.get("page_size").map(String::as_str), 20, 100)?;
    let after = pagination::decode::<WebhookId>(query.get("cursor").map(String::as_str))?;
    let is_active = query
        .get("is_active")
        .map(|v| {
            super::parse_bool(v).ok_or_else(|| {
                ApiError::field(
                    &["query", "is_active"],
                    Invalid::new("type_error.bool", "is_active must be true or false"),
                )
            })
        })
        .transpose()?;
    let items = state
        .store
        .list_webhooks(auth.org_id, is_active, after, page_size + 1)
        .await?;
    Ok(Json(Page::from_fetched(items, page_size, |w| w.webhook_id)))
}

#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    operation_id = "create_webhook",
    request_body = WebhookIn,
    responses((status = 201, description = "The webhook made", body = Webhook))
)]
async fn create(
    State(state): State<AppState>,
    auth: ApiAuth,
    once: Once<Required<WebhookIn>>,
) -> Result<Response, ApiError> {
    if let Some(earlier) = once.earlier(&state, auth.org_id).await? {
        return Ok(earlier);
    }
    let new = once.body.0.parse(&state.destinations)?;
    let remember = once.remember_with(auth.org_id, StatusCode::CREATED, Webhook::clone);
    let webhook = match state
        .store
        .create_webhook(auth.org_id, &new, remember.as_deref())
        .await
    {
        Ok(webhook) => webhook,
        Err(e) => return once.refused(&state, auth.org_id, e).await,
    };
    tracing::info!(webhook_id = %webhook.webhook_id, org_id = %auth.org_id, "webhook created");
    Ok((StatusCode::CREATED, Json(webhook)).into_response())
}

#[utoipa::path(
    get,
    path = "/webhooks/{webhook_id}",
    tag = "webhooks",
    operation_id = "get_webhook",
    params(("webhook_id" = String, Path, format = Uuid)),
    responses((status = 200, description = "The webhook", body = Webhook))
)]
async fn read(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    let id = parse_path_id::<WebhookId>(&id, "webhook")?;
    let webhook = state
        .store
        .webhook(auth.org_id, id)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(Json(webhook))
}

#[utoipa::path(
    patch,
    path = "/webhooks/{webhook_id}",
    tag = "webhooks",
    operation_id = "update_webhook",
    params(("webhook_id" = String, Path, format = Uuid)),
    request_body = WebhookPatch,
    responses((status = 200, description = "The webhook as changed", body = Webhook))
)]
async fn update(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<WebhookPatch>,
) -> Result<Json<Webhook>, ApiError> {
    let id = parse_path_id::<WebhookId>(&id, "webhook")?;
    let changes = body.parse(&state.destinations)?;
    let webhook = state
        .store
        .update_webhook(auth.org_id, id, &changes)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(Json(webhook))
}

#[utoipa::path(
    delete,
    path = "/webhooks/{webhook_id}",
    tag = "webhooks",
    operation_id = "delete_webhook",
    params(("webhook_id" = String, Path, format = Uuid)),
    responses((status = 204, description = "Deleted; its pending deliveries are cancelled, its logs kept"))
)]
async fn remove(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path_id::<WebhookId>(&id, "webhook")?;
    if state.store.delete_webhook(auth.org_id, id).await? {
        tracing::info!(webhook_id = %id, org_id = %auth.org_id, "webhook deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("webhook"))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://example.com/hooks"}))]
struct TestUrlIn {
    #[schema(format = "uri", max_length = 2048)]
    url: String,
}

/// How a Test URL went: the status the URL answered, or why it could not.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TestUrlOut {
    pub response_code: Option<u16>,
    /// The failure category, when no answer came.
    pub error: Option<&'static str>,
    /// What failed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_ms: f64,
}

/// Sends one signed sample event to a URL, with no retry, and tells how it went.
#[utoipa::path(
    post,
    path = "/webhooks/test-url",
    tag = "webhooks",
    operation_id = "test_url",
    request_body = TestUrlIn,
    responses((status = 200, description = "How the URL answered the sample event", body = TestUrlOut))
)]
async fn test_url(
    State(state): State<AppState>,
    auth: ApiAuth,
    JsonBody(body): JsonBody<TestUrlIn>,
) -> Result<Json<TestUrlOut>, ApiError> {
    // A refused address is the outcome of the test (`destination_refused`), not invalid
    // input.
    let url =
        WebhookUrl::parse_syntax(&body.url).map_err(|e| ApiError::field(&["body", "url"], e))?;
    let org = state.keys.organization(auth.org_id).await?;
    Ok(Json(send_test(&state, &org, url.as_str()).await))
}

/// The sample event of the provider's page, addressed to `url` and signed with the
/// organization's key; shared with the dashboard's Test URL button.
pub async fn send_test(
    state: &AppState,
    org: &crate::storage::Organization,
    url: &str,
) -> TestUrlOut {
    let body = super::sample_payload(&org.name, url);
    let sent = state
        .sender
        .send(
            url,
            &format!("test_{}", uuid::Uuid::now_v7()),
            Bytes::from(body),
            &org.signing_keys(),
        )
        .await;
    let duration_ms = (sent.duration.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    match sent.result {
        AttemptResult::Response { status, .. } => TestUrlOut {
            response_code: Some(status),
            error: None,
            message: None,
            duration_ms,
        },
        AttemptResult::Failure { category, message } => TestUrlOut {
            response_code: None,
            error: Some(category.as_str()),
            message: Some(message),
            duration_ms,
        },
    }
}

/// The organization's signature key.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SignatureKeyOut {
    /// Signs every delivery: `X-Bindbee-Webhook-Signature` is the URL-safe base64 of
    /// HMAC-SHA256(this key as UTF-8, the body).
    #[schema(example = "whsk_…")]
    signature_key: String,
    /// The same key in the Standard Webhooks form (`whsec_` and the standard base64 of
    /// the key's UTF-8 bytes), for that specification's libraries: they check
    /// `webhook-signature`, which every delivery carries too.
    #[schema(example = "whsec_d2hza1/igKY=")]
    standard_webhooks_secret: String,
    /// While the key this one replaced still signs `webhook-signature` beside it (a
    /// regenerate with a `grace_period`): when it stops. `null` otherwise.
    #[serde(with = "time::serde_format::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    previous_key_expires_at: Option<Timestamp>,
}

impl SignatureKeyOut {
    fn of(keys: &SigningKeys) -> Self {
        Self {
            signature_key: keys.current.expose().to_owned(),
            standard_webhooks_secret: keys.current.standard_secret(),
            previous_key_expires_at: keys.retiring_until(time::now()),
        }
    }
}

/// How long the replaced key keeps signing `webhook-signature` beside the new one.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"grace_period": "24h"}))]
struct RegenerateIn {
    /// A duration such as `1h`, `24h` or `7d` (at most 7 days). Default `0`: the old key
    /// stops signing at once, as the provider's page says. `X-Bindbee-Webhook-Signature`
    /// always uses the new key.
    grace_period: Option<String>,
}

#[utoipa::path(
    get,
    path = "/webhooks/signature-key",
    tag = "webhooks",
    operation_id = "get_signature_key",
    responses((status = 200, description = "The organization's signature key", body = SignatureKeyOut))
)]
async fn signature_key(
    State(state): State<AppState>,
    auth: ApiAuth,
) -> Result<Json<SignatureKeyOut>, ApiError> {
    let key = state.keys.get(auth.org_id).await?;
    Ok(Json(SignatureKeyOut::of(&key)))
}

#[utoipa::path(
    post,
    path = "/webhooks/signature-key/regenerate",
    tag = "webhooks",
    operation_id = "regenerate_signature_key",
    request_body(content = Option<RegenerateIn>, description = "Optional: without a `grace_period` the old key stops signing at once"),
    responses((status = 200, description = "The new key; the old one signs nothing from now on, or only `webhook-signature` until `previous_key_expires_at`. With several nodes the answer comes a second after the key is stored, once no node signs with the old one", body = SignatureKeyOut))
)]
async fn regenerate_signature_key(
    State(state): State<AppState>,
    auth: ApiAuth,
    body: axum::body::Bytes,
) -> Result<Json<SignatureKeyOut>, ApiError> {
    let body: RegenerateIn = super::error::parse_optional_json(&body)?;
    let grace = match &body.grace_period {
        Some(grace) => parse_grace(grace).map_err(|e| {
            ApiError::field(
                &["body", "grace_period"],
                Invalid::new("value_error.duration", e),
            )
        })?,
        None => Duration::ZERO,
    };
    let key = SignatureKey::generate();
    let retiring = state.keys.replace(auth.org_id, key.clone(), grace).await?;
    tracing::info!(org_id = %auth.org_id, grace = ?grace, "signature key regenerated");
    Ok(Json(SignatureKeyOut::of(&SigningKeys {
        current: key,
        retiring,
    })))
}
