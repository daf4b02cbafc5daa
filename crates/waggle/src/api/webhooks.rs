//! `/api/v1/webhooks`: configure webhooks, try a URL, read and regenerate the signature key.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::ApiAuth;
use super::error::{ApiError, JsonBody, Problems};
use super::pagination::{self, Page};
use super::{parse_path_id, AppState};
use crate::domain::attempt::AttemptResult;
use crate::domain::destination::WebhookUrl;
use crate::domain::event::{Environment, EventType};
use crate::domain::ids::WebhookId;
use crate::domain::signature::SignatureKey;
use crate::domain::webhook::{self, NewWebhook, Webhook, WebhookChanges};
use crate::domain::Invalid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/test-url", post(test_url))
        .route("/webhooks/signature-key", get(signature_key))
        .route(
            "/webhooks/signature-key/regenerate",
            post(regenerate_signature_key),
        )
        .route(
            "/webhooks/{webhook_id}",
            get(read).patch(update).delete(remove),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    url: String,
    name: String,
    #[serde(rename = "type")]
    environment: String,
    events: Vec<String>,
    is_enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    url: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    environment: Option<String>,
    events: Option<Vec<String>>,
    is_enabled: Option<bool>,
}

impl WebhookIn {
    pub fn parse(&self, allow_private: bool) -> Result<NewWebhook, ApiError> {
        let mut p = Problems::default();
        let url = p.check(
            &["body", "url"],
            WebhookUrl::parse(&self.url, allow_private),
        );
        let name = p.check(&["body", "name"], webhook::parse_name(&self.name));
        let environment = p.check(&["body", "type"], Environment::parse(&self.environment));
        let events = p.check(&["body", "events"], EventType::parse_set(&self.events));
        p.finish()?;
        Ok(NewWebhook {
            url: url.expect("checked"),
            name: name.expect("checked"),
            environment: environment.expect("checked"),
            events: events.expect("checked"),
            is_enabled: self.is_enabled.unwrap_or(true),
        })
    }
}

impl WebhookPatch {
    fn parse(&self, allow_private: bool) -> Result<WebhookChanges, ApiError> {
        let mut p = Problems::default();
        let changes = WebhookChanges {
            url: self
                .url
                .as_deref()
                .and_then(|u| p.check(&["body", "url"], WebhookUrl::parse(u, allow_private))),
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
        };
        p.finish()?;
        Ok(changes)
    }
}

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

async fn create(
    State(state): State<AppState>,
    auth: ApiAuth,
    JsonBody(body): JsonBody<WebhookIn>,
) -> Result<(StatusCode, Json<Webhook>), ApiError> {
    let new = body.parse(state.allow_private_destinations)?;
    let webhook = state.store.create_webhook(auth.org_id, &new).await?;
    tracing::info!(webhook_id = %webhook.webhook_id, org_id = %auth.org_id, "webhook created");
    Ok((StatusCode::CREATED, Json(webhook)))
}

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

async fn update(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<WebhookPatch>,
) -> Result<Json<Webhook>, ApiError> {
    let id = parse_path_id::<WebhookId>(&id, "webhook")?;
    let changes = body.parse(state.allow_private_destinations)?;
    let webhook = state
        .store
        .update_webhook(auth.org_id, id, &changes)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(Json(webhook))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestUrlIn {
    url: String,
}

/// Sends one signed sample event to a URL, with no retry, and tells how it went.
async fn test_url(
    State(state): State<AppState>,
    auth: ApiAuth,
    JsonBody(body): JsonBody<TestUrlIn>,
) -> Result<Json<Value>, ApiError> {
    let url = WebhookUrl::parse(&body.url, state.allow_private_destinations)
        .map_err(|e| ApiError::field(&["body", "url"], e))?;
    let org = state.keys.organization(auth.org_id).await?;
    Ok(Json(send_test(&state, &org, url.as_str()).await))
}

/// The sample event of the provider's page, addressed to `url` and signed with the
/// organization's key; shared with the dashboard's Test URL button.
pub async fn send_test(state: &AppState, org: &crate::storage::Organization, url: &str) -> Value {
    let body = super::sample_payload(&org.name, url);
    let sent = state
        .sender
        .send(
            url,
            &format!("test_{}", uuid::Uuid::now_v7()),
            Bytes::from(body),
            &org.signature_key,
        )
        .await;
    let duration_ms = (sent.duration.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    match sent.result {
        AttemptResult::Response { status, .. } => {
            json!({"response_code": status, "error": null, "duration_ms": duration_ms})
        }
        AttemptResult::Failure { category, message } => json!({
            "response_code": null, "error": category.as_str(), "message": message, "duration_ms": duration_ms
        }),
    }
}

async fn signature_key(
    State(state): State<AppState>,
    auth: ApiAuth,
) -> Result<Json<Value>, ApiError> {
    let key = state.keys.get(auth.org_id).await?;
    Ok(Json(json!({ "signature_key": key.expose() })))
}

async fn regenerate_signature_key(
    State(state): State<AppState>,
    auth: ApiAuth,
) -> Result<Json<Value>, ApiError> {
    let key = SignatureKey::generate();
    state.keys.replace(auth.org_id, key.clone()).await?;
    tracing::info!(org_id = %auth.org_id, "signature key regenerated");
    Ok(Json(json!({ "signature_key": key.expose() })))
}
