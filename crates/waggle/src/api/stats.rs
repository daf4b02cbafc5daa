//! `/api/v1/stats`: each webhook's deliveries, success rate and latency over the last
//! hour and day, for the organization of the key (no other organization's figures, and
//! no organization's ids in `/metrics`).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::ApiAuth;
use super::error::{ApiError, ErrorOut};
use super::AppState;
use crate::domain::ids::WebhookId;
use crate::domain::stats::WebhookStats;
use crate::domain::time::{self, Timestamp};
use crate::domain::Invalid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stats))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatsOut {
    /// The moment the figures are of: the last hour and day end here.
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    generated_at: Timestamp,
    /// Every webhook of the organization (or the one asked for), oldest first.
    webhooks: Vec<WebhookStats>,
}

/// Figures of the deliveries made in the last hour and the last day, by webhook: how many,
/// how many ended with a 2xx, the success rate of those that ended, and the receiver's
/// p50 and p99 answer times; with the last 24 hours one by one.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "stats",
    operation_id = "get_stats",
    params(("webhook_id" = Option<String>, Query, format = Uuid, description = "Only this webhook")),
    responses(
        (status = 200, description = "The figures of each webhook", body = StatsOut),
        (status = 404, description = "The organization has no webhook of that id", body = ErrorOut),
    )
)]
async fn stats(
    State(state): State<AppState>,
    auth: ApiAuth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<StatsOut>, ApiError> {
    let webhook = query
        .get("webhook_id")
        .map(|id| {
            id.parse::<WebhookId>().map_err(|_| {
                ApiError::field(
                    &["query", "webhook_id"],
                    Invalid::new("type_error.uuid", "webhook_id is not a webhook id"),
                )
            })
        })
        .transpose()?;
    let now = time::now();
    let webhooks = state.store.stats(auth.org_id, webhook, now).await?;
    if webhook.is_some() && webhooks.is_empty() {
        return Err(ApiError::NotFound("webhook"));
    }
    Ok(Json(StatsOut {
        generated_at: now,
        webhooks,
    }))
}
