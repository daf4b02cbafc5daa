//! Cursor pagination: a cursor is the opaque (URL-safe base64) id of the last item of the
//! previous page; ids are UUIDv7, so pages follow creation order.

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use super::error::ApiError;
use crate::domain::Invalid;

/// One page of a list: `{"cursor", "page_size", "items"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// Pass it back to get the next page; `null` on the last page.
    pub cursor: Option<String>,
    pub page_size: u32,
    pub items: Vec<T>,
}

impl<T> Page<T> {
    /// Builds a page from up to `page_size + 1` fetched items: the extra one only tells
    /// that another page exists.
    pub fn from_fetched<I: ToString>(
        mut items: Vec<T>,
        page_size: u32,
        id: impl Fn(&T) -> I,
    ) -> Self {
        let more = items.len() > page_size as usize;
        items.truncate(page_size as usize);
        let cursor = more
            .then(|| items.last().map(|last| encode(&id(last).to_string())))
            .flatten();
        Self {
            cursor,
            page_size,
            items,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            cursor: self.cursor,
            page_size: self.page_size,
            items: self.items.into_iter().map(f).collect(),
        }
    }
}

pub fn encode(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// Decodes a cursor back into the id it carries.
pub fn decode<T: FromStr>(cursor: Option<&str>) -> Result<Option<T>, ApiError> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::field(
                &["query", "cursor"],
                Invalid::new("value_error.cursor", "invalid cursor"),
            )
        })
}

/// Parses `page_size`: an integer within `1..=max`, `default` when absent.
pub fn page_size(value: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(_) => Err(ApiError::field(
            &["query", "page_size"],
            Invalid::new(
                "value_error.number.range",
                format!("page_size must be between 1 and {max}"),
            ),
        )),
        Err(_) => Err(ApiError::field(
            &["query", "page_size"],
            Invalid::new("type_error.integer", "page_size must be an integer"),
        )),
    }
}
