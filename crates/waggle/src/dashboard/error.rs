//! Why a page could not be shown, answered with an error page; and the two answers
//! every page handler gives otherwise (a page, a redirect).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::views;
use crate::api::error::ApiError;
use crate::storage::StoreError;

/// Why a page could not be shown; answered with an error page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("not found")]
    NotFound,
    /// A POST without the session's CSRF token.
    #[error("forbidden")]
    Forbidden,
    /// The store can no longer write; the process is stopping.
    #[error("storage unavailable")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            e if e.is_unavailable() => PageError::Unavailable,
            other => PageError::Internal(other.into()),
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        PageError::Internal(anyhow::anyhow!("rendering a template: {e}"))
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(_) => PageError::NotFound,
            ApiError::Unavailable => PageError::Unavailable,
            other => PageError::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match &self {
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or it belongs to another organization.",
            ),
            PageError::Forbidden => (
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form was not sent from this session. Go back, reload the page and try again.",
            ),
            PageError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The server cannot save changes right now and is restarting. Try again in a moment.",
            ),
            PageError::Internal(e) => {
                tracing::error!(error = ?e, "dashboard error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The server could not show this page. Try again in a moment.",
                )
            }
        };
        let page = views::ErrorPage {
            layout: views::Layout::bare(heading),
            heading,
            message,
        };
        match askama::Template::render(&page) {
            Ok(html) => (status, axum::response::Html(html)).into_response(),
            Err(_) => (status, heading).into_response(),
        }
    }
}

/// Renders a page template with a status.
pub(super) fn render(
    status: StatusCode,
    page: &impl askama::Template,
) -> Result<Response, PageError> {
    Ok((status, axum::response::Html(page.render()?)).into_response())
}

/// A 303 to another dashboard page, after a form did its work.
pub(super) fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}
