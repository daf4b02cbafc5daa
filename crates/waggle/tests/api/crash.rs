//! Crash safety with the real binary: `kill -9` under load and a restart lose nothing the
//! API accepted, and scheduled retries survive too.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

struct Server {
    child: Child,
    address: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn serve(db_url: &str, port: u16, extra: &[&str]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_waggle"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            db_url,
            "--allow-private-destinations",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("waggle starts");
    let address = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_for("the server to answer", Duration::from_secs(15), || async {
        client
            .get(format!("{address}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    Server { child, address }
}

fn org_create(db_url: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_waggle"))
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

async fn call(client: &reqwest::Client, key: &str, url: String, body: Value) -> Option<Value> {
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

#[tokio::test]
async fn kill_9_under_load_loses_no_accepted_event() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/crash.db", dir.path().display());
    let org = org_create(&db_url);
    let key = org["api_key"].as_str().unwrap().to_owned();
    let port = free_port();
    let mut server = serve(&db_url, port, &[]).await;
    let receiver = Receiver::start(200).await;
    let client = reqwest::Client::new();
    let base = server.address.clone();
    call(&client, &key, format!("{base}/api/v1/webhooks"),
        json!({"url": receiver.url("/h"), "name": "h", "type": "production", "events": ["connector_sync_started"]})).await.unwrap();
    let connector = call(&client, &key, format!("{base}/api/v1/connectors"), json!({
        "environment": "production", "display_name": "BreatheHR", "integration_slug": "breathehr",
        "categories": ["HRIS"], "origin_id": "u", "end_user_name": "John Doe", "end_user_email": "a@b.c"})).await.unwrap();
    let syncs_url = format!(
        "{base}/api/v1/connectors/{}/syncs",
        connector["id"].as_str().unwrap()
    );

    // Four concurrent producers; the server dies under them.
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    let mut producers = Vec::new();
    for _ in 0..4 {
        let (client, key, url, accepted) = (
            client.clone(),
            key.clone(),
            syncs_url.clone(),
            accepted.clone(),
        );
        producers.push(tokio::spawn(async move {
            for _ in 0..400 {
                match call(&client, &key, url.clone(), json!({})).await {
                    Some(sync) => {
                        accepted
                            .lock()
                            .unwrap()
                            .insert(sync["id"].as_str().unwrap().to_owned());
                    }
                    None => return,
                }
            }
        }));
    }
    wait_for(
        "some load before the crash",
        Duration::from_secs(20),
        || async { (accepted.lock().unwrap().len() >= 150).then_some(()) },
    )
    .await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for p in producers {
        p.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let _server = serve(&db_url, port, &[]).await;

    let delivered = wait_for(
        "every accepted event at the receiver",
        Duration::from_secs(30),
        || async {
            let got = receiver.requests();
            let ids: HashSet<String> = got
                .iter()
                .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
                .collect();
            accepted.is_subset(&ids).then_some(got)
        },
    )
    .await;
    let mut per_delivery: HashMap<String, usize> = HashMap::new();
    for r in &delivered {
        *per_delivery
            .entry(r.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    let duplicates: usize = per_delivery.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {} events accepted, {} requests received, {} duplicate deliveries",
        accepted.len(),
        delivered.len(),
        duplicates
    );
    assert!(
        duplicates <= 4 * 64,
        "duplicates are bounded by the attempts in flight at the crash"
    );
    let mut server = _server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test]
async fn a_scheduled_retry_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/retry.db", dir.path().display());
    let org = org_create(&db_url);
    let key = org["api_key"].as_str().unwrap().to_owned();
    let port = free_port();
    let hold = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver_addr = hold.local_addr().unwrap();
    drop(hold); // nothing listens: the first attempt is refused
    let mut server = serve(&db_url, port, &["--retry-backoff", "3s,3s,3s,3s"]).await;
    let client = reqwest::Client::new();
    let base = server.address.clone();
    call(&client, &key, format!("{base}/api/v1/webhooks"),
        json!({"url": format!("http://{receiver_addr}/h"), "name": "h", "type": "production", "events": ["connector_sync_started"]})).await.unwrap();
    let connector = call(
        &client,
        &key,
        format!("{base}/api/v1/connectors"),
        json!({
        "environment": "production", "display_name": "d", "integration_slug": "s",
        "categories": [], "origin_id": "u", "end_user_name": "n", "end_user_email": "a@b.c"}),
    )
    .await
    .unwrap();
    let sync = call(
        &client,
        &key,
        format!(
            "{base}/api/v1/connectors/{}/syncs",
            connector["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await
    .unwrap();
    let logs_url = format!("{base}/api/v1/webhooks/logs");
    wait_for(
        "the first attempt to fail",
        Duration::from_secs(10),
        || async {
            let r = client.get(&logs_url).bearer_auth(&key).send().await.ok()?;
            let body: Value = r.json().await.ok()?;
            (body["items"][0]["attempts"] == 1).then_some(())
        },
    )
    .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // The destination comes up while waggle is down; the retry reaches it after restart.
    let listener = tokio::net::TcpListener::bind(receiver_addr).await.unwrap();
    let receiver = Receiver::from_listener(listener, 200).await;
    let mut restarted = serve(&db_url, port, &["--retry-backoff", "3s,3s,3s,3s"]).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].json()["data"]["id"], sync["id"]);
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}
