//! The web dashboard (SPEC §5): server-rendered pages served by the same binary, following
//! the provider page's steps: "Configure" → "Webhooks" with the "New webhook" form, the
//! list of webhooks, the "Security" section and the logs.
//!
//! Pages work without JavaScript; a small script only enhances them (Test URL inline, copy
//! the key). Every page is scoped to the signed-in user's organization: another
//! organization's ids answer 404. Every form carries the session's CSRF token and every
//! POST checks it.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::AppState;

// Each module uses only those listed before it.
mod error;
mod extract;
mod forms;
mod logs;
mod session;
mod views;
mod webhooks;

pub use error::PageError;
pub use session::{Session, SESSION_COOKIE};

const STYLESHEET: &str = include_str!("../../static/dashboard.css");
const SCRIPT: &str = include_str!("../../static/dashboard.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/webhooks") }))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route(
            "/account/password",
            get(session::password_page).post(session::change_password),
        )
        .route("/webhooks", get(webhooks::list_page).post(webhooks::create))
        .route("/webhooks/test-url", post(webhooks::test_url))
        .route(
            "/webhooks/signature-key/regenerate",
            get(webhooks::regenerate_confirm).post(webhooks::regenerate),
        )
        .route(
            "/webhooks/{webhook_id}",
            get(webhooks::detail_page).post(webhooks::update),
        )
        .route(
            "/webhooks/{webhook_id}/test-url",
            post(webhooks::test_url_for_webhook),
        )
        .route("/webhooks/{webhook_id}/recover", post(webhooks::recover))
        .route(
            "/webhooks/{webhook_id}/enabled",
            post(webhooks::set_enabled),
        )
        .route(
            "/webhooks/{webhook_id}/delete",
            get(webhooks::delete_confirm).post(webhooks::delete),
        )
        .route("/api-keys", post(webhooks::create_api_key))
        .route("/api-keys/{key_id}/delete", post(webhooks::delete_api_key))
        .route("/logs", get(logs::list_page))
        .route("/logs/{log_id}", get(logs::detail_page))
        .route("/logs/{log_id}/resend", post(logs::resend))
        .route("/static/dashboard.css", get(stylesheet))
        .route("/static/dashboard.js", get(script))
        .layer(axum::middleware::map_response(security_headers))
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Pages show the signature key and the organization's traffic: never cached, never
/// framed, and no script or style but the dashboard's own files.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let is_asset = headers
        .get(header::CACHE_CONTROL)
        .is_some_and(|v| v.as_bytes().starts_with(b"public"));
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}
