//! `/api/v1/api-keys`: an organization manages its own API keys. A key's secret is shown
//! once, when it is made; lists show its name and first characters. A deleted key is
//! refused at once, and the last key cannot be deleted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{issue_key, ApiAuth};
use super::error::{ApiError, JsonBody, Problems};
use super::{parse_path_id, AppState};
use crate::domain::ids::{ApiKeyId, OrgId};
use crate::domain::parse_text;
use crate::domain::time::{self, Timestamp};
use crate::storage::ApiKey;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list).post(create))
        .route("/api-keys/{key_id}", delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIn {
    name: String,
}

#[derive(Serialize)]
pub struct ApiKeyOut {
    id: ApiKeyId,
    name: String,
    prefix: String,
    #[serde(with = "time::serde_format")]
    created_at: Timestamp,
    #[serde(with = "time::serde_format::option")]
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

#[derive(Serialize)]
pub struct ApiKeyList {
    items: Vec<ApiKeyOut>,
}

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

async fn remove(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path_id::<ApiKeyId>(&id, "API key")?;
    revoke(&state, auth.org_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
