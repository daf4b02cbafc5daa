//! Crash safety with the real binary: `kill -9` under load and a restart lose nothing the
//! API accepted, and scheduled retries survive too. On PostgreSQL the restarted node takes
//! the dead one's work when its claims run out, as another node would.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn kill_9_under_load_loses_no_accepted_event() {
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
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
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
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
    // Read back from the database after the restart, the body is the one the first
    // attempt was made with: its own webhook part, the event's, and a valid signature.
    let body = got[0].json();
    assert_eq!(body["data"]["id"], sync["id"]);
    assert_eq!(body["webhook"]["url"], format!("http://{receiver_addr}/h"));
    assert_eq!(body["webhook"]["event"], "connector_sync_started");
    assert_eq!(body["connector"]["id"], connector["id"]);
    assert_eq!(
        got[0].header("x-bindbee-webhook-signature"),
        expected_signature(org["signature_key"].as_str().unwrap(), &got[0].body)
    );
    let logs = fetch(&client, &key, logs_url.clone()).await;
    let log_id = logs["items"][0]["id"].as_str().unwrap();
    let detail = fetch(&client, &key, format!("{logs_url}/{log_id}")).await;
    assert_eq!(
        detail["request"][0]["body"], body,
        "the log shows the bytes sent"
    );
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_ends_within_10_s_and_the_next_start_sends_what_was_in_flight() {
    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let org = org_create(&db_url);
    let key = org["api_key"].as_str().unwrap().to_owned();
    let port = free_port();
    // A destination that takes every request and never answers, until it is replaced.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = hanging.local_addr().unwrap();
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            held.push(socket);
            let _ = arrived.send(());
        }
    });
    // The default attempt timeout (10 s): the attempt outlasts the shutdown's grace.
    let mut server = serve(&db_url, port, &[]).await;
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
    let syncs_url = format!(
        "{base}/api/v1/connectors/{}/syncs",
        connector["id"].as_str().unwrap()
    );
    let sync = call(&client, &key, syncs_url.clone(), json!({}))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .expect("the attempt reached the destination")
        .unwrap();

    let signalled = std::time::Instant::now();
    server.terminate().await;
    let took = signalled.elapsed();
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the process cleanly: {status}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the process took {took:?} to stop"
    );
    assert!(
        call(&client, &key, syncs_url, json!({})).await.is_none(),
        "a stopped node accepts nothing"
    );

    // The destination answers now; the delivery released at shutdown goes out after the
    // next start.
    holding.abort();
    let _ = holding.await;
    let listener = tokio::net::TcpListener::bind(receiver_addr).await.unwrap();
    let receiver = Receiver::from_listener(listener, 200).await;
    let _restarted = serve(&db_url, port, &[]).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].json()["data"]["id"], sync["id"]);
    eprintln!("SIGTERM: stopped in {took:?}, exit {status}; the attempt in flight was sent after the restart");
}

/// Rounds of [`kill_9_at_random_points_loses_nothing_and_repeats_little`]: steady load
/// killed at a random point, then bursts killed right after their last 202.
const KILL_ROUNDS: usize = 20;
const BURST_ROUNDS: usize = 10;

