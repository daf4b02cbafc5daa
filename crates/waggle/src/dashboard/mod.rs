//! The web dashboard: server-rendered pages served by the same binary.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

use crate::api::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/",
        get(|| async {
            Html("<!doctype html><title>waggle</title><h1>waggle</h1><p>The API is at /api/v1.</p>")
        }),
    )
}
