//! When a failed delivery is tried again (SPEC §3, and the retry policies a webhook may
//! choose instead).
//!
//! By default only network-layer failures reach a policy: an HTTP response of any status
//! ends a delivery. A webhook may also list statuses to retry ([`RetryRules::on_status`]),
//! among [`RETRIABLE_STATUSES`]. At most `backoff.len()` retries follow the first attempt;
//! under the standard schedule each must also start within `window` of the first
//! attempt's start, and a retry that cannot is not made.

use std::time::Duration;

use serde::Serialize;

use super::time::{to_delta, Timestamp};
use super::Invalid;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Wait between the n-th failure and the next attempt; its length is the retry budget.
    pub backoff: Vec<Duration>,
    /// Every retry starts within this long of the first attempt's start; `None`: no
    /// window, the budget alone ends a delivery.
    pub window: Option<Duration>,
    /// The whole exchange of one attempt (connect, send, receive, redirects).
    pub attempt_timeout: Duration,
    /// Each wait is stretched or shrunk at random by up to this fraction of it, so that
    /// the retries of deliveries that failed together do not arrive together.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            window: Some(Duration::from_secs(60)),
            attempt_timeout: Duration::from_secs(10),
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// The most attempts a delivery may get: the first one plus every retry.
    pub fn max_attempts(&self) -> u32 {
        self.backoff.len() as u32 + 1
    }

    /// After `attempts_made` attempts that all failed, the last one ending at
    /// `failed_at`: when the next may start, or `None` when the delivery has failed for
    /// good. A receiver's `Retry-After` (`asked`) is honoured up to the wait the schedule
    /// has next, never past it: the schedule's length holds whatever a receiver asks.
    pub fn next_attempt(
        &self,
        first_attempt_at: Timestamp,
        attempts_made: u32,
        failed_at: Timestamp,
        asked: Option<Duration>,
    ) -> Option<Timestamp> {
        let wait = *self.backoff.get(attempts_made.checked_sub(1)? as usize)?;
        let wait = match asked {
            Some(asked) => asked.min(wait),
            None if self.jitter > 0.0 => {
                wait.mul_f64(1.0 + self.jitter * (2.0 * rand::random::<f64>() - 1.0))
            }
            None => wait,
        };
        let next = failed_at + to_delta(wait);
        self.within_window(first_attempt_at, next).then_some(next)
    }

    /// Whether an attempt starting at `at` is still inside the retry window.
    pub fn within_window(&self, first_attempt_at: Timestamp, at: Timestamp) -> bool {
        self.window
            .is_none_or(|window| at <= first_attempt_at + to_delta(window))
    }

    /// The policy of a webhook on `schedule`, this one being the standard (the operator's).
    pub fn on(&self, schedule: &RetrySchedule) -> RetryPolicy {
        let custom = |backoff: Vec<Duration>, jitter| RetryPolicy {
            backoff,
            window: None,
            attempt_timeout: self.attempt_timeout,
            jitter,
        };
        match schedule {
            RetrySchedule::Standard => self.clone(),
            RetrySchedule::Extended => {
                custom(EXTENDED.map(Duration::from_secs).to_vec(), EXTENDED_JITTER)
            }
            RetrySchedule::Delays(delays) => custom(delays.clone(), 0.0),
        }
    }
}

/// The waits of the extended schedule: 18 s, then four times the wait before, seven
/// retries in about 27 hours.
const EXTENDED: [u64; 7] = [18, 72, 288, 1_152, 4_608, 18_432, 73_728];
const EXTENDED_JITTER: f64 = 0.1;

/// The most waits a webhook's own schedule may list, and the longest each may be.
pub const MAX_DELAYS: usize = 20;
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// The statuses a webhook may ask to retry: those that say "not now" rather than "no".
pub const RETRIABLE_STATUSES: [u16; 7] = [408, 425, 429, 500, 502, 503, 504];

/// Which schedule a webhook's failed deliveries are retried on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RetrySchedule {
    /// The provider's page: the operator's `--retry-backoff` within `--retry-window`.
    #[default]
    Standard,
    /// Exponential waits with jitter, 8 attempts over about 27 hours.
    Extended,
    /// The webhook's own waits, in order, with no window.
    Delays(Vec<Duration>),
}

