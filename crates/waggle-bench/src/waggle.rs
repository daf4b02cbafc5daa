//! The waggle under test: a fresh database (SQLite in a temporary folder, or a new
//! PostgreSQL database) with one organization, `serve` processes on free loopback ports,
//! and the API calls that set a scenario up.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;
use tokio::process::Command;

use crate::process::{self, Guard, Usage};

/// Where the databases of a run live.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A new file in a temporary folder per run: waggle's embedded default, run with
    /// `--sqlite-sync` `sync` (`full` or `normal`).
    Sqlite { sync: String },
    /// A new database per run on this server; `admin_url` names a database the bench can
    /// connect to in order to create and drop them.
    Postgres { admin_url: String },
}

/// The names of the PostgreSQL databases the bench creates: dropped after each run, and
/// any left behind by an interrupted bench are dropped when the next one starts.
const PG_PREFIX: &str = "waggle_bench_";

impl Backend {
    /// Connects to the admin database within a few seconds.
    pub async fn admin(admin_url: &str) -> anyhow::Result<PgConnection> {
        tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(admin_url))
            .await
            .with_context(|| format!("connecting to {admin_url} took over 5 s"))?
            .with_context(|| format!("connecting to {admin_url}"))
    }

    /// Drops the databases earlier benches left behind.
    pub async fn drop_leftovers(admin_url: &str) -> anyhow::Result<()> {
        let mut admin = Self::admin(admin_url).await?;
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
                .bind(PG_PREFIX)
                .fetch_all(&mut admin)
                .await?;
        for name in names {
            drop_database(&mut admin, &name).await?;
        }
        Ok(())
    }
}

async fn drop_database(admin: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(admin)
        .await
        .with_context(|| format!("dropping database {name}"))?;
    Ok(())
}

/// A fresh database with one organization. The temporary folder (SQLite's file, and
/// every server's log) is removed on drop; a PostgreSQL database by [`Database::remove`].
pub struct Database {
    dir: TempDir,
    url: String,
    api_key: String,
    /// The PostgreSQL database's name, and the admin URL to drop it with.
    postgres: Option<(String, String)>,
    /// SQLite's sync mode, given to every server (`WAGGLE_SQLITE_SYNC`).
    pub sqlite_sync: Option<String>,
    /// `WAGGLE_RETENTION`, given to every server once old rows were put in.
    retention: Option<&'static str>,
}

