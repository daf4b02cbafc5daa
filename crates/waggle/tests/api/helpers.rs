//! Test harness: the real app on a real socket with a fresh database, real receivers on
//! loopback, and waiting on conditions with deadlines.
//!
//! `WAGGLE_TEST_BACKEND` picks the database: `sqlite` (the default: a file in a temporary
//! folder) or `postgres` (a database of its own per test on the server at
//! `WAGGLE_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/test, dropped
//! when the test ends). Every test runs against either.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use waggle::config::Config;
use waggle::orgs;
use waggle::startup::App;

pub use crate::support::{wait_for, Received, Receiver};

pub struct TestApp {
    pub address: String,
    /// The organization of `api_key`.
    pub org_id: waggle::domain::ids::OrgId,
    pub api_key: String,
    pub signature_key: String,
    pub client: reqwest::Client,
    pub db_url: String,
    pub cancel: CancellationToken,
    pub store: Arc<dyn waggle::storage::Store>,
    pub _database: Arc<TestDatabase>,
}

/// The database the tests run against, from `WAGGLE_TEST_BACKEND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("WAGGLE_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") | Ok("postgresql") => Backend::Postgres,
        Ok(other) => panic!("WAGGLE_TEST_BACKEND={other}: expected sqlite or postgres"),
    }
}

/// The PostgreSQL database tests create theirs from.
fn postgres_admin_url() -> String {
    std::env::var("WAGGLE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Test databases older than this are dropped by any later test: they were left behind
/// by a test that was killed before it could drop its own.
const STALE_DATABASE_SECS: u64 = 3600;

/// One test's own empty database: a SQLite file in a temporary folder, or a PostgreSQL
/// database `waggle_t_<created unix time>_<random>`, dropped when this is.
pub enum TestDatabase {
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        name: String,
    },
}

impl TestDatabase {
    pub async fn create() -> Self {
        match backend() {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/waggle.db", dir.path().display());
                Self::Sqlite { url, _dir: dir }
            }
            Backend::Postgres => Self::create_postgres().await,
        }
    }

    async fn create_postgres() -> Self {
        use sqlx::{Connection, Executor};
        let admin_url = postgres_admin_url();
        let mut admin = match tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect(&admin_url),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => panic!(
                "WAGGLE_TEST_BACKEND=postgres, but PostgreSQL at {admin_url} is unreachable: {e}. \
                 Start the server (or set WAGGLE_TEST_POSTGRES_URL), or run the tests on SQLite."
            ),
            Err(_) => panic!(
                "WAGGLE_TEST_BACKEND=postgres, but PostgreSQL at {admin_url} did not answer \
                 within 10 s"
            ),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Best effort: another test may be dropping the same one.
        let existing: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'waggle\\_t\\_%'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap_or_default();
        for name in existing {
            let created: Option<u64> = name
                .strip_prefix("waggle_t_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|secs| secs.parse().ok());
            if created.is_some_and(|c| c + STALE_DATABASE_SECS < now) {
                let _ = admin
                    .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await;
            }
        }
        let name = format!("waggle_t_{now}_{:08x}", rand::random::<u32>());
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
        let _ = admin.close().await;
        let mut url = url::Url::parse(&admin_url).expect("WAGGLE_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        Self::Postgres {
            url: url.to_string(),
            name,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } => url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Self::Postgres { name, .. } = self else {
            return;
        };
        if std::env::var_os("WAGGLE_TEST_KEEP_DATABASES").is_some() {
            eprintln!("kept test database {name}");
            return;
        }
        // Drop may run inside the test's runtime, which cannot be blocked on: use a
        // runtime of its own on another thread. FORCE ends the app's connections.
        let name = name.clone();
        let dropping = std::thread::spawn(move || {
            use sqlx::{Connection, Executor};
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                    let _ = admin
                        .execute(
                            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                        )
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropping.join();
    }
}

/// The app with fast retries (20 ms, 40 ms, 80 ms, 160 ms) unless a test says otherwise.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|c| {
        c.retry_backoff =
            waggle::config::Backoff([20, 40, 80, 160].map(Duration::from_millis).to_vec());
    })
    .await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let database = Arc::new(TestDatabase::create().await);
    let mut config = Config::for_database(database.url());
    config.allow_private_destinations = true;
    config.poll_interval = Duration::from_millis(20);
    configure(&mut config);
    start(config, database).await
}

async fn start(config: Config, database: Arc<TestDatabase>) -> TestApp {
    start_running(config, database).await.0
}

