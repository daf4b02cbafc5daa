//! The Logs page (every delivery, newest first, with the API's filters and cursor), a
//! delivery's page with its attempts, and Resend.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::error::{render, see_other, PageError};
use super::extract::PathId;
use super::session::{Posted, Session};
use super::views::{
    self, AttemptView, FilterOption, LogFilters, LogList, LogPage, LogRow, LogsPage,
};
use crate::api::error::ApiError;
use crate::api::{self, AppState};
use crate::domain::event::EventType;
use crate::domain::ids::DeliveryId;

/// The query fields of the filter form, the names of the API's `GET /webhooks/logs`.
const FILTER_FIELDS: [&str; 6] = [
    "webhook_id",
    "webhook_action",
    "response_code",
    "errors_only",
    "created_at_from",
    "created_at_to",
];

pub async fn list_page(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    // The form's fields left empty filter on nothing.
    let filled: HashMap<String, String> = query
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (entries, page_size, errors) = match api::logs::parse_filter(&filled) {
        Ok(mut filter) => {
            let page_size = filter.limit;
            filter.limit += 1;
            let entries = state.store.list_logs(session.org_id, &filter).await?;
            (entries, page_size, Vec::new())
        }
        Err(ApiError::Validation(problems)) => {
            let errors = problems
                .into_iter()
                .map(|p| (p.loc.last().cloned().unwrap_or_default(), p.msg))
                .collect();
            (Vec::new(), 0, errors)
        }
        Err(other) => return Err(other.into()),
    };
    let first_page = query.get("cursor").is_none_or(|c| c.is_empty());
    let logs = LogList::from_fetched(
        entries,
        page_size,
        first_page,
        |cursor| page_link(&query, cursor),
        true,
        if errors.is_empty() {
            "No deliveries match."
        } else {
            "Fix the filters to see deliveries."
        },
    );
    let filters = filter_form(&state, &session, &query, errors).await?;
    let status = if filters.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = LogsPage {
        layout: session.layout("Logs", "logs", None),
        filters,
        logs,
    };
    render(status, &page)
}

/// The logs URL with these filters and another cursor.
fn page_link(query: &HashMap<String, String>, cursor: Option<&str>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for field in FILTER_FIELDS {
        if let Some(value) = query.get(field).filter(|v| !v.is_empty()) {
            out.append_pair(field, value);
        }
    }
    if let Some(cursor) = cursor {
        out.append_pair("cursor", cursor);
    }
    let query = out.finish();
    if query.is_empty() {
        "/logs".to_owned()
    } else {
        format!("/logs?{query}")
    }
}

async fn filter_form(
    state: &AppState,
    session: &Session,
    query: &HashMap<String, String>,
    errors: Vec<(String, String)>,
) -> Result<LogFilters, PageError> {
    let get = |k: &str| {
        query
            .get(k)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let chosen_webhook = get("webhook_id");
    let chosen_event = get("webhook_action");
    let hooks = state
        .store
        .list_webhooks(session.org_id, None, None, 100)
        .await?;
    let mut webhooks: Vec<FilterOption> = hooks
        .iter()
        .map(|w| FilterOption {
            value: w.webhook_id.to_string(),
            label: w.name.clone(),
            selected: w.webhook_id.to_string() == chosen_webhook,
        })
        .collect();
    if !chosen_webhook.is_empty() && !webhooks.iter().any(|w| w.selected) {
        webhooks.push(FilterOption {
            value: chosen_webhook.clone(),
            label: "(deleted webhook)".to_owned(),
            selected: true,
        });
    }
    Ok(LogFilters {
        webhooks,
        events: EventType::ALL
            .into_iter()
            .map(|t| FilterOption {
                value: t.as_str().to_owned(),
                label: t.label().to_owned(),
                selected: t.as_str() == chosen_event,
            })
            .collect(),
        response_code: get("response_code"),
        errors_only: api::parse_bool(&get("errors_only")).unwrap_or(false),
        created_at_from: get("created_at_from"),
        created_at_to: get("created_at_to"),
        errors,
    })
}

pub async fn detail_page(
    State(state): State<AppState>,
    session: Session,
    PathId(id): PathId<DeliveryId>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let detail = state
        .store
        .log(session.org_id, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let entry = &detail.entry;
    let page = LogPage {
        layout: session.layout(
            format!("Delivery {}", entry.event_type.label()),
            "logs",
            query.get("notice").map(String::as_str),
        ),
        csrf: session.csrf_token.clone(),
        log: LogRow::from(entry),
        url: entry.url.clone(),
        webhook_id: entry.webhook_id.to_string(),
        connector: entry.connector_id.to_string(),
        body: views::pretty_body(&detail.body),
        attempts: detail.attempts.iter().map(AttemptView::from).collect(),
    };
    render(StatusCode::OK, &page)
}

pub async fn resend(
    State(state): State<AppState>,
    PathId(id): PathId<DeliveryId>,
    Posted { session, form: _ }: Posted,
) -> Result<Response, PageError> {
    let new_id = state.resend(session.org_id, id).await?;
    tracing::info!(org_id = %session.org_id, resent_from = %id, delivery_id = %new_id, "delivery resent from the dashboard");
    Ok(see_other(&format!("/logs/{new_id}?notice=resent")))
}
