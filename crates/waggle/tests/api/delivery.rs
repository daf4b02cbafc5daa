//! Events to deliveries: fan-out, payloads, signatures, keys, isolation.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const ALL: [&str; 5] = [
    "connector_sync_started",
    "connector_sync_error",
    "connector_synced",
    "employee_data_changed",
    "connector_data_modified",
];

/// Which (event type) each receiver path saw.
fn seen(requests: &[Received]) -> BTreeSet<(String, String)> {
    requests
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.json()["webhook"]["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_event_type_reaches_exactly_the_webhooks_that_want_it() {
    let app = spawn_app().await;
    let receiver = Receiver::start(200).await;
    // One webhook per event type in production, one for everything in development,
    // one disabled for everything in production.
    for event in ALL {
        app.create_webhook(
            &receiver.url(&format!("/prod/{event}")),
            "production",
            &[event],
        )
        .await;
    }
    app.create_webhook(&receiver.url("/dev/all"), "development", &ALL)
        .await;
    let disabled = app
        .create_webhook(&receiver.url("/prod/disabled"), "production", &ALL)
        .await;
    app.patch(
        &format!("/api/v1/webhooks/{}", id(&disabled, "webhook_id")),
        json!({"is_enabled": false}),
    )
    .await;

    let prod = app.create_connector("production").await;
    let cid = id(&prod, "id");
    let s1 = app.start_sync(&prod).await;
    let (status, _) = app
        .post(
            &format!("/api/v1/connectors/{cid}/syncs/{}/complete", id(&s1, "id")),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let s2 = app.start_sync(&prod).await;
    let (status, failed) = app
        .post(
            &format!("/api/v1/connectors/{cid}/syncs/{}/fail", id(&s2, "id")),
            json!({"message": "token expired"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(failed["display_status"], "Failed");
    let (status, _) = app
        .post(
            &format!("/api/v1/connectors/{cid}/changes"),
            json!({"model": "employee", "ids": ["e1"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = app
        .post(
            &format!("/api/v1/connectors/{cid}/changes"),
            json!({"model": "department", "ids": ["d1"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // 2 starts + 1 complete + 1 error + 1 employee + 2 data modified = 7 production deliveries.
    let got = receiver.wait_for(7).await;
    let expected: BTreeSet<(String, String)> = ALL
        .iter()
        .map(|e| (format!("/prod/{e}"), e.to_string()))
        .collect();
    assert_eq!(seen(&got), expected);
    assert_eq!(
        got.iter()
            .filter(|r| r.path == "/prod/connector_sync_started")
            .count(),
        2
    );
    assert_eq!(
        got.iter()
            .filter(|r| r.path == "/prod/connector_data_modified")
            .count(),
        2
    );

    // A development connector reaches only the development webhook.
    let dev = app.create_connector("development").await;
    app.start_sync(&dev).await;
    let got = receiver.wait_for(8).await;
    assert_eq!(got[7].path, "/dev/all");
    let logs = app.wait_settled(8).await;
    assert!(logs
        .iter()
        .all(|l| l["response_code"] == 200 && l["status"] == "delivered"));
    assert!(receiver
        .requests()
        .iter()
        .all(|r| r.path != "/prod/disabled"));
}

#[tokio::test]
async fn payloads_have_the_provider_shape_and_verify() {
    let app = spawn_app().await;
    let receiver = Receiver::start(200).await;
    let hook = app
        .create_webhook(&receiver.url("/h"), "production", &ALL)
        .await;
    let connector = app.create_connector("production").await;
    let cid = id(&connector, "id");
    let sync = app.start_sync(&connector).await;
    let sid = id(&sync, "id");
    app.post(
        &format!("/api/v1/connectors/{cid}/syncs/{sid}/fail"),
        json!({"message": "boom", "detail": {"code": 7}}),
    )
    .await;
    app.post(
        &format!("/api/v1/connectors/{cid}/changes"),
        json!({"model": "employee", "ids": ["e1", "e2"]}),
    )
    .await;
    let got = receiver.wait_for(4).await;

    let by_event = |e: &str| {
        got.iter()
            .find(|r| r.json()["webhook"]["event"] == e)
            .unwrap()
            .clone()
    };
    let started = by_event("connector_sync_started");
    let body = started.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["webhook", "connector", "data", "sync"]);
    assert_eq!(
        body["webhook"],
        json!({"webhook_id": hook["webhook_id"], "url": receiver.url("/h"), "event": "connector_sync_started"})
    );
    assert_eq!(
        body["connector"],
        json!({"id": cid, "display_name": "BreatheHR", "integration_slug": "breathehr", "categories": ["HRIS"],
               "org_name": "Test Org", "origin_id": "user_123", "connector_status": "COMPLETE",
               "end_user_name": "John Doe", "end_user_email": "abc@xyz.com"})
    );
    assert_eq!(body["data"]["id"], sid.as_str());
    assert_eq!(body["data"]["integration_name"], "breathehr");
    assert_eq!(body["data"]["initial_sync"], true);
    assert_eq!(body["data"]["category"], "HRIS");
    assert_eq!(body["data"]["display_status"], "Syncing");
    assert_eq!(
        body["data"]["last_sync_start_time"],
        sync["last_sync_start_time"]
    );
    assert!(body["data"]["last_sync_start_time"]
        .as_str()
        .unwrap()
        .ends_with("+00:00"));
    assert_eq!(body["sync"], json!({"sync_id": sid, "sync_type": "MANUAL"}));
    assert_eq!(started.header("content-type"), "application/json");

    let error = by_event("connector_sync_error").json();
    assert_eq!(error["data"]["display_status"], "Failed");
    assert_eq!(error["error"]["message"], "boom");
    assert_eq!(error["error"]["detail"], json!({"code": 7}));
    assert!(error["error"]["failed_at"].is_string());

    for event in ["employee_data_changed", "connector_data_modified"] {
        let change = by_event(event).json();
        assert_eq!(change["data"], json!(["e1", "e2"]));
        assert_eq!(change["model"], "employee");
    }

    for r in &got {
        assert_eq!(
            r.header("x-bindbee-webhook-signature"),
            expected_signature(&app.signature_key, &r.body)
        );
        assert!(!r.header("webhook-id").is_empty());
    }
    python_snippet_verifies(&app.signature_key, &got[0]);

    // The Standard Webhooks scheme, with the same key in its `whsec_` form.
    let (status, key) = app.get("/api/v1/webhooks/signature-key").await;
    assert_eq!(status, 200);
    let secret = key["standard_webhooks_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let now = chrono::Utc::now().timestamp();
    for r in &got {
        let stamp: i64 = r.header("webhook-timestamp").parse().unwrap();
        assert!((now - stamp).abs() <= 10, "timestamp {stamp}, now {now}");
        assert_eq!(
            waggle_verify::verify_standard(
                &secret,
                r.header("webhook-id"),
                r.header("webhook-timestamp"),
                r.header("webhook-signature"),
                &r.body,
                now,
            ),
            Ok(())
        );
    }
    standard_webhooks_package_verifies(&secret, &got[0]);
}

/// The Standard Webhooks package from PyPI, in the Python that `scripts/test.sh` installs
/// it into (`WAGGLE_TEST_STANDARD_WEBHOOKS_PYTHON`), verifies a delivery, and refuses it
/// once a byte of its body changed.
fn standard_webhooks_package_verifies(secret: &str, request: &Received) {
    let Some(python) = std::env::var_os("WAGGLE_TEST_STANDARD_WEBHOOKS_PYTHON") else {
        eprintln!(
            "SKIPPED: the check with the standardwebhooks package \
             (set WAGGLE_TEST_STANDARD_WEBHOOKS_PYTHON, as scripts/test.sh does)"
        );
        return;
    };
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
body = sys.stdin.buffer.read()
headers = json.loads(sys.argv[2])
try:
    Webhook(sys.argv[1]).verify(body, headers)
    print("valid")
except WebhookVerificationError as e:
    print("invalid:", e)
"#;
    let verify = |body: &[u8]| {
        use std::io::Write;
        let headers = json!({
            "webhook-id": request.header("webhook-id"),
            "webhook-timestamp": request.header("webhook-timestamp"),
            "webhook-signature": request.header("webhook-signature"),
        });
        let mut child = std::process::Command::new(&python)
            .arg("-c")
            .arg(script)
            .arg(secret)
            .arg(headers.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the Python with standardwebhooks runs");
        child.stdin.take().unwrap().write_all(body).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(verify(&request.body), "valid");
    let mut tampered = request.body.to_vec();
    tampered[0] ^= 0x20;
    assert!(verify(&tampered).starts_with("invalid"));
}

/// Runs the provider page's Python verification snippet, unchanged, on a delivery.
fn python_snippet_verifies(key: &str, request: &Received) {
    let snippet = r#"
import base64
import hashlib
import hmac
import sys

class _Request:
    body = sys.stdin.read()
    headers = {"X-Bindbee-Webhook-Signature": sys.argv[2]}
request = _Request()

signature_key = "YOUR_WEBHOOK_SIGNATURE_KEY"
signature_key = sys.argv[1]
request_body = request.body

# Ensure the presence of a signature header in the request
if "X-Bindbee-Webhook-Signature" not in request.headers:
    print('Signature header missing; request may not be from Bindbee.')
    raise

# Retrieve the signature header from the request
received_signature = request.headers["X-Bindbee-Webhook-Signature"]

# Convert the key and request body to bytes
key_bytes = signature_key.encode("utf-8")
body_bytes = request_body.encode("utf-8")

# Create an HMAC digest using SHA-256
hmac_digest = hmac.new(key_bytes, body_bytes, hashlib.sha256).digest()

# Encode the digest to base64
encoded_digest = base64.urlsafe_b64encode(hmac_digest).decode()

# Use `hmac.compare_digest` to compare the computed digest with the received signature
signature_valid = hmac.compare_digest(encoded_digest, received_signature)
print("valid" if signature_valid else "invalid")
"#;
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(snippet)
        .arg(key)
        .arg(request.header("x-bindbee-webhook-signature"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&request.body)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid");
}

#[tokio::test]
async fn regenerating_the_key_signs_every_later_attempt_with_the_new_key() {
    let app = spawn_app_with(|c| {
        c.retry_backoff = waggle::config::Backoff(vec![Duration::from_millis(600); 4]);
    })
    .await;
    let receiver = Receiver::start(200).await;
    // The first attempt fails (nothing listens yet), the retry reaches the receiver.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/h", closed.local_addr().unwrap());
    drop(closed);
    let hook = app
        .create_webhook(&closed_url, "production", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    let old_key = app.signature_key.clone();
    app.start_sync(&connector).await;
    wait_for("a failed first attempt", Duration::from_secs(5), || async {
        let logs = app.all_logs("").await;
        (logs.first().is_some_and(|l| l["attempts"] == 1)).then_some(())
    })
    .await;
    let (status, regenerated) = app
        .post("/api/v1/webhooks/signature-key/regenerate", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let new_key = regenerated["signature_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    assert_eq!(
        app.get("/api/v1/webhooks/signature-key").await.1["signature_key"],
        new_key.as_str()
    );
    // A delivery keeps the URL it was made for, so the retried one keeps failing; a new
    // sync to the receiver shows the new key on the wire.
    app.patch(
        &format!("/api/v1/webhooks/{}", id(&hook, "webhook_id")),
        json!({"url": receiver.url("/h")}),
    )
    .await;
    app.start_sync(&connector).await;
    let got = receiver.wait_for(1).await;
    for r in &got {
        assert_eq!(
            r.header("x-bindbee-webhook-signature"),
            expected_signature(&new_key, &r.body)
        );
        assert_ne!(
            r.header("x-bindbee-webhook-signature"),
            expected_signature(&old_key, &r.body)
        );
    }
    // The retried delivery's later attempts carry the new key too.
    let logs = app.wait_settled(2).await;
    let retried = logs
        .iter()
        .find(|l| l["url"] == closed_url.as_str())
        .unwrap();
    let detail = app.log_detail(retried["id"].as_str().unwrap()).await;
    let requests = detail["request"].as_array().unwrap();
    assert!(requests.len() >= 2);
    let sig = |i: usize| {
        requests[i]["headers"]["x-bindbee-webhook-signature"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_ne!(
        sig(0),
        sig(requests.len() - 1),
        "attempts after regenerate use the new key"
    );
}

#[tokio::test]
async fn the_delivery_id_header_is_stable_across_attempts() {
    let app = spawn_app().await;
    // A receiver that resets the first two connections, then answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen_ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ids = seen_ids.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut n = 0;
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            n += 1;
            let mut buf = vec![0u8; 65536];
            let len = socket.read(&mut buf).await.unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..len]).to_lowercase();
            if let Some(line) = text.lines().find(|l| l.starts_with("webhook-id:")) {
                ids.lock()
                    .unwrap()
                    .push(line["webhook-id:".len()..].trim().to_owned());
            }
            if n <= 2 {
                socket.set_zero_linger().unwrap();
                drop(socket);
            } else {
                let _ = socket
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            }
        }
    });
    app.create_webhook(
        &format!("http://{addr}/h"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;
    let logs = app.wait_settled(1).await;
    assert_eq!(logs[0]["response_code"], 204);
    assert_eq!(logs[0]["attempts"], 3);
    let ids = seen_ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|i| *i == ids[0]));
    assert_eq!(ids[0], logs[0]["id"].as_str().unwrap());
}

/// A destination that accepts connections and never answers, nor closes them.
async fn hanging_destination() -> std::net::SocketAddr {
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hang.accept().await {
            held.push(socket);
        }
    });
    addr
}

#[tokio::test]
async fn a_hanging_destination_does_not_delay_the_others() {
    let app = spawn_app().await;
    let hang_addr = hanging_destination().await;
    let receiver = Receiver::start(200).await;
    app.create_webhook(
        &format!("http://{hang_addr}/slow"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    app.create_webhook(
        &receiver.url("/fast"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    let connector = app.create_connector("production").await;
    let started = Instant::now();
    for _ in 0..20 {
        app.start_sync(&connector).await;
    }
    receiver.wait_for(20).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "healthy deliveries took {:?}",
        started.elapsed()
    );
}

/// A claim reads the due order only so far (4,096 deliveries): a webhook whose lane is
/// full can have many more due than that, ahead of every other webhook's, and another
/// webhook's due retry must still be claimed past them.
#[tokio::test]
async fn a_retry_due_behind_a_full_lanes_long_backlog_is_still_claimed() {
    let app = spawn_app_with(|c| {
        // A lane of one attempt holds 4 jobs: the rest of a hanging destination's
        // deliveries wait in the store, due.
        c.webhook_concurrency = 1;
        c.attempt_timeout = Duration::from_secs(120);
        c.retry_backoff = waggle::config::Backoff([1, 1, 1, 1].map(Duration::from_secs).to_vec());
    })
    .await;
    let hang_addr = hanging_destination().await;
    app.create_webhook(
        &format!("http://{hang_addr}/stuck"),
        "production",
        &["connector_data_modified"],
    )
    .await;
    let later_port = free_port();
    let retried = app
        .create_webhook(
            &format!("http://127.0.0.1:{later_port}/later"),
            "production",
            &["connector_sync_started"],
        )
        .await;
    let connector = app.create_connector("production").await;
    let changes = format!("/api/v1/connectors/{}/changes", id(&connector, "id"));
    let accepted: Vec<StatusCode> = futures::stream::iter(0..4_500)
        .map(|n| {
            let (app, changes) = (&app, &changes);
            async move {
                app.post(
                    changes,
                    json!({"model": "employee", "ids": [format!("e{n}")]}),
                )
                .await
                .0
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(accepted.iter().all(|s| *s == StatusCode::ACCEPTED));

    // Its first attempt finds nothing listening: the retry is due a second later, behind
    // the 4,496 deliveries of the full lane, and only the poller can claim it.
    app.start_sync(&connector).await;
    let webhook = id(&retried, "webhook_id");
    wait_for(
        "the first attempt to fail",
        Duration::from_secs(20),
        || async {
            let logs = app.all_logs(&format!("webhook_id={webhook}")).await;
            (logs.len() == 1 && logs[0]["attempts"] == 1).then_some(())
        },
    )
    .await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", later_port))
        .await
        .unwrap();
    let receiver = Receiver::from_listener(listener, 200).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].path, "/later");
    wait_for(
        "the retry to be recorded",
        Duration::from_secs(20),
        || async {
            let logs = app.all_logs(&format!("webhook_id={webhook}")).await;
            (logs[0]["status"] == "delivered" && logs[0]["attempts"] == 2).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn names_resolving_to_private_addresses_are_refused_at_delivery_time() {
    let app = spawn_app_with(|c| c.allow_private_destinations = false).await;
    let receiver = Receiver::start(200).await;
    // "localhost" passes the URL check (it is a name) but resolves to loopback.
    let url = format!("http://localhost:{}/h", receiver.addr.port());
    app.create_webhook(&url, "production", &["connector_sync_started"])
        .await;
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;
    let logs = app.wait_settled(1).await;
    assert_eq!(logs[0]["status"], "failed");
    assert_eq!(logs[0]["error"], "destination_refused");
    assert_eq!(
        logs[0]["attempts"], 1,
        "a refused destination is not retried"
    );
    assert!(receiver.requests().is_empty());
    // Test URL applies the same rule.
    let (status, result) = app
        .post("/api/v1/webhooks/test-url", json!({"url": url}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["error"], "destination_refused");
}

#[tokio::test]
async fn test_url_sends_a_signed_sample_and_reports_the_outcome() {
    let app = spawn_app().await;
    let receiver = Receiver::start(201).await;
    let (status, result) = app
        .post(
            "/api/v1/webhooks/test-url",
            json!({"url": receiver.url("/t")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["response_code"], 201);
    assert!(result["duration_ms"].as_f64().unwrap() >= 0.0);
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].json()["webhook"]["event"], "connector_sync_started");
    assert_eq!(got[0].json()["connector"]["org_name"], "Test Org");
    assert_eq!(
        got[0].header("x-bindbee-webhook-signature"),
        expected_signature(&app.signature_key, &got[0].body)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let (_, result) = app
        .post("/api/v1/webhooks/test-url", json!({"url": closed_url}))
        .await;
    assert_eq!(result["response_code"], Value::Null);
    assert_eq!(result["error"], "connect_error");
    let (status, _) = app
        .post("/api/v1/webhooks/test-url", json!({"url": "ftp://x"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        app.all_logs("").await.is_empty(),
        "a test is not a logged delivery"
    );
}

#[tokio::test]
async fn a_finished_sync_cannot_finish_again() {
    let app = spawn_app().await;
    let receiver = Receiver::start(200).await;
    app.create_webhook(&receiver.url("/h"), "production", &ALL)
        .await;
    let connector = app.create_connector("production").await;
    let cid = id(&connector, "id");
    let sync = app.start_sync(&connector).await;
    let complete = format!(
        "/api/v1/connectors/{cid}/syncs/{}/complete",
        id(&sync, "id")
    );
    assert_eq!(app.post(&complete, json!({})).await.0, StatusCode::OK);
    assert_eq!(app.post(&complete, json!({})).await.0, StatusCode::CONFLICT);
    let fail = format!("/api/v1/connectors/{cid}/syncs/{}/fail", id(&sync, "id"));
    assert_eq!(
        app.post(&fail, json!({"message": "late"})).await.0,
        StatusCode::CONFLICT
    );
    let logs = app.wait_settled(2).await;
    assert_eq!(logs.len(), 2, "the refused calls emitted nothing");
    let (status, _) = app
        .post(
            &format!("/api/v1/connectors/{cid}/changes"),
            json!({"model": "Employee!", "ids": ["x"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .post(
            &format!("/api/v1/connectors/{cid}/changes"),
            json!({"model": "employee", "ids": []}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.all_logs("").await.len(), 2);
}

#[tokio::test]
async fn a_key_regenerated_with_a_grace_signs_webhook_signature_with_both_keys_until_it_ends() {
    let app = spawn_app().await;
    let receiver = Receiver::start(200).await;
    app.create_webhook(
        &receiver.url("/h"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    let connector = app.create_connector("production").await;
    let regenerate = |body: Value| {
        let app = &app;
        async move {
            app.post("/api/v1/webhooks/signature-key/regenerate", body)
                .await
        }
    };
    // Bad grace periods change nothing.
    for (body, loc) in [
        (
            json!({"grace_period": "8d"}),
            json!(["body", "grace_period"]),
        ),
        (
            json!({"grace_period": "soon"}),
            json!(["body", "grace_period"]),
        ),
        (json!({"grace": "1h"}), json!(["body", "grace"])),
    ] {
        let (status, answer) = regenerate(body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["detail"][0]["loc"], loc, "{answer}");
    }
    let first = app.signature_key.clone();
    let (_, now) = app.get("/api/v1/webhooks/signature-key").await;
    assert_eq!(now["signature_key"], first.as_str());
    assert_eq!(now["previous_key_expires_at"], Value::Null);

    // The next delivery after a regenerate, and whom its Standard signature verifies with.
    let next_delivery = || {
        let (app, receiver, connector) = (&app, &receiver, &connector);
        async move {
            let seen = receiver.requests().len();
            app.start_sync(connector).await;
            receiver.wait_for(seen + 1).await[seen].clone()
        }
    };
    let verifies = |key: &str, r: &Received| {
        waggle_verify::verify_standard(
            &waggle_verify::standard_secret(key),
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            r.header("webhook-signature"),
            &r.body,
            chrono::Utc::now().timestamp(),
        )
        .is_ok()
    };

    let (status, answer) = regenerate(json!({"grace_period": "1h"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let second = answer["signature_key"].as_str().unwrap().to_owned();
    let until =
        chrono::DateTime::parse_from_rfc3339(answer["previous_key_expires_at"].as_str().unwrap())
            .unwrap();
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(
        (in_an_hour - until.to_utc()).num_seconds().abs() < 60,
        "{until}"
    );
    assert_eq!(
        app.get("/api/v1/webhooks/signature-key").await.1["previous_key_expires_at"],
        answer["previous_key_expires_at"]
    );
    let r = next_delivery().await;
    assert_eq!(r.header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(&second, &r) && verifies(&first, &r));
    // The provider's header follows the page: the new key only.
    assert_eq!(
        r.header("x-bindbee-webhook-signature"),
        expected_signature(&second, &r.body)
    );

    // A short grace ends by itself: then only the new key signs.
    let (_, answer) = regenerate(json!({"grace_period": "1s"})).await;
    let third = answer["signature_key"].as_str().unwrap().to_owned();
    let r = next_delivery().await;
    assert!(verifies(&third, &r));
    let after = wait_for("the grace to end", Duration::from_secs(10), || async {
        let r = next_delivery().await;
        (!verifies(&second, &r)).then_some(r)
    })
    .await;
    assert!(verifies(&third, &after));
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);

    // Without a grace (no body at all, as the provider's page calls it), at once.
    let response = reqwest::Client::new()
        .post(app.url("/api/v1/webhooks/signature-key/regenerate"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["previous_key_expires_at"], Value::Null);
    let fourth = answer["signature_key"].as_str().unwrap().to_owned();
    let r = next_delivery().await;
    assert!(verifies(&fourth, &r) && !verifies(&third, &r));
}