/// A webhook's retry schedule as the API writes it: `"standard"`, `"extended"`, or
/// `{"delays": ["5s", "5m", …]}` (at most 20 waits, each at most 24h).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RetryPolicyForm {
    #[schema(example = "extended")]
    Named(RetryPolicyName),
    Delays {
        #[schema(min_items = 1, max_items = 20, example = json!(["5s", "5m", "1h"]))]
        delays: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetryPolicyName {
    Standard,
    Extended,
}

impl RetrySchedule {
    /// Reads the API's form (see [`RetryPolicyForm`]).
    pub fn parse(value: &serde_json::Value) -> Result<Self, Invalid> {
        let invalid = |message: String| Invalid::new("value_error.retry_policy", message);
        match value {
            serde_json::Value::String(name) => match name.as_str() {
                "standard" => Ok(Self::Standard),
                "extended" => Ok(Self::Extended),
                other => Err(invalid(format!(
                    "retry_policy is \"standard\", \"extended\" or {{\"delays\": [...]}}, not \"{other}\""
                ))),
            },
            serde_json::Value::Object(fields) => {
                let delays = match (fields.get("delays"), fields.len()) {
                    (Some(serde_json::Value::Array(delays)), 1) => delays,
                    _ => {
                        return Err(invalid(
                            "a retry_policy object has one field, \"delays\": a list of durations such as [\"5s\", \"5m\"]".into(),
                        ))
                    }
                };
                if delays.is_empty() || delays.len() > MAX_DELAYS {
                    return Err(invalid(format!(
                        "retry_policy.delays lists 1 to {MAX_DELAYS} durations, not {}",
                        delays.len()
                    )));
                }
                delays
                    .iter()
                    .map(|delay| {
                        let text = delay.as_str().ok_or_else(|| {
                            invalid(format!("a delay is a duration such as \"5m\", not {delay}"))
                        })?;
                        let delay = parse_duration(text).map_err(invalid)?;
                        if delay.is_zero() || delay > MAX_DELAY {
                            return Err(invalid(format!(
                                "each delay is more than 0s and at most 24h, not '{text}'"
                            )));
                        }
                        Ok(delay)
                    })
                    .collect::<Result<_, _>>()
                    .map(Self::Delays)
            }
            other => Err(invalid(format!(
                "retry_policy is \"standard\", \"extended\" or {{\"delays\": [...]}}, not {other}"
            ))),
        }
    }

    pub fn form(&self) -> RetryPolicyForm {
        match self {
            Self::Standard => RetryPolicyForm::Named(RetryPolicyName::Standard),
            Self::Extended => RetryPolicyForm::Named(RetryPolicyName::Extended),
            Self::Delays(delays) => RetryPolicyForm::Delays {
                delays: delays
                    .iter()
                    .map(|d| humantime::format_duration(*d).to_string())
                    .collect(),
            },
        }
    }
}

impl Serialize for RetrySchedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.form().serialize(serializer)
    }
}

/// Reads a webhook's `retry_on_status`: statuses among [`RETRIABLE_STATUSES`], each once,
/// kept in ascending order.
pub fn parse_retry_on_status(statuses: &[u16]) -> Result<Vec<u16>, Invalid> {
    let mut kept = Vec::with_capacity(statuses.len());
    for &status in statuses {
        if !RETRIABLE_STATUSES.contains(&status) {
            return Err(Invalid::new(
                "value_error.retry_on_status",
                format!("{status} cannot be retried; retry_on_status takes 408, 425, 429, 500, 502, 503 and 504"),
            ));
        }
        if !kept.contains(&status) {
            kept.push(status);
        }
    }
    kept.sort_unstable();
    Ok(kept)
}

/// What a webhook asks of retries: its schedule, and the statuses retried besides
/// network failures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryRules {
    pub schedule: RetrySchedule,
    pub on_status: Vec<u16>,
}

/// The wait a `Retry-After` value asks for: a number of seconds, or an HTTP date.
pub fn retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

/// Parses a backoff list such as `1s,2s,4s,8s` or `100ms,200ms`.
pub fn parse_backoff(value: &str) -> Result<Vec<Duration>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_duration)
        .collect()
}

