//! What `GET /api/v1/stats` tells of each webhook: its deliveries, how many succeeded,
//! and how fast its receiver answered, over the last hour and the last day, with the
//! day hour by hour for the dashboard's chart.
//!
//! Latencies are counted in buckets (ten per decade of microseconds), so that a store
//! answers a day of attempts with a few rows per webhook, and a percentile is read back
//! from the counts to within a tenth of a decade.

use serde::Serialize;

use super::ids::WebhookId;
use super::time::{self, Timestamp};

/// The bucket of a latency of `us` microseconds: ten per decade from 100 µs, the same
/// rule the stores apply in SQL ([`BUCKET_SQL`]).
pub fn bucket(us: i64) -> i64 {
    let mut decade = 0;
    let mut scale = 100;
    while us >= scale * 10 && decade < 6 {
        decade += 1;
        scale *= 10;
    }
    decade * 10 + (us / scale).min(9)
}

/// [`bucket`] of an attempt `a`'s `duration_us`, in SQL both stores run (integer division).
pub const BUCKET_SQL: &str = "CASE WHEN a.duration_us < 1000 THEN a.duration_us / 100 \
     WHEN a.duration_us < 10000 THEN 10 + a.duration_us / 1000 \
     WHEN a.duration_us < 100000 THEN 20 + a.duration_us / 10000 \
     WHEN a.duration_us < 1000000 THEN 30 + a.duration_us / 100000 \
     WHEN a.duration_us < 10000000 THEN 40 + a.duration_us / 1000000 \
     WHEN a.duration_us < 100000000 THEN 50 + a.duration_us / 10000000 \
     ELSE 69 END";

/// The largest latency, in milliseconds, a bucket holds.
fn upper_ms(bucket: i64) -> f64 {
    let (decade, step) = (bucket / 10, bucket % 10);
    (100.0 * 10f64.powi(decade as i32) * (step + 1) as f64) / 1000.0
}

/// The latency below which `p` percent of the counted ones are, by bucket.
pub fn percentile(buckets: &[(i64, u64)], p: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let mut sorted = buckets.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bucket, n) in sorted {
        seen += n;
        if seen >= rank {
            return Some(upper_ms(bucket));
        }
    }
    None
}

/// One window of a webhook's deliveries (those made in it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Window {
    pub deliveries: u64,
    /// Ended with a 2xx answer.
    pub succeeded: u64,
    /// Ended otherwise: another status, or no answer after the last retry.
    pub failed: u64,
    /// Not ended yet (in retry, or waiting).
    pub pending: u64,
    /// `succeeded / (succeeded + failed)`; `null` when none has ended.
    pub success_rate: Option<f64>,
    /// Of the attempts that got an answer, in milliseconds (to within a tenth of a
    /// decade: 2.1 ms reads as 3 ms, 23 ms as 30 ms).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Counts of one window as a store reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub deliveries: u64,
    pub succeeded: u64,
    pub failed: u64,
}

impl Window {
    pub fn of(counts: Counts, latencies: &[(i64, u64)]) -> Self {
        let ended = counts.succeeded + counts.failed;
        Self {
            deliveries: counts.deliveries,
            succeeded: counts.succeeded,
            failed: counts.failed,
            pending: counts.deliveries.saturating_sub(ended),
            success_rate: (ended > 0)
                .then(|| (counts.succeeded as f64 / ended as f64 * 10_000.0).round() / 10_000.0),
            p50_ms: percentile(latencies, 50.0),
            p99_ms: percentile(latencies, 99.0),
        }
    }
}

/// One hour of the last day.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Hour {
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    pub succeeded: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WebhookStats {
    pub webhook_id: WebhookId,
    pub name: String,
    pub last_hour: Window,
    pub last_day: Window,
    /// The last 24 hours, oldest first, the current one last.
    pub hourly: Vec<Hour>,
}

