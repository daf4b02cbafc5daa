//! The SQLite writer, supervised: a fault in it (a panic, an I/O error) turns `/healthz`
//! and every write of the API to 503, stops the app with an error so that the process
//! exits non-zero, and loses nothing the API acknowledged: after a restart on the same
//! file, every acknowledged event is delivered, and the refused call left nothing. A
//! full disk turns them to 503 too, but only until space returns: the app goes on by
//! itself, and again loses nothing. So does a database file the node starts on while it
//! is read-only, once it may be written again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use waggle::config::Config;

use crate::helpers::*;

async fn a_writer_fault_stops_the_app_and_loses_nothing_acknowledged(fault: &str) {
    if backend() == Backend::Postgres {
        eprintln!("the SQLite writer's faults are SQLite's: nothing to inject on PostgreSQL");
        return;
    }
    let database = Arc::new(TestDatabase::create().await);
    let url = database.url().to_owned();
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    let config = || {
        let mut config = Config::for_database(&url);
        config.allow_private_destinations = true;
        config.poll_interval = Duration::from_millis(20);
        config
    };
    let receiver = Receiver::start(200).await;
    let (app, running) = start_running(config(), database.clone()).await;
    app.create_webhook(
        &receiver.url("/h"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    let connector = app.create_connector("production").await;
    let mut acknowledged = HashSet::new();
    for _ in 0..5 {
        acknowledged.insert(id(&app.start_sync(&connector).await, "id"));
    }

    fail::cfg("sqlite-writer", &format!("return({fault}:{path})")).unwrap();
    let syncs = format!(
        "/api/v1/connectors/{}/syncs",
        connector["id"].as_str().unwrap()
    );
    // The next commit fails: this call's, or the dispatcher's just before it.
    let (status, body) = app.post(&syncs, json!({})).await;
    fail::remove("sqlite-writer");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, json!({"detail": "storage unavailable"}));
    // Every later write too, even with the fault gone: the writer stays stopped.
    let (status, body) = app.post(&syncs, json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "unavailable");
    let reason = health["reason"].as_str().unwrap();
    let expected = if fault == "panic" { "panicked" } else { "I/O" };
    assert!(reason.contains(expected), "{reason}");

    // The app drains and stops by itself, with an error (the process exits non-zero).
    let stopped = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the app stops by itself")
        .unwrap();
    let error = stopped.unwrap_err().to_string();
    assert!(error.contains("storage cannot write"), "{error}");
    let key = app.api_key.clone();
    drop(app);

    // Restarted on the same file: what was acknowledged is all there, and delivered.
    let (mut app, _running) = start_running(config(), database.clone()).await;
    app.api_key = key;
    let delivered = wait_for(
        "every acknowledged sync delivered",
        Duration::from_secs(20),
        || async {
            let got: HashSet<String> = receiver
                .requests()
                .iter()
                .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
                .collect();
            acknowledged.is_subset(&got).then_some(got)
        },
    )
    .await;
    // The refused calls made nothing: no event, no delivery, no log.
    assert_eq!(delivered, acknowledged);
    let logs = app.all_logs("").await;
    assert_eq!(logs.len(), acknowledged.len());
    app.cancel.cancel();
}

/// Both faults in one test: the fail point's setting is the process's, one at a time.
#[tokio::test]
async fn a_panic_or_an_io_error_in_the_writer_stops_the_app_and_loses_nothing_acknowledged() {
    for fault in ["panic", "io"] {
        a_writer_fault_stops_the_app_and_loses_nothing_acknowledged(fault).await;
    }
}

/// A tmpfs of its own, unmounted when dropped: a disk that a test can fill.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` where this process may not mount one (it is not root); the test then says
    /// it did not run, or fails when `WAGGLE_REQUIRE_FAULTS=1`, as CI sets.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var("WAGGLE_REQUIRE_FAULTS").as_deref() != Ok("1"),
                "WAGGLE_REQUIRE_FAULTS=1, but a tmpfs cannot be mounted here (run as root)"
            );
            eprintln!("SKIPPED: the full-disk test needs to mount a tmpfs (run as root)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn health(app: &TestApp) -> (u16, serde_json::Value) {
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_answers_503_writes_nothing_and_service_resumes_when_space_returns() {
    if backend() == Backend::Postgres {
        eprintln!("a full disk under PostgreSQL is the database server's: nothing to fill here");
        return;
    }
    let Some(disk) = SmallDisk::mount("24m") else {
        return;
    };
    let dir = tempfile::tempdir_in(disk.path()).unwrap();
    let url = format!("sqlite://{}/waggle.db", dir.path().display());
    let database = Arc::new(TestDatabase::Sqlite { url, _dir: dir });
    let mut config = Config::for_database(database.url());
    config.allow_private_destinations = true;
    config.poll_interval = Duration::from_millis(20);
    let receiver = Receiver::start(200).await;
    let (app, running) = start_running(config, database.clone()).await;
    app.create_webhook(
        &receiver.url("/h"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    let connector = app.create_connector("production").await;
    let syncs = format!(
        "/api/v1/connectors/{}/syncs",
        connector["id"].as_str().unwrap()
    );
    let mut acknowledged = HashSet::new();
    for _ in 0..5 {
        acknowledged.insert(id(&app.start_sync(&connector).await, "id"));
    }

    let filler = disk.fill();
    // Calls made while the disk is full are refused, whole; one already under way when
    // it filled may still have found room, and then it was acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let (status, body) = app.post(&syncs, json!({})).await;
        if status != StatusCode::CREATED {
            break (status, body);
        }
        acknowledged.insert(id(&body, "id"));
        assert!(
            std::time::Instant::now() < deadline,
            "writes kept passing on a full disk"
        );
    };
    assert_eq!(refused.0, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.1);
    assert_eq!(refused.1, json!({"detail": "storage unavailable"}));
    for _ in 0..3 {
        let (status, _) = app.post(&syncs, json!({})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let (status, body) = health(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert!(body["reason"].as_str().unwrap().contains("full"), "{body}");
    // Reads still answer.
    let (status, _) = app.get(&syncs.replace("/syncs", "")).await;
    assert_eq!(status, StatusCode::OK);

    // Space returns: the store writes again by itself, and the app never stopped.
    std::fs::remove_file(filler).unwrap();
    wait_for(
        "the store to write again",
        Duration::from_secs(10),
        || async { (health(&app).await.0 == 200).then_some(()) },
    )
    .await;
    assert!(!running.is_finished(), "the app kept running");
    acknowledged.insert(id(&app.start_sync(&connector).await, "id"));

    // Everything acknowledged is delivered, and the refused calls left nothing.
    wait_for(
        "every acknowledged sync delivered",
        Duration::from_secs(20),
        || async {
            let got: HashSet<String> = receiver
                .requests()
                .iter()
                .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
                .collect();
            (got == acknowledged).then_some(())
        },
    )
    .await;
    let logs = app.wait_settled(acknowledged.len()).await;
    assert!(logs.iter().all(|l| l["status"] == "delivered"), "{logs:?}");
    app.cancel.cancel();
    let _ = running.await;
}

/// `chmod` on the database's files, as the test (root) may.
fn chmod(dir: &std::path::Path, mode: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let done = std::process::Command::new("chmod")
            .arg(mode)
            .arg(&path)
            .status()
            .unwrap();
        assert!(done.success(), "chmod {mode} {}", path.display());
    }
}

#[tokio::test]
async fn a_read_only_database_file_answers_503_and_service_resumes_once_it_may_be_written() {
    if backend() == Backend::Postgres {
        eprintln!("file permissions under PostgreSQL are the database server's");
        return;
    }
    // Root writes whatever a file's mode says: the server runs as `nobody`.
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let can_switch = std::process::Command::new("setpriv")
        .args(nobody)
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !can_switch {
        assert!(
            std::env::var("WAGGLE_REQUIRE_FAULTS").as_deref() != Ok("1"),
            "WAGGLE_REQUIRE_FAULTS=1, but the server cannot be run as another user here"
        );
        eprintln!("SKIPPED: the read-only test runs the server as nobody (run as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/waggle.db", dir.path().display());
    let key = org_create(&db_url)["api_key"].as_str().unwrap().to_owned();
    let chown = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let start = || {
        let port = free_port();
        let child = std::process::Command::new("setpriv")
            .args(nobody)
            .arg(waggle_bin())
            .args([
                "serve",
                "--allow-private-destinations",
                "--poll-interval",
                "50ms",
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                &db_url,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Server {
            child,
            address: format!("http://127.0.0.1:{port}"),
        }
    };
    let client = reqwest::Client::new();
    let healthz = |server: &Server| {
        let (client, url) = (client.clone(), format!("{}/healthz", server.address));
        async move {
            let r = client.get(url).send().await.ok()?;
            Some((
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.ok()?,
            ))
        }
    };

    let receiver = Receiver::start(200).await;
    let mut server = start();
    wait_for("the server to answer", Duration::from_secs(15), || {
        healthz(&server)
    })
    .await;
    let base = server.address.clone();
    call(
        &client,
        &key,
        format!("{base}/api/v1/webhooks"),
        json!({
        "url": receiver.url("/h"), "name": "h", "type": "production",
        "events": ["connector_sync_started"]}),
    )
    .await
    .expect("webhook created");
    let connector = call(&client, &key, format!("{base}/api/v1/connectors"), json!({
        "environment": "production", "display_name": "BreatheHR", "integration_slug": "breathehr",
        "categories": ["HRIS"], "origin_id": "u", "end_user_name": "John Doe", "end_user_email": "a@b.c"}))
    .await
    .expect("connector created");
    let syncs = format!("/api/v1/connectors/{}/syncs", id(&connector, "id"));
    let mut acknowledged = HashSet::new();
    for _ in 0..3 {
        let sync = call(&client, &key, format!("{base}{syncs}"), json!({}))
            .await
            .unwrap();
        acknowledged.insert(id(&sync, "id"));
    }
    server.terminate().await;

    // Started on a file it may not write: it serves, reads answer, writes are refused.
    chmod(dir.path(), "a-w");
    let server = start();
    let base = server.address.clone();
    let (status, body) = wait_for("the server to answer", Duration::from_secs(15), || {
        healthz(&server)
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["reason"].as_str().unwrap().contains("readonly"),
        "{body}"
    );
    for _ in 0..3 {
        let refused = client
            .post(format!("{base}{syncs}"))
            .bearer_auth(&key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body, json!({"detail": "storage unavailable"}));
    }
    let read = fetch(
        &client,
        &key,
        format!("{base}{}", syncs.replace("/syncs", "")),
    )
    .await;
    assert_eq!(read["id"], connector["id"], "reads still answer");

    // Writable again: the node writes by itself, without a restart.
    chmod(dir.path(), "u+w");
    wait_for(
        "the store to write again",
        Duration::from_secs(10),
        || async { (healthz(&server).await?.0 == 200).then_some(()) },
    )
    .await;
    let sync = call(&client, &key, format!("{base}{syncs}"), json!({})).await;
    acknowledged.insert(id(&sync.expect("a sync accepted once writable"), "id"));
    wait_for(
        "every acknowledged sync delivered, and nothing refused",
        Duration::from_secs(20),
        || async {
            let got: HashSet<String> = receiver
                .requests()
                .iter()
                .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
                .collect();
            (got == acknowledged).then_some(())
        },
    )
    .await;
}
