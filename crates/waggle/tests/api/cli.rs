//! The command line: `org create` and what `serve` prints and logs.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

fn waggle(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_waggle"))
        .args(args)
        .output()
        .expect("waggle runs")
}

#[test]
fn org_create_prints_one_json_object_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/cli.db", dir.path().display());
    let out = waggle(&[
        "org",
        "create",
        "--name",
        "Acme",
        "--admin-email",
        "ops@acme.test",
        "--admin-password",
        "long enough",
        "--database",
        &db,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(created.as_object().unwrap().len(), 3);
    assert!(created["api_key"].as_str().unwrap().starts_with("wgl_"));

    let short = waggle(&[
        "org",
        "create",
        "--name",
        "X",
        "--admin-email",
        "x@acme.test",
        "--admin-password",
        "short",
        "--database",
        &db,
    ]);
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8 characters"));
    let taken = waggle(&[
        "org",
        "create",
        "--name",
        "Y",
        "--admin-email",
        "OPS@acme.test",
        "--admin-password",
        "long enough",
        "--database",
        &db,
    ]);
    assert!(
        !taken.status.success(),
        "emails are unique, whatever their case"
    );
    let empty = waggle(&["org", "create", "--name", " ", "--database", &db]);
    assert!(!empty.status.success());
}

/// Runs the real binary at debug level through a webhook's whole life and checks that no
/// secret reaches its output except the first-start banner on stdout.
#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/logs.db", dir.path().display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_waggle"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            &db,
            "--allow-private-destinations",
        ])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_for("the server", Duration::from_secs(15), || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    // The banner: read the API key from stdout.
    let mut stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.contains("Try:") {
            let n = stdout.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        text
    })
    .await
    .unwrap();
    let field = |name: &str| {
        banner
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned()
    };
    let (key, signature_key, password) =
        (field("API key"), field("Signature key"), field("Password"));
    let receiver = Receiver::start(200).await;
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    post("/api/v1/webhooks", json!({"url": receiver.url("/h"), "name": "h", "type": "production", "events": ["connector_sync_started"]}))
        .await
        .unwrap();
    let connector: Value = post(
        "/api/v1/connectors",
        json!({"environment": "production", "display_name": "d", "integration_slug": "s",
        "categories": [], "origin_id": "o", "end_user_name": "n", "end_user_email": "a@b.c"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    post(
        &format!(
            "/api/v1/connectors/{}/syncs",
            connector["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await
    .unwrap();
    receiver.wait_for(1).await;
    let regenerated: Value = post("/api/v1/webhooks/signature-key/regenerate", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_key = regenerated["signature_key"].as_str().unwrap().to_owned();
    client
        .get(format!("{base}/api/v1/webhooks"))
        .bearer_auth("wgl_wrong_key_attempt")
        .send()
        .await
        .unwrap();
    stop_process(&mut child);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.len() > 1000, "debug logging ran: {} bytes", logs.len());
    for secret in [
        key.as_str(),
        &signature_key,
        &password,
        &new_key,
        "wgl_wrong_key_attempt",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

fn stop_process(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_config_file_sets_every_flag_under_its_name_below_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/config.db", dir.path().display());
    let file = dir.path().join("waggle.toml");
    let unused_port = free_port();
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{unused_port}\"\ndatabase = \"{db}\"\nrate_limit = 3\n\
             allow_destination = [\"10.1.0.0/16\"]\nauto_disable_after = \"2h\"\n"
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();

    // check: ok, then an unknown key and a bad value, each named.
    let ok = waggle(&["config", "check", "--config", path]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "rate_limt = 3\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let out = waggle(&["config", "check", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key in"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate_limt"));
    std::fs::write(&bad, "retry_window = \"soon\"\n").unwrap();
    let out = waggle(&["config", "check", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--retry-window"));

    // print: the file over the defaults, the environment over the file, secrets hidden.
    std::fs::write(
        &bad,
        "database = \"postgres://waggle:hunter2@db.internal/waggle\"\nrate_limit = 3\n\
         otlp_endpoint = \"https://otel:hunter2@collector.internal:4318\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_waggle"))
        .args(["config", "print", "--config", bad.to_str().unwrap()])
        .env("WAGGLE_RATE_LIMIT", "7")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: toml::Table = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    assert_eq!(printed["rate_limit"].as_integer(), Some(7));
    assert_eq!(
        printed["database"].as_str(),
        Some("postgres://waggle:***@db.internal/waggle")
    );
    assert_eq!(
        printed["otlp_endpoint"].as_str(),
        Some("https://otel:***@collector.internal:4318/")
    );
    assert_eq!(printed["retry_window"].as_str(), Some("60s"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));

    // serve: the file's values hold, and a flag beats the file (`--listen` here).
    let port = free_port();
    let server = serve(&db, port, &["--config", path]).await;
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/webhooks", server.address))
        .bearer_auth("wgl_not_a_key")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", unused_port)).is_err(),
        "the file's listen address won over the flag"
    );
    let key = org_create(&db)["api_key"].as_str().unwrap().to_owned();
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/webhooks", server.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-ratelimit-limit"], "3");
}

/// `waggle listen` as a child process, its output lines gathered as they come.
struct Listening {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Listening {
    async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_waggle"))
            .arg("listen")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("waggle listen starts");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let gathered = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                gathered.lock().unwrap().push(line);
            }
        });
        let listening = Self { child, lines };
        listening.line("listening on").await;
        listening
    }

    /// The first line that contains `needle`, once there is one.
    async fn line(&self, needle: &str) -> String {
        wait_for(needle, Duration::from_secs(15), || async {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
        .await
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn listen_prints_each_delivery_checks_both_signatures_and_forwards() {
    let app = spawn_app().await;
    let handler = Receiver::start(201).await;
    let (port, other_port) = (free_port(), free_port());
    let key = app.signature_key.clone();
    let standard_secret = waggle_verify::standard_secret(&key);
    let forward = handler.url("/handler");
    let listening = Listening::start(&[
        "--port",
        &port.to_string(),
        "--signature-key",
        &standard_secret,
        "--forward",
        &forward,
    ])
    .await;
    let wrong_key = Listening::start(&[
        "--port",
        &other_port.to_string(),
        "--signature-key",
        "whsk_not_the_key",
    ])
    .await;
    app.create_webhook(
        &format!("http://127.0.0.1:{port}/hook"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    app.create_webhook(
        &format!("http://127.0.0.1:{other_port}/hook"),
        "production",
        &["connector_sync_started"],
    )
    .await;
    let connector = app.create_connector("production").await;
    app.start_sync(&connector).await;

    let line = listening.line("connector_sync_started").await;
    assert!(
        line.contains(&format!("connector {}", id(&connector, "id"))),
        "{line}"
    );
    assert!(
        line.contains("X-Bindbee-Webhook-Signature: signature valid"),
        "{line}"
    );
    assert!(
        line.contains("webhook-signature: signature valid"),
        "{line}"
    );
    assert!(line.contains("-> 201"), "{line}");
    // Forwarded as it came, and the handler's status went back to waggle.
    let got = handler.wait_for(1).await;
    assert_eq!(got[0].path, "/handler");
    assert_eq!(
        got[0].header("x-bindbee-webhook-signature"),
        expected_signature(&key, &got[0].body)
    );
    assert_eq!(got[0].json()["webhook"]["event"], "connector_sync_started");
    let logs = app.wait_settled(2).await;
    let codes: Vec<&Value> = logs.iter().map(|l| &l["response_code"]).collect();
    assert!(
        codes.contains(&&json!(201)) && codes.contains(&&json!(200)),
        "{codes:?}"
    );

    let line = wrong_key.line("connector_sync_started").await;
    assert!(
        line.contains("X-Bindbee-Webhook-Signature: signature invalid"),
        "{line}"
    );
    assert!(
        line.contains("webhook-signature: signature invalid"),
        "{line}"
    );
    assert!(line.contains("-> 200"), "{line}");
}