/// A webhook's figures from the stores' rows: its counts by hour (each flagged `recent`
/// when of the last hour) and its answered attempts by latency bucket (likewise flagged).
pub fn of_webhook(
    webhook: WebhookId,
    name: String,
    now: Timestamp,
    counts: &[(WebhookId, bool, i64, Counts)],
    latencies: &[(WebhookId, bool, i64, u64)],
) -> WebhookStats {
    let counts: Vec<_> = counts.iter().filter(|c| c.0 == webhook).collect();
    let latencies: Vec<_> = latencies.iter().filter(|l| l.0 == webhook).collect();
    let window = |recent_only: bool| {
        let mut total = Counts::default();
        for (_, _, _, c) in counts.iter().filter(|c| c.1 || !recent_only) {
            total.deliveries += c.deliveries;
            total.succeeded += c.succeeded;
            total.failed += c.failed;
        }
        let buckets: Vec<(i64, u64)> = latencies
            .iter()
            .filter(|l| l.1 || !recent_only)
            .map(|l| (l.2, l.3))
            .collect();
        Window::of(total, &buckets)
    };
    let this_hour = time::to_micros(&hour_of(now)) / 3_600_000_000;
    let hourly = (this_hour - 23..=this_hour)
        .map(|hour| {
            let (succeeded, failed) = counts
                .iter()
                .filter(|c| c.2 == hour)
                .fold((0, 0), |(s, f), c| (s + c.3.succeeded, f + c.3.failed));
            Hour {
                start: time::from_micros(hour * 3_600_000_000),
                succeeded,
                failed,
            }
        })
        .collect();
    WebhookStats {
        webhook_id: webhook,
        name,
        last_hour: window(true),
        last_day: window(false),
        hourly,
    }
}

/// The start of the hour `at` is in.
pub fn hour_of(at: Timestamp) -> Timestamp {
    let micros = time::to_micros(&at);
    time::from_micros(micros - micros.rem_euclid(3_600_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ten_per_decade() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(99), 0);
        assert_eq!(bucket(100), 1);
        assert_eq!(bucket(999), 9);
        assert_eq!(bucket(1_000), 11);
        assert_eq!(bucket(2_500), 12);
        assert_eq!(bucket(23_000), 22);
        assert_eq!(bucket(9_999_999), 49);
        assert_eq!(bucket(60_000_000), 56);
        assert_eq!(upper_ms(12), 3.0, "2.5 ms reads as 3 ms");
        assert_eq!(upper_ms(22), 30.0);
        assert_eq!(upper_ms(0), 0.1);
    }

    #[test]
    fn percentiles_come_from_the_counts() {
        // 98 answers around 2 ms, one at 40 ms, one at 3 s.
        let counts = [
            (bucket(2_000), 98),
            (bucket(40_000), 1),
            (bucket(3_000_000), 1),
        ];
        assert_eq!(percentile(&counts, 50.0), Some(3.0));
        assert_eq!(percentile(&counts, 99.0), Some(50.0));
        assert_eq!(percentile(&counts, 100.0), Some(4000.0));
        assert_eq!(percentile(&[], 50.0), None);
        let window = Window::of(
            Counts {
                deliveries: 10,
                succeeded: 6,
                failed: 2,
            },
            &counts,
        );
        assert_eq!(window.pending, 2);
        assert_eq!(window.success_rate, Some(0.75));
        assert_eq!(Window::of(Counts::default(), &[]).success_rate, None);
    }

    #[test]
    fn the_hour_and_the_day_add_up_their_rows() {
        let (w, other) = (WebhookId::new(), WebhookId::new());
        let now = time::parse("2026-03-09T10:42:00Z").unwrap();
        let this_hour = time::to_micros(&hour_of(now)) / 3_600_000_000;
        let counts = |deliveries, succeeded, failed| Counts {
            deliveries,
            succeeded,
            failed,
        };
        let rows = [
            (w, true, this_hour, counts(4, 3, 1)),
            (w, true, this_hour - 1, counts(1, 1, 0)),
            (w, false, this_hour - 1, counts(5, 5, 0)),
            (w, false, this_hour - 24, counts(2, 0, 2)),
            (other, true, this_hour, counts(100, 100, 0)),
        ];
        let latencies = [(w, true, bucket(2_000), 5), (w, false, bucket(400_000), 5)];
        let stats = of_webhook(w, "w".into(), now, &rows, &latencies);
        assert_eq!(
            (
                stats.last_hour.deliveries,
                stats.last_hour.succeeded,
                stats.last_hour.failed
            ),
            (5, 4, 1)
        );
        assert_eq!(stats.last_day.deliveries, 12);
        assert_eq!(stats.last_day.success_rate, Some(0.75));
        assert_eq!(stats.last_hour.p99_ms, Some(3.0));
        assert_eq!(stats.last_day.p99_ms, Some(500.0));
        assert_eq!(stats.hourly.len(), 24);
        assert_eq!(stats.hourly[23].start, hour_of(now));
        assert_eq!(
            (stats.hourly[23].succeeded, stats.hourly[23].failed),
            (3, 1)
        );
        assert_eq!(stats.hourly[22].succeeded, 6);
        assert!(stats.hourly[..22]
            .iter()
            .all(|h| h.succeeded + h.failed == 0));
    }

    #[test]
    fn hours_start_on_the_hour() {
        let at = time::parse("2026-03-09T10:42:13.5Z").unwrap();
        assert_eq!(hour_of(at), time::parse("2026-03-09T10:00:00Z").unwrap());
    }
}
