//! Figures: latency percentiles, the median of several runs, the table and the JSON.

use serde::Serialize;

/// One scenario's figures: of one run, or the median of several.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurement {
    pub scenario: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// SQLite's sync mode (`full` or `normal`); none on PostgreSQL.
    pub sqlite_sync: Option<String>,
    /// `waggle serve` processes sharing the database.
    pub nodes: usize,
    /// Requests/s of the raw client with waggle's concurrency: the ceiling. Measured
    /// just before waggle's run and again just after it, this is both together (all
    /// their requests over all their time), so that the machine's drift during the run
    /// weighs on the ceiling as on waggle.
    pub raw_rps: Option<f64>,
    /// The raw client's rate before waggle's run, and after it.
    pub raw_rps_before: Option<f64>,
    pub raw_rps_after: Option<f64>,
    /// Requests the raw client completed, and those that failed.
    pub raw_requests: u64,
    pub raw_errors: u64,
    /// API calls completed per second, from the first call to the last answer.
    pub events_per_s: Option<f64>,
    /// Deliveries received per second, from the first API call to the last arrival (for
    /// `backlog`, from the first arrival to the last: the drain rate).
    pub deliveries_per_s: Option<f64>,
    /// `deliveries_per_s / raw_rps`.
    pub ratio: Option<f64>,
    /// From the API call returning to the delivery's arrival at the receiver.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// waggle's peak resident set (VmHWM) at the end, MiB.
    pub peak_rss_mb: Option<f64>,
    /// waggle's user + system CPU seconds.
    pub cpu_s: Option<f64>,
    /// The receiver's CPU seconds during the scenario (it shares the machine).
    pub receiver_cpu_s: Option<f64>,
    /// The bench's own CPU seconds during the scenario (its API clients).
    pub bench_cpu_s: Option<f64>,
    /// PostgreSQL's CPU seconds during the scenario (its server and connections), for
    /// the `pg_*` scenarios.
    pub database_cpu_s: Option<f64>,
    /// Events the API accepted, and calls it refused or failed.
    pub events: u64,
    pub api_errors: u64,
    /// Distinct deliveries that arrived, and how many were expected.
    pub deliveries: u64,
    pub expected: u64,
    /// Arrivals of a delivery that had already arrived.
    pub duplicates: u64,
    /// Arrivals before their API call had returned (counted as 0 ms).
    pub early: u64,
    /// `backlog`: from starting waggle on the full queue to the last arrival, seconds.
    pub drain_s: Option<f64>,
    /// `backlog`: from starting waggle to its first healthy answer, seconds.
    pub startup_s: Option<f64>,
    /// `*_purging`: the old events retention had not removed yet when the run ended
    /// (0: the removal ran within the run, and the latency figures include all of it).
    pub old_events_left: Option<u64>,
    pub runs: usize,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn median_f(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn median_u(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// The median of each figure over the runs of one scenario (each figure on its own).
pub fn median(runs: &[Measurement]) -> Measurement {
    let f = |get: fn(&Measurement) -> Option<f64>| median_f(runs.iter().map(get));
    let u = |get: fn(&Measurement) -> u64| median_u(runs.iter().map(get));
    Measurement {
        scenario: runs.first().map(|m| m.scenario.clone()).unwrap_or_default(),
        backend: runs.first().map(|m| m.backend.clone()).unwrap_or_default(),
        sqlite_sync: runs.first().and_then(|m| m.sqlite_sync.clone()),
        nodes: u(|m| m.nodes as u64) as usize,
        raw_rps: f(|m| m.raw_rps),
        raw_rps_before: f(|m| m.raw_rps_before),
        raw_rps_after: f(|m| m.raw_rps_after),
        raw_requests: u(|m| m.raw_requests),
        raw_errors: u(|m| m.raw_errors),
        events_per_s: f(|m| m.events_per_s),
        deliveries_per_s: f(|m| m.deliveries_per_s),
        ratio: f(|m| m.ratio),
        p50_ms: f(|m| m.p50_ms),
        p90_ms: f(|m| m.p90_ms),
        p99_ms: f(|m| m.p99_ms),
        max_ms: f(|m| m.max_ms),
        peak_rss_mb: f(|m| m.peak_rss_mb),
        cpu_s: f(|m| m.cpu_s),
        receiver_cpu_s: f(|m| m.receiver_cpu_s),
        bench_cpu_s: f(|m| m.bench_cpu_s),
        database_cpu_s: f(|m| m.database_cpu_s),
        old_events_left: f(|m| m.old_events_left.map(|n| n as f64)).map(|n| n as u64),
        events: u(|m| m.events),
        api_errors: u(|m| m.api_errors),
        deliveries: u(|m| m.deliveries),
        expected: u(|m| m.expected),
        duplicates: u(|m| m.duplicates),
        early: u(|m| m.early),
        drain_s: f(|m| m.drain_s),
        startup_s: f(|m| m.startup_s),
        runs: runs.len(),
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// A short summary of one run, for progress lines.
pub fn one_line(m: &Measurement) -> String {
    format!(
        "raw {} rps ({} before, {} after), {} events/s, {} deliveries/s (ratio {}), p50 {} p99 {} ms, rss {} MiB, {}/{} delivered",
        num(m.raw_rps, 0),
        num(m.raw_rps_before, 0),
        num(m.raw_rps_after, 0),
        num(m.events_per_s, 0),
        num(m.deliveries_per_s, 0),
        num(m.ratio, 2),
        num(m.p50_ms, 2),
        num(m.p99_ms, 2),
        num(m.peak_rss_mb, 0),
        m.deliveries,
        m.expected,
    )
}

/// The figures as an aligned text table.
pub fn table(rows: &[Measurement]) -> String {
    let header = [
        "scenario",
        "sync",
        "raw rps",
        "events/s",
        "deliv/s",
        "ratio",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "rss MiB",
        "cpu s",
        "delivered",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for m in rows {
        cells.push(vec![
            m.scenario.clone(),
            m.sqlite_sync.clone().unwrap_or_else(|| "-".into()),
            num(m.raw_rps, 0),
            num(m.events_per_s, 0),
            num(m.deliveries_per_s, 0),
            num(m.ratio, 2),
            num(m.p50_ms, 2),
            num(m.p90_ms, 2),
            num(m.p99_ms, 2),
            num(m.max_ms, 1),
            num(m.peak_rss_mb, 0),
            num(m.cpu_s, 1),
            format!("{}/{}", m.deliveries, m.expected),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| cells.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (r, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if r == 0 {
            let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 1.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_median_takes_each_figure_on_its_own() {
        let run = |rps: f64, p99: Option<f64>, events: u64| Measurement {
            scenario: "x".into(),
            raw_rps: Some(rps),
            p99_ms: p99,
            events,
            ..Default::default()
        };
        let m = median(&[
            run(3.0, Some(1.0), 5),
            run(1.0, None, 9),
            run(2.0, Some(4.0), 7),
        ]);
        assert_eq!(m.raw_rps, Some(2.0));
        assert_eq!(m.p99_ms, Some(2.5));
        assert_eq!(m.events, 7);
        assert_eq!(m.runs, 3);
    }

    #[test]
    fn the_table_has_a_row_per_scenario() {
        let table = table(&[Measurement {
            scenario: "fanout".into(),
            ..Default::default()
        }]);
        assert_eq!(table.lines().count(), 3);
        assert!(table.lines().nth(2).unwrap().starts_with("fanout"));
    }
}
