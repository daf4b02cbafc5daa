//! The Webhooks page (the list, "New webhook", "Security" and "API keys") and each
//! webhook's own page (edit, enable/disable, delete, recover its failed deliveries, its
//! logs).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::{render, see_other, PageError};
use super::extract::{FormData, PathId};
use super::forms::{test_result, WebhookErrors, WebhookInput};
use super::session::{Posted, Session};
use super::views::{
    self, ApiKeyPage, ApiKeyRow, ChartView, ConfirmPage, LogList, RecoverView, WebhookFormView,
    WebhookPage, WebhookRow, WebhooksPage,
};
use crate::api::error::ApiError;
use crate::api::{self, AppState};
use crate::domain::destination::WebhookUrl;
use crate::domain::ids::{ApiKeyId, WebhookId};
use crate::domain::recovery;
use crate::domain::signature::{parse_grace, SignatureKey};
use crate::domain::time;
use crate::domain::webhook::{Webhook, WebhookChanges};
use crate::storage::LogFilter;

/// Webhooks listed per page.
const WEBHOOKS_PER_PAGE: u32 = 50;
/// Logs listed on a webhook's page.
const LOGS_PER_PAGE: u32 = 25;

fn new_form(input: &WebhookInput, errors: WebhookErrors) -> WebhookFormView {
    input.view(
        errors,
        "/webhooks".to_owned(),
        "/webhooks/test-url".to_owned(),
        "Create webhook",
    )
}

fn edit_form(id: WebhookId, input: &WebhookInput, errors: WebhookErrors) -> WebhookFormView {
    input.view(
        errors,
        format!("/webhooks/{id}"),
        format!("/webhooks/{id}/test-url"),
        "Save changes",
    )
}

fn status_for(form: &WebhookFormView) -> StatusCode {
    if form.has_errors() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    }
}

async fn webhooks_page(
    state: &AppState,
    session: &Session,
    form: WebhookFormView,
    query: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let after = query
        .get("after")
        .and_then(|c| api::pagination::decode::<WebhookId>(Some(c)).ok().flatten());
    let fetched = state
        .store
        .list_webhooks(session.org_id, None, after, WEBHOOKS_PER_PAGE + 1)
        .await?;
    let page = api::pagination::Page::from_fetched(fetched, WEBHOOKS_PER_PAGE, |w| w.webhook_id);
    let key = state.keys.get(session.org_id).await?;
    let api_keys = state.store.api_keys(session.org_id).await?;
    let notice = query.get("notice").map(String::as_str);
    let page = WebhooksPage {
        layout: session.layout("Webhooks", "webhooks", notice),
        csrf: session.csrf_token.clone(),
        webhooks: page.items.iter().map(WebhookRow::from).collect(),
        next_page: page.cursor.map(|c| format!("/webhooks?after={c}")),
        signature_key: key.current.expose().to_owned(),
        standard_secret: key.current.standard_secret(),
        retiring_until: key.retiring_until(time::now()).map(|t| views::when(&t)),
        key_open: notice == Some("key-regenerated"),
        form,
        api_keys: api_keys.iter().map(ApiKeyRow::from).collect(),
    };
    render(status_for(&page.form), &page)
}

pub async fn list_page(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let form = new_form(&WebhookInput::blank(), WebhookErrors::default());
    webhooks_page(&state, &session, form, &query).await
}

pub async fn create(
    State(state): State<AppState>,
    Posted { session, form }: Posted,
) -> Result<Response, PageError> {
    let input = WebhookInput::from_form(&form);
    match input.parse(&state.destinations) {
        Ok(new) => {
            let webhook = state
                .store
                .create_webhook(session.org_id, &new, None)
                .await?;
            tracing::info!(webhook_id = %webhook.webhook_id, org_id = %session.org_id, "webhook created in the dashboard");
            Ok(see_other("/webhooks?notice=created"))
        }
        Err(errors) => {
            let form = new_form(&input, *errors);
            webhooks_page(&state, &session, form, &HashMap::new()).await
        }
    }
}

