//! `/api/v1/webhooks/{webhook_id}/recover`: a new delivery, of the same body, for each
//! delivery of a webhook in a range of time that ended in an error, made in the background
//! (see `delivery::recover`), its progress readable.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::ApiAuth;
use super::error::{ApiError, FieldError, JsonBody};
use super::{parse_path_id, AppState};
use crate::domain::ids::{RecoveryId, WebhookId};
use crate::domain::recovery::{self, Recovery};
use crate::domain::time;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(recover))
        .routes(routes!(read))
}

/// The range of deliveries to recover, by when they were made.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"since": "2026-03-09T00:00:00Z", "until": "2026-03-10T00:00:00Z"}))]
pub struct RecoverIn {
    /// ISO 8601 (UTC when it has no offset); included.
    #[schema(format = DateTime)]
    since: String,
    /// ISO 8601; excluded. Defaults to now; at most 31 days after `since`.
    #[schema(format = DateTime)]
    until: Option<String>,
}

/// Makes anew every delivery of the webhook made in the range that ended in an error (an
/// HTTP status of 400 or more, or no answer) and was not resent or recovered since. Asked
/// again while it runs, the same range answers the same recovery.
#[utoipa::path(
    post,
    path = "/webhooks/{webhook_id}/recover",
    tag = "webhooks",
    operation_id = "recover_webhook",
    params(("webhook_id" = String, Path, format = Uuid)),
    request_body = RecoverIn,
    responses((status = 202, description = "The recovery, started: `deliveries` is how many it found", body = Recovery))
)]
async fn recover(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(webhook): Path<String>,
    JsonBody(body): JsonBody<RecoverIn>,
) -> Result<(StatusCode, Json<Recovery>), ApiError> {
    let webhook = parse_path_id::<WebhookId>(&webhook, "webhook")?;
    let range = recovery::parse_range(&body.since, body.until.as_deref(), time::now()).map_err(
        |problems| {
            ApiError::Validation(
                problems
                    .into_iter()
                    .map(|(field, invalid)| FieldError::new(&["body", field], invalid))
                    .collect(),
            )
        },
    )?;
    state
        .store
        .webhook(auth.org_id, webhook)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    let recovery = state.recover(auth.org_id, webhook, &range).await?;
    Ok((StatusCode::ACCEPTED, Json(recovery)))
}

#[utoipa::path(
    get,
    path = "/webhooks/{webhook_id}/recover/{recovery_id}",
    tag = "webhooks",
    operation_id = "get_recovery",
    params(
        ("webhook_id" = String, Path, format = Uuid),
        ("recovery_id" = String, Path, format = Uuid),
    ),
    responses((status = 200, description = "The recovery and how far it has come", body = Recovery))
)]
async fn read(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path((webhook, id)): Path<(String, String)>,
) -> Result<Json<Recovery>, ApiError> {
    let webhook = parse_path_id::<WebhookId>(&webhook, "webhook")?;
    let id = parse_path_id::<RecoveryId>(&id, "recovery")?;
    let recovery = state
        .store
        .recovery(auth.org_id, webhook, id)
        .await?
        .ok_or(ApiError::NotFound("recovery"))?;
    Ok(Json(recovery))
}
