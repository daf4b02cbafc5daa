//! Several `waggle serve` nodes of the real binary on one PostgreSQL database (SPEC §7):
//! any node accepts events and any delivers; a node killed mid-stream loses nothing and
//! its work moves to another node within seconds; no delivery goes over its attempt
//! budget; a regenerated signature key signs on every node at once. These tests need
//! `WAGGLE_TEST_BACKEND=postgres`; on SQLite (one process per file) they return at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::*;

/// Claims last this long in these tests, so that failover is quick to watch.
const LEASE: Duration = Duration::from_secs(3);

fn needs_postgres(test: &str) -> bool {
    if backend() == Backend::Postgres {
        return true;
    }
    eprintln!("{test}: needs several nodes on one database; run with WAGGLE_TEST_BACKEND=postgres");
    false
}

/// The organization's webhook set-up, made through one node's API.
struct Org {
    key: String,
    signature_key: String,
    client: reqwest::Client,
}

impl Org {
    fn create(db_url: &str) -> Self {
        let created = org_create(db_url);
        Self {
            key: created["api_key"].as_str().unwrap().to_owned(),
            signature_key: created["signature_key"].as_str().unwrap().to_owned(),
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, node: &Server, path: &str, body: Value) -> Option<Value> {
        call(
            &self.client,
            &self.key,
            format!("{}{path}", node.address),
            body,
        )
        .await
    }

    async fn webhook(&self, node: &Server, url: &str) -> Value {
        self.post(
            node,
            "/api/v1/webhooks",
            json!({"url": url, "name": "h", "type": "production", "events": ["connector_sync_started"]}),
        )
        .await
        .expect("webhook created")
    }

    async fn connector(&self, node: &Server) -> String {
        let connector = self
            .post(
                node,
                "/api/v1/connectors",
                json!({
                    "environment": "production", "display_name": "BreatheHR",
                    "integration_slug": "breathehr", "categories": ["HRIS"], "origin_id": "u",
                    "end_user_name": "John Doe", "end_user_email": "a@b.c"}),
            )
            .await
            .expect("connector created");
        connector["id"].as_str().unwrap().to_owned()
    }

    /// Starts a sync through `node`: its id when the node accepted it.
    async fn sync(&self, node_address: &str, connector: &str) -> Option<String> {
        let sync = call(
            &self.client,
            &self.key,
            format!("{node_address}/api/v1/connectors/{connector}/syncs"),
            json!({}),
        )
        .await?;
        Some(sync["id"].as_str()?.to_owned())
    }

    /// Every log, through `node`'s API.
    async fn logs(&self, node: &Server) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/api/v1/webhooks/logs?page_size=50", node.address);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let body = fetch(&self.client, &self.key, url).await;
            items.extend(body["items"].as_array().unwrap().iter().cloned());
            match body["cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }
}

/// A receiver that cuts the first attempt of every delivery off without an answer (a
/// network failure, so it is retried) and answers 200 to the later ones, after a pause,
/// so that a node killed at any moment has attempts in flight to it. It counts the
/// attempts and the answered attempts of each delivery (`webhook-id`), and the events
/// (`data.id`) answered.
#[derive(Clone, Default)]
struct FlakyReceiver {
    attempts: Arc<Mutex<HashMap<String, usize>>>,
    answered: Arc<Mutex<HashMap<String, usize>>>,
    events: Arc<Mutex<HashSet<String>>>,
}

impl FlakyReceiver {
    async fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/flaky", listener.local_addr().unwrap());
        let receiver = Self::default();
        let state = receiver.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(state.clone().serve(socket));
            }
        });
        (receiver, url)
    }

    async fn serve(self, mut socket: tokio::net::TcpStream) {
        let mut request = Vec::new();
        let mut buf = [0u8; 8192];
        let header_end = loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
            if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&request[..header_end]).to_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_owned())
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let delivery = header("webhook-id").unwrap_or_default();
        while request.len() < header_end + length {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(delivery.clone()).or_default();
            *n += 1;
            *n
        };
        if attempt == 1 {
            return; // dropped: the sender sees the connection closed without an answer
        }
        let body: Value = serde_json::from_slice(&request[header_end..]).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
        if socket.write_all(answer).await.is_ok() {
            *self.answered.lock().unwrap().entry(delivery).or_default() += 1;
            if let Some(event) = body["data"]["id"].as_str() {
                self.events.lock().unwrap().insert(event.to_owned());
            }
            let _ = socket.shutdown().await;
        }
    }
}

