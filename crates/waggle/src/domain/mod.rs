//! Pure types and rules of the product: ids, the event catalog, payloads, signatures,
//! the retry policy and destination checks. Nothing here does I/O.

pub mod attempt;
pub mod connector;
pub mod destination;
pub mod event;
pub mod ids;
pub mod payload;
pub mod recovery;
pub mod retry;
pub mod signature;
pub mod stats;
pub mod time;
pub mod webhook;

/// A value that failed to parse at the boundary, with what a caller can show a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// Machine-readable kind, in the provider's style (`value_error.url`, …).
    pub kind: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Parses a short human text (a name): at most `max` characters as given, non-empty once
/// trimmed, and free of control characters.
pub fn parse_text(value: &str, max: usize, what: &str) -> Result<String, Invalid> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(Invalid::new(
            "value_error.missing",
            format!("{what} must not be empty"),
        ));
    }
    // Counted before trimming, as the OpenAPI document's maxLength counts.
    if value.chars().count() > max {
        return Err(Invalid::new(
            "value_error.any_str.max_length",
            format!("{what} must be at most {max} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Invalid::new(
            "value_error.str.control_characters",
            format!("{what} must not contain control characters"),
        ));
    }
    Ok(trimmed.to_owned())
}