impl Database {
    /// Creates the database, then `waggle org create --name Bench --database <url>`.
    pub async fn create(waggle_bin: &Path, backend: &Backend) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("waggle-bench-")
            .tempdir()
            .context("creating a temporary folder")?;
        let (url, postgres, sqlite_sync) = match backend {
            Backend::Sqlite { sync } => (
                format!("sqlite://{}", dir.path().join("bench.db").display()),
                None,
                Some(sync.clone()),
            ),
            Backend::Postgres { admin_url } => {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let name = format!(
                    "{PG_PREFIX}{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                let mut admin = Backend::admin(admin_url).await?;
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut admin)
                    .await
                    .with_context(|| format!("creating database {name}"))?;
                let mut url = url::Url::parse(admin_url).context("the PostgreSQL URL")?;
                url.set_path(&name);
                (url.to_string(), Some((name, admin_url.clone())), None)
            }
        };
        let database = Self {
            dir,
            url,
            api_key: String::new(),
            postgres,
            sqlite_sync,
            retention: None,
        };
        match database.create_org(waggle_bin).await {
            Ok(api_key) => Ok(Self {
                api_key,
                ..database
            }),
            Err(e) => {
                database.remove().await;
                Err(e)
            }
        }
    }

    /// `waggle org create`; answers the organization's API key.
    async fn create_org(&self, waggle_bin: &Path) -> anyhow::Result<String> {
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(waggle_bin)
                .args(["org", "create", "--name", "Bench", "--database", &self.url])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("`waggle org create` took over 60 s")?
        .context("running `waggle org create`")?;
        anyhow::ensure!(
            output.status.success(),
            "`waggle org create` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        #[derive(Deserialize)]
        struct Created {
            api_key: String,
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let created: Created = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line).ok())
            .with_context(|| format!("no org JSON in `waggle org create` output: {stdout}"))?;
        Ok(created.api_key)
    }

    /// Drops a PostgreSQL database (its servers must be stopped); the folder goes on drop.
    pub async fn remove(self) {
        if let Some((name, admin_url)) = &self.postgres {
            let dropped = async {
                let mut admin = Backend::admin(admin_url).await?;
                drop_database(&mut admin, name).await
            }
            .await;
            if let Err(e) = dropped {
                eprintln!("waggle-bench: {e:#} (the next bench drops it)");
            }
        }
    }

    /// Puts in `events` events made 60 days ago, each with a delivered delivery and its
    /// one attempt, as a store kept them before retention was turned on; every server
    /// started after this runs with `--retention 30d`. Straight into the tables, in one
    /// transaction: through the API they would be new.
    pub async fn fill_old(&mut self, events: u64) -> anyhow::Result<()> {
        const DAY_MS: u64 = 86_400_000;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let then_ms = now_ms - 60 * DAY_MS;
        // The first 48 bits of a UUIDv7 are its milliseconds: `xxxxxxxx-xxxx`.
        let hex = format!("{then_ms:012x}");
        let prefix = format!("{}-{}", &hex[..8], &hex[8..]);
        let then_us = (then_ms * 1000) as i64;
        let body = format!("{{\"data\":\"{}\"}}", "x".repeat(600));
        let (events, prefix2) = (events as i64, prefix.clone());
        match &self.postgres {
            None => {
                let path = self.url.trim_start_matches("sqlite://").to_owned();
                tokio::task::spawn_blocking(move || {
                    fill_sqlite(&path, events, &prefix2, then_us, &body)
                })
                .await??
            }
            Some(_) => fill_postgres(&self.url, events, &prefix, then_ms, &body).await?,
        }
        self.retention = Some("30d");
        Ok(())
    }

    /// Old events (see [`Database::fill_old`]) not removed yet.
    pub async fn old_events_left(&self) -> anyhow::Result<u64> {
        const OLD: &str = "SELECT count(*) FROM events WHERE integration_name = 'old'";
        Ok(match &self.postgres {
            None => {
                let conn = rusqlite::Connection::open(self.url.trim_start_matches("sqlite://"))?;
                conn.query_row(OLD, [], |row| row.get::<_, i64>(0))? as u64
            }
            Some(_) => {
                let mut conn = PgConnection::connect(&self.url).await?;
                let left: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM events WHERE created_at < now() - interval '1 day'",
                )
                .fetch_one(&mut conn)
                .await?;
                left as u64
            }
        })
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("serve-{n}.log"))
    }
}

/// A running `waggle serve`; dropping it kills the process.
pub struct Server {
    process: Guard,
    addr: SocketAddr,
    log: PathBuf,
    client: reqwest::Client,
    api_key: String,
}