/// Whether the caller is the page's script, which wants JSON rather than a page.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Sends the signed sample event to the form's URL (its CSRF token checked by [`Posted`]). Without JavaScript the answer is the
/// page again, with the typed values and the result under the URL field.
async fn run_test(
    state: &AppState,
    session: &Session,
    form: &FormData,
    headers: &HeaderMap,
) -> Result<Result<serde_json::Value, String>, PageError> {
    let url = form.get("url").unwrap_or("");
    Ok(match WebhookUrl::parse_syntax(url) {
        Ok(url) => {
            let org = state.keys.organization(session.org_id).await?;
            let sent = api::webhooks::send_test(state, &org, url.as_str()).await;
            tracing::info!(org_id = %session.org_id, json = wants_json(headers), "test URL sent from the dashboard");
            Ok(serde_json::to_value(sent).expect("a test result serializes"))
        }
        Err(invalid) => Err(invalid.message),
    })
}

fn test_json(result: Result<serde_json::Value, String>) -> Response {
    match result {
        Ok(mut sent) => {
            let view = test_result(&sent);
            sent["summary"] = json!(view.text);
            sent["outcome"] = json!(view.class);
            Json(sent).into_response()
        }
        Err(message) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "response_code": null, "error": "invalid_url", "message": message,
                "duration_ms": null, "summary": message, "outcome": "error"
            })),
        )
            .into_response(),
    }
}

fn with_test_result(
    mut view: WebhookFormView,
    result: Result<serde_json::Value, String>,
) -> WebhookFormView {
    match result {
        Ok(sent) => view.test = Some(test_result(&sent)),
        Err(message) => view.url_error = Some(message),
    }
    view
}

pub async fn test_url(
    State(state): State<AppState>,
    headers: HeaderMap,
    Posted { session, form }: Posted,
) -> Result<Response, PageError> {
    let result = run_test(&state, &session, &form, &headers).await?;
    if wants_json(&headers) {
        return Ok(test_json(result));
    }
    let input = WebhookInput::from_form(&form);
    let view = with_test_result(new_form(&input, WebhookErrors::default()), result);
    webhooks_page(&state, &session, view, &HashMap::new()).await
}

pub async fn test_url_for_webhook(
    State(state): State<AppState>,
    PathId(id): PathId<WebhookId>,
    headers: HeaderMap,
    Posted { session, form }: Posted,
) -> Result<Response, PageError> {
    let webhook = find(&state, &session, id).await?;
    let result = run_test(&state, &session, &form, &headers).await?;
    if wants_json(&headers) {
        return Ok(test_json(result));
    }
    let input = WebhookInput::from_form(&form);
    let view = with_test_result(
        edit_form(webhook.webhook_id, &input, WebhookErrors::default()),
        result,
    );
    webhook_page(&state, &session, &webhook, view, &HashMap::new()).await
}

/// The session's organization's webhook, or 404 (also for another organization's).
async fn find(state: &AppState, session: &Session, id: WebhookId) -> Result<Webhook, PageError> {
    state
        .store
        .webhook(session.org_id, id)
        .await?
        .ok_or(PageError::NotFound)
}

async fn webhook_page(
    state: &AppState,
    session: &Session,
    webhook: &Webhook,
    form: WebhookFormView,
    query: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let mut recover = RecoverView::blank();
    if let Some(id) = query.get("recovery").and_then(|id| id.parse().ok()) {
        let recovery = state
            .store
            .recovery(session.org_id, webhook.webhook_id, id)
            .await?;
        recover.progress = recovery.as_ref().map(RecoverView::progress_of);
    }
    recovery_page(state, session, webhook, form, recover, query).await
}

