//! Recover: a new delivery, of the same body, for each delivery of a webhook in a range
//! of time that ended in an error (an HTTP status of 400 or more, or no answer: the logs'
//! `errors_only` rule) and was not resent or recovered since.

use std::time::Duration;

use serde::Serialize;

use super::ids::{OrgId, RecoveryId, WebhookId};
use super::time::{self, Timestamp};
use super::Invalid;

/// The longest range one recovery covers.
pub const MAX_RANGE: Duration = Duration::from_secs(31 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryStatus {
    /// Deliveries are still being made anew.
    Running,
    /// Every delivery found has been made anew.
    Done,
}

impl RecoveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
        }
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "running" => Ok(Self::Running),
            "done" => Ok(Self::Done),
            other => Err(format!("unknown recovery status '{other}'")),
        }
    }
}

/// A recovery and how far it has come.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Recovery {
    pub id: RecoveryId,
    #[serde(skip)]
    pub org_id: OrgId,
    pub webhook_id: WebhookId,
    /// The range: deliveries made from `since` (included) to `until` (excluded).
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    pub since: Timestamp,
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    pub until: Timestamp,
    pub status: RecoveryStatus,
    /// The failed deliveries found when the recovery began.
    pub deliveries: u64,
    /// How many of them have been made anew so far.
    pub recovered: u64,
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde_format::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
}

/// A recovery's range, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRange {
    pub since: Timestamp,
    pub until: Timestamp,
    /// The range as asked (an open end stays open), so that asking again while it runs
    /// finds the same recovery.
    pub key: String,
}

/// Reads `since` and `until` (ISO 8601; `until` defaults to `now`): `since` before
/// `until`, at most [`MAX_RANGE`] apart. A future `until` is `now`: nothing is there yet.
/// Each problem comes with the field it is about.
pub fn parse_range(
    since: &str,
    until: Option<&str>,
    now: Timestamp,
) -> Result<RecoveryRange, Vec<(&'static str, Invalid)>> {
    let since_at = time::parse(since);
    let until_at = until.map(time::parse).transpose();
    let (since_at, until_at) = match (since_at, until_at) {
        (Ok(since), Ok(until)) => (since, until),
        (since, until) => {
            let mut problems = Vec::new();
            if let Err(e) = since {
                problems.push(("since", e));
            }
            if let Err(e) = until {
                problems.push(("until", e));
            }
            return Err(problems);
        }
    };
    let end = until_at.map_or(now, |u| u.min(now));
    let invalid = |message: String| vec![("since", Invalid::new("value_error.range", message))];
    if since_at >= end {
        return Err(invalid(format!(
            "since ({}) must be before until ({})",
            time::format(&since_at),
            time::format(&end)
        )));
    }
    if end - since_at > time::to_delta(MAX_RANGE) {
        return Err(invalid(
            "a recovery covers at most 31 days: since and until are further apart".into(),
        ));
    }
    let key = format!(
        "{}..{}",
        time::to_micros(&since_at),
        until_at.map_or(String::new(), |u| time::to_micros(&u).to_string())
    );
    Ok(RecoveryRange {
        since: since_at,
        until: end,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let now = time::parse("2026-03-10T12:00:00Z").unwrap();
        let open = parse_range("2026-03-09", None, now).unwrap();
        assert_eq!(open.until, now);
        let closed = parse_range("2026-03-09", Some("2026-03-09T06:00:00"), now).unwrap();
        assert_eq!(closed.until, time::parse("2026-03-09T06:00:00Z").unwrap());
        assert_ne!(open.key, closed.key, "an open end is another range");
        let future = parse_range("2026-03-09", Some("2027-01-01"), now).unwrap();
        assert_eq!(future.until, now, "nothing past now");
        assert_eq!(parse_range("2026-03-09", None, now).unwrap().key, open.key);

        let fields = |r: Result<RecoveryRange, Vec<(&'static str, Invalid)>>| {
            r.unwrap_err()
                .into_iter()
                .map(|(f, _)| f)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(parse_range("yesterday", Some("soon"), now)),
            ["since", "until"]
        );
        assert_eq!(
            fields(parse_range("2026-03-10T13:00:00Z", None, now)),
            ["since"]
        );
        assert_eq!(
            fields(parse_range("2026-03-09", Some("2026-03-08"), now)),
            ["since"]
        );
        assert_eq!(
            fields(parse_range("2026-02-01", None, now)),
            ["since"],
            "over 31 days"
        );
        assert!(
            parse_range("2026-02-07T12:00:00Z", None, now).is_ok(),
            "31 days exactly"
        );
    }
}
