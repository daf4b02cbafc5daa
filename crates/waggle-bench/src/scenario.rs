//! The scenarios, and one run of one of them: the raw limit first, then waggle on a fresh
//! database, then the figures from what the receiver saw.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::load::{self, Push, Pushed};
use crate::raw;
use crate::receiver::{Receiver, Record};
use crate::report::{self, Measurement};
use crate::waggle::{Backend, Database, Server};

/// waggle's defaults: `--webhook-concurrency` and `--max-in-flight`.
const WEBHOOK_CONCURRENCY: usize = 64;
const MAX_IN_FLIGHT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Every scenario, small: under a minute in all.
    Quick,
    Full,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    /// Webhooks subscribed to the event.
    webhooks: usize,
    /// Of those, how many sit in `isolation`'s dead positions (every other one from the
    /// first). Their deliveries are left out of the latency, so that `isolation_base`,
    /// with the same webhooks all live, times the same healthy half.
    set_aside: usize,
    /// Whether the set-aside webhooks point at the dead port.
    dead: bool,
    kind: Kind,
    /// On PostgreSQL rather than SQLite.
    pub postgres: bool,
    /// `waggle serve` processes sharing the database; the API calls go round-robin.
    nodes: usize,
    /// Events made long ago (each with a delivered delivery and its attempt: three rows)
    /// put in the database before waggle starts with `--retention 30d`, which removes
    /// them while the scenario runs.
    old_events: u64,
    /// Whether its webhooks ask for ordered delivery (each connector's events in order).
    ordered: bool,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `events` pushed as fast as the API takes them.
    Burst { events: u64 },
    /// `rate` events per second for `seconds`.
    Paced { rate: u64, seconds: u64 },
    /// `events` queued with no dispatcher running, then drained by a restarted waggle.
    Backlog { events: u64 },
}

impl Scenario {
    /// Whether webhook `n` sits in a dead position. The positions alternate with live
    /// ones, so that neither half is served first.
    fn is_set_aside(&self, n: u32) -> bool {
        (n as usize) < 2 * self.set_aside && n.is_multiple_of(2)
    }
}

pub fn all(size: Size) -> Vec<Scenario> {
    let quick = size == Size::Quick;
    let pick = |q: u64, f: u64| if quick { q } else { f };
    let mut scenarios = vec![
        Scenario {
            name: "fanout",
            webhooks: 10,
            set_aside: 0,
            dead: false,
            kind: Kind::Burst {
                events: pick(2_000, 20_000),
            },
            postgres: false,
            nodes: 1,
            old_events: 0,
            ordered: false,
        },
        Scenario {
            name: "one_to_one",
            webhooks: 1,
            set_aside: 0,
            dead: false,
            kind: Kind::Burst {
                events: pick(5_000, 50_000),
            },
            postgres: false,
            nodes: 1,
            old_events: 0,
            ordered: false,
        },
        Scenario {
            name: "steady_1000",
            webhooks: 1,
            set_aside: 0,
            dead: false,
            kind: Kind::Paced {
                rate: 1_000,
                seconds: pick(3, 20),
            },
            postgres: false,
            nodes: 1,
            old_events: 0,
            ordered: false,
        },
        Scenario {
            name: "isolation",
            webhooks: 10,
            set_aside: 5,
            dead: true,
            kind: Kind::Paced {
                rate: 1_000,
                seconds: pick(3, 20),
            },
            postgres: false,
            nodes: 1,
            old_events: 0,
            ordered: false,
        },
        Scenario {
            name: "backlog",
            webhooks: 10,
            set_aside: 0,
            dead: false,
            kind: Kind::Backlog {
                events: pick(2_000, 100_000),
            },
            postgres: false,
            nodes: 1,
            old_events: 0,
            ordered: false,
        },
    ];
    // What `isolation` is compared with: the same run with every destination live (the
    // latency of the same healthy half), and the healthy half alone, without the
    // deliveries to the other half to record.
    let isolation = scenarios[3].clone();
    scenarios.insert(
        3,
        Scenario {
            name: "isolation_base",
            dead: false,
            ..isolation
        },
    );
    // The same fan-out to webhooks that want each connector's events in order: one
    // connector, so every webhook gets one delivery at a time, each let go by the end of
    // the one before.
    let fanout = scenarios[0].clone();
    scenarios.insert(
        1,
        Scenario {
            name: "fanout_ordered",
            ordered: true,
            ..fanout
        },
    );
    let steady = scenarios[3].clone();
    scenarios.insert(
        4,
        Scenario {
            name: "isolation_alone",
            webhooks: 5,
            ..steady.clone()
        },
    );
    // The same fan-out on PostgreSQL with one, two and three nodes, and the steady
    // latency run on one: what several nodes add, next to the SQLite figures above.
    for (name, nodes) in [("pg_fanout_1", 1), ("pg_fanout_2", 2), ("pg_fanout_3", 3)] {
        scenarios.push(Scenario {
            name,
            nodes,
            postgres: true,
            ..scenarios[0].clone()
        });
    }
    let one_to_one = scenarios[2].clone();
    scenarios.push(Scenario {
        name: "pg_one_to_one",
        postgres: true,
        ..one_to_one
    });
    // Steady latency while retention removes a million old rows (a third of them
    // events, a third deliveries, a third attempts).
    let old_events = pick(10_000, 340_000);
    scenarios.push(Scenario {
        name: "pg_steady_1000",
        postgres: true,
        ..steady.clone()
    });
    scenarios.push(Scenario {
        name: "steady_1000_purging",
        old_events,
        ..steady.clone()
    });
    scenarios.push(Scenario {
        name: "pg_steady_1000_purging",
        postgres: true,
        old_events,
        ..steady
    });
    scenarios
}

