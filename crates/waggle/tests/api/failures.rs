//! Network-layer failures: each category from a receiver that really misbehaves, the
//! retry budget and schedule, and no retry for any HTTP status.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::*;

/// A raw TCP receiver that reads each request and then does `behave` with the socket.
pub async fn misbehaving<F, Fut>(behave: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = socket.read(&mut buf).await;
            tokio::spawn(behave(socket));
        }
    });
    url
}

/// A receiver that reads each request and never answers (for 30 s).
async fn hanging() -> String {
    misbehaving(|socket| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    })
    .await
}

/// A receiver that reads each request and answers these exact bytes.
pub async fn answering(answer: &'static [u8]) -> String {
    misbehaving(move |mut socket| async move {
        let _ = socket.write_all(answer).await;
    })
    .await
}

/// A 200 answer with `body` gzipped (`content-encoding: gzip`) and the header lines
/// `extra` (each ending in CRLF); also the gzipped body's length.
pub fn gzipped_answer(body: &[u8], extra: &str) -> (Vec<u8>, usize) {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).unwrap();
    let gzipped = encoder.finish().unwrap();
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n{extra}\r\n",
        gzipped.len()
    )
    .into_bytes();
    answer.extend_from_slice(&gzipped);
    (answer, gzipped.len())
}

/// A receiver that answers [`gzipped_answer`]; also the gzipped body's length.
async fn answering_gzipped(body: &[u8], extra: &str) -> (String, usize) {
    let (answer, gzipped) = gzipped_answer(body, extra);
    (answering(answer.leak()).await, gzipped)
}

pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// Sends one event to a webhook at `url` and returns its settled log with detail.
async fn deliver_once(app: &TestApp, url: &str) -> Value {
    app.create_webhook(url, "production", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;
    let logs = app.wait_settled(1).await;
    app.log_detail(logs[0]["id"].as_str().unwrap()).await
}

fn categories(detail: &Value) -> Vec<String> {
    detail["response"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["error"]["category"]
                .as_str()
                .unwrap_or("response")
                .to_owned()
        })
        .collect()
}

/// The attempt timeout of [`assert_category`]'s app.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(800);