/// Parses a duration the humantime way (`250ms`, `10s`, `2h`, `5d`, `1h 30m`), or a bare
/// number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(value).map_err(|e| {
        format!("invalid duration '{value}': {e} (write it like 250ms, 10s, 2h or 5d)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time;

    fn at(secs: f64) -> Timestamp {
        time::from_micros((secs * 1e6) as i64)
    }

    #[test]
    fn default_schedule_is_one_two_four_eight_seconds() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 5);
        assert_eq!(p.next_attempt(at(0.0), 1, at(0.1), None), Some(at(1.1)));
        assert_eq!(p.next_attempt(at(0.0), 2, at(1.2), None), Some(at(3.2)));
        assert_eq!(p.next_attempt(at(0.0), 3, at(3.3), None), Some(at(7.3)));
        assert_eq!(p.next_attempt(at(0.0), 4, at(7.4), None), Some(at(15.4)));
        assert_eq!(
            p.next_attempt(at(0.0), 5, at(15.5), None),
            None,
            "four retries at most"
        );
    }

    #[test]
    fn five_timed_out_attempts_fit_in_the_window() {
        let p = RetryPolicy::default();
        let mut start = 0.0;
        for attempt in 1..5 {
            let failed = start + 10.0;
            let next = p
                .next_attempt(at(0.0), attempt, at(failed), None)
                .expect("retry fits");
            start = (time::to_micros(&next) as f64) / 1e6;
        }
        assert!(start <= 60.0, "fifth attempt starts at {start}s");
    }

    #[test]
    fn a_retry_past_the_window_is_not_made() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_attempt(at(0.0), 4, at(52.5), None), None);
        assert!(p.next_attempt(at(0.0), 4, at(51.9), None).is_some());
    }

    #[test]
    fn the_extended_schedule_makes_eight_attempts_over_about_27_hours() {
        let p = RetryPolicy::default().on(&RetrySchedule::Extended);
        assert_eq!(p.max_attempts(), 8);
        let total: Duration = p.backoff.iter().sum();
        assert!(
            (26.5..28.0).contains(&(total.as_secs_f64() / 3600.0)),
            "{total:?}"
        );
        // Each wait is at least three times the one before: exponential.
        assert!(p.backoff.windows(2).all(|w| w[1] >= w[0] * 3));
        // Jittered within ±10 %, and not past the window: there is none.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let next = p.next_attempt(at(0.0), 7, at(100_000.0), None).unwrap();
            let wait = (time::to_micros(&next) as f64) / 1e6 - 100_000.0;
            assert!((0.9 * 73_728.0..=1.1 * 73_728.0).contains(&wait), "{wait}");
            seen.insert(time::to_micros(&next));
        }
        assert!(seen.len() > 1, "the waits vary");
        assert_eq!(p.next_attempt(at(0.0), 8, at(200_000.0), None), None);
    }

    #[test]
    fn a_webhooks_own_delays_are_its_budget_and_have_no_window() {
        let five_minutes = Duration::from_secs(300);
        let p = RetryPolicy::default().on(&RetrySchedule::Delays(vec![five_minutes; 2]));
        assert_eq!(p.max_attempts(), 3);
        assert_eq!(
            p.next_attempt(at(0.0), 2, at(3600.0), None),
            Some(at(3900.0)),
            "an hour late is still retried"
        );
        assert_eq!(p.next_attempt(at(0.0), 3, at(4000.0), None), None);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_next_wait() {
        let p = RetryPolicy::default().on(&RetrySchedule::Delays(vec![Duration::from_secs(60)]));
        let asked = |secs| Some(Duration::from_secs(secs));
        assert_eq!(p.next_attempt(at(0.0), 1, at(1.0), asked(5)), Some(at(6.0)));
        assert_eq!(
            p.next_attempt(at(0.0), 1, at(1.0), asked(3600)),
            Some(at(61.0))
        );
        let now = at(1_000.0);
        assert_eq!(retry_after(" 120 ", now), asked(120));
        let date = (now + chrono::Duration::seconds(30)).to_rfc2822();
        assert_eq!(retry_after(&date, now), asked(30));
        assert_eq!(retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now), asked(0));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn policies_parse_from_the_api_form_and_back() {
        use serde_json::json;
        let parse = |v: serde_json::Value| RetrySchedule::parse(&v);
        assert_eq!(parse(json!("standard")).unwrap(), RetrySchedule::Standard);
        assert_eq!(parse(json!("extended")).unwrap(), RetrySchedule::Extended);
        let own = parse(json!({"delays": ["5s", "5m", "1h 30m"]})).unwrap();
        assert_eq!(
            serde_json::to_value(&own).unwrap(),
            json!({"delays": ["5s", "5m", "1h 30m"]})
        );
        assert_eq!(
            serde_json::to_value(RetrySchedule::Extended).unwrap(),
            json!("extended")
        );
        for bad in [
            json!("forever"),
            json!(3),
            json!({"delays": []}),
            json!({"delays": ["5s"], "max": 3}),
            json!({"delays": ["25h"]}),
            json!({"delays": ["0s"]}),
            json!({"delays": [5]}),
            json!({"delays": vec!["1s"; 21]}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad} was accepted");
        }
        assert_eq!(
            parse_retry_on_status(&[503, 429, 503]).unwrap(),
            vec![429, 503]
        );
        assert!(parse_retry_on_status(&[404]).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_duration("5d").unwrap(),
            Duration::from_secs(5 * 86400)
        );
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_backoff("1s, 2s").unwrap().len(), 2);
    }
}