/// The scenarios named (all when none is), in their usual order; without PostgreSQL, all
/// leaves its scenarios out, and naming one is an error.
pub fn select(size: Size, names: &[String], postgres: bool) -> anyhow::Result<Vec<Scenario>> {
    let all = all(size);
    for name in names {
        anyhow::ensure!(
            all.iter().any(|s| s.name == name),
            "unknown scenario '{name}'; known: {}",
            all.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
    }
    let picked: Vec<Scenario> = all
        .into_iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name))
        .filter(|s| postgres || !s.postgres || !names.is_empty())
        .collect();
    if let Some(s) = picked.iter().find(|s| s.postgres && !postgres) {
        anyhow::bail!(
            "scenario '{}' needs a PostgreSQL server (--postgres)",
            s.name
        );
    }
    Ok(picked)
}

/// Whether any of these scenarios runs on PostgreSQL.
pub fn need_postgres(size: Size, names: &[String]) -> bool {
    all(size)
        .iter()
        .any(|s| s.postgres && (names.is_empty() || names.iter().any(|n| n == s.name)))
}

pub struct Context<'a> {
    pub receiver: &'a Receiver,
    pub waggle_bin: &'a Path,
    pub size: Size,
    /// The server the PostgreSQL scenarios use, when there is one.
    pub postgres: Option<Backend>,
    /// SQLite's sync mode for the SQLite scenarios (`full` or `normal`).
    pub sqlite_sync: String,
}

impl Context<'_> {
    fn backend(&self, scenario: &Scenario) -> anyhow::Result<Backend> {
        if scenario.postgres {
            self.postgres
                .clone()
                .context("a PostgreSQL scenario without a PostgreSQL server")
        } else {
            Ok(Backend::Sqlite {
                sync: self.sqlite_sync.clone(),
            })
        }
    }

    fn quick(&self) -> bool {
        self.size == Size::Quick
    }

    /// How long to wait with no new arrival before giving up on the rest.
    fn idle(&self) -> Duration {
        Duration::from_secs(if self.quick() { 10 } else { 20 })
    }
}

