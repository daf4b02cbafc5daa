//! `/api/v1/connectors`: connectors, their syncs and data changes — the calls that make
//! events.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::ApiAuth;
use super::error::{ApiError, JsonBody, Problems};
use super::pagination::{self, Page};
use super::{parse_path_id, AppState};
use crate::delivery::fanout;
use crate::domain::connector::{
    self, Connector, ConnectorStatus, DisplayStatus, SyncError, SyncJob, SyncType,
};
use crate::domain::event::{Environment, EventType};
use crate::domain::ids::{ConnectorId, SyncId};
use crate::domain::payload::EventData;
use crate::domain::{time, Invalid};
use crate::storage::{ConnectorChanges, SyncChange};

/// The most record ids one data-change call may carry.
pub const MAX_CHANGED_IDS: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/connectors", get(list).post(create))
        .route(
            "/connectors/{connector_id}",
            get(read).patch(update).delete(remove),
        )
        .route("/connectors/{connector_id}/syncs", post(start_sync))
        .route("/connectors/{connector_id}/syncs/{sync_id}", get(read_sync))
        .route(
            "/connectors/{connector_id}/syncs/{sync_id}/complete",
            post(complete_sync),
        )
        .route(
            "/connectors/{connector_id}/syncs/{sync_id}/fail",
            post(fail_sync),
        )
        .route("/connectors/{connector_id}/changes", post(data_changed))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectorIn {
    environment: String,
    display_name: String,
    integration_slug: String,
    categories: Vec<String>,
    origin_id: String,
    end_user_name: String,
    end_user_email: String,
    connector_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectorPatch {
    display_name: Option<String>,
    integration_slug: Option<String>,
    categories: Option<Vec<String>>,
    origin_id: Option<String>,
    end_user_name: Option<String>,
    end_user_email: Option<String>,
    connector_status: Option<String>,
}

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

async fn create(
    State(state): State<AppState>,
    auth: ApiAuth,
    JsonBody(body): JsonBody<ConnectorIn>,
) -> Result<(StatusCode, Json<Connector>), ApiError> {
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
    state.store.create_connector(&connector).await?;
    Ok((StatusCode::CREATED, Json(connector)))
}

async fn find(state: &AppState, auth: ApiAuth, id: &str) -> Result<Connector, ApiError> {
    let id = parse_path_id::<ConnectorId>(id, "connector")?;
    state
        .store
        .connector(auth.org_id, id)
        .await?
        .ok_or(ApiError::NotFound("connector"))
}

async fn read(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
) -> Result<Json<Connector>, ApiError> {
    Ok(Json(find(&state, auth, &id).await?))
}

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SyncIn {
    initial_sync: Option<bool>,
    sync_type: Option<String>,
}

async fn start_sync(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<SyncJob>), ApiError> {
    let connector = find(&state, auth, &id).await?;
    // The body is optional: an empty one starts a manual, non-initial sync.
    let body: SyncIn = if body.iter().all(u8::is_ascii_whitespace) {
        SyncIn::default()
    } else {
        super::error::parse_json(&body)?
    };
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
        &job,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(job)))
}

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

async fn complete_sync(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path((id, sync_id)): Path<(String, String)>,
) -> Result<Json<SyncJob>, ApiError> {
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
        &job,
    )
    .await?;
    Ok(Json(job))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailIn {
    message: String,
    detail: Option<Value>,
}

async fn fail_sync(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path((id, sync_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<FailIn>,
) -> Result<Json<SyncJob>, ApiError> {
    let connector = find(&state, auth, &id).await?;
    let message = crate::domain::parse_text(&body.message, 2000, "message")
        .map_err(|e| ApiError::field(&["body", "message"], e))?;
    let detail = body.detail.unwrap_or_else(|| json!({}));
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
        &job,
    )
    .await?;
    Ok(Json(job))
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

async fn emit_sync(
    state: &AppState,
    auth: ApiAuth,
    connector: &Connector,
    event_type: EventType,
    change: SyncChange,
    job: &SyncJob,
) -> Result<(), ApiError> {
    let org = state.keys.organization(auth.org_id).await?;
    fanout::emit(
        state.store.as_ref(),
        state.dispatcher.as_ref(),
        &org,
        connector,
        change,
        vec![(event_type, EventData::Sync(job.clone()))],
    )
    .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesIn {
    model: String,
    ids: Vec<String>,
}

async fn data_changed(
    State(state): State<AppState>,
    auth: ApiAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ChangesIn>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let emitted = fanout::emit(
        state.store.as_ref(),
        state.dispatcher.as_ref(),
        &org,
        &connector,
        SyncChange::None,
        events,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "event_ids": emitted.event_ids, "deliveries": emitted.deliveries })),
    ))
}

/// A unified model's name: lowercase letters, digits and underscores, like `employee`.
fn parse_model(value: &str) -> Result<String, Invalid> {
    let value = value.trim();
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
