//! Each webhook's retry rules, as the dispatcher needs them: for a retry, and when an
//! attempt failed. A first attempt that gets its answer (nearly every one) reads nothing.
//!
//! Rules read from the store are kept for [`FRESH_FOR`]: a receiver that fails a thousand
//! deliveries a second costs a read a second, and a change made on any node applies to
//! the retries decided from then on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::ids::{OrgId, WebhookId};
use crate::domain::retry::{RetryPolicy, RetryRules};
use crate::storage::Store;

/// How long rules read from the store are used before they are read again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// Webhooks whose rules are kept at most; past it, the map starts again empty.
const ENTRIES: usize = 10_000;

/// What decides a webhook's retries: the policy of its schedule, and the statuses it
/// retries besides network failures.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub policy: RetryPolicy,
    pub on_status: Vec<u16>,
}

pub struct RulesCache {
    store: Arc<dyn Store>,
    /// The operator's policy: the standard schedule, and what every webhook gets when
    /// its own rules cannot be read.
    standard: Arc<Rules>,
    read: Mutex<HashMap<WebhookId, (Instant, Arc<Rules>)>>,
}

impl RulesCache {
    pub fn new(store: Arc<dyn Store>, standard: RetryPolicy) -> Self {
        Self {
            store,
            standard: Arc::new(Rules {
                policy: standard,
                on_status: Vec::new(),
            }),
            read: Mutex::default(),
        }
    }

    pub fn standard(&self) -> &Arc<Rules> {
        &self.standard
    }

    /// The rules of `webhook`: the standard ones when it is gone (its deliveries are
    /// cancelled) or cannot be read now.
    pub async fn get(&self, org: OrgId, webhook: WebhookId) -> Arc<Rules> {
        if let Some((at, rules)) = self.read.lock().expect("rules lock").get(&webhook) {
            if at.elapsed() < FRESH_FOR {
                return rules.clone();
            }
        }
        let read_at = Instant::now();
        let rules = match self.store.webhook(org, webhook).await {
            Ok(Some(found)) => self.of(found.retry_rules()),
            Ok(None) => self.standard.clone(),
            Err(e) => {
                tracing::warn!(webhook_id = %webhook, error = %e, "could not read the webhook's retry rules; using the standard ones");
                return self.standard.clone();
            }
        };
        let mut read = self.read.lock().expect("rules lock");
        if read.len() >= ENTRIES {
            read.clear();
        }
        read.insert(webhook, (read_at, rules.clone()));
        rules
    }

    fn of(&self, rules: RetryRules) -> Arc<Rules> {
        if rules == RetryRules::default() {
            return self.standard.clone();
        }
        Arc::new(Rules {
            policy: self.standard.policy.on(&rules.schedule),
            on_status: rules.on_status,
        })
    }
}
