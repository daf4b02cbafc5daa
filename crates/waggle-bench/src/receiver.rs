//! The webhook receiver, in its own process so that its work is not the bench's: answers
//! every POST with an empty 200 at once and notes when each event's delivery arrived.
//!
//! `POST /hook/{n}` (and any other POST path) records `(seq, n, arrival)`, where `seq` is
//! read from the body just after `"data":["`; `GET /__count`, `GET /__dump` and
//! `POST /__reset` serve those records to the bench. A second port accepts connections and
//! never answers: a dead destination.

use std::convert::Infallible;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{ChildStdin, Command};
use tokio::sync::Semaphore;

use crate::process::Guard;

/// One delivery as the receiver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// The webhook's index, from the path `/hook/{n}`; `u32::MAX` for other paths.
    pub hook: u32,
    /// Wall clock at arrival, microseconds since the Unix epoch.
    pub at_us: u64,
}

/// Connections the dead port holds open at once; more are closed at once.
const DEAD_CONNECTIONS: usize = 8192;
/// How long the dead port holds a connection that its client does not close.
const DEAD_HOLD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The receiver process.

#[derive(Default)]
struct State {
    records: Mutex<Vec<Record>>,
}

/// Runs the receiver until stdin closes (the bench exited) or `max_seconds` pass.
pub fn serve(max_seconds: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let dead = TcpListener::bind("127.0.0.1:0").await?;
        println!(
            "listening {} {}",
            listener.local_addr()?.port(),
            dead.local_addr()?.port()
        );
        // The bench holds our stdin; when it goes away, so do we.
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
        tokio::spawn(hold_dead(dead));
        let state = Arc::new(State::default());
        let accepting = async {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors, most likely: let some close.
                        eprintln!("receiver: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, state.clone()));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        };
        tokio::select! {
            () = accepting => {}
            () = tokio::time::sleep(Duration::from_secs(max_seconds)) => {
                eprintln!("receiver: {max_seconds} s passed; exiting");
            }
        }
        Ok(())
    })
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at_us = crate::now_us();
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        Ok(response)
    };
    let records = || state.records.lock().expect("receiver lock");
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/__count") => text(StatusCode::OK, records().len().to_string()),
        (&Method::GET, "/__dump") => {
            let dump = dump(&records());
            text(StatusCode::OK, dump)
        }
        (&Method::POST, "/__reset") => {
            records().clear();
            text(StatusCode::OK, String::new())
        }
        (&Method::POST, path) => {
            let hook = path
                .strip_prefix("/hook/")
                .and_then(|n| n.parse().ok())
                .unwrap_or(u32::MAX);
            let body = match req.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return text(StatusCode::BAD_REQUEST, String::new()),
            };
            if let Some(seq) = find_seq(&body) {
                records().push(Record { seq, hook, at_us });
            }
            text(StatusCode::OK, String::new())
        }
        _ => text(StatusCode::NOT_FOUND, String::new()),
    }
}

fn dump(records: &[Record]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(records.len() * 32);
    for r in records {
        let _ = writeln!(out, "{} {} {}", r.seq, r.hook, r.at_us);
    }
    out
}

/// The event's sequence number: the digits after `"data":["` in a delivered body.
pub fn find_seq(body: &[u8]) -> Option<u64> {
    const MARK: &[u8] = b"\"data\":[\"";
    let start = body.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let digits = &body[start..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Accepts connections and never answers them: reads and discards until the client gives
/// up, holding at most [`DEAD_CONNECTIONS`] for at most [`DEAD_HOLD`] each.
async fn hold_dead(listener: TcpListener) {
    let held = Arc::new(Semaphore::new(DEAD_CONNECTIONS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = held.clone().try_acquire_owned() else {
            continue; // dropping the stream closes it
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(DEAD_HOLD, async {
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
            drop(permit);
        });
    }
}

// ---------------------------------------------------------------------------------------
// The bench's handle on the receiver process.

/// The running receiver; dropping it kills the process.
pub struct Receiver {
    process: Guard,
    /// Kept open: the receiver exits when it closes.
    _stdin: ChildStdin,
    port: u16,
    dead_port: u16,
    client: reqwest::Client,
}

impl Receiver {
    /// Re-executes this binary as `waggle-bench receiver` and waits for its ports.
    pub async fn start() -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("receiver")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawning the receiver")?;
        let stdin = child.stdin.take().context("receiver stdin")?;
        let stdout = child.stdout.take().context("receiver stdout")?;
        let process = Guard::new(child)?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("the receiver did not say where it listens within 10 s")??;
        let ports: Vec<u16> = line
            .strip_prefix("listening ")
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        anyhow::ensure!(ports.len() == 2, "unexpected receiver greeting {line:?}");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            process,
            _stdin: stdin,
            port: ports[0],
            dead_port: ports[1],
            client,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A webhook URL whose deliveries are recorded as hook `n`.
    pub fn hook_url(&self, n: usize) -> String {
        format!("http://127.0.0.1:{}/hook/{n}", self.port)
    }

    /// A webhook URL that accepts connections and never answers.
    pub fn dead_url(&self, n: usize) -> String {
        format!("http://127.0.0.1:{}/hook/{n}", self.dead_port)
    }

    fn control(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn reset(&self) -> anyhow::Result<()> {
        self.client
            .post(self.control("/__reset"))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn count(&self) -> anyhow::Result<u64> {
        let text = self
            .client
            .get(self.control("/__count"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text.trim().parse()?)
    }

    pub async fn dump(&self) -> anyhow::Result<Vec<Record>> {
        let text = self
            .client
            .get(self.control("/__dump"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        text.lines()
            .map(|line| {
                let mut f = line.split(' ').map(str::parse::<u64>);
                match (f.next(), f.next(), f.next()) {
                    (Some(Ok(seq)), Some(Ok(hook)), Some(Ok(at_us))) => Ok(Record {
                        seq,
                        hook: hook as u32,
                        at_us,
                    }),
                    _ => anyhow::bail!("bad receiver record {line:?}"),
                }
            })
            .collect()
    }

    /// Waits until `expected` deliveries arrived, none arrived for `idle`, or `limit`
    /// passed; then returns what arrived.
    pub async fn wait_for(
        &self,
        expected: u64,
        idle: Duration,
        limit: Duration,
    ) -> anyhow::Result<Vec<Record>> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = (self.count().await?, tokio::time::Instant::now());
        while last.0 < expected {
            let now = tokio::time::Instant::now();
            if now >= deadline || now.duration_since(last.1) >= idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let count = self.count().await?;
            if count != last.0 {
                last = (count, tokio::time::Instant::now());
            }
        }
        self.dump().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sequence_number_in_a_delivered_body() {
        let body = br#"{"webhook":{"event":"connector_data_modified"},"connector":{},"data":["4711"],"model":"bench"}"#;
        assert_eq!(find_seq(body), Some(4711));
        assert_eq!(find_seq(br#"{"data":[]}"#), None);
        assert_eq!(find_seq(br#"{"data":["x"]}"#), None);
        assert_eq!(find_seq(br#"{"data":["12"#), None);
    }

    #[test]
    fn dumps_one_line_per_record() {
        let records = [Record {
            seq: 3,
            hook: 1,
            at_us: 99,
        }];
        assert_eq!(dump(&records), "3 1 99\n");
    }
}