async fn recovery_page(
    state: &AppState,
    session: &Session,
    webhook: &Webhook,
    form: WebhookFormView,
    recover: RecoverView,
    query: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let cursor = query.get("cursor").map(String::as_str);
    let before = api::pagination::decode(cursor).unwrap_or(None);
    let filter = LogFilter {
        webhook_id: Some(webhook.webhook_id),
        before,
        limit: LOGS_PER_PAGE + 1,
        ..LogFilter::default()
    };
    let entries = state.store.list_logs(session.org_id, &filter).await?;
    let id = webhook.webhook_id;
    let logs = LogList::from_fetched(
        entries,
        LOGS_PER_PAGE,
        before.is_none(),
        |c| match c {
            Some(c) => format!("/webhooks/{id}?cursor={c}#logs"),
            None => format!("/webhooks/{id}#logs"),
        },
        false,
        "No deliveries to this webhook yet.",
    );
    let stats = state
        .store
        .stats(session.org_id, Some(webhook.webhook_id), time::now())
        .await?;
    let chart = stats
        .first()
        .map(ChartView::of)
        .ok_or(PageError::NotFound)?;
    let page = WebhookPage {
        layout: session.layout(
            webhook.name.clone(),
            "webhooks",
            query.get("notice").map(String::as_str),
        ),
        csrf: session.csrf_token.clone(),
        webhook: WebhookRow::from(webhook),
        logs,
        form,
        recover,
        chart,
    };
    let status = match page.recover.error {
        Some(_) => StatusCode::UNPROCESSABLE_ENTITY,
        None => status_for(&page.form),
    };
    render(status, &page)
}

pub async fn detail_page(
    State(state): State<AppState>,
    session: Session,
    PathId(id): PathId<WebhookId>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let webhook = find(&state, &session, id).await?;
    let form = edit_form(
        webhook.webhook_id,
        &WebhookInput::from_webhook(&webhook),
        WebhookErrors::default(),
    );
    webhook_page(&state, &session, &webhook, form, &query).await
}

pub async fn update(
    State(state): State<AppState>,
    PathId(id): PathId<WebhookId>,
    Posted { session, form }: Posted,
) -> Result<Response, PageError> {
    let webhook = find(&state, &session, id).await?;
    let input = WebhookInput::from_form(&form);
    match input.parse_changes(&state.destinations) {
        Ok(changes) => {
            state
                .store
                .update_webhook(session.org_id, webhook.webhook_id, &changes)
                .await?
                .ok_or(PageError::NotFound)?;
            Ok(see_other(&format!(
                "/webhooks/{}?notice=saved",
                webhook.webhook_id
            )))
        }
        Err(errors) => {
            let form = edit_form(webhook.webhook_id, &input, *errors);
            webhook_page(&state, &session, &webhook, form, &HashMap::new()).await
        }
    }
}

