//! PostgreSQL stopped and started under load, with two nodes of the real binary on a
//! PostgreSQL server of the test's own (the suite's shared one cannot be stopped): the
//! API answers 503 meanwhile, the nodes reconnect by themselves, and every event the API
//! acknowledged is delivered.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// A PostgreSQL server in a folder of its own, run as the `postgres` user; stopped and
/// removed when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// `None` where one cannot be made (no PostgreSQL binaries, not root).
    fn create() -> Option<Self> {
        let pg_ctl = which("pg_ctl")?;
        let bin = std::fs::canonicalize(pg_ctl).ok()?.parent()?.to_owned();
        let dir = tempfile::tempdir().ok()?;
        let owned = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        let server = Self {
            dir,
            bin,
            port: free_port(),
        };
        let made = owned
            && server.as_postgres("initdb", |c| {
                c.args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                    .arg(server.data());
            });
        made.then_some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn as_postgres(&self, program: &str, args: impl FnOnce(&mut Command)) -> bool {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program));
        args(&mut command);
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        assert!(
            self.as_postgres("pg_ctl", |c| {
                c.arg("-D")
                    .arg(self.data())
                    .args(["-o", &options, "-w", "-l"])
                    .arg(self.dir.path().join("log"))
                    .arg("start");
            }),
            "the test's PostgreSQL server starts"
        );
    }

    /// Stops the server the way an operator or a crash would: at once, connections cut.
    fn stop(&self) {
        assert!(
            self.as_postgres("pg_ctl", |c| {
                c.arg("-D")
                    .arg(self.data())
                    .args(["-m", "immediate", "-w", "stop"]);
            }),
            "the test's PostgreSQL server stops"
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.as_postgres("pg_ctl", |c| {
            c.arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"]);
        });
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

#[tokio::test]
async fn postgresql_stopped_and_started_under_load_loses_no_acknowledged_event() {
    if backend() != Backend::Postgres {
        eprintln!("the PostgreSQL outage test runs with the PostgreSQL suite");
        return;
    }
    let Some(postgres) = PrivatePostgres::create() else {
        assert!(
            std::env::var("WAGGLE_REQUIRE_FAULTS").as_deref() != Ok("1"),
            "WAGGLE_REQUIRE_FAULTS=1, but no PostgreSQL server of the test's own can be made \
             (it needs pg_ctl and initdb on PATH, and root to run them as postgres)"
        );
        eprintln!("SKIPPED: the PostgreSQL outage test (needs pg_ctl, initdb and root)");
        return;
    };
    postgres.start();
    let url = postgres.url();
    let key = org_create(&url)["api_key"].as_str().unwrap().to_owned();
    let nodes = [
        serve(&url, free_port(), &[]).await,
        serve(&url, free_port(), &[]).await,
    ];
    let receiver = Receiver::start(200).await;
    let client = reqwest::Client::new();
    let first = nodes[0].address.clone();
    call(&client, &key, format!("{first}/api/v1/webhooks"),
        json!({"url": receiver.url("/h"), "name": "h", "type": "production", "events": ["connector_sync_started"]})).await.unwrap();
    let connector = call(&client, &key, format!("{first}/api/v1/connectors"), json!({
        "environment": "production", "display_name": "BreatheHR", "integration_slug": "breathehr",
        "categories": ["HRIS"], "origin_id": "u", "end_user_name": "John Doe", "end_user_email": "a@b.c"}))
        .await
        .unwrap();
    let syncs: Vec<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "{}/api/v1/connectors/{}/syncs",
                n.address,
                id(&connector, "id")
            )
        })
        .collect();

    // Two producers, one per node, until told to stop.
    let acknowledged = Arc::new(Mutex::new(HashSet::<String>::new()));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut producers = Vec::new();
    for url in syncs {
        let (client, key) = (client.clone(), key.clone());
        let (acknowledged, unavailable, stop) =
            (acknowledged.clone(), unavailable.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({}))
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await
                    .expect("a node answers, whatever the database does");
                match r.status().as_u16() {
                    201 => {
                        let sync: serde_json::Value = r.json().await.unwrap();
                        acknowledged.lock().unwrap().insert(id(&sync, "id"));
                    }
                    503 => {
                        unavailable.fetch_add(1, Ordering::AcqRel);
                        let body: serde_json::Value = r.json().await.unwrap();
                        assert_eq!(body, json!({"detail": "storage unavailable"}));
                    }
                    other => panic!("a sync answered {other}: {}", r.text().await.unwrap()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let acknowledged_count = || acknowledged.lock().unwrap().len();
    wait_for(
        "load before the outage",
        Duration::from_secs(30),
        || async { (acknowledged_count() >= 100).then_some(()) },
    )
    .await;

    postgres.stop();
    let during = acknowledged_count();
    for node in &nodes {
        let health = format!("{}/healthz", node.address);
        wait_for("/healthz to say why", Duration::from_secs(10), || async {
            let r = client.get(&health).send().await.ok()?;
            (r.status() == 503).then_some(())
        })
        .await;
    }
    wait_for(
        "503s while PostgreSQL is down",
        Duration::from_secs(10),
        || async { (unavailable.load(Ordering::Acquire) >= 10).then_some(()) },
    )
    .await;

    postgres.start();
    for node in &nodes {
        let health = format!("{}/healthz", node.address);
        wait_for("the node to reconnect", Duration::from_secs(20), || async {
            let r = client.get(&health).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }
    wait_for("load after the outage", Duration::from_secs(30), || async {
        (acknowledged_count() >= during + 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::Release);
    for p in producers {
        p.await.unwrap();
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    wait_for(
        "every acknowledged event delivered",
        Duration::from_secs(60),
        || async {
            let got: HashSet<String> = receiver
                .requests()
                .iter()
                .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
                .collect();
            acknowledged.is_subset(&got).then_some(())
        },
    )
    .await;
    eprintln!(
        "PostgreSQL outage: {} events acknowledged and delivered, {} calls answered 503 while it was down",
        acknowledged.len(),
        unavailable.load(Ordering::Acquire)
    );
}