/// The app of `config` on `database`, with a new organization, and its run: what
/// `run_until_stopped` answers once the app stops.
pub async fn start_running(
    config: Config,
    database: Arc<TestDatabase>,
) -> (TestApp, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let db_url = config.database.clone();
    let app = App::build(config).await.expect("app builds");
    let store = app.store();
    let created = orgs::create(store.as_ref(), "Test Org", None)
        .await
        .expect("org");
    let address = format!("http://{}", app.local_addr());
    let cancel = app.cancel_token();
    let running = tokio::spawn(app.run_until_stopped());
    let app = TestApp {
        address,
        org_id: created.org_id,
        api_key: created.api_key,
        signature_key: created.signature_key,
        client: reqwest::Client::new(),
        db_url,
        cancel,
        store,
        _database: database,
    };
    (app, running)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .expect("GET");
        decode(r).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .expect("POST");
        decode(r).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .patch(self.url(path))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .expect("PATCH");
        decode(r).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .delete(self.url(path))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .expect("DELETE");
        decode(r).await
    }

    /// The same app and organization, calling with another of its keys.
    pub fn with_key(&self, key: &str) -> TestApp {
        TestApp {
            address: self.address.clone(),
            org_id: self.org_id,
            api_key: key.to_owned(),
            signature_key: self.signature_key.clone(),
            client: self.client.clone(),
            db_url: self.db_url.clone(),
            cancel: self.cancel.clone(),
            store: self.store.clone(),
            _database: self._database.clone(),
        }
    }

    /// Another organization on the same app.
    pub async fn other_org(&self) -> TestApp {
        let created = orgs::create(self.store.as_ref(), "Other Org", None)
            .await
            .expect("org");
        TestApp {
            signature_key: created.signature_key,
            org_id: created.org_id,
            ..self.with_key(&created.api_key)
        }
    }

    pub async fn create_webhook(&self, url: &str, environment: &str, events: &[&str]) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/webhooks",
                json!({"url": url, "name": "hook", "type": environment, "events": events}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    pub async fn create_connector(&self, environment: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/connectors",
                json!({
                    "environment": environment, "display_name": "BreatheHR", "integration_slug": "breathehr",
                    "categories": ["HRIS"], "origin_id": "user_123", "end_user_name": "John Doe",
                    "end_user_email": "abc@xyz.com"
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    pub async fn start_sync(&self, connector: &Value) -> Value {
        let (status, body) = self
            .post(
                &format!(
                    "/api/v1/connectors/{}/syncs",
                    connector["id"].as_str().unwrap()
                ),
                json!({"initial_sync": true}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Every log, newest first, following the cursor.
    pub async fn all_logs(&self, query: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/webhooks/logs?page_size=50&cursor={c}&{query}"),
                None => format!("/api/v1/webhooks/logs?page_size=50&{query}"),
            };
            let (status, body) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            items.extend(body["items"].as_array().unwrap().iter().cloned());
            match body["cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }

    /// Waits until every log of the organization has left `pending`.
    pub async fn wait_settled(&self, expected: usize) -> Vec<Value> {
        wait_for("deliveries to settle", Duration::from_secs(20), || async {
            let logs = self.all_logs("").await;
            (logs.len() == expected && logs.iter().all(|l| l["status"] != "pending"))
                .then_some(logs)
        })
        .await
    }

    pub async fn log_detail(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/webhooks/logs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

pub async fn decode(r: reqwest::Response) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The signature computed independently of waggle: HMAC-SHA256, URL-safe base64.
pub fn expected_signature(key: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::URL_SAFE.encode(mac.finalize().into_bytes())
}

pub fn id(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
        .to_owned()
}

/// A `waggle serve` process of the real binary, killed when dropped.
pub struct Server {
    pub child: Child,
    pub address: String,
}

impl Server {
    /// SIGKILL: the process gets no chance to finish or give back anything.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the graceful shutdown (without blocking the test's own
    /// receivers, which the attempts still in flight may be talking to).
    pub async fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "the server did not stop within 30 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_9();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary the process tests run: this build's, or `WAGGLE_TEST_BIN` (a release
/// build, say, to measure with).
pub fn waggle_bin() -> String {
    std::env::var("WAGGLE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_waggle").into())
}

/// Starts `waggle serve` on `port` and waits until it answers. Its output is dropped
/// unless `WAGGLE_TEST_SERVER_LOGS` is set.
pub async fn serve(db_url: &str, port: u16, extra: &[&str]) -> Server {
    let output = || {
        if std::env::var_os("WAGGLE_TEST_SERVER_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        }
    };
    let child = Command::new(waggle_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            db_url,
            "--allow-private-destinations",
        ])
        .args(extra)
        .stdout(output())
        .stderr(output())
        .spawn()
        .expect("waggle starts");
    let server = Server {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    wait_for("the server to answer", Duration::from_secs(15), || async {
        client
            .get(format!("{}/healthz", server.address))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    server
}

/// `waggle org create` with the real binary: `{"org_id", "api_key", "signature_key"}`.
pub fn org_create(db_url: &str) -> Value {
    let out = Command::new(waggle_bin())
        .args(["org", "create", "--name", "Crash Org", "--database", db_url])
        .output()
        .expect("org create runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    for field in ["org_id", "api_key", "signature_key"] {
        assert!(created[field].is_string(), "{created}");
    }
    created
}

/// Deliveries of the database at `db_url` not yet settled (pending), read with a
/// connection of the test's own beside the running app.
pub async fn pending_deliveries(db_url: &str) -> i64 {
    count(
        db_url,
        "SELECT count(*) FROM deliveries WHERE status = 'pending'",
    )
    .await
}

/// The number a `SELECT count(*) …` answers, read straight from the database.
pub async fn count(db_url: &str, query: &str) -> i64 {
    match db_url.strip_prefix("sqlite://") {
        Some(path) => {
            let conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            conn.query_row(query, [], |row| row.get(0)).unwrap()
        }
        None => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(db_url).await.unwrap();
            let found: i64 = sqlx::query_scalar(query)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let _ = conn.close().await;
            found
        }
    }
}

/// GETs `url` with the API key; its JSON, panicking on any failure.
pub async fn fetch(client: &reqwest::Client, key: &str, url: String) -> Value {
    let r = client
        .get(&url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    r.json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// POSTs `body`; the answer's JSON when it succeeded, `None` on any failure.
pub async fn call(client: &reqwest::Client, key: &str, url: String, body: Value) -> Option<Value> {
    let r = client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}
