//! `/api/v1/connectors`: connectors, their syncs and data changes — the calls that make
//! events.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::ApiAuth;
use super::error::{ApiError, ErrorOut, JsonBody, Problems};
use super::idempotency::{Ignored, Once, Optional, Required};
use super::pagination::{self, Page};
use super::{parse_path_id, AppState};
use crate::delivery::fanout;
use crate::domain::connector::{
    self, Connector, ConnectorStatus, DisplayStatus, SyncError, SyncJob, SyncType,
};
use crate::domain::event::{Environment, EventType};
use crate::domain::ids::{ConnectorId, EventId, SyncId};
use crate::domain::payload::EventData;
use crate::domain::{time, Invalid};
use crate::storage::{ConnectorChanges, SyncChange};

/// The most record ids one data-change call may carry.
pub const MAX_CHANGED_IDS: usize = 10_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, update, remove))
        .routes(routes!(start_sync))
        .routes(routes!(read_sync))
        .routes(routes!(complete_sync))
        .routes(routes!(fail_sync))
        .routes(routes!(data_changed))
}

/// A new connector, linked to one end user's HR system in one environment.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "environment": "production", "display_name": "BreatheHR", "integration_slug": "breathehr",
    "categories": ["HRIS"], "origin_id": "user_123", "end_user_name": "John Doe",
    "end_user_email": "abc@xyz.com"
}))]
struct ConnectorIn {
    #[schema(value_type = Environment)]
    environment: String,
    #[schema(min_length = 1, max_length = 255)]
    display_name: String,
    #[schema(min_length = 1, max_length = 255)]
    integration_slug: String,
    #[schema(max_items = 20)]
    categories: Vec<String>,
    #[schema(min_length = 1, max_length = 255)]
    origin_id: String,
    #[schema(min_length = 1, max_length = 255)]
    end_user_name: String,
    /// An email address (`name@domain`).
    #[schema(max_length = 254)]
    end_user_email: String,
    /// Defaults to `COMPLETE`.
    #[schema(value_type = Option<ConnectorStatus>)]
    connector_status: Option<String>,
}

/// Changes to a connector: any of its fields but its environment.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"connector_status": "RELINK_NEEDED"}))]
struct ConnectorPatch {
    #[schema(min_length = 1, max_length = 255)]
    display_name: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    integration_slug: Option<String>,
    #[schema(max_items = 20)]
    categories: Option<Vec<String>>,
    #[schema(min_length = 1, max_length = 255)]
    origin_id: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    end_user_name: Option<String>,
    /// An email address (`name@domain`).
    #[schema(max_length = 254)]
    end_user_email: Option<String>,
    #[schema(value_type = Option<ConnectorStatus>)]
    connector_status: Option<String>,
}

