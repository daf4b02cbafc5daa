//! Webhooks: where an organization wants which events of which environment.

use serde::Serialize;

use super::destination::WebhookUrl;
use super::event::{Environment, EventType};
use super::ids::{OrgId, WebhookId};
use super::retry::{RetryPolicyForm, RetryRules, RetrySchedule};
use super::time::{self, Timestamp};
use super::Invalid;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub webhook_id: WebhookId,
    #[serde(skip)]
    pub org_id: OrgId,
    pub name: String,
    pub url: String,
    pub is_enabled: bool,
    #[serde(with = "time::serde_format")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde_format::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_triggered_at: Option<Timestamp>,
    #[serde(rename = "type")]
    pub environment: Environment,
    pub events: Vec<EventType>,
    /// Why waggle disabled the webhook by itself (every attempt failed for
    /// `--auto-disable-after`); `null` otherwise. Enabling it again clears it.
    pub disabled_reason: Option<String>,
    /// When waggle disabled it by itself.
    #[serde(with = "time::serde_format::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disabled_at: Option<Timestamp>,
    /// When a failed delivery is tried again: `"standard"` (the provider's rule: network
    /// failures, four retries within 60 s), `"extended"` (8 attempts over about 27 h,
    /// exponential with jitter) or `{"delays": [...]}`.
    #[schema(value_type = RetryPolicyForm)]
    pub retry_policy: RetrySchedule,
    /// HTTP statuses retried too, as network failures are; a `Retry-After` in their
    /// answer is honoured up to the next wait of the schedule.
    #[schema(value_type = Vec<u16>, example = json!([429, 503]))]
    pub retry_on_status: Vec<u16>,
    /// The events of each connector arrive in the order the API accepted them: a delivery
    /// waits (`blocked` in the logs) until the one before it, of the same connector, has
    /// succeeded or ended.
    pub ordered: bool,
}

impl Webhook {
    /// The fan-out rule of SPEC §2.
    pub fn wants(&self, environment: Environment, event_type: EventType) -> bool {
        self.is_enabled && self.environment == environment && self.events.contains(&event_type)
    }

    pub fn retry_rules(&self) -> RetryRules {
        RetryRules {
            schedule: self.retry_policy.clone(),
            on_status: self.retry_on_status.clone(),
        }
    }
}

/// A new webhook, every field parsed.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub name: String,
    pub url: WebhookUrl,
    pub environment: Environment,
    pub events: Vec<EventType>,
    pub is_enabled: bool,
    pub retry: RetryRules,
    pub ordered: bool,
}

/// Changes to a webhook, every present field parsed.
#[derive(Debug, Clone, Default)]
pub struct WebhookChanges {
    pub name: Option<String>,
    pub url: Option<WebhookUrl>,
    pub environment: Option<Environment>,
    pub events: Option<Vec<EventType>>,
    pub is_enabled: Option<bool>,
    pub retry_policy: Option<RetrySchedule>,
    pub retry_on_status: Option<Vec<u16>>,
    pub ordered: Option<bool>,
}

pub fn parse_name(value: &str) -> Result<String, Invalid> {
    super::parse_text(value, 255, "webhook name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_needs_enabled_same_environment_and_subscribed() {
        let mut hook = Webhook {
            webhook_id: WebhookId::new(),
            org_id: OrgId::new(),
            name: "h".into(),
            url: "https://example.com".into(),
            is_enabled: true,
            created_at: time::now(),
            last_triggered_at: None,
            environment: Environment::Production,
            events: vec![EventType::ConnectorSynced],
            disabled_reason: None,
            disabled_at: None,
            retry_policy: RetrySchedule::Standard,
            retry_on_status: Vec::new(),
            ordered: false,
        };
        assert!(hook.wants(Environment::Production, EventType::ConnectorSynced));
        assert!(!hook.wants(Environment::Development, EventType::ConnectorSynced));
        assert!(!hook.wants(Environment::Production, EventType::ConnectorSyncStarted));
        hook.is_enabled = false;
        assert!(!hook.wants(Environment::Production, EventType::ConnectorSynced));
    }
}
