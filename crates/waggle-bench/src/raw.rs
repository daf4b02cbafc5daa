//! The physical limit: a raw HTTP client (hyper's pooled client, the stack waggle delivers
//! with) posting waggle-shaped requests to the receiver as fast as it can, with waggle's
//! concurrency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// What the raw client achieved.
#[derive(Debug, Clone, Copy)]
pub struct RawRate {
    /// Responses per second, from the first request to the last response.
    pub rps: f64,
    pub requests: u64,
    pub errors: u64,
}

impl RawRate {
    /// Two measurements as one: all their requests over all their time.
    pub fn together(self, other: RawRate) -> RawRate {
        let seconds = self.requests as f64 / self.rps + other.requests as f64 / other.rps;
        let requests = self.requests + other.requests;
        RawRate {
            rps: requests as f64 / seconds,
            requests,
            errors: self.errors + other.errors,
        }
    }
}

/// POSTs `count` bodies to `url` from `concurrency` tasks sharing one client, stopping
/// early at `limit`.
pub async fn measure(
    url: &str,
    concurrency: usize,
    count: u64,
    limit: Duration,
) -> anyhow::Result<RawRate> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http1_writev(false) // as waggle's sender
        .pool_max_idle_per_host(concurrency)
        .pool_timer(TokioTimer::new())
        .build(connector);
    let uri: http::Uri = url.parse()?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, next, uri) = (client.clone(), next.clone(), uri.clone());
        tasks.spawn(async move {
            let (mut done, mut errors) = (0u64, 0u64);
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= count || Instant::now() >= deadline {
                    break;
                }
                // The headers waggle sends, in its order.
                let request = http::Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .header("user-agent", "waggle/0.1.0")
                    .header("webhook-id", "0192f0c4-7a55-7c3e-9a1b-3f4e5d6c7b8a")
                    .header(
                        "x-bindbee-webhook-signature",
                        "q1Vt3zQx0m2Yb8Jc5Kd7Lf9Ng1Ph3Rj5Tl7Vn9Xp1Zr3=",
                    )
                    .header("accept", "*/*")
                    .header("accept-encoding", "gzip")
                    .body(Full::new(body(seq)))
                    .expect("a valid request");
                let exchange = async {
                    let response = client.request(request).await.ok()?;
                    response.into_body().collect().await.ok()
                };
                match tokio::time::timeout(Duration::from_secs(10), exchange).await {
                    Ok(Some(_)) => done += 1,
                    _ => errors += 1,
                }
            }
            (done, errors)
        });
    }
    let (mut requests, mut errors) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (done, failed) = joined?;
        requests += done;
        errors += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        requests > 0,
        "the raw client got no response ({errors} errors)"
    );
    Ok(RawRate {
        rps: requests as f64 / elapsed,
        requests,
        errors,
    })
}

/// A body shaped and sized like the one waggle sends for the bench's data-change event.
pub fn body(seq: u64) -> Bytes {
    Bytes::from(format!(
        concat!(
            r#"{{"webhook":{{"webhook_id":"0192f0c4-7a55-7c3e-9a1b-3f4e5d6c7b8a","#,
            r#""url":"http://127.0.0.1:40000/hook/0","event":"connector_data_modified"}},"#,
            r#""connector":{{"id":"0192f0c4-6b2e-7d41-8f3a-1c2d3e4f5a6b","#,
            r#""display_name":"BreatheHR","integration_slug":"breathehr","#,
            r#""categories":["HRIS"],"org_name":"Bench","origin_id":"user_123","#,
            r#""connector_status":"COMPLETE","end_user_name":"John Doe","#,
            r#""end_user_email":"abc@xyz.com"}},"data":["{seq}"],"model":"bench"}}"#,
        ),
        seq = seq
    ))
}

#[cfg(test)]
mod tests {
    use super::RawRate;

    #[test]
    fn two_raw_measurements_together_weigh_by_their_time() {
        // 100 requests in 1 s and 100 in 4 s: 200 in 5 s, not the mean of the rates.
        let fast = RawRate {
            rps: 100.0,
            requests: 100,
            errors: 0,
        };
        let slow = RawRate {
            rps: 25.0,
            requests: 100,
            errors: 1,
        };
        let both = fast.together(slow);
        assert_eq!((both.requests, both.errors), (200, 1));
        assert!((both.rps - 40.0).abs() < 1e-9, "{}", both.rps);
    }

    #[test]
    fn the_receiver_finds_the_sequence_number_in_a_raw_body() {
        let body = super::body(12345);
        assert_eq!(crate::receiver::find_seq(&body), Some(12345));
        serde_json::from_slice::<serde_json::Value>(&body).expect("valid JSON");
    }
}