#[utoipa::path(
    get,
    path = "/connectors",
    tag = "connectors",
    operation_id = "list_connectors",
    params(
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Default 20"),
        ("cursor" = Option<String>, Query, description = "The `cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page of connectors, oldest first", body = Page<Connector>)
    )
)]
async fn list(
    State(state): State<AppState>,
    auth: ApiAuth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Page<Connector>>, ApiError> {
    let page_size = pagination::page_size(query.get("page_size").map(String::as_str), 20, 100)?;
    let after = pagination::decode::<ConnectorId>(query.get("cursor").map(String::as_str))?;
    let items = state
        .store
        .list_connectors(auth.org_id, after, page_size + 1)
        .await?;
    Ok(Json(Page::from_fetched(items, page_size, |c| c.id)))
}

#[utoipa::path(
    post,
    path = "/connectors",
    tag = "connectors",
    operation_id = "create_connector",
    request_body = ConnectorIn,
    responses(
        (status = 201, description = "The connector made", body = Connector)
    )
)]
async fn create(
    State(state): State<AppState>,
    auth: ApiAuth,
    once: Once<Required<ConnectorIn>>,
) -> Result<Response, ApiError> {
    if let Some(earlier) = once.earlier(&state, auth.org_id).await? {
        return Ok(earlier);
    }
    let body = &once.body.0;
    let mut p = Problems::default();
    let environment = p.check(
        &["body", "environment"],
        Environment::parse(&body.environment),
    );
    let display_name = p.check(
        &["body", "display_name"],
        connector::parse_field(&body.display_name, "display_name"),
    );
    let integration_slug = p.check(
        &["body", "integration_slug"],
        connector::parse_field(&body.integration_slug, "integration_slug"),
    );
    let categories = p.check(
        &["body", "categories"],
        connector::parse_categories(&body.categories),
    );
    let origin_id = p.check(
        &["body", "origin_id"],
        connector::parse_field(&body.origin_id, "origin_id"),
    );
    let end_user_name = p.check(
        &["body", "end_user_name"],
        connector::parse_field(&body.end_user_name, "end_user_name"),
    );
    let end_user_email = p.check(
        &["body", "end_user_email"],
        connector::parse_email(&body.end_user_email),
    );
    let status = match &body.connector_status {
        Some(s) => p.check(&["body", "connector_status"], ConnectorStatus::parse(s)),
        None => Some(ConnectorStatus::Complete),
    };
    p.finish()?;
    let connector = Connector {
        id: ConnectorId::new(),
        org_id: auth.org_id,
        environment: environment.expect("checked"),
        display_name: display_name.expect("checked"),
        integration_slug: integration_slug.expect("checked"),
        categories: categories.expect("checked"),
        origin_id: origin_id.expect("checked"),
        connector_status: status.expect("checked"),
        end_user_name: end_user_name.expect("checked"),
        end_user_email: end_user_email.expect("checked"),
        created_at: time::now(),
    };
    let remember = once.remember(auth.org_id, StatusCode::CREATED, &connector);
    if let Err(e) = state
        .store
        .create_connector(&connector, remember.as_ref())
        .await
    {
        return once.refused(&state, auth.org_id, e).await;
    }
    Ok((StatusCode::CREATED, Json(connector)).into_response())
}

async fn find(state: &AppState, auth: ApiAuth, id: &str) -> Result<Connector, ApiError> {
    let id = parse_path_id::<ConnectorId>(id, "connector")?;
    state
        .store
        .connector(auth.org_id, id)
        .await?
        .ok_or(ApiError::NotFound("connector"))
}

#[utoipa::path(
    get,
    path = "/connectors/{connector_id}",
    tag = "connectors",
    operation_id = "get_connector",
    params(("connector_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The connector", body = Connector)
    )
)]
async fn read(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<Json<Connector>, ApiError> {
    Ok(Json(find(&state, auth, &id).await?))
}

#[utoipa::path(
    patch,
    path = "/connectors/{connector_id}",
    tag = "connectors",
    operation_id = "update_connector",
    params(("connector_id" = String, Path, format = Uuid)),
    request_body = ConnectorPatch,
    responses(
        (status = 200, description = "The connector as changed", body = Connector)
    )
)]
async fn update(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ConnectorPatch>,
) -> Result<Json<Connector>, ApiError> {
    let id = parse_path_id::<ConnectorId>(&id, "connector")?;
    let mut p = Problems::default();
    let text = |p: &mut Problems, value: &Option<String>, field: &str| {
        value
            .as_deref()
            .and_then(|v| p.check(&["body", field], connector::parse_field(v, field)))
    };
    let changes = ConnectorChanges {
        display_name: text(&mut p, &body.display_name, "display_name"),
        integration_slug: text(&mut p, &body.integration_slug, "integration_slug"),
        origin_id: text(&mut p, &body.origin_id, "origin_id"),
        end_user_name: text(&mut p, &body.end_user_name, "end_user_name"),
        end_user_email: body
            .end_user_email
            .as_deref()
            .and_then(|v| p.check(&["body", "end_user_email"], connector::parse_email(v))),
        categories: body
            .categories
            .as_deref()
            .and_then(|v| p.check(&["body", "categories"], connector::parse_categories(v))),
        connector_status: body
            .connector_status
            .as_deref()
            .and_then(|v| p.check(&["body", "connector_status"], ConnectorStatus::parse(v))),
    };
    p.finish()?;
    let connector = state
        .store
        .update_connector(auth.org_id, id, &changes)
        .await?
        .ok_or(ApiError::NotFound("connector"))?;
    Ok(Json(connector))
}

