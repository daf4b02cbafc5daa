//! Memory under hostile receivers: the real binary makes 1,000 attempts at once to
//! receivers that answer endless bodies, gzip bombs, 1 MiB header lines, 10,000 headers
//! or a byte at a time, and its resident memory stays under 200 MiB.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::failures::{gzipped_answer, misbehaving};
use crate::helpers::*;

/// Receivers' connections open right now, and the most seen at once.
#[derive(Default)]
struct Gauge {
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// Attempts made at once.
const AT_ONCE: usize = 1000;
/// Webhooks, and events each gets: one attempt each, all at once.
const WEBHOOKS: usize = 20;
const EVENTS: usize = AT_ONCE / WEBHOOKS;

/// A receiver that holds each request until every attempt has arrived (or 2.5 s have
/// passed), so that all misbehave at once, and then answers `answer(socket)`.
async fn hostile<F, Fut>(gauge: Arc<Gauge>, answer: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    misbehaving(move |socket| {
        let gauge = gauge.clone();
        let answer = answer.clone();
        async move {
            let open = gauge.open.fetch_add(1, Ordering::SeqCst) + 1;
            gauge.peak.fetch_max(open, Ordering::SeqCst);
            let held = Instant::now();
            while gauge.peak.load(Ordering::SeqCst) < AT_ONCE
                && held.elapsed() < Duration::from_millis(2500)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answer(socket).await;
            gauge.open.fetch_sub(1, Ordering::SeqCst);
        }
    })
    .await
}

fn resident_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::test]
async fn a_thousand_hostile_attempts_at_once_stay_under_200_mib() {
    let database = TestDatabase::create().await;
    let key = org_create(database.url())["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = free_port();
    let server = serve(
        database.url(),
        port,
        &[
            "--attempt-timeout",
            "4s",
            "--retry-backoff",
            "100ms",
            "--rate-limit",
            "0",
        ],
    )
    .await;
    let gauge = Arc::new(Gauge::default());

    let endless = hostile(gauge.clone(), |mut socket| async move {
        let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1024 {
            if socket.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let bomb = {
        let answer: &'static [u8] = gzipped_answer(&vec![0u8; 64 << 20], "").0.leak();
        hostile(gauge.clone(), move |mut socket| async move {
            let _ = socket.write_all(answer).await;
        })
        .await
    };
    let big_header: &'static [u8] =
        format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(1 << 20))
            .into_bytes()
            .leak();
    let huge_line = hostile(gauge.clone(), move |mut socket| async move {
        let _ = socket.write_all(big_header).await;
    })
    .await;
    let many: &'static [u8] = {
        let lines: String = (0..10_000).map(|i| format!("x-h{i}: v\r\n")).collect();
        format!("HTTP/1.1 200 OK\r\n{lines}\r\n")
            .into_bytes()
            .leak()
    };
    let many_headers = hostile(gauge.clone(), move |mut socket| async move {
        let _ = socket.write_all(many).await;
    })
    .await;
    let trickle = hostile(gauge.clone(), |mut socket| async move {
        for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" {
            if socket.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;

    let client = reqwest::Client::new();
    let api = |path: &str| format!("{}/api/v1{path}", server.address);
    let kinds = [endless, bomb, huge_line, many_headers, trickle];
    for i in 0..WEBHOOKS {
        call(
            &client,
            &key,
            api("/webhooks"),
            json!({"url": kinds[i % kinds.len()], "name": format!("hostile {i}"),
                   "type": "production", "events": ["connector_sync_started"]}),
        )
        .await
        .expect("webhook created");
    }
    let connector = call(
        &client,
        &key,
        api("/connectors"),
        json!({"environment": "production", "display_name": "BreatheHR",
               "integration_slug": "breathehr", "categories": ["HRIS"], "origin_id": "u",
               "end_user_name": "J", "end_user_email": "j@x.com"}),
    )
    .await
    .expect("connector created");
    let syncs = api(&format!("/connectors/{}/syncs", id(&connector, "id")));

    // Memory, sampled from the moment the events are sent until every delivery ends.
    let pid = server.child.id();
    let peak_mib = Arc::new(std::sync::Mutex::new(0.0f64));
    let sampling = {
        let peak_mib = peak_mib.clone();
        tokio::spawn(async move {
            while let Some(mib) = resident_mib(pid) {
                {
                    let mut peak = peak_mib.lock().unwrap();
                    *peak = peak.max(mib);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for _ in 0..EVENTS {
        call(&client, &key, syncs.clone(), json!({}))
            .await
            .expect("sync started");
    }
    wait_for(
        "every hostile delivery to end",
        Duration::from_secs(60),
        || async {
            let mut ended = 0;
            let mut cursor: Option<String> = None;
            loop {
                let page = match &cursor {
                    Some(c) => api(&format!("/webhooks/logs?page_size=50&cursor={c}")),
                    None => api("/webhooks/logs?page_size=50"),
                };
                let body: Value = fetch(&client, &key, page).await;
                ended += body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|l| l["status"] != "pending")
                    .count();
                match body["cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            (ended == AT_ONCE).then_some(())
        },
    )
    .await;
    sampling.abort();
    let peak = *peak_mib.lock().unwrap();
    let at_once = gauge.peak.load(Ordering::SeqCst);
    eprintln!("{at_once} hostile attempts at once; waggle's peak resident memory {peak:.1} MiB");
    assert!(
        at_once >= AT_ONCE,
        "only {at_once} attempts were open at once"
    );
    assert!(peak > 0.0, "memory was sampled");
    assert!(peak < 200.0, "peak resident memory {peak:.1} MiB");
}
