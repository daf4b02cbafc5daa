//! `waggle-bench`: measures how fast waggle delivers webhooks, next to the fastest a plain
//! HTTP client reaches the same receiver on this machine (the physical limit). It reports
//! figures; it never passes or fails on them.
//!
//! ```text
//! cargo run --release -p waggle-bench -- [--quick] [--json FILE] [--runs N]
//!                                        [--scenario NAME[,NAME…]] [--waggle-bin PATH]
//! ```
#![forbid(unsafe_code)]

mod load;
mod process;
mod raw;
mod receiver;
mod report;
mod scenario;
mod waggle;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "waggle-bench",
    about = "Measures waggle's delivery speed against a raw HTTP client on this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Options,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The HTTP receiver, run by the bench in its own process.
    #[command(hide = true)]
    Receiver {
        /// Exit after this many seconds even if the bench never closes our stdin.
        #[arg(long, default_value_t = 4 * 3600)]
        max_seconds: u64,
    },
}

#[derive(Debug, clap::Args)]
struct Options {
    /// A small version of every scenario, under a minute in all.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as a JSON array to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Runs of each scenario; the median of each figure is reported (default 3, or 1
    /// with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: Option<u32>,
    /// Only these scenarios (fanout, fanout_ordered, one_to_one, steady_1000,
    /// isolation_alone, isolation_base, isolation, backlog, pg_fanout_1, pg_fanout_2,
    /// pg_fanout_3, pg_one_to_one, pg_steady_1000, steady_1000_purging,
    /// pg_steady_1000_purging).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    scenario: Vec<String>,
    /// The waggle binary (default: `waggle` beside this executable, i.e. target/release).
    #[arg(long, value_name = "PATH")]
    waggle_bin: Option<PathBuf>,
    /// A PostgreSQL database the bench may connect to, to create (and drop) one database
    /// per run of the `pg_*` scenarios. When it is unreachable, a run of every scenario
    /// skips those (and says so).
    #[arg(
        long,
        value_name = "URL",
        env = "WAGGLE_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
    /// SQLite's sync mode for the SQLite scenarios: `full` (waggle's default, a 2xx means
    /// on disk) or `normal`.
    #[arg(long, value_name = "MODE", default_value = "full", value_parser = ["full", "normal"])]
    sqlite_sync: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Receiver { max_seconds }) => receiver::serve(max_seconds),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(async {
                tokio::select! {
                    result = bench(cli.options) => result,
                    _ = tokio::signal::ctrl_c() => {
                        // Returning drops the receiver and any waggle, which kills them.
                        anyhow::bail!("interrupted")
                    }
                }
            }),
    }
}

async fn bench(options: Options) -> anyhow::Result<()> {
    let waggle_bin = match options.waggle_bin {
        Some(path) => path,
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .context("this executable has no directory")?
            .join("waggle"),
    };
    anyhow::ensure!(
        waggle_bin.is_file(),
        "no waggle binary at {} (build it with `cargo build --release -p waggle`, or pass --waggle-bin)",
        waggle_bin.display()
    );
    let size = if options.quick {
        scenario::Size::Quick
    } else {
        scenario::Size::Full
    };
    let runs = options.runs.unwrap_or(if options.quick { 1 } else { 3 }) as usize;
    let postgres = if scenario::need_postgres(size, &options.scenario) {
        match waggle::Backend::drop_leftovers(&options.postgres).await {
            Ok(()) => Some(waggle::Backend::Postgres {
                admin_url: options.postgres.clone(),
            }),
            Err(e) if options.scenario.is_empty() => {
                eprintln!(
                    "waggle-bench: SKIPPING the PostgreSQL scenarios, no server: {e:#} \
                     (pass --postgres URL)"
                );
                None
            }
            Err(e) => return Err(e.context("the PostgreSQL scenarios need a server")),
        }
    } else {
        None
    };
    let scenarios = scenario::select(size, &options.scenario, postgres.is_some())?;

    let started = Instant::now();
    let receiver = receiver::Receiver::start()
        .await
        .context("starting the receiver")?;
    eprintln!(
        "waggle-bench: {} run(s) of {} scenario(s) ({:?}), waggle at {}, receiver on 127.0.0.1:{}",
        runs,
        scenarios.len(),
        size,
        waggle_bin.display(),
        receiver.port()
    );
    let context = scenario::Context {
        receiver: &receiver,
        waggle_bin: &waggle_bin,
        size,
        postgres,
        sqlite_sync: options.sqlite_sync.clone(),
    };
    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    for scenario in &scenarios {
        let mut measured = Vec::new();
        for run in 1..=runs {
            eprintln!("-- {} run {run}/{runs}", scenario.name);
            match scenario::run(scenario, &context).await {
                Ok(m) => {
                    eprintln!("   {}", report::one_line(&m));
                    measured.push(m);
                }
                Err(e) => {
                    eprintln!("   {} run {run} failed: {e:#}", scenario.name);
                    failures.push(format!("{} run {run}: {e:#}", scenario.name));
                }
            }
        }
        if !measured.is_empty() {
            summaries.push(report::median(&measured));
        }
    }

    println!();
    print!("{}", report::table(&summaries));
    println!(
        "\n{} run(s) per scenario, medians shown; {:.0} s in all.",
        runs,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &options.json {
        let json = serde_json::to_string_pretty(&summaries)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    // A run that could not be measured is a broken bench, not a slow waggle.
    anyhow::ensure!(
        failures.is_empty(),
        "{} run(s) could not be measured:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    Ok(())
}

/// Wall-clock microseconds since the Unix epoch: comparable across processes.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}