#[utoipa::path(
    delete,
    path = "/connectors/{connector_id}",
    tag = "connectors",
    operation_id = "delete_connector",
    params(("connector_id" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Deleted, with its sync jobs")
    )
)]
async fn remove(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path_id::<ConnectorId>(&id, "connector")?;
    if state.store.delete_connector(auth.org_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("connector"))
    }
}

/// How a sync starts.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"initial_sync": true, "sync_type": "AUTOMATED"}))]
struct SyncIn {
    /// Defaults to false.
    initial_sync: Option<bool>,
    /// Defaults to `MANUAL`.
    #[schema(value_type = Option<SyncType>)]
    sync_type: Option<String>,
}

#[utoipa::path(
    post,
    path = "/connectors/{connector_id}/syncs",
    tag = "connectors",
    operation_id = "start_sync",
    params(("connector_id" = String, Path, format = Uuid)),
    request_body(content = Option<SyncIn>, description = "Optional: an empty body (or `null`) starts a manual sync that is not the first"),
    responses(
        (status = 201, description = "The sync job; `connector_sync_started` is emitted", body = SyncJob)
    )
)]
async fn start_sync(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
    // The body is optional: an empty one (or `null`) starts a manual, non-initial sync.
    once: Once<Optional<SyncIn>>,
) -> Result<Response, ApiError> {
    if let Some(earlier) = once.earlier(&state, auth.org_id).await? {
        return Ok(earlier);
    }
    let connector = find(&state, auth, &id).await?;
    let body = &once.body.0;
    let sync_type = match &body.sync_type {
        Some(t) => SyncType::parse(t).map_err(|e| ApiError::field(&["body", "sync_type"], e))?,
        None => SyncType::Manual,
    };
    let job = SyncJob {
        id: SyncId::new(),
        connector_id: connector.id,
        initial_sync: body.initial_sync.unwrap_or(false),
        sync_type,
        display_status: DisplayStatus::Syncing,
        last_sync_start_time: time::now(),
        finished_at: None,
        error: None,
    };
    emit_sync(
        &state,
        auth,
        &connector,
        EventType::ConnectorSyncStarted,
        SyncChange::Started(job.clone()),
        (StatusCode::CREATED, job),
        &once,
    )
    .await
}

#[utoipa::path(
    get,
    path = "/connectors/{connector_id}/syncs/{sync_id}",
    tag = "connectors",
    operation_id = "get_sync",
    params(("connector_id" = String, Path, format = Uuid), ("sync_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The sync job", body = SyncJob)
    )
)]
async fn read_sync(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path((id, sync_id)): Path<(String, String)>,
) -> Result<Json<SyncJob>, ApiError> {
    let connector = find(&state, auth, &id).await?;
    Ok(Json(find_sync(&state, auth, &connector, &sync_id).await?))
}

async fn find_sync(
    state: &AppState,
    auth: ApiAuth,
    connector: &Connector,
    sync_id: &str,
) -> Result<SyncJob, ApiError> {
    let sync_id = parse_path_id::<SyncId>(sync_id, "sync job")?;
    state
        .store
        .sync_job(auth.org_id, connector.id, sync_id)
        .await?
        .ok_or(ApiError::NotFound("sync job"))
}