fn counts_per_delivery(requests: &[Received]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in requests {
        *counts.entry(r.header("webhook-id").to_owned()).or_default() += 1;
    }
    counts
}

fn events_of(requests: &[Received]) -> HashSet<String> {
    requests
        .iter()
        .filter_map(|r| r.json()["data"]["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn three_nodes_deliver_everything_once_each_and_survive_a_kill_and_a_restart() {
    if !needs_postgres("three_nodes_deliver_everything") {
        return;
    }
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let org = Org::create(&db_url);
    let lease = format!("{}s", LEASE.as_secs());
    let args = [
        "--claim-lease",
        &lease,
        "--retry-backoff",
        "200ms,400ms,800ms,1600ms",
    ];
    let ports = [free_port(), free_port(), free_port()];
    let mut nodes = Vec::new();
    for port in ports {
        nodes.push(serve(&db_url, port, &args).await);
    }
    let addresses: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
    let ok = Receiver::start(200).await;
    let (flaky, flaky_url) = FlakyReceiver::start().await;
    org.webhook(&nodes[0], &ok.url("/ok")).await;
    org.webhook(&nodes[1], &flaky_url).await;
    let connector = org.connector(&nodes[2]).await;

    // Steady state: events through every node's API, each delivered by some node, and
    // no delivery ever taken by two live nodes.
    let mut accepted = HashSet::new();
    for i in 0..60 {
        let id = org
            .sync(&addresses[i % 3], &connector)
            .await
            .expect("a live node accepts");
        accepted.insert(id);
    }
    wait_for(
        "the first events at both receivers",
        Duration::from_secs(30),
        || async {
            let flaky_events = flaky.events.lock().unwrap().clone();
            (accepted.is_subset(&events_of(&ok.requests())) && accepted.is_subset(&flaky_events))
                .then_some(())
        },
    )
    .await;
    let ok_counts = counts_per_delivery(&ok.requests());
    assert_eq!(ok_counts.len(), 60);
    assert!(
        ok_counts.values().all(|n| *n == 1),
        "three live nodes delivered something twice: {ok_counts:?}"
    );
    let flaky_attempts = flaky.attempts.lock().unwrap().clone();
    assert!(
        flaky_attempts.values().all(|n| *n == 2),
        "a dropped attempt is retried exactly once: {flaky_attempts:?}"
    );

    // A stream through all three nodes; node 0 is killed in the middle of it, node 1 is
    // stopped and started again.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted_since = Arc::new(AtomicUsize::new(0));
    let streamed = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut producers = Vec::new();
    for p in 0..3 {
        let (org_key, client, addresses, connector) = (
            org.key.clone(),
            org.client.clone(),
            addresses.clone(),
            connector.clone(),
        );
        let (stop, accepted_since, streamed) =
            (stop.clone(), accepted_since.clone(), streamed.clone());
        producers.push(tokio::spawn(async move {
            let producer = Org {
                key: org_key,
                signature_key: String::new(),
                client,
            };
            let mut i = p;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                i += 1;
                if let Some(id) = producer.sync(&addresses[i % 3], &connector).await {
                    streamed.lock().unwrap().insert(id);
                    accepted_since.fetch_add(1, Ordering::AcqRel);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let reach = |n: usize| {
        let accepted_since = accepted_since.clone();
        async move {
            wait_for(
                &format!("{n} events accepted"),
                Duration::from_secs(30),
                || async { (accepted_since.load(Ordering::Acquire) >= n).then_some(()) },
            )
            .await
        }
    };
    reach(150).await;
    nodes[0].kill_9();
    reach(300).await;
    nodes[1].terminate().await;
    nodes[1] = serve(&db_url, ports[1], &args).await;
    reach(450).await;
    stop.store(true, Ordering::Release);
    for p in producers {
        p.await.unwrap();
    }
    accepted.extend(streamed.lock().unwrap().iter().cloned());

    let delivered_at = Instant::now();
    wait_for(
        "every accepted event at both receivers",
        Duration::from_secs(60),
        || async {
            let flaky_events = flaky.events.lock().unwrap().clone();
            (accepted.is_subset(&events_of(&ok.requests())) && accepted.is_subset(&flaky_events))
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "multinode: all {} accepted events delivered {:?} after the stream ended",
        accepted.len(),
        delivered_at.elapsed()
    );
    let logs = wait_for("every log settled", Duration::from_secs(30), || async {
        let logs = org.logs(&nodes[2]).await;
        logs.iter()
            .all(|l| l["status"] != "pending")
            .then_some(logs)
    })
    .await;
    let budget = 1 + 4;
    for log in &logs {
        assert_eq!(log["status"], "delivered", "{log}");
        assert!(
            log["attempts"].as_u64().unwrap() <= budget,
            "over the attempt budget: {log}"
        );
    }
    let ok_counts = counts_per_delivery(&ok.requests());
    let flaky_attempts = flaky.attempts.lock().unwrap().clone();
    let flaky_answered = flaky.answered.lock().unwrap().clone();
    for (delivery, n) in ok_counts.iter().chain(flaky_attempts.iter()) {
        assert!(
            *n as u64 <= budget,
            "delivery {delivery} was attempted {n} times"
        );
    }
    let duplicates: usize = ok_counts.values().map(|n| n - 1).sum::<usize>()
        + flaky_answered.values().map(|n| n - 1).sum::<usize>();
    eprintln!(
        "multinode: {} events accepted, {} logs, {} requests at the 200 receiver, {} attempts at the \
         flaky receiver, {} duplicate deliveries (a delivery answered more than once)",
        accepted.len(),
        logs.len(),
        ok.requests().len(),
        flaky_attempts.values().sum::<usize>(),
        duplicates
    );
    // Only attempts in flight on the killed node can be made twice: at most its lanes
    // to the two webhooks.
    assert!(
        duplicates <= 2 * 64,
        "{duplicates} duplicates: more than the killed node could have had in flight"
    );
}

#[tokio::test]
async fn a_dead_nodes_deliveries_move_to_another_node_within_the_lease() {
    if !needs_postgres("a_dead_nodes_deliveries_move") {
        return;
    }
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let org = Org::create(&db_url);
    let lease = format!("{}s", LEASE.as_secs());
    // Attempts hang far longer than a lease: only renewal keeps them with their node.
    let args = ["--claim-lease", &lease, "--attempt-timeout", "60s"];
    let mut holder = serve(&db_url, free_port(), &args).await;
    let _other = serve(&db_url, free_port(), &args).await;

    // A destination that accepts connections and never answers; it notes when each came.
    let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url = format!("http://{}/hang", hang.local_addr().unwrap());
    let connected: Arc<Mutex<Vec<Instant>>> = Arc::default();
    tokio::spawn({
        let connected = connected.clone();
        async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = hang.accept().await {
                connected.lock().unwrap().push(Instant::now());
                held.push(socket);
            }
        }
    });
    org.webhook(&holder, &hang_url).await;
    let connector = org.connector(&holder).await;
    // Deliveries made through a node's API are claimed by that node at once.
    let deliveries = 5;
    for _ in 0..deliveries {
        org.sync(&holder.address, &connector).await.unwrap();
    }
    let connections = || connected.lock().unwrap().len();
    wait_for(
        "the holder's attempts to hang",
        Duration::from_secs(10),
        || async { (connections() >= deliveries).then_some(()) },
    )
    .await;
    // Two leases with the holder alive: its renewals keep the other node away.
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(
        connections(),
        deliveries,
        "another node took deliveries a live node was working on"
    );

    holder.kill_9();
    let killed = Instant::now();
    wait_for(
        "the other node to take every delivery",
        LEASE + Duration::from_secs(10),
        || async { (connections() >= 2 * deliveries).then_some(()) },
    )
    .await;
    let taken = connected.lock().unwrap()[deliveries..].to_vec();
    let first = taken.iter().min().unwrap().duration_since(killed);
    let last = taken.iter().max().unwrap().duration_since(killed);
    eprintln!(
        "failover: lease {LEASE:?}; the other node attempted the dead node's deliveries \
         {first:?} to {last:?} after the kill"
    );
    assert!(
        last <= LEASE + Duration::from_millis(1500),
        "failover took {last:?}, lease {LEASE:?}"
    );
}

#[tokio::test]
async fn a_key_regenerated_on_one_node_signs_at_once_on_another() {
    if !needs_postgres("a_key_regenerated_on_one_node") {
        return;
    }
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let org = Org::create(&db_url);
    let args = ["--retry-backoff", "1s,2s,2s,2s"];
    let a = serve(&db_url, free_port(), &args).await;
    let b = serve(&db_url, free_port(), &args).await;
    let receiver = Receiver::start(200).await;
    org.webhook(&a, &receiver.url("/h")).await;
    // A second destination that is down for now: its deliveries wait in retries.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = down.local_addr().unwrap();
    drop(down);
    org.webhook(&a, &format!("http://{down_addr}/h")).await;
    let connector = org.connector(&a).await;

    // Node B signs with the first key.
    org.sync(&b.address, &connector).await.unwrap();
    let got = receiver.wait_for(1).await;
    assert_eq!(
        got[0].header("x-bindbee-webhook-signature"),
        expected_signature(&org.signature_key, &got[0].body)
    );
    wait_for(
        "a failed attempt to the down destination",
        Duration::from_secs(10),
        || async {
            let logs = org.logs(&b).await;
            logs.iter()
                .any(|l| l["response_code"].is_null() && l["attempts"] == 1)
                .then_some(())
        },
    )
    .await;

    for round in 0..3 {
        let regenerated = org
            .post(&a, "/api/v1/webhooks/signature-key/regenerate", json!({}))
            .await
            .expect("regenerated");
        let new_key = regenerated["signature_key"].as_str().unwrap().to_owned();
        // At once: the very next event through node B is signed with the new key.
        let seen = receiver.requests().len();
        org.sync(&b.address, &connector).await.unwrap();
        let got = receiver.wait_for(seen + 1).await;
        assert_eq!(
            got[seen].header("x-bindbee-webhook-signature"),
            expected_signature(&new_key, &got[seen].body),
            "round {round}: node B signed with a key that was replaced"
        );
        let key_on_b = fetch(
            &org.client,
            &org.key,
            format!("{}/api/v1/webhooks/signature-key", b.address),
        )
        .await;
        assert_eq!(key_on_b["signature_key"], new_key.as_str());
        if round == 2 {
            // Retries made before the regeneration carry the new key too, whichever node
            // makes them.
            let listener = TcpListener::bind(down_addr).await.unwrap();
            let came_up = Receiver::from_listener(listener, 200).await;
            let got = came_up.wait_for(1).await;
            for r in &got {
                assert_eq!(
                    r.header("x-bindbee-webhook-signature"),
                    expected_signature(&new_key, &r.body)
                );
            }
        }
    }
}

#[tokio::test]
async fn webhook_and_connector_changes_on_one_node_hold_for_the_next_call_on_another() {
    if !needs_postgres("webhook_and_connector_changes_on_one_node") {
        return;
    }
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let org = Org::create(&db_url);
    let a = serve(&db_url, free_port(), &[]).await;
    let b = serve(&db_url, free_port(), &[]).await;
    let receiver = Receiver::start(200).await;
    let send = |method: reqwest::Method, node: &Server, path: &str, body: Option<Value>| {
        let mut request = org
            .client
            .request(method, format!("{}/api/v1{path}", node.address))
            .bearer_auth(&org.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let r = request.send().await.expect("the node answers");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let webhook = |path: &str| {
        json!({"url": receiver.url(path), "name": path, "type": "production",
               "events": ["connector_data_modified"]})
    };
    let connector = org.connector(&a).await;
    let changes = format!("/connectors/{connector}/changes");
    let change = json!({"model": "employee", "ids": ["e1"]});
    // What node B fans a change out to, as it answers.
    let fanned_out_by_b = || async {
        let (status, body) = send(reqwest::Method::POST, &b, &changes, Some(change.clone())).await;
        (status, body["deliveries"].as_u64())
    };

    let (_, first) = send(reqwest::Method::POST, &a, "/webhooks", Some(webhook("/1"))).await;
    // B reads (and may keep) the webhooks and the connector.
    assert_eq!(fanned_out_by_b().await, (202, Some(1)));
    assert_eq!(fanned_out_by_b().await, (202, Some(1)));

    let (status, second) = send(reqwest::Method::POST, &a, "/webhooks", Some(webhook("/2"))).await;
    assert_eq!(status, 201);
    assert_eq!(
        fanned_out_by_b().await,
        (202, Some(2)),
        "a webhook created on A"
    );

    let first_id = id(&first, "webhook_id");
    let (status, _) = send(
        reqwest::Method::PATCH,
        &a,
        &format!("/webhooks/{first_id}"),
        Some(json!({"is_enabled": false})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        fanned_out_by_b().await,
        (202, Some(1)),
        "a webhook disabled on A"
    );

    let second_id = id(&second, "webhook_id");
    let (status, _) = send(
        reqwest::Method::DELETE,
        &a,
        &format!("/webhooks/{second_id}"),
        None,
    )
    .await;
    assert!(status < 300, "{status}");
    assert_eq!(
        fanned_out_by_b().await,
        (202, Some(0)),
        "a webhook deleted on A"
    );

    let (status, _) = send(
        reqwest::Method::PATCH,
        &a,
        &format!("/webhooks/{first_id}"),
        Some(json!({"is_enabled": true})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        reqwest::Method::PATCH,
        &a,
        &format!("/connectors/{connector}"),
        Some(json!({"end_user_name": "Jane Roe"})),
    )
    .await;
    assert_eq!(status, 200);
    let seen = receiver.requests().len();
    assert_eq!(
        fanned_out_by_b().await,
        (202, Some(1)),
        "a webhook enabled on A"
    );
    let got = receiver.wait_for(seen + 1).await;
    let body: Value = serde_json::from_slice(&got[seen].body).unwrap();
    assert!(
        body.to_string().contains("Jane Roe"),
        "node B sent the connector as it was before A changed it: {body}"
    );

    let (status, _) = send(
        reqwest::Method::DELETE,
        &a,
        &format!("/connectors/{connector}"),
        None,
    )
    .await;
    assert!(status < 300, "{status}");
    assert_eq!(fanned_out_by_b().await.0, 404, "a connector deleted on A");
}

#[tokio::test]
async fn an_idempotency_key_holds_from_one_node_to_another() {
    if !needs_postgres("an_idempotency_key_holds_from_one_node_to_another") {
        return;
    }
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let org = Org::create(&db_url);
    let nodes = [
        serve(&db_url, free_port(), &[]).await,
        serve(&db_url, free_port(), &[]).await,
    ];
    let receiver = Receiver::start(200).await;
    org.webhook(&nodes[0], &receiver.url("/h")).await;
    let connector = org.connector(&nodes[0]).await;
    let syncs = format!("/api/v1/connectors/{connector}/syncs");
    let start = |node: &Server, key: &'static str| {
        let request = org
            .client
            .post(format!("{}{syncs}", node.address))
            .bearer_auth(&org.key)
            .header("Idempotency-Key", key)
            .json(&json!({"initial_sync": true}));
        async move {
            let r = request.send().await.expect("the node answers");
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // One key through both nodes at once, eight calls each: one sync, one answer.
    let calls = (0..16).map(|n| start(&nodes[n % 2], "both-nodes"));
    let answers = futures::future::join_all(calls).await;
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body}");
        assert_eq!(body["id"], answers[0].1["id"], "{body}");
    }
    // And later, through the other node than the first answer's.
    let (status, again) = start(&nodes[1], "both-nodes").await;
    assert_eq!((status, &again["id"]), (201, &answers[0].1["id"]));
    // A call without a key, to know when everything emitted has arrived: two starts.
    org.sync(&nodes[1].address, &connector)
        .await
        .expect("accepted");
    let got = receiver.wait_for(2).await;
    let logs = wait_for(
        "both deliveries logged",
        Duration::from_secs(20),
        || async {
            let logs = org.logs(&nodes[0]).await;
            (logs.len() == 2 && logs.iter().all(|l| l["status"] == "delivered")).then_some(logs)
        },
    )
    .await;
    assert_eq!(logs.len(), 2);
    assert_eq!(got.len(), 2, "one start under the key, one without");
}

#[tokio::test]
async fn three_nodes_keep_each_connectors_events_in_order() {
    if !needs_postgres("three_nodes_keep_each_connectors_events_in_order") {
        return;
    }
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let org = Org::create(&db_url);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(serve(&db_url, free_port(), &[]).await);
    }
    let seed = rand::random::<u64>() | 1;
    eprintln!("three nodes in order: receiver seed {seed}");
    let (receiver, url) = crate::ordered::OrderReceiver::start(30, seed).await;
    org.post(
        &nodes[0],
        "/api/v1/webhooks",
        crate::ordered::ordered_webhook(&url),
    )
    .await
    .expect("ordered webhook created");
    let mut connectors = Vec::new();
    for node in &nodes {
        connectors.push(org.connector(node).await);
    }
    // Each event through another node than the one before: its delivery is claimed by
    // whichever node is first, and ended by it.
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for round in 0..20 {
        for (i, connector) in connectors.iter().enumerate() {
            let node = &nodes[(round + i) % 3].address;
            let sync = org.sync(node, connector).await.expect("a node accepts");
            sent.entry(connector.clone()).or_default().push(sync);
        }
    }
    wait_for("every event delivered", Duration::from_secs(90), || async {
        let logs = org.logs(&nodes[1]).await;
        (logs.len() == 60 && logs.iter().all(|l| l["status"] == "delivered")).then_some(())
    })
    .await;
    let failed = receiver.assert_in_order(&sent);
    assert!(
        failed > 0,
        "the receiver failed nothing: the test proved nothing"
    );
}
