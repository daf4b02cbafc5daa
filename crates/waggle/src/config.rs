//! One typed configuration, read once from the command line and `WAGGLE_*` variables
//! (flags win over the environment, which wins over the defaults).

use std::time::Duration;

use clap::Args;
use ipnet::IpNet;

use crate::delivery::dispatcher::DispatcherConfig;
use crate::delivery::sender::SenderConfig;
use crate::domain::destination::DestinationPolicy;
use crate::domain::retry::{self, RetryPolicy};
use crate::storage::SqliteSync;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// A TOML file of these flags' values, each under the flag's own name with dashes as
    /// underscores (`rate_limit = 100`): a flag beats its environment variable, which
    /// beats the file.
    #[arg(long = "config", env = "WAGGLE_CONFIG", value_name = "FILE")]
    pub config_file: Option<std::path::PathBuf>,

    /// Address the API and dashboard listen on.
    #[arg(long, env = "WAGGLE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Serve `/metrics` on this address alone (a port scrapers reach and callers of the
    /// API do not); by default it is served with the API.
    #[arg(long, env = "WAGGLE_METRICS_LISTEN", value_name = "ADDRESS")]
    pub metrics_listen: Option<String>,

    /// Database URL: sqlite://PATH (embedded, the default), or postgres://USER@HOST/DATABASE
    /// (postgresql:// too) for several nodes sharing one database.
    #[arg(
        long,
        env = "WAGGLE_DATABASE_URL",
        default_value = "sqlite://waggle.db"
    )]
    pub database: String,

    /// Allow deliveries to private, loopback and link-local addresses (local development).
    #[arg(
        long,
        env = "WAGGLE_ALLOW_PRIVATE_DESTINATIONS",
        default_value_t = false
    )]
    pub allow_private_destinations: bool,

    /// When SQLite counts a commit as done, and the API may answer for it: `full` (on
    /// disk: survives a power loss) or `normal` (handed to the OS: survives the process
    /// being killed, not a power loss).
    #[arg(long, env = "WAGGLE_SQLITE_SYNC", default_value = "full", value_parser = SqliteSync::parse)]
    pub sqlite_sync: SqliteSync,

    /// Allow deliveries to the addresses of this range (CIDR, or one address), though it
    /// is private, loopback or link-local; repeatable. Checked on the address connected
    /// to, whatever the URL's spelling.
    #[arg(
        long = "allow-destination",
        env = "WAGGLE_ALLOW_DESTINATIONS",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = parse_net
    )]
    pub allow_destinations: Vec<IpNet>,

    /// Header that carries each delivery's signature.
    #[arg(long, env = "WAGGLE_SIGNATURE_HEADER", default_value = waggle_verify::SIGNATURE_HEADER)]
    pub signature_header: String,

    /// Waits between a network failure and the next attempt; their count is the retry budget.
    #[arg(long, env = "WAGGLE_RETRY_BACKOFF", default_value = "1s,2s,4s,8s", value_parser = parse_backoff)]
    pub retry_backoff: Backoff,

    /// Every retry starts within this long of the first attempt.
    #[arg(long, env = "WAGGLE_RETRY_WINDOW", default_value = "60s", value_parser = retry::parse_duration)]
    pub retry_window: Duration,

    /// Time limit of one attempt: connect, send and receive, redirects included.
    #[arg(long, env = "WAGGLE_ATTEMPT_TIMEOUT", default_value = "10s", value_parser = retry::parse_duration)]
    pub attempt_timeout: Duration,

    /// Deliveries held in memory at once; also the idle connections kept open to one
    /// host, since that many attempts may go to one host at once.
    #[arg(long, env = "WAGGLE_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,

    /// Concurrent attempts to one webhook.
    #[arg(long, env = "WAGGLE_WEBHOOK_CONCURRENCY", default_value_t = 64)]
    pub webhook_concurrency: usize,

    /// How often due retries and unclaimed deliveries are looked for.
    #[arg(long, env = "WAGGLE_POLL_INTERVAL", default_value = "250ms", value_parser = retry::parse_duration)]
    pub poll_interval: Duration,

    /// How long a node's claim on a delivery lasts unless renewed. The node renews the
    /// claims of the deliveries it works on every quarter of this; when a node dies,
    /// another takes its deliveries once their claims run out.
    #[arg(long, env = "WAGGLE_CLAIM_LEASE", default_value = "10s", value_parser = retry::parse_duration)]
    pub claim_lease: Duration,

    /// Disable a webhook whose attempts have all failed for this long (`5d`, `2h`, `3s`),
    /// with the reason on the webhook; enabling it again clears it. 0: never.
    #[arg(long, env = "WAGGLE_AUTO_DISABLE_AFTER", default_value = "5d", value_parser = retry::parse_duration)]
    pub auto_disable_after: Duration,

    /// Remove events, deliveries and attempts older than this (`30d`, `12h`), in the
    /// background; a delivery still being retried stays until it ends. 0: keep everything.
    #[arg(long, env = "WAGGLE_RETENTION", default_value = "0", value_parser = retry::parse_duration)]
    pub retention: Duration,

    /// Run only the API and dashboard on this node; another node delivers.
    #[arg(long, env = "WAGGLE_NO_DISPATCHER", default_value_t = false)]
    pub no_dispatcher: bool,

    /// Requests per second each API key may make, on this node (bursts of twice that);
    /// past it the API answers 429 with Retry-After. 0: no limit.
    #[arg(long, env = "WAGGLE_RATE_LIMIT", default_value_t = 2000)]
    pub rate_limit: u32,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "WAGGLE_LOG_JSON", default_value_t = false)]
    pub log_json: bool,

    /// Export traces over OTLP/HTTP to this collector (`http://collector:4318`; a URL with
    /// a path is used as it is): a span per API request and per delivery attempt, each
    /// attempt a child of the request that made its delivery. Off when unset.
    #[arg(long, env = "WAGGLE_OTLP_ENDPOINT", value_name = "URL", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
}