/// One run of `scenario`: the raw limit, waggle, and the raw limit again.
pub async fn run(scenario: &Scenario, cx: &Context<'_>) -> anyhow::Result<Measurement> {
    let concurrency = (scenario.webhooks * WEBHOOK_CONCURRENCY).min(MAX_IN_FLIGHT);
    let raw_requests = if cx.quick() { 10_000 } else { 100_000 };
    let raw_url = format!("http://127.0.0.1:{}/raw", cx.receiver.port());
    let measure_raw = || raw::measure(&raw_url, concurrency, raw_requests, Duration::from_secs(60));
    let raw_before = measure_raw().await?;
    let cpu = |pid| crate::process::cpu_seconds(pid);
    let (receiver_cpu, bench_cpu) = (cpu(cx.receiver.pid())?, cpu(std::process::id())?);
    let database_cpu = crate::process::cpu_seconds_of("postgres");
    cx.receiver.reset().await?;

    let mut m = match scenario.kind {
        Kind::Burst { events } => {
            let plan = Push {
                events,
                rate: None,
                clients: 64,
                limit: Duration::from_secs(if cx.quick() { 60 } else { 300 }),
            };
            live(scenario, cx, plan).await?
        }
        Kind::Paced { rate, seconds } => {
            let plan = Push {
                events: rate * seconds,
                rate: Some(rate),
                clients: 32,
                limit: Duration::from_secs(seconds + 30),
            };
            live(scenario, cx, plan).await?
        }
        Kind::Backlog { events } => backlog(scenario, cx, events).await?,
    };
    // Two decimals: the clock ticks are hundredths, and their difference should look so.
    let round = |s: f64| (s * 100.0).round() / 100.0;
    m.receiver_cpu_s = Some(round(cpu(cx.receiver.pid())? - receiver_cpu));
    m.bench_cpu_s = Some(round(cpu(std::process::id())? - bench_cpu));
    if scenario.postgres {
        m.database_cpu_s = Some(round(
            crate::process::cpu_seconds_of("postgres") - database_cpu,
        ));
    }
    let raw_after = measure_raw().await?;
    let raw = raw_before.together(raw_after);
    m.raw_rps = Some(raw.rps);
    (m.raw_rps_before, m.raw_rps_after) = (Some(raw_before.rps), Some(raw_after.rps));
    (m.raw_requests, m.raw_errors) = (raw.requests, raw.errors);
    m.ratio = m.deliveries_per_s.map(|d| d / raw.rps);
    m.runs = 1;
    Ok(m)
}

/// Sets up a connector and the scenario's webhooks; returns the connector's id.
async fn set_up(
    server: &Server,
    scenario: &Scenario,
    receiver: &Receiver,
) -> anyhow::Result<String> {
    let connector = server.create_connector().await?;
    for n in 0..scenario.webhooks {
        let url = if scenario.dead && scenario.is_set_aside(n as u32) {
            receiver.dead_url(n)
        } else {
            receiver.hook_url(n)
        };
        server
            .create_webhook(&url, &format!("bench {n}"), scenario.ordered)
            .await?;
    }
    Ok(connector)
}