/// "Recover failed": starts a recovery of the range typed, then shows how it goes.
pub async fn recover(
    State(state): State<AppState>,
    PathId(id): PathId<WebhookId>,
    Posted { session, form }: Posted,
) -> Result<Response, PageError> {
    let webhook = find(&state, &session, id).await?;
    let (since, until) = (
        form.get("since").unwrap_or("").trim(),
        form.get("until").unwrap_or("").trim(),
    );
    let until = (!until.is_empty()).then_some(until);
    match recovery::parse_range(since, until, time::now()) {
        Ok(range) => {
            let recovery = state.recover(session.org_id, id, &range).await?;
            Ok(see_other(&format!(
                "/webhooks/{id}?recovery={}#recover",
                recovery.id
            )))
        }
        Err(problems) => {
            let recover = RecoverView {
                since: since.to_owned(),
                until: until.unwrap_or_default().to_owned(),
                error: Some(
                    problems
                        .into_iter()
                        .map(|(_, invalid)| invalid.message)
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                progress: None,
            };
            let form = edit_form(
                id,
                &WebhookInput::from_webhook(&webhook),
                WebhookErrors::default(),
            );
            recovery_page(&state, &session, &webhook, form, recover, &HashMap::new()).await
        }
    }
}

pub async fn set_enabled(
    State(state): State<AppState>,
    PathId(id): PathId<WebhookId>,
    Posted { session, form }: Posted,
) -> Result<Response, PageError> {
    let enable = form.get("is_enabled").and_then(api::parse_bool);
    let Some(enable) = enable else {
        return Err(PageError::Forbidden);
    };
    let changes = WebhookChanges {
        is_enabled: Some(enable),
        ..WebhookChanges::default()
    };
    state
        .store
        .update_webhook(session.org_id, id, &changes)
        .await?
        .ok_or(PageError::NotFound)?;
    let notice = if enable { "enabled" } else { "disabled" };
    Ok(see_other(&format!("/webhooks/{id}?notice={notice}")))
}

pub async fn delete_confirm(
    State(state): State<AppState>,
    session: Session,
    PathId(id): PathId<WebhookId>,
) -> Result<Response, PageError> {
    let webhook = find(&state, &session, id).await?;
    let page = ConfirmPage {
        layout: session.layout("Delete webhook", "webhooks", None),
        csrf: session.csrf_token.clone(),
        heading: format!("Delete the webhook “{}”?", webhook.name),
        paragraphs: vec![
            format!(
                "{} stops receiving events at once, and deliveries to it that are waiting for a retry are cancelled.",
                webhook.url
            ),
            "Its logs stay under Logs. This cannot be undone.".to_owned(),
        ],
        grace: false,
        action: format!("/webhooks/{}/delete", webhook.webhook_id),
        button: "Delete webhook",
        cancel: format!("/webhooks/{}", webhook.webhook_id),
    };
    render(StatusCode::OK, &page)
}

pub async fn delete(
    State(state): State<AppState>,
    PathId(id): PathId<WebhookId>,
    Posted { session, form: _ }: Posted,
) -> Result<Response, PageError> {
    if !state.store.delete_webhook(session.org_id, id).await? {
        return Err(PageError::NotFound);
    }
    tracing::info!(webhook_id = %id, org_id = %session.org_id, "webhook deleted in the dashboard");
    Ok(see_other("/webhooks?notice=deleted"))
}

pub async fn regenerate_confirm(session: Session) -> Result<Response, PageError> {
    let page = ConfirmPage {
        layout: session.layout("Regenerate signature key", "webhooks", None),
        csrf: session.csrf_token.clone(),
        heading: "Regenerate the signature key?".to_owned(),
        paragraphs: vec![
            "Every delivery from now on, retries included, is signed with the new key.".to_owned(),
            "Without a grace period, old signatures stop verifying at once: your receivers reject waggle's requests until they verify with the new key. With one, the webhook-signature header (Standard Webhooks) carries a signature with the old key too until the grace ends; X-Bindbee-Webhook-Signature uses the new key at once.".to_owned(),
        ],
        grace: true,
        action: "/webhooks/signature-key/regenerate".to_owned(),
        button: "Regenerate key",
        cancel: "/webhooks#security".to_owned(),
    };
    render(StatusCode::OK, &page)
}

pub async fn regenerate(
    State(state): State<AppState>,
    Posted { session, form }: Posted,
) -> Result<Response, PageError> {
    let Ok(grace) = parse_grace(form.get("grace_period").unwrap_or("0")) else {
        return Ok(see_other("/webhooks?notice=grace-invalid#security"));
    };
    state
        .keys
        .replace(session.org_id, SignatureKey::generate(), grace)
        .await?;
    tracing::info!(org_id = %session.org_id, grace = ?grace, "signature key regenerated in the dashboard");
    Ok(see_other("/webhooks?notice=key-regenerated#security"))
}

/// Makes an API key and shows it, this once.
pub async fn create_api_key(
    State(state): State<AppState>,
    Posted { session, form }: Posted,
) -> Result<Response, PageError> {
    let name = form.get("name").unwrap_or("");
    let (key, secret) = match api::api_keys::make(&state, session.org_id, name).await {
        Ok(made) => made,
        Err(ApiError::Validation(_)) => {
            return Ok(see_other("/webhooks?notice=api-key-name#api-keys"))
        }
        Err(e) => return Err(e.into()),
    };
    let page = ApiKeyPage {
        layout: session.layout("API key created", "webhooks", None),
        name: key.name,
        prefix: key.prefix,
        key: secret,
    };
    render(StatusCode::CREATED, &page)
}

pub async fn delete_api_key(
    State(state): State<AppState>,
    PathId(id): PathId<ApiKeyId>,
    Posted { session, .. }: Posted,
) -> Result<Response, PageError> {
    match api::api_keys::revoke(&state, session.org_id, id).await {
        Ok(()) => Ok(see_other("/webhooks?notice=api-key-deleted#api-keys")),
        Err(ApiError::Conflict(_)) => Ok(see_other("/webhooks?notice=last-api-key#api-keys")),
        Err(e) => Err(e.into()),
    }
}