/// Delivers one event to `url`: every one of its 5 attempts fails with `expected`,
/// each within the attempt timeout and a second.
async fn assert_category(url: &str, expected: &str) {
    let app = spawn_app_with(|c| {
        c.retry_backoff = waggle::config::Backoff(vec![Duration::from_millis(10); 4]);
        c.attempt_timeout = ATTEMPT_TIMEOUT;
    })
    .await;
    let detail = deliver_once(&app, url).await;
    for response in detail["response"].as_array().unwrap() {
        let ms = response["duration_ms"].as_f64().unwrap();
        assert!(
            ms <= (ATTEMPT_TIMEOUT + Duration::from_secs(1)).as_millis() as f64,
            "an attempt took {ms} ms: {detail}"
        );
    }
    assert_eq!(detail["status"], "failed", "{detail}");
    assert_eq!(detail["error"], expected);
    assert_eq!(
        categories(&detail),
        vec![expected.to_owned(); 5],
        "{detail}"
    );
    assert_eq!(
        detail["request"].as_array().unwrap().len(),
        5,
        "one request entry per attempt"
    );
    assert!(detail["response"][0]["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn refused_connections_are_connect_errors() {
    assert_category(&closed_port_url(), "connect_error").await;
}

#[tokio::test]
async fn resets_are_read_errors() {
    let url = misbehaving(|socket| async move {
        socket.set_zero_linger().unwrap();
        drop(socket);
    })
    .await;
    assert_category(&url, "read_error").await;
}

#[tokio::test]
async fn garbage_is_a_remote_protocol_error() {
    let url = misbehaving(|mut socket| async move {
        let _ = socket.write_all(b"this is not HTTP at all\r\n\r\n").await;
        let _ = socket.shutdown().await;
    })
    .await;
    assert_category(&url, "remote_protocol_error").await;
}

#[tokio::test]
async fn closing_without_an_answer_is_a_remote_protocol_error() {
    let url = misbehaving(|mut socket| async move {
        let _ = socket.shutdown().await;
    })
    .await;
    assert_category(&url, "remote_protocol_error").await;
}

#[tokio::test]
async fn a_tls_handshake_that_fails_is_a_connect_error() {
    // https to a socket that answers plain HTTP: the handshake fails before any request.
    let url = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    assert_category(&url.replacen("http://", "https://", 1), "connect_error").await;
}

#[tokio::test]
async fn a_hang_past_the_attempt_timeout_is_a_read_timeout() {
    let url = hanging().await;
    assert_category(&url, "read_timeout").await;
}

#[tokio::test]
async fn a_body_that_does_not_decode_is_a_decoding_error() {
    let url = answering(
        b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 12\r\n\r\nnot gzip at!",
    )
    .await;
    assert_category(&url, "decoding_error").await;
}

#[tokio::test]
async fn a_gzipped_answer_is_logged_decoded() {
    let (url, _) = answering_gzipped(b"{\"received\":true}", "x-kept: yes\r\n").await;
    let app = spawn_app().await;
    let detail = deliver_once(&app, &url).await;
    assert_eq!(detail["status"], "delivered", "{detail}");
    let response = &detail["response"][0];
    assert_eq!(response["status_code"], 200);
    assert_eq!(response["body"], "{\"received\":true}");
    assert_eq!(response["headers"]["x-kept"], "yes");
    // The headers of the encoded body no longer describe the body kept.
    assert!(
        response["headers"]["content-encoding"].is_null(),
        "{detail}"
    );
    assert!(response["headers"]["content-length"].is_null(), "{detail}");
}

#[tokio::test]
async fn a_gzipped_answer_that_inflates_to_megabytes_keeps_64_kib() {
    // 32 MiB of zeros compress to about 32 KiB, less than the body kept.
    let (url, gzipped) = answering_gzipped(&vec![b'0'; 32 << 20], "").await;
    assert!(gzipped < 64 * 1024);
    let app = spawn_app().await;
    let detail = deliver_once(&app, &url).await;
    assert_eq!(detail["status"], "delivered", "{detail}");
    let body = detail["response"][0]["body"].as_str().unwrap();
    assert_eq!(body.len(), 64 * 1024);
    assert!(body.bytes().all(|b| b == b'0'));
}

#[tokio::test]
async fn a_full_accept_queue_is_a_connect_timeout() {
    // A listener that never accepts, with its backlog filled: new connections hang in SYN.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    assert_category(&format!("http://{addr}/hook"), "connect_timeout").await;
    drop((listener, fillers));
}

#[tokio::test]
async fn a_redirect_loop_is_too_many_redirects() {
    let url = answering(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: /again\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
    assert_category(&url, "too_many_redirects").await;
}

#[tokio::test]
async fn a_redirect_to_another_scheme_is_an_unsupported_protocol() {
    let url = answering(b"HTTP/1.1 302 Found\r\nlocation: ftp://example.com/x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
    assert_category(&url, "unsupported_protocol").await;
}

#[tokio::test]
async fn redirects_are_followed_with_the_body_on_307() {
    let app = spawn_app().await;
    let receiver = Receiver::start(200).await;
    let target = receiver.url("/final");
    let url = misbehaving(move |mut socket| {
        let target = target.clone();
        async move {
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {target}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    let detail = deliver_once(&app, &url).await;
    assert_eq!(detail["response_code"], 200);
    let got = receiver.wait_for(1).await;
    assert_eq!(
        got[0].json()["webhook"]["url"],
        url.as_str(),
        "the same body, unchanged"
    );
    assert_eq!(
        got[0].header("x-bindbee-webhook-signature"),
        expected_signature(&app.signature_key, &got[0].body)
    );
}

#[tokio::test]
async fn no_http_status_is_ever_retried() {
    let app = spawn_app().await;
    let mut receivers = Vec::new();
    for status in [200, 204, 301, 400, 401, 404, 410, 429, 500, 502, 503] {
        let receiver = Receiver::start(status).await;
        app.create_webhook(
            &receiver.url("/h"),
            "production",
            &["connector_sync_started"],
        )
        .await;
        receivers.push((status, receiver));
    }
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;
    let logs = app.wait_settled(receivers.len()).await;
    for log in &logs {
        assert_eq!(log["status"], "delivered");
        assert_eq!(log["attempts"], 1);
    }
    // Give a wrongful retry time to show up: the fast test backoff is 20 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (status, receiver) in &receivers {
        assert_eq!(receiver.requests().len(), 1, "status {status} was retried");
    }
    let mut codes: Vec<u64> = logs
        .iter()
        .map(|l| l["response_code"].as_u64().unwrap())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [200, 204, 301, 400, 401, 404, 410, 429, 500, 502, 503]
    );
}

#[tokio::test]
async fn a_failure_then_a_response_ends_with_the_response() {
    let app = spawn_app().await;
    let receiver = Receiver::start(500).await;
    let flaky = {
        let target = receiver.url("/h");
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        misbehaving(move |mut socket| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let target = target.clone();
            async move {
                if n == 0 {
                    socket.set_zero_linger().unwrap();
                } else {
                    let answer = format!("HTTP/1.1 308 Permanent Redirect\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n");
                    let _ = socket.write_all(answer.as_bytes()).await;
                }
            }
        })
        .await
    };
    let detail = deliver_once(&app, &flaky).await;
    assert_eq!(categories(&detail), ["read_error", "response"]);
    assert_eq!(detail["response_code"], 500);
    assert_eq!(detail["status"], "delivered");
    let (status, errors) = app.get("/api/v1/webhooks/logs?errors_only=true").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        errors["items"].as_array().unwrap().len(),
        1,
        "a 500 counts as an error"
    );
}

#[tokio::test]
async fn retries_stop_at_the_window() {
    let app = spawn_app_with(|c| {
        c.retry_backoff = waggle::config::Backoff(
            [200, 2_000, 2_000, 2_000]
                .map(Duration::from_millis)
                .to_vec(),
        );
        c.retry_window = Duration::from_secs(1);
    })
    .await;
    let detail = deliver_once(&app, &closed_port_url()).await;
    assert_eq!(detail["status"], "failed");
    assert_eq!(
        categories(&detail),
        ["connect_error", "connect_error"],
        "a third attempt would start past 1 s"
    );
}

pub fn attempt_starts(detail: &Value) -> Vec<chrono::DateTime<chrono::Utc>> {
    detail["request"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["timestamp"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn the_default_schedule_retries_four_times_after_1_2_4_and_8_seconds() {
    let app = spawn_app_with(|c| {
        c.retry_backoff = waggle::config::Backoff([1, 2, 4, 8].map(Duration::from_secs).to_vec())
    })
    .await;
    app.create_webhook(
        &closed_port_url(),
        "production",
        &["connector_sync_started"],
    )
    .await;
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;
    let logs = wait_for("five attempts", Duration::from_secs(25), || async {
        let logs = app.all_logs("").await;
        (logs.len() == 1 && logs[0]["status"] == "failed").then_some(logs)
    })
    .await;
    let detail = app.log_detail(logs[0]["id"].as_str().unwrap()).await;
    let starts = attempt_starts(&detail);
    assert_eq!(starts.len(), 5, "1 + 4 attempts");
    for (i, expected) in [1.0, 2.0, 4.0, 8.0].iter().enumerate() {
        let gap = (starts[i + 1] - starts[i]).num_milliseconds() as f64 / 1000.0;
        assert!(
            gap >= *expected && gap < expected + 0.5,
            "gap {i} was {gap}s, expected about {expected}s"
        );
    }
    assert!((starts[4] - starts[0]).num_seconds() < 60);
}

#[tokio::test]
async fn a_hang_is_cut_at_ten_seconds_by_default() {
    let app = spawn_app_with(|c| c.retry_backoff = waggle::config::Backoff(Vec::new())).await;
    let url = hanging().await;
    app.create_webhook(&url, "production", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;
    let logs = wait_for(
        "the attempt to time out",
        Duration::from_secs(15),
        || async {
            let logs = app.all_logs("").await;
            (logs.len() == 1 && logs[0]["status"] == "failed").then_some(logs)
        },
    )
    .await;
    let detail = app.log_detail(logs[0]["id"].as_str().unwrap()).await;
    assert_eq!(categories(&detail), ["read_timeout"]);
    let ms = detail["response"][0]["duration_ms"].as_f64().unwrap();
    assert!(
        (10_000.0..10_500.0).contains(&ms),
        "timed out after {ms} ms"
    );
}

#[tokio::test]
async fn waiting_too_long_for_a_busy_webhook_is_a_pool_timeout() {
    let app = spawn_app_with(|c| {
        c.retry_backoff = waggle::config::Backoff(Vec::new());
        c.attempt_timeout = Duration::from_millis(600);
        c.webhook_concurrency = 1;
    })
    .await;
    let url = hanging().await;
    app.create_webhook(&url, "production", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;
    app.start_sync(&connector).await;
    let logs = app.wait_settled(2).await;
    let mut errors: Vec<&str> = logs.iter().map(|l| l["error"].as_str().unwrap()).collect();
    errors.sort();
    assert_eq!(
        errors,
        ["pool_timeout", "read_timeout"],
        "one holds the only lane, the other waits past the limit"
    );
}

/// An answer's head: 200 with these header lines (each ending in CRLF).
fn head(extra: &str) -> String {
    format!("HTTP/1.1 200 OK\r\n{extra}\r\n")
}

#[tokio::test]
async fn a_reset_in_the_middle_of_the_body_is_a_read_error() {
    let url = misbehaving(|mut socket| async move {
        let answer = head("content-length: 1000\r\n") + "only the start";
        let _ = socket.write_all(answer.as_bytes()).await;
        let _ = socket.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        socket.set_zero_linger().unwrap();
        drop(socket);
    })
    .await;
    assert_category(&url, "read_error").await;
}

#[tokio::test]
async fn a_hang_in_the_middle_of_the_body_is_a_read_timeout() {
    let url = misbehaving(|mut socket| async move {
        let answer = head("content-length: 1000\r\n") + "only the start";
        let _ = socket.write_all(answer.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    assert_category(&url, "read_timeout").await;
}

#[tokio::test]
async fn an_answer_trickled_a_byte_a_second_is_cut_by_the_whole_exchange_budget() {
    // Each byte comes well within any per-read limit; the attempt's budget is for the
    // whole exchange.
    let url = misbehaving(|mut socket| async move {
        for byte in head("content-length: 2\r\n").bytes().chain(*b"ok") {
            if socket.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert_category(&url, "read_timeout").await;
}

#[tokio::test]
async fn ten_thousand_response_headers_are_a_remote_protocol_error() {
    let lines: String = (0..10_000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = head(&(lines + "content-length: 0\r\n"));
    let url = answering(answer.into_bytes().leak()).await;
    assert_category(&url, "remote_protocol_error").await;
}

#[tokio::test]
async fn a_header_line_of_one_mebibyte_is_a_remote_protocol_error() {
    let line = format!("x-big: {}\r\ncontent-length: 0\r\n", "a".repeat(1 << 20));
    let url = answering(head(&line).into_bytes().leak()).await;
    assert_category(&url, "remote_protocol_error").await;
}

#[tokio::test]
async fn an_endless_body_is_kept_to_64_kib_and_the_answer_counts() {
    let url = misbehaving(|mut socket| async move {
        let _ = socket.write_all(head("").as_bytes()).await;
        let chunk = vec![b'x'; 16 * 1024];
        // Until waggle has read enough and closes the connection (bounded anyway).
        for _ in 0..100_000 {
            if socket.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let app = spawn_app().await;
    let detail = deliver_once(&app, &url).await;
    assert_eq!(detail["status"], "delivered", "{detail}");
    assert_eq!(detail["attempts"], 1);
    let body = detail["response"][0]["body"].as_str().unwrap();
    assert_eq!(body.len(), 64 * 1024);
}

/// A real TLS server (a self-signed certificate for localhost) that answers 200.
async fn tls_server() -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(socket).await {
                    let mut buf = vec![0u8; 65536];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(head("content-length: 0\r\n").as_bytes())
                        .await;
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn plain_http_to_a_tls_port_is_a_remote_protocol_error() {
    // The TLS server answers the plain request with a TLS alert, which is no HTTP.
    assert_category(&tls_server().await, "remote_protocol_error").await;
}