/// waggle delivering while the events come in, on `scenario.nodes` servers.
async fn live(scenario: &Scenario, cx: &Context<'_>, plan: Push) -> anyhow::Result<Measurement> {
    let mut db = Database::create(cx.waggle_bin, &cx.backend(scenario)?).await?;
    if scenario.old_events > 0 {
        if let Err(e) = db.fill_old(scenario.old_events).await {
            db.remove().await;
            return Err(e);
        }
    }
    let mut servers = Vec::new();
    let mut started = Ok(());
    for n in 1..=scenario.nodes {
        match Server::start(cx.waggle_bin, &db, true, n).await {
            Ok(server) => servers.push(server),
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }
    let measured = async {
        started?;
        let connector = set_up(&servers[0], scenario, cx.receiver).await?;
        cx.receiver.reset().await?;
        let urls: Vec<String> = servers.iter().map(Server::base_url).collect();
        let pushed = load::push(&urls, servers[0].api_key(), &connector, plan).await?;
        let dead = if scenario.dead { scenario.set_aside } else { 0 };
        let healthy = (scenario.webhooks - dead) as u64;
        let records = cx
            .receiver
            .wait_for(
                pushed.accepted * healthy,
                cx.idle(),
                Duration::from_secs(600),
            )
            .await?;
        let mut m = figures(scenario, &pushed, healthy, &records, pushed.started_us);
        m.sqlite_sync = db.sqlite_sync.clone();
        if scenario.old_events > 0 {
            m.old_events_left = Some(db.old_events_left().await?);
        }
        // Each node's peak (they are alike), and the CPU of them all.
        for server in &servers {
            let usage = server.usage()?;
            m.peak_rss_mb = Some(m.peak_rss_mb.unwrap_or(0.0).max(usage.peak_rss_mb));
            m.cpu_s = Some(m.cpu_s.unwrap_or(0.0) + usage.cpu_s);
        }
        let timed: Vec<Record> = records
            .iter()
            .filter(|r| !scenario.is_set_aside(r.hook))
            .copied()
            .collect();
        let sorted = latencies(&timed, &pushed.returned_us, &mut m.early);
        let ms = |p: f64| report::percentile(&sorted, p).map(|us| us as f64 / 1000.0);
        (m.p50_ms, m.p90_ms, m.p99_ms, m.max_ms) = (ms(50.0), ms(90.0), ms(99.0), ms(100.0));
        anyhow::Ok(m)
    }
    .await;
    // Attempts to the dead port would hold a graceful stop for their 10 s timeout, and the
    // database is thrown away: a short grace is enough.
    stop_all(servers, Duration::from_secs(3)).await;
    db.remove().await;
    measured
}

/// Stops every server, all at once.
async fn stop_all(servers: Vec<Server>, grace: Duration) {
    let mut stopping = tokio::task::JoinSet::new();
    for server in servers {
        stopping.spawn(server.stop(grace));
    }
    while stopping.join_next().await.is_some() {}
}

/// A backlog queued with no dispatcher, then drained by waggle started anew.
async fn backlog(
    scenario: &Scenario,
    cx: &Context<'_>,
    events: u64,
) -> anyhow::Result<Measurement> {
    let db = Database::create(cx.waggle_bin, &cx.backend(scenario)?).await?;
    let pushed = {
        let server = Server::start(cx.waggle_bin, &db, false, 1).await?;
        let queued = async {
            let connector = set_up(&server, scenario, cx.receiver).await?;
            let plan = Push {
                events,
                rate: None,
                clients: 64,
                limit: Duration::from_secs(if cx.quick() { 60 } else { 900 }),
            };
            load::push(&[server.base_url()], server.api_key(), &connector, plan).await
        }
        .await;
        server.stop(Duration::from_secs(30)).await;
        queued?
    };
    let healthy = scenario.webhooks as u64;
    cx.receiver.reset().await?;
    let spawned_us = crate::now_us();
    let server = Server::start(cx.waggle_bin, &db, true, 2).await?;
    let ready_us = crate::now_us();
    let drained = async {
        let records = cx
            .receiver
            .wait_for(
                pushed.accepted * healthy,
                Duration::from_secs(30),
                Duration::from_secs(if cx.quick() { 120 } else { 1800 }),
            )
            .await?;
        let usage = server.usage()?;
        let first_arrival = records.iter().map(|r| r.at_us).min().unwrap_or(spawned_us);
        let mut m = figures(scenario, &pushed, healthy, &records, first_arrival);
        m.sqlite_sync = db.sqlite_sync.clone();
        m.peak_rss_mb = Some(usage.peak_rss_mb);
        m.cpu_s = Some(usage.cpu_s);
        m.startup_s = Some(ready_us.saturating_sub(spawned_us) as f64 / 1e6);
        m.drain_s = records
            .iter()
            .map(|r| r.at_us)
            .max()
            .map(|last| last.saturating_sub(spawned_us) as f64 / 1e6);
        anyhow::Ok(m)
    }
    .await;
    server.stop(Duration::from_secs(3)).await;
    db.remove().await;
    drained
}

/// Rates and counts; deliveries per second are counted from `from_us` to the last arrival.
fn figures(
    scenario: &Scenario,
    pushed: &Pushed,
    healthy: u64,
    records: &[Record],
    from_us: u64,
) -> Measurement {
    let mut keys: Vec<(u64, u32)> = records.iter().map(|r| (r.seq, r.hook)).collect();
    keys.sort_unstable();
    keys.dedup();
    let deliveries = keys.len() as u64;
    let seconds = |from: u64, to: u64| (to.saturating_sub(from) as f64 / 1e6).max(1e-6);
    let last_arrival = records.iter().map(|r| r.at_us).max();
    Measurement {
        scenario: scenario.name.to_owned(),
        backend: if scenario.postgres {
            "postgres"
        } else {
            "sqlite"
        }
        .to_owned(),
        nodes: scenario.nodes,
        events_per_s: Some(
            pushed.accepted as f64 / seconds(pushed.started_us, pushed.last_return_us),
        ),
        deliveries_per_s: last_arrival.map(|last| deliveries as f64 / seconds(from_us, last)),
        events: pushed.accepted,
        api_errors: pushed.errors,
        deliveries,
        expected: pushed.accepted * healthy,
        duplicates: records.len() as u64 - deliveries,
        ..Default::default()
    }
}

/// Sorted latencies in µs from each event's API call returning to each arrival of it;
/// arrivals before the call returned count as 0 and are tallied in `early`.
fn latencies(records: &[Record], returned_us: &[u64], early: &mut u64) -> Vec<u64> {
    let mut out: Vec<u64> = records
        .iter()
        .filter_map(|r| {
            let returned = *returned_us.get(r.seq as usize).filter(|&&t| t > 0)?;
            if r.at_us < returned {
                *early += 1;
            }
            Some(r.at_us.saturating_sub(returned))
        })
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_scenarios_by_name_in_order() {
        let names = vec!["backlog".to_owned(), "fanout".to_owned()];
        let picked: Vec<_> = select(Size::Quick, &names, false)
            .unwrap()
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(picked, ["fanout", "backlog"]);
        let names: Vec<&str> = all(Size::Full).iter().map(|s| s.name).collect();
        assert_eq!(
            names[..8],
            [
                "fanout",
                "fanout_ordered",
                "one_to_one",
                "steady_1000",
                "isolation_alone",
                "isolation_base",
                "isolation",
                "backlog"
            ]
        );
        let find = |name| {
            all(Size::Full)
                .into_iter()
                .find(|s| s.name == name)
                .unwrap()
        };
        assert_eq!(find("pg_one_to_one").webhooks, 1);
        assert!(find("fanout_ordered").ordered && !find("pg_fanout_1").ordered);
        assert!(select(Size::Quick, &["nope".to_owned()], true).is_err());
        assert_eq!(select(Size::Full, &[], false).unwrap().len(), 9);
        assert_eq!(select(Size::Full, &[], true).unwrap().len(), 15);
    }

    #[test]
    fn postgres_scenarios_need_a_server_only_when_named() {
        let named = vec!["pg_fanout_2".to_owned()];
        assert!(select(Size::Quick, &named, false).is_err());
        assert_eq!(select(Size::Quick, &named, true).unwrap()[0].nodes, 2);
        assert!(need_postgres(Size::Quick, &named));
        assert!(need_postgres(Size::Quick, &[]));
        assert!(!need_postgres(Size::Quick, &["fanout".to_owned()]));
    }

    #[test]
    fn isolation_and_its_base_set_aside_the_same_half() {
        let all = all(Size::Quick);
        let find = |name| all.iter().find(|s| s.name == name).unwrap();
        let (isolation, base) = (find("isolation"), find("isolation_base"));
        assert!(isolation.dead && !base.dead);
        let aside = |s: &Scenario| -> Vec<u32> {
            (0..s.webhooks as u32)
                .filter(|&n| s.is_set_aside(n))
                .collect()
        };
        assert_eq!(aside(isolation), [0, 2, 4, 6, 8]);
        assert_eq!(aside(base), aside(isolation));
        assert!(aside(find("isolation_alone")).is_empty());
    }

    #[test]
    fn latencies_match_by_sequence_number() {
        let record = |seq, at_us| Record {
            seq,
            hook: 0,
            at_us,
        };
        let returned = [100, 0, 300];
        let mut early = 0;
        let l = latencies(
            &[
                record(0, 150),
                record(1, 999),
                record(2, 250),
                record(0, 400),
            ],
            &returned,
            &mut early,
        );
        assert_eq!(l, [0, 50, 300]);
        assert_eq!(early, 1);
    }
}