#[utoipa::path(
    post,
    path = "/connectors/{connector_id}/syncs/{sync_id}/complete",
    tag = "connectors",
    operation_id = "complete_sync",
    params(("connector_id" = String, Path, format = Uuid), ("sync_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The sync job, done; `connector_synced` is emitted", body = SyncJob),
        (status = 409, description = "The sync job has already finished", body = ErrorOut)
    )
)]
async fn complete_sync(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path((id, sync_id)): Path<(String, String)>,
    once: Once<Ignored>,
) -> Result<Response, ApiError> {
    if let Some(earlier) = once.earlier(&state, auth.org_id).await? {
        return Ok(earlier);
    }
    let connector = find(&state, auth, &id).await?;
    let mut job = find_sync(&state, auth, &connector, &sync_id).await?;
    ensure_syncing(&job)?;
    job.display_status = DisplayStatus::Done;
    job.finished_at = Some(time::now());
    emit_sync(
        &state,
        auth,
        &connector,
        EventType::ConnectorSynced,
        SyncChange::Finished(job.clone()),
        (StatusCode::OK, job),
        &once,
    )
    .await
}

/// Why a sync failed.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "The HR system refused the credentials", "detail": {"status": 401}}))]
struct FailIn {
    #[schema(min_length = 1, max_length = 2000)]
    message: String,
    /// Any JSON object; sent as the payload's `error.detail`.
    #[schema(value_type = Option<Object>)]
    detail: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/connectors/{connector_id}/syncs/{sync_id}/fail",
    tag = "connectors",
    operation_id = "fail_sync",
    params(("connector_id" = String, Path, format = Uuid), ("sync_id" = String, Path, format = Uuid)),
    request_body = FailIn,
    responses(
        (status = 200, description = "The sync job, failed; `connector_sync_error` is emitted", body = SyncJob),
        (status = 409, description = "The sync job has already finished", body = ErrorOut)
    )
)]
async fn fail_sync(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path((id, sync_id)): Path<(String, String)>,
    once: Once<Required<FailIn>>,
) -> Result<Response, ApiError> {
    if let Some(earlier) = once.earlier(&state, auth.org_id).await? {
        return Ok(earlier);
    }
    let body = &once.body.0;
    let connector = find(&state, auth, &id).await?;
    let message = crate::domain::parse_text(&body.message, 2000, "message")
        .map_err(|e| ApiError::field(&["body", "message"], e))?;
    let detail = body.detail.clone().unwrap_or_else(|| json!({}));
    if !detail.is_object() {
        return Err(ApiError::field(
            &["body", "detail"],
            Invalid::new("type_error.dict", "detail must be an object"),
        ));
    }
    let mut job = find_sync(&state, auth, &connector, &sync_id).await?;
    ensure_syncing(&job)?;
    let now = time::now();
    job.display_status = DisplayStatus::Failed;
    job.finished_at = Some(now);
    job.error = Some(SyncError {
        failed_at: now,
        message,
        detail,
    });
    emit_sync(
        &state,
        auth,
        &connector,
        EventType::ConnectorSyncError,
        SyncChange::Finished(job.clone()),
        (StatusCode::OK, job),
        &once,
    )
    .await
}

fn ensure_syncing(job: &SyncJob) -> Result<(), ApiError> {
    if job.display_status == DisplayStatus::Syncing {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "the sync job has already finished ({})",
            job.display_status.as_str()
        )))
    }
}

/// Emits a sync's event and answers `answer`, kept under the call's idempotency key.
async fn emit_sync<T>(
    state: &AppState,
    auth: ApiAuth,
    connector: &Connector,
    event_type: EventType,
    change: SyncChange,
    (status, job): (StatusCode, SyncJob),
    once: &Once<T>,
) -> Result<Response, ApiError> {
    let org = state.keys.organization(auth.org_id).await?;
    let answer = job.clone();
    let remember = once.remember_with(auth.org_id, status, move |_: &fanout::Emitted| {
        answer.clone()
    });
    let emitted = fanout::emit(
        state.store.as_ref(),
        state.dispatcher.as_ref(),
        &org,
        connector,
        change,
        vec![(event_type, EventData::Sync(job.clone()))],
        remember.as_deref(),
    )
    .await;
    match emitted {
        Ok(_) => Ok((status, Json(job)).into_response()),
        Err(e) => once.refused(state, auth.org_id, e).await,
    }
}

