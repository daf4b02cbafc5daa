//! The REST API (SPEC §5): one router per resource under `/api/v1`, bearer-key auth, and
//! the provider's error shapes.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::delivery::{Dispatcher, KeyCache, Sender};
use crate::domain::destination::DestinationPolicy;
use crate::domain::ids::{DeliveryId, OrgId};
use crate::storage::Store;

pub mod api_keys;
pub mod auth;
pub mod connectors;
pub mod error;
pub mod idempotency;
pub mod limits;
pub mod logs;
pub mod openapi;
pub mod pagination;
pub mod recoveries;
pub mod stats;
pub mod webhooks;

use error::{ApiError, ErrorOut};

/// Largest API request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyCache>,
    /// For Test URL; deliveries go through the dispatcher's own.
    pub sender: Sender,
    /// This node's dispatcher, when it runs one: new deliveries are handed to it at once.
    pub dispatcher: Option<Dispatcher>,
    /// Which addresses webhook URLs may name (IP literals; names are checked when
    /// delivering).
    pub destinations: DestinationPolicy,
    pub key_usage: Arc<auth::KeyUsage>,
    pub limits: Arc<limits::RateLimits>,
    /// Whether `/metrics` answers here: not when `--metrics-listen` gives it a listener
    /// of its own (then it is not found here).
    pub metrics_here: bool,
    /// Wakes this node's recoveries task: a recovery was started here.
    pub recovering: Arc<tokio::sync::Notify>,
}

impl AppState {
    /// A new delivery of a logged delivery's body, started at once on this node.
    pub async fn resend(&self, org: OrgId, log: DeliveryId) -> Result<DeliveryId, ApiError> {
        let new_id = DeliveryId::new();
        let lease = self.dispatcher.as_ref().map(Dispatcher::lease_for_new);
        let job = self
            .store
            .resend(
                org,
                log,
                new_id,
                lease,
                crate::telemetry::traces::current_traceparent(),
            )
            .await?
            .ok_or(ApiError::NotFound("log"))?;
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.submit(vec![job]).await;
        }
        Ok(new_id)
    }

    /// Starts recovering the failed deliveries of `webhook` in `range` (or answers the
    /// recovery of that range already running), and wakes this node's recoveries task.
    pub async fn recover(
        &self,
        org: OrgId,
        webhook: crate::domain::ids::WebhookId,
        range: &crate::domain::recovery::RecoveryRange,
    ) -> Result<crate::domain::recovery::Recovery, ApiError> {
        let recovery = self.store.start_recovery(org, webhook, range).await?;
        self.recovering.notify_one();
        tracing::info!(recovery_id = %recovery.id, webhook_id = %webhook, org_id = %org, deliveries = recovery.deliveries, "recovery started");
        Ok(recovery)
    }
}

/// The API's routes with their documentation (see [`openapi`]): what both [`router`] and
/// the document are made of.
pub fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .nest("/api/v1", v1_routes())
        .merge(public_routes())
}

/// What answers without a key, outside `/api/v1`.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(metrics))
}

/// Everything under `/api/v1`.
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(webhooks::router())
        .merge(logs::router())
        .merge(connectors::router())
        .merge(recoveries::router())
        .merge(stats::router())
        .merge(api_keys::router())
        .routes(routes!(openapi::openapi_json))
}

pub fn router(state: &AppState) -> Router<AppState> {
    let (v1, _) = v1_routes().split_for_parts();
    let v1 = v1
        .fallback(|| async { ApiError::NotFound("resource") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::limit,
        ));
    let (public, _) = public_routes().split_for_parts();
    let track = axum::middleware::from_fn(crate::telemetry::metrics::track);
    // Inside `track`, where the matched route is known: each API call's span is named by
    // its route and is current while the handler runs.
    let v1 = match crate::telemetry::traces::exporting() {
        true => v1.route_layer(axum::middleware::from_fn(
            crate::telemetry::traces::around_request,
        )),
        false => v1,
    };
    Router::new()
        .nest("/api/v1", v1.route_layer(track.clone()))
        .merge(public.route_layer(track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// The answer of `/healthz`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthOut {
    /// `ok`, or `unavailable` once the store cannot write.
    #[schema(example = "ok")]
    status: &'static str,
    /// Why the store cannot write.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// 200 while the store can write; 503 with the reason while it cannot (until it can again,
/// or until the process stops when the write path is gone for good).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    security(()),
    responses(
        (status = 200, description = "The store can write", body = HealthOut),
        (status = 503, description = "The store cannot write; the process is stopping", body = HealthOut),
    )
)]
async fn health(State(state): State<AppState>) -> Response {
    match state.store.health().borrow().trouble() {
        None => Json(HealthOut {
            status: "ok",
            reason: None,
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthOut {
                status: "unavailable",
                reason: Some(reason.to_owned()),
            }),
        )
            .into_response(),
    }
}

/// The process's metrics in the Prometheus text format (see `telemetry::metrics`): no
/// key needed, and no organization's ids in them. With `--metrics-listen`, they are
/// served there instead, and not found here.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    security(()),
    responses(
        (status = 200, description = "Prometheus text format, version 0.0.4", body = String, content_type = "text/plain"),
        (status = 404, description = "Served on the `--metrics-listen` address instead", body = ErrorOut)
    )
)]
async fn metrics(State(state): State<AppState>) -> Response {
    if !state.metrics_here {
        return ApiError::NotFound("resource").into_response();
    }
    crate::telemetry::metrics::answer()
}

/// Parses an id from the path; a malformed one is simply not found.
pub fn parse_path_id<T: FromStr>(value: &str, what: &'static str) -> Result<T, ApiError> {
    value.parse().map_err(|_| ApiError::NotFound(what))
}

pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// The provider page's sample event (a sync start), addressed to `url`: what Test URL sends.
pub fn sample_payload(org_name: &str, url: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "webhook": {
            "webhook_id": "00000000-0000-0000-0000-000000000000",
            "url": url,
            "event": "connector_sync_started"
        },
        "connector": {
            "id": "018f99e2-ed3a-7f4c-ae97-83d619bdf95c",
            "display_name": "BreatheHR",
            "integration_slug": "breathehr",
            "categories": ["HRIS"],
            "org_name": org_name,
            "origin_id": "user_123",
            "connector_status": "COMPLETE",
            "end_user_name": "John Doe",
            "end_user_email": "abc@xyz.com"
        },
        "data": {
            "id": "018f99e7-886b-7c9f-a63a-f6fbc9da1f83",
            "integration_name": "breathehr",
            "initial_sync": true,
            "category": "HRIS",
            "display_status": "Syncing",
            "last_sync_start_time": "2024-07-22T09:49:30.478384+00:00"
        },
        "sync": {"sync_id": "018f99e7-886b-7c9f-a63a-f6fbc9da1f83", "sync_type": "MANUAL"}
    }))
    .expect("sample serializes")
}