/// 20 rounds of steady load killed (kill -9) at a random point 0.3-1.5 s in, each
/// followed by a restart: every accepted event is delivered, and the deliveries made twice
/// because of the kill (sent, but their outcome not yet written) stay under 5 % of the
/// events accepted in that round. Then 10 rounds of a burst of 200 events killed right
/// after its last 202, the worst moment: every event is delivered, and the deliveries
/// made twice are counted and printed (the deliveries of the burst's last commit are
/// sent in the same millisecond as its 202s, so how many are recorded before the kill
/// is a race). Slow (a minute or more): run by scripts/faults.sh.
#[tokio::test]
#[ignore = "slow: run by scripts/faults.sh"]
async fn kill_9_at_random_points_loses_nothing_and_repeats_little() {
    use rand::Rng;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let database = TestDatabase::create().await;
    let db_url = database.url().to_owned();
    let key = org_create(&db_url)["api_key"].as_str().unwrap().to_owned();
    let port = free_port();
    // Short claims: on PostgreSQL a dead node's work waits for them to run out.
    let args = ["--claim-lease", "2s"];
    let mut server = serve(&db_url, port, &args).await;
    let receiver = Receiver::start(200).await;
    let client = reqwest::Client::new();
    let base = server.address.clone();
    call(&client, &key, format!("{base}/api/v1/webhooks"),
        json!({"url": receiver.url("/h"), "name": "h", "type": "production", "events": ["connector_data_modified"]})).await.unwrap();
    let connector = call(&client, &key, format!("{base}/api/v1/connectors"), json!({
        "environment": "production", "display_name": "BreatheHR", "integration_slug": "breathehr",
        "categories": ["HRIS"], "origin_id": "u", "end_user_name": "John Doe", "end_user_email": "a@b.c"}))
        .await
        .unwrap();
    let changes = format!("{base}/api/v1/connectors/{}/changes", id(&connector, "id"));
    // The record id each event names, as the receiver sees it.
    let events_received = || -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for r in receiver.requests() {
            let record = r.json()["data"][0].as_str().unwrap().to_owned();
            *seen.entry(record).or_default() += 1;
        }
        seen
    };

    let next = Arc::new(AtomicUsize::new(0));
    let mut accepted = HashSet::new();
    let mut repeated_before = 0;
    let mut worst = 0.0f64;
    let mut burst_shares = Vec::new();
    for round in 0..KILL_ROUNDS + BURST_ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let round_accepted = Arc::new(Mutex::new(HashSet::new()));
        let mut producers = Vec::new();
        let burst = round >= KILL_ROUNDS;
        for _ in 0..(if burst { 200 } else { 4 }) {
            let (client, key, url) = (client.clone(), key.clone(), changes.clone());
            let (stop, next, round_accepted) = (stop.clone(), next.clone(), round_accepted.clone());
            producers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let record = format!("r{}", next.fetch_add(1, Ordering::AcqRel));
                    let body = json!({"model": "department", "ids": [record]});
                    match call(&client, &key, url.clone(), body).await {
                        Some(_) => {
                            round_accepted.lock().unwrap().insert(record);
                        }
                        None => return,
                    }
                    if burst {
                        return;
                    }
                }
            }));
        }
        let started = std::time::Instant::now();
        if burst {
            for p in producers.drain(..) {
                p.await.unwrap();
            }
        } else {
            let at = Duration::from_millis(rand::thread_rng().gen_range(300..1500));
            tokio::time::sleep(at).await;
        }
        let at = started.elapsed();
        server.kill_9();
        stop.store(true, Ordering::Release);
        for p in producers {
            p.await.unwrap();
        }
        let round_accepted = round_accepted.lock().unwrap().clone();
        accepted.extend(round_accepted.iter().cloned());
        server = serve(&db_url, port, &args).await;
        // Settled: everything accepted arrived, and nothing is pending (on PostgreSQL the
        // dead node's claims run out first), so that this round's repeats are all seen.
        let seen = wait_for(
            "every accepted event delivered after the restart",
            Duration::from_secs(60),
            || async {
                let seen = events_received();
                (accepted.iter().all(|r| seen.contains_key(r))
                    && pending_deliveries(&db_url).await == 0)
                    .then_some(seen)
            },
        )
        .await;
        let repeated: usize = seen.values().map(|n| n - 1).sum();
        let this_round = repeated - repeated_before;
        repeated_before = repeated;
        let share = this_round as f64 / round_accepted.len().max(1) as f64;
        eprintln!(
            "kill round {round} ({}): killed {at:?} in, {} events accepted, {this_round} \
             delivered twice ({:.1} %)",
            if burst {
                "burst of 200, after its last 202"
            } else {
                "steady load"
            },
            round_accepted.len(),
            share * 100.0
        );
        if burst {
            burst_shares.push(share);
            continue;
        }
        worst = worst.max(share);
        assert!(
            this_round as f64 <= (round_accepted.len() as f64 * 0.05).max(1.0),
            "round {round}: {this_round} duplicates of {} accepted events",
            round_accepted.len()
        );
    }
    burst_shares.sort_by(f64::total_cmp);
    eprintln!(
        "kill -9: {KILL_ROUNDS} rounds of steady load and {BURST_ROUNDS} bursts, {} events \
         accepted, all delivered, lost 0, {repeated_before} delivered twice in all; at most \
         {:.1} % in a round of steady load; bursts {:.1} % at the median, {:.1} % at most",
        accepted.len(),
        worst * 100.0,
        burst_shares[burst_shares.len() / 2] * 100.0,
        burst_shares.last().unwrap() * 100.0
    );
}
