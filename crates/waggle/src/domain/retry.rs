//! When a failed delivery is tried again (SPEC §3).
//!
//! Only network-layer failures reach this policy: an HTTP response of any status ends a
//! delivery. At most `backoff.len()` retries follow the first attempt, and each must start
//! within `window` of the first attempt's start; a retry that cannot is not made.

use std::time::Duration;

use super::time::{to_delta, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait between the n-th failure and the next attempt; its length is the retry budget.
    pub backoff: Vec<Duration>,
    /// Every retry starts within this long of the first attempt's start.
    pub window: Duration,
    /// The whole exchange of one attempt (connect, send, receive, redirects).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            window: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The most attempts a delivery may get: the first one plus every retry.
    pub fn max_attempts(&self) -> u32 {
        self.backoff.len() as u32 + 1
    }

    /// After `attempts_made` attempts that all failed at the network layer, the last one
    /// ending at `failed_at`: when the next may start, or `None` when the delivery has
    /// failed for good.
    pub fn next_attempt(
        &self,
        first_attempt_at: Timestamp,
        attempts_made: u32,
        failed_at: Timestamp,
    ) -> Option<Timestamp> {
        let wait = *self.backoff.get(attempts_made.checked_sub(1)? as usize)?;
        let next = failed_at + to_delta(wait);
        self.within_window(first_attempt_at, next).then_some(next)
    }

    /// Whether an attempt starting at `at` is still inside the retry window.
    pub fn within_window(&self, first_attempt_at: Timestamp, at: Timestamp) -> bool {
        at <= first_attempt_at + to_delta(self.window)
    }
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
        assert_eq!(p.next_attempt(at(0.0), 1, at(0.1)), Some(at(1.1)));
        assert_eq!(p.next_attempt(at(0.0), 2, at(1.2)), Some(at(3.2)));
        assert_eq!(p.next_attempt(at(0.0), 3, at(3.3)), Some(at(7.3)));
        assert_eq!(p.next_attempt(at(0.0), 4, at(7.4)), Some(at(15.4)));
        assert_eq!(
            p.next_attempt(at(0.0), 5, at(15.5)),
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
                .next_attempt(at(0.0), attempt, at(failed))
                .expect("retry fits");
            start = (time::to_micros(&next) as f64) / 1e6;
        }
        assert!(start <= 60.0, "fifth attempt starts at {start}s");
    }

    #[test]
    fn a_retry_past_the_window_is_not_made() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_attempt(at(0.0), 4, at(52.5)), None);
        assert!(p.next_attempt(at(0.0), 4, at(51.9)).is_some());
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
