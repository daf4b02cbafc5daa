//! Test harness: the real app on a real socket with a fresh SQLite file, real receivers on
//! loopback, and waiting on conditions with deadlines.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waggle::config::Config;
use waggle::orgs;
use waggle::startup::App;

pub struct TestApp {
    pub address: String,
    pub api_key: String,
    pub signature_key: String,
    pub client: reqwest::Client,
    pub db_url: String,
    pub cancel: CancellationToken,
    pub store: Arc<dyn waggle::storage::Store>,
    pub _dir: Arc<tempfile::TempDir>,
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
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let db_url = format!("sqlite://{}/waggle.db", dir.path().display());
    let mut config = Config::for_database(&db_url);
    config.allow_private_destinations = true;
    config.poll_interval = Duration::from_millis(20);
    configure(&mut config);
    start(config, dir).await
}

async fn start(config: Config, dir: Arc<tempfile::TempDir>) -> TestApp {
    let db_url = config.database.clone();
    let app = App::build(config).await.expect("app builds");
    let store = app.store();
    let created = orgs::create(store.as_ref(), "Test Org", None)
        .await
        .expect("org");
    let address = format!("http://{}", app.local_addr());
    let cancel = app.cancel_token();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        api_key: created.api_key,
        signature_key: created.signature_key,
        client: reqwest::Client::new(),
        db_url,
        cancel,
        store,
        _dir: dir,
    }
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

    /// Another organization on the same app.
    pub async fn other_org(&self) -> TestApp {
        let created = orgs::create(self.store.as_ref(), "Other Org", None)
            .await
            .expect("org");
        TestApp {
            address: self.address.clone(),
            api_key: created.api_key,
            signature_key: created.signature_key,
            client: self.client.clone(),
            db_url: self.db_url.clone(),
            cancel: self.cancel.clone(),
            store: self.store.clone(),
            _dir: self._dir.clone(),
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

/// Polls `check` until it yields a value, failing the test after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Clone)]
struct ReceiverState {
    requests: Arc<Mutex<Vec<Received>>>,
    status: Arc<Mutex<u16>>,
}

/// An HTTP receiver on loopback that records every request and answers a set status.
pub struct Receiver {
    pub addr: SocketAddr,
    state: ReceiverState,
}

impl Receiver {
    pub async fn start(status: u16) -> Self {
        Self::from_listener(TcpListener::bind("127.0.0.1:0").await.unwrap(), status).await
    }

    pub async fn from_listener(listener: TcpListener, status: u16) -> Self {
        let state = ReceiverState {
            requests: Arc::default(),
            status: Arc::new(Mutex::new(status)),
        };
        let app = Router::new().fallback(record).with_state(state.clone());
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        wait_for(
            &format!("{n} requests at the receiver"),
            Duration::from_secs(20),
            || async {
                let got = self.requests();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

async fn record(
    State(state): State<ReceiverState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    state.requests.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let status = *state.status.lock().unwrap();
    (StatusCode::from_u16(status).unwrap(), "ok")
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
