//! `/api/v1/api-keys`: an organization manages its own API keys. A key's secret is shown
//! once, when it is made; lists show its name and first characters. A deleted key is
//! refused at once, and the last key cannot be deleted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{issue_key, ApiAuth};
use super::error::{ApiError, ErrorOut, JsonBody, Problems};
use super::{parse_path_id, AppState};
use crate::domain::ids::{ApiKeyId, OrgId};
use crate::domain::parse_text;
use crate::domain::time::{self, Timestamp};
use crate::storage::ApiKey;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(remove))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "CI deploys"}))]
pub struct ApiKeyIn {
    #[schema(min_length = 1, max_length = 255)]
    name: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyOut {
    id: ApiKeyId,
    name: String,
    /// The key's first characters, to tell keys apart.
    #[schema(example = "wgl_AbCdEfGh")]
    prefix: String,
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[serde(with = "time::serde_format::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    last_used_at: Option<Timestamp>,
    /// Only in the answer that made the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl From<ApiKey> for ApiKeyOut {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            key: None,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    items: Vec<ApiKeyOut>,
}

#[utoipa::path(
    get,
    path = "/api-keys",
    tag = "api-keys",
    operation_id = "list_api_keys",
    responses((status = 200, description = "The organization's keys, oldest first; never a secret", body = ApiKeyList))
)]
async fn list(State(state): State<AppState>, auth: ApiAuth) -> Result<Json<ApiKeyList>, ApiError> {
    let keys = state.store.api_keys(auth.org_id).await?;
    Ok(Json(ApiKeyList {
        items: keys.into_iter().map(ApiKeyOut::from).collect(),
    }))
}

/// A new key named `name`, for the organization of `org`; its secret comes back once.
pub async fn make(state: &AppState, org: OrgId, name: &str) -> Result<(ApiKey, String), ApiError> {
    let mut p = Problems::default();
    let name = p.check(&["body", "name"], parse_text(name, 255, "name"));
    p.finish()?;
    let issued = issue_key(&name.expect("checked"));
    let key = state.store.create_api_key(org, &issued.stored).await?;
    tracing::info!(org_id = %org, api_key_id = %key.id, "API key created");
    Ok((key, issued.secret))
}

#[utoipa::path(
    post,
    path = "/api-keys",
    tag = "api-keys",
    operation_id = "create_api_key",
    request_body = ApiKeyIn,
    responses((status = 201, description = "The key made, with its secret `key`, shown this once", body = ApiKeyOut))
)]
async fn create(
    State(state): State<AppState>,
    auth: ApiAuth,
    JsonBody(body): JsonBody<ApiKeyIn>,
) -> Result<(StatusCode, Json<ApiKeyOut>), ApiError> {
    let (key, secret) = make(&state, auth.org_id, &body.name).await?;
    let mut out = ApiKeyOut::from(key);
    out.key = Some(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

/// Deletes one of the organization's keys, refused from then on (see [`ApiAuth`]).
pub async fn revoke(state: &AppState, org: OrgId, id: ApiKeyId) -> Result<(), ApiError> {
    if !state.store.delete_api_key(org, id).await? {
        return Err(ApiError::NotFound("API key"));
    }
    state.key_usage.forget(id);
    tracing::info!(org_id = %org, api_key_id = %id, "API key deleted");
    Ok(())
}

#[utoipa::path(
    delete,
    path = "/api-keys/{key_id}",
    tag = "api-keys",
    operation_id = "delete_api_key",
    params(("key_id" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Deleted; the key is refused from now on, on every node"),
        (status = 409, description = "The organization's last key cannot be deleted", body = ErrorOut),
    )
)]
async fn remove(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path_id::<ApiKeyId>(&id, "API key")?;
    revoke(&state, auth.org_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