fn parse_otlp_endpoint(value: &str) -> Result<String, String> {
    crate::telemetry::traces::traces_url(value)
        .map(|_| value.to_owned())
        .map_err(|e| format!("{e:#}"))
}

/// The retry waits, as one command-line value (`1s,2s,4s,8s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff(pub Vec<Duration>);

fn parse_backoff(value: &str) -> Result<Backoff, String> {
    retry::parse_backoff(value).map(Backoff)
}

/// A CIDR range (`10.1.0.0/16`, `fd00::/8`), or one address (`127.0.0.1`).
fn parse_net(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{value}' is neither a CIDR range nor an IP address"))
}

impl Config {
    /// The configuration of a test or embedded instance: a given database, port 0.
    pub fn for_database(database: impl Into<String>) -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut config = Wrapper::parse_from(["waggle"]).config;
        config.database = database.into();
        config.listen = "127.0.0.1:0".into();
        config
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            backoff: self.retry_backoff.0.clone(),
            window: Some(self.retry_window),
            attempt_timeout: self.attempt_timeout,
            jitter: 0.0,
        }
    }

    /// Which addresses deliveries, Test URL and webhook URLs may name.
    pub fn destinations(&self) -> DestinationPolicy {
        DestinationPolicy {
            allow_private: self.allow_private_destinations,
            allowed: self.allow_destinations.clone(),
        }
    }

    /// The provider's signature header, which must not be one that every delivery
    /// carries already.
    fn signature_header(&self) -> anyhow::Result<http::HeaderName> {
        let name: http::HeaderName = self.signature_header.parse().map_err(|_| {
            anyhow::anyhow!("invalid signature header name '{}'", self.signature_header)
        })?;
        let taken = [
            "content-type",
            "user-agent",
            waggle_verify::STANDARD_ID_HEADER,
            waggle_verify::STANDARD_TIMESTAMP_HEADER,
            waggle_verify::STANDARD_SIGNATURE_HEADER,
        ];
        anyhow::ensure!(
            !taken.contains(&name.as_str()),
            "the signature header cannot be '{name}': every delivery carries that header already"
        );
        Ok(name)
    }

    pub fn sender(&self) -> anyhow::Result<SenderConfig> {
        Ok(SenderConfig {
            destinations: self.destinations(),
            signature_header: self.signature_header()?,
            attempt_timeout: self.attempt_timeout,
            max_idle_per_host: self.max_in_flight.max(1),
        })
    }

    pub fn dispatcher(&self) -> DispatcherConfig {
        DispatcherConfig {
            retry: self.retry_policy(),
            max_jobs: self.max_in_flight.max(1),
            per_webhook_concurrency: self.webhook_concurrency.max(1),
            // Renewed while the delivery is in memory, so it need not outlast an attempt;
            // below a second, renewals would crowd the database for little gain.
            lease: self.claim_lease.max(Duration::from_secs(1)),
            poll_interval: self.poll_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_header_cannot_be_one_every_delivery_carries() {
        let mut config = Config::for_database("sqlite://unused.db");
        assert!(config.sender().is_ok());
        for taken in [
            "Webhook-Signature",
            "webhook-timestamp",
            "webhook-id",
            "content-type",
        ] {
            config.signature_header = taken.to_owned();
            let refused = config.sender().expect_err("refused");
            assert!(refused.to_string().contains("cannot be"), "{refused}");
        }
        config.signature_header = "X-Signature".to_owned();
        assert!(config.sender().is_ok());
    }
}

/// The configuration file (`--config FILE`, TOML): every flag of `serve` under its own
/// name, dashes as underscores (`listen`, `database`, `rate_limit`, `allow_destination`).
/// Its values become the flags' defaults, so a flag beats its environment variable, which
/// beats the file, which beats the built-in default.
pub mod file {
    use std::collections::BTreeMap;
    use std::path::Path;

    use anyhow::Context;
    use clap::{Args, Command};

    use super::Config;

    /// The flags a file may set: the key each takes in the file, and the argument's id.
    pub fn keys() -> BTreeMap<String, String> {
        Config::augment_args(Command::new("serve"))
            .get_arguments()
            .filter_map(|a| {
                let long = a.get_long()?;
                (long != "config").then(|| (long.replace('-', "_"), a.get_id().to_string()))
            })
            .collect()
    }

    /// Reads the file: each key a flag of `serve`, each value a string, number, boolean
    /// or list of them. Answers each argument's id with its values.
    pub fn read(path: &Path) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration file {}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let keys = keys();
        let unknown: Vec<&str> = table
            .keys()
            .filter(|k| !keys.contains_key(*k))
            .map(String::as_str)
            .collect();
        anyhow::ensure!(
            unknown.is_empty(),
            "unknown key{} in {}: {} (known: {})",
            if unknown.len() > 1 { "s" } else { "" },
            path.display(),
            unknown.join(", "),
            keys.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        let text = |key: &str, v: &toml::Value| -> anyhow::Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => anyhow::bail!(
                    "{key} in {}: expected a string, a number or a boolean",
                    path.display()
                ),
            })
        };
        table
            .iter()
            .map(|(key, value)| {
                let values = match value {
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|v| text(key, v))
                        .collect::<anyhow::Result<_>>()?,
                    v => vec![text(key, v)?],
                };
                Ok((keys[key].clone(), values))
            })
            .collect()
    }

    /// `serve`'s command with the file's values as its flags' defaults.
    pub fn apply(serve: Command, values: &[(String, Vec<String>)]) -> Command {
        values.iter().fold(serve, |command, (id, values)| {
            let values = values.clone();
            command.mut_arg(id, move |a| a.default_values(values))
        })
    }
}