impl Server {
    /// Starts `waggle serve` on `db` and waits for `/healthz`. `n` numbers the log file.
    pub async fn start(
        waggle_bin: &Path,
        db: &Database,
        dispatcher: bool,
        n: usize,
    ) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let log = db.log_path(n);
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(waggle_bin);
        command
            .args(["serve", "--allow-private-destinations"])
            // The bench's one API key calls as fast as it can: measured is delivery, not
            // the per-key rate limit (an environment variable, which waggles older than
            // the limit ignore, so that any two builds can run in turns).
            .env("WAGGLE_RATE_LIMIT", "0")
            .args(["--listen", &addr.to_string(), "--database", &db.url]);
        if !dispatcher {
            command.arg("--no-dispatcher");
        }
        // An environment variable too, for the same reason as the rate limit's.
        if let Some(sync) = &db.sqlite_sync {
            command.env("WAGGLE_SQLITE_SYNC", sync);
        }
        if let Some(retention) = db.retention {
            command.env("WAGGLE_RETENTION", retention);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", waggle_bin.display()))?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut server = Self {
            process: Guard::new(child)?,
            addr,
            log,
            client,
            api_key: db.api_key.clone(),
        };
        server.wait_healthy(Duration::from_secs(120)).await?;
        Ok(server)
    }

    async fn wait_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        let url = format!("http://{}/healthz", self.addr);
        loop {
            if let Some(status) = self.process.exited() {
                anyhow::bail!(
                    "waggle exited ({status}) before it was healthy{}",
                    self.log_tail()
                );
            }
            if let Ok(r) = self.client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("waggle not healthy within {limit:?}{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of waggle's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
        format!("; waggle's log ends:\n  {tail}")
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    pub fn usage(&self) -> anyhow::Result<Usage> {
        process::usage(self.process.pid())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(self, grace: Duration) {
        self.process.stop(grace).await;
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let response = self
            .client
            .post(format!("{}/api/v1{path}", self.base_url()))
            .bearer_auth(&self.api_key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "POST {path} answered {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// A production connector; returns its id.
    pub async fn create_connector(&self) -> anyhow::Result<String> {
        let connector = self
            .post(
                "/connectors",
                json!({
                    "environment": "production",
                    "display_name": "BreatheHR",
                    "integration_slug": "breathehr",
                    "categories": ["HRIS"],
                    "origin_id": "user_123",
                    "end_user_name": "John Doe",
                    "end_user_email": "abc@xyz.com",
                }),
            )
            .await?;
        connector["id"]
            .as_str()
            .map(str::to_owned)
            .context("connector without an id")
    }

    /// A production webhook to `url` for `connector_data_modified`, `ordered` or not (the
    /// field is sent only when set, so that a waggle from before it runs the other
    /// scenarios).
    pub async fn create_webhook(&self, url: &str, name: &str, ordered: bool) -> anyhow::Result<()> {
        let mut webhook = json!({
            "url": url,
            "name": name,
            "type": "production",
            "events": ["connector_data_modified"],
        });
        if ordered {
            webhook["ordered"] = json!(true);
        }
        self.post("/webhooks", webhook).await?;
        Ok(())
    }
}

/// A loopback address with a port free right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// [`Database::fill_old`] on SQLite: ids made of the old milliseconds and a counter.
fn fill_sqlite(
    path: &str,
    events: i64,
    prefix: &str,
    then_us: i64,
    body: &str,
) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    let tx = conn.transaction()?;
    let org: String = tx.query_row("SELECT id FROM organizations", [], |row| row.get(0))?;
    tx.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1) \
         INSERT INTO events (id, org_id, event_type, environment, connector_id, created_at, \
         shared_body, integration_name, end_user_name, origin_id) \
         SELECT printf('%s-7000-8000-%012x', ?2, i), ?3, 'employee_data_changed', \
         'production', ?2 || '-7000-a000-000000000000', ?4, CAST(?5 AS BLOB), 'old', 'old', 'old' \
         FROM n",
        rusqlite::params![events, prefix, org, then_us, body],
    )?;
    tx.execute(
        "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, url, status, \
         attempt_count, attempts_started, response_code, created_at, first_attempt_at, \
         finished_at) \
         SELECT replace(id, '-8000-', '-9000-'), org_id, id, ?1 || '-7000-b000-000000000000', \
         'old', 'http://127.0.0.1:9/old', 'delivered', 1, 1, 200, created_at, created_at, \
         created_at FROM events WHERE integration_name = 'old'",
        [prefix],
    )?;
    tx.execute(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_us, request_url, \
         request_headers, response_status, response_headers, response_body) \
         SELECT id, 1, created_at, 1000, url, '[]', 200, '[]', x'' FROM deliveries \
         WHERE webhook_name = 'old'",
        [],
    )?;
    tx.commit()?;
    Ok(())
}

/// [`Database::fill_old`] on PostgreSQL.
async fn fill_postgres(
    url: &str,
    events: i64,
    prefix: &str,
    then_ms: u64,
    body: &str,
) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    let mut tx = conn.begin().await?;
    let at = format!("to_timestamp({then_ms} / 1000.0)");
    sqlx::query(&format!(
        "INSERT INTO events (id, org_id, event_type, environment, connector_id, created_at, \
         shared_body) \
         SELECT ($1 || '-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, \
         (SELECT id FROM organizations), 'employee_data_changed', 'production', \
         ($1 || '-7000-a000-000000000000')::uuid, {at}, convert_to($3, 'UTF8') \
         FROM generate_series(0, $2 - 1) AS i"
    ))
    .bind(prefix)
    .bind(events)
    .bind(body)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, connector_id, \
         event_type, integration_name, end_user_name, origin_id, url, status, attempt_count, \
         attempts_started, response_code, created_at, first_attempt_at, finished_at) \
         SELECT replace(id::text, '-8000-', '-9000-')::uuid, org_id, id, \
         ($1 || '-7000-b000-000000000000')::uuid, 'old', connector_id, event_type, 'old', 'old', \
         'old', 'http://127.0.0.1:9/old', 'delivered', 1, 1, 200, {at}, {at}, {at} FROM events"
    ))
    .bind(prefix)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_us, request_url, \
         request_headers, response_status, response_headers, response_body) \
         SELECT id, 1, created_at, 1000, url, '[]', 200, '[]', '' FROM deliveries",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    Ok(())
}
