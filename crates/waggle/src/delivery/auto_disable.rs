//! Auto-disable: a webhook whose attempts have all failed for `--auto-disable-after` is
//! disabled, with the reason and the time on the webhook and a log line, so that a
//! receiver gone for good stops costing attempts; enabling it again clears them.
//!
//! Each batch of outcomes keeps `failing_since` on its webhooks (when their failures
//! began, cleared by a success); this task disables those failing for long enough, a few
//! times per `--auto-disable-after` and at least once a minute. On several nodes each
//! runs it, and a webhook is disabled by whichever comes first.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::time;
use crate::storage::{Store, Turns};

/// Checks for webhooks failing for `after` until `stop`.
pub async fn run(store: Arc<dyn Store>, after: Duration, stop: CancellationToken) {
    let Ok(span) = chrono::Duration::from_std(after) else {
        tracing::error!(
            ?after,
            "auto-disable: the duration is out of range; not checking"
        );
        return;
    };
    let every = (after / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let reason = format!(
        "every attempt failed for {}",
        humantime::format_duration(after)
    );
    let mut turns = Turns::new(every, every);
    while turns.next(&*store, &stop).await {
        match store
            .disable_failing_webhooks(time::now() - span, &reason)
            .await
        {
            Ok(disabled) => {
                for w in disabled {
                    tracing::warn!(
                        webhook_id = %w.webhook_id,
                        org_id = %w.org_id,
                        url = %w.url,
                        reason = %reason,
                        "webhook disabled: its attempts have all failed for too long"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "auto-disable: could not check the webhooks"),
        }
    }
}
