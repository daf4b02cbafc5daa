//! What both test binaries (`api`, `browser`) use: a receiver on loopback that keeps
//! every request, and waiting on a condition with a deadline.
// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;

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

/// What a receiver answers every request with.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
}

#[derive(Clone)]
struct ReceiverState {
    requests: Arc<Mutex<Vec<Received>>>,
    answer: Answer,
}

/// An HTTP receiver on loopback that records every request and answers each alike.
pub struct Receiver {
    pub addr: SocketAddr,
    state: ReceiverState,
}

impl Receiver {
    /// Answers `status` with the body `ok`.
    pub async fn start(status: u16) -> Self {
        Self::answering(status, "text/plain", "ok").await
    }

    pub async fn answering(status: u16, content_type: &'static str, body: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, status, content_type, body)
    }

    /// Answers `status` with the body `ok`, on a listener bound beforehand.
    pub async fn from_listener(listener: TcpListener, status: u16) -> Self {
        Self::serve(listener, status, "text/plain", "ok")
    }

    fn serve(
        listener: TcpListener,
        status: u16,
        content_type: &'static str,
        body: &'static str,
    ) -> Self {
        let state = ReceiverState {
            requests: Arc::default(),
            answer: Answer {
                status: StatusCode::from_u16(status).expect("a status code"),
                content_type,
                body,
            },
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

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
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
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    state.requests.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let Answer {
        status,
        content_type,
        body,
    } = state.answer;
    (status, [(header::CONTENT_TYPE, content_type)], body)
}