/// Records of one unified model that were created or modified.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"model": "employee", "ids": ["emp_1", "emp_2"]}))]
struct ChangesIn {
    /// The unified model's name: lowercase letters, digits and underscores.
    #[schema(pattern = "^[a-z0-9_]{1,64}$")]
    model: String,
    /// The affected records' ids.
    #[schema(min_items = 1, max_items = 10000)]
    ids: Vec<String>,
}

/// The events a data change emitted, and how many deliveries they make.
#[derive(Serialize, utoipa::ToSchema)]
struct ChangesOut {
    event_ids: Vec<EventId>,
    deliveries: usize,
}

#[utoipa::path(
    post,
    path = "/connectors/{connector_id}/changes",
    tag = "connectors",
    operation_id = "data_changed",
    params(("connector_id" = String, Path, format = Uuid)),
    request_body = ChangesIn,
    responses(
        (status = 202, description = "Emitted: `employee_data_changed` for the `employee` model, and `connector_data_modified` for every model", body = ChangesOut)
    )
)]
async fn data_changed(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
    once: Once<Required<ChangesIn>>,
) -> Result<Response, ApiError> {
    if let Some(earlier) = once.earlier(&state, auth.org_id).await? {
        return Ok(earlier);
    }
    let body = &once.body.0;
    let connector = find(&state, auth, &id).await?;
    let mut p = Problems::default();
    let model = p.check(&["body", "model"], parse_model(&body.model));
    let ids = p.check(&["body", "ids"], parse_ids(&body.ids));
    p.finish()?;
    let (model, ids) = (model.expect("checked"), ids.expect("checked"));
    let mut events = Vec::with_capacity(2);
    if model == "employee" {
        events.push((
            EventType::EmployeeDataChanged,
            EventData::Change {
                model: model.clone(),
                ids: ids.clone(),
            },
        ));
    }
    events.push((
        EventType::ConnectorDataModified,
        EventData::Change { model, ids },
    ));
    let org = state.keys.organization(auth.org_id).await?;
    let answer = |emitted: &fanout::Emitted| ChangesOut {
        event_ids: emitted.event_ids.clone(),
        deliveries: emitted.deliveries,
    };
    let remember = once.remember_with(auth.org_id, StatusCode::ACCEPTED, answer);
    let emitted = fanout::emit(
        state.store.as_ref(),
        state.dispatcher.as_ref(),
        &org,
        &connector,
        SyncChange::None,
        events,
        remember.as_deref(),
    )
    .await;
    match emitted {
        Ok(emitted) => Ok((StatusCode::ACCEPTED, Json(answer(&emitted))).into_response()),
        Err(e) => once.refused(&state, auth.org_id, e).await,
    }
}

/// A unified model's name: lowercase letters, digits and underscores, like `employee`.
fn parse_model(value: &str) -> Result<String, Invalid> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(Invalid::new(
            "value_error.model",
            "model must be 1-64 lowercase letters, digits or underscores, e.g. 'employee'",
        ));
    }
    Ok(value.to_owned())
}

fn parse_ids(ids: &[String]) -> Result<Vec<String>, Invalid> {
    if ids.is_empty() {
        return Err(Invalid::new(
            "value_error.list.min_items",
            "ids must list at least one record id",
        ));
    }
    if ids.len() > MAX_CHANGED_IDS {
        return Err(Invalid::new(
            "value_error.list.max_items",
            format!("at most {MAX_CHANGED_IDS} ids per call"),
        ));
    }
    ids.iter()
        .map(|id| crate::domain::parse_text(id, 255, "record id"))
        .collect()
}
