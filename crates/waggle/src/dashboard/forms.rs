//! HTML forms: reading `application/x-www-form-urlencoded` bodies (repeated fields
//! included, as checkboxes send them) and parsing the webhook form with the domain's
//! parsers, keeping what was typed and each field's error for the page.

use serde_json::Value;

use super::extract::FormData;
use super::views::{Choice, TestResultView, WebhookFormView};
use crate::domain::destination::{DestinationPolicy, WebhookUrl};
use crate::domain::event::{Environment, EventType};
use crate::domain::retry::{self, RetryRules, RetrySchedule, RETRIABLE_STATUSES};
use crate::domain::webhook::{self, NewWebhook, Webhook, WebhookChanges};
use crate::domain::Invalid;

/// The retry schedules the form offers, as `retry_policy` values: the last one takes the
/// waits typed in `retry_delays`.
const SCHEDULES: [(&str, &str, &str); 3] = [
    (
        "standard",
        "Standard",
        "Network failures, up to 4 retries within 60 seconds (1s, 2s, 4s, 8s).",
    ),
    (
        "extended",
        "Extended",
        "Up to 8 attempts over about 27 hours, each wait about four times the last.",
    ),
    ("delays", "Custom", "The waits listed below, in order."),
];

/// The webhook form as typed: kept to show again when it does not parse.
#[derive(Debug, Clone, Default)]
pub struct WebhookInput {
    pub url: String,
    pub name: String,
    pub environment: String,
    pub events: Vec<String>,
    /// `standard`, `extended` or `delays` (see [`SCHEDULES`]).
    pub retry_policy: String,
    /// The waits of a custom schedule, comma-separated (`5s, 5m, 1h`).
    pub retry_delays: String,
    pub retry_on_status: Vec<String>,
    /// Each connector's events in the order accepted.
    pub ordered: bool,
}

/// Each field's problem, in the words of the domain's parsers.
#[derive(Debug, Clone, Default)]
pub struct WebhookErrors {
    pub url: Option<String>,
    pub name: Option<String>,
    pub environment: Option<String>,
    pub events: Option<String>,
    pub retry_policy: Option<String>,
    pub retry_on_status: Option<String>,
}

impl WebhookInput {
    pub fn from_form(form: &FormData) -> Self {
        Self {
            url: form.get("url").unwrap_or("").to_owned(),
            name: form.get("name").unwrap_or("").to_owned(),
            environment: form.get("type").unwrap_or("").to_owned(),
            events: form.all("events"),
            retry_policy: form.get("retry_policy").unwrap_or("").to_owned(),
            retry_delays: form.get("retry_delays").unwrap_or("").to_owned(),
            retry_on_status: form.all("retry_on_status"),
            ordered: form.get("ordered").is_some(),
        }
    }

    /// A new form: production and the standard retries preselected, nothing else.
    pub fn blank() -> Self {
        Self {
            environment: Environment::Production.as_str().to_owned(),
            retry_policy: "standard".to_owned(),
            ..Self::default()
        }
    }

    pub fn from_webhook(webhook: &Webhook) -> Self {
        Self {
            url: webhook.url.clone(),
            name: webhook.name.clone(),
            environment: webhook.environment.as_str().to_owned(),
            events: webhook
                .events
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
            retry_policy: match &webhook.retry_policy {
                RetrySchedule::Standard => "standard",
                RetrySchedule::Extended => "extended",
                RetrySchedule::Delays(_) => "delays",
            }
            .to_owned(),
            retry_delays: match &webhook.retry_policy {
                RetrySchedule::Delays(delays) => delays
                    .iter()
                    .map(|d| humantime::format_duration(*d).to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => String::new(),
            },
            retry_on_status: webhook.retry_on_status.iter().map(u16::to_string).collect(),
            ordered: webhook.ordered,
        }
    }

    /// The retry rules chosen, as the API's parsers read them.
    fn retry(&self) -> (Result<RetrySchedule, Invalid>, Result<Vec<u16>, Invalid>) {
        let schedule = match self.retry_policy.trim() {
            "" | "standard" => Ok(RetrySchedule::Standard),
            "delays" => {
                let delays: Vec<&str> = self
                    .retry_delays
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .collect();
                RetrySchedule::parse(&serde_json::json!({ "delays": delays }))
            }
            other => RetrySchedule::parse(&Value::String(other.to_owned())),
        };
        let statuses = self
            .retry_on_status
            .iter()
            .map(|s| {
                s.trim().parse::<u16>().map_err(|_| {
                    Invalid::new(
                        "value_error.retry_on_status",
                        format!("'{s}' is not a status"),
                    )
                })
            })
            .collect::<Result<Vec<u16>, Invalid>>()
            .and_then(|statuses| retry::parse_retry_on_status(&statuses));
        (schedule, statuses)
    }

    /// Parses every field, reporting all problems at once, as the API's `WebhookIn` does.
    pub fn parse(
        &self,
        destinations: &DestinationPolicy,
    ) -> Result<NewWebhook, Box<WebhookErrors>> {
        let url = WebhookUrl::parse(&self.url, destinations);
        let name = webhook::parse_name(&self.name);
        let environment = if self.environment.trim().is_empty() {
            Err(crate::domain::Invalid::new(
                "value_error.missing",
                "choose Production or Development",
            ))
        } else {
            Environment::parse(&self.environment)
        };
        let events = EventType::parse_set(&self.events);
        let (schedule, on_status) = self.retry();
        match (url, name, environment, events, schedule, on_status) {
            (Ok(url), Ok(name), Ok(environment), Ok(events), Ok(schedule), Ok(on_status)) => {
                Ok(NewWebhook {
                    url,
                    name,
                    environment,
                    events,
                    is_enabled: true,
                    retry: RetryRules {
                        schedule,
                        on_status,
                    },
                    ordered: self.ordered,
                })
            }
            (url, name, environment, events, schedule, on_status) => Err(Box::new(WebhookErrors {
                url: url.err().map(|e| e.message),
                name: name.err().map(|e| e.message),
                environment: environment.err().map(|e| e.message),
                events: events.err().map(|e| e.message),
                retry_policy: schedule.err().map(|e| e.message),
                retry_on_status: on_status.err().map(|e| e.message),
            })),
        }
    }

    pub fn parse_changes(
        &self,
        destinations: &DestinationPolicy,
    ) -> Result<WebhookChanges, Box<WebhookErrors>> {
        let new = self.parse(destinations)?;
        Ok(WebhookChanges {
            name: Some(new.name),
            url: Some(new.url),
            environment: Some(new.environment),
            events: Some(new.events),
            is_enabled: None,
            retry_policy: Some(new.retry.schedule),
            retry_on_status: Some(new.retry.on_status),
            ordered: Some(new.ordered),
        })
    }

    /// The form to show: these values, these errors, posting to `action`.
    pub fn view(
        &self,
        errors: WebhookErrors,
        action: String,
        test_action: String,
        submit_label: &'static str,
    ) -> WebhookFormView {
        WebhookFormView {
            url: self.url.clone(),
            name: self.name.clone(),
            environments: Environment::ALL
                .into_iter()
                .map(|e| Choice {
                    value: e.as_str(),
                    label: e.label(),
                    hint: e.description(),
                    checked: self.environment.trim().eq_ignore_ascii_case(e.as_str()),
                })
                .collect(),
            events: EventType::ALL
                .into_iter()
                .map(|t| Choice {
                    value: t.as_str(),
                    label: t.label(),
                    hint: t.description(),
                    checked: self.events.iter().any(|v| v.trim() == t.as_str()),
                })
                .collect(),
            schedules: SCHEDULES
                .into_iter()
                .map(|(value, label, hint)| Choice {
                    value,
                    label,
                    hint,
                    checked: self.retry_policy.trim() == value,
                })
                .collect(),
            retry_delays: self.retry_delays.clone(),
            ordered: self.ordered,
            statuses: RETRIABLE_STATUSES
                .iter()
                .zip(STATUS_NAMES)
                .map(|(status, value)| Choice {
                    value,
                    label: value,
                    hint: axum::http::StatusCode::from_u16(*status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or(""),
                    checked: self.retry_on_status.iter().any(|v| v.trim() == value),
                })
                .collect(),
            url_error: errors.url,
            name_error: errors.name,
            type_error: errors.environment,
            events_error: errors.events,
            retry_policy_error: errors.retry_policy,
            retry_on_status_error: errors.retry_on_status,
            action,
            test_action,
            submit_label,
            test: None,
        }
    }
}

/// [`RETRIABLE_STATUSES`] as the form's values.
const STATUS_NAMES: [&str; RETRIABLE_STATUSES.len()] =
    ["408", "425", "429", "500", "502", "503", "504"];

/// How a Test URL went, from `api::webhooks::send_test`'s JSON, for a person.
pub fn test_result(sent: &Value) -> TestResultView {
    let duration = sent["duration_ms"]
        .as_f64()
        .map(|ms| format!("{ms:.1} ms"))
        .unwrap_or_default();
    if let Some(code) = sent["response_code"].as_u64() {
        let class = if (200..300).contains(&code) {
            "ok"
        } else {
            "warn"
        };
        return TestResultView {
            class,
            text: format!("Response {code} {} in {duration}", reason(code)),
        };
    }
    let category = sent["error"].as_str().unwrap_or("error");
    let message = sent["message"]
        .as_str()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    TestResultView {
        class: "error",
        text: format!("Failed ({category}{message}) after {duration}"),
    }
}

fn reason(code: u64) -> &'static str {
    u16::try_from(code)
        .ok()
        .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn repeated_fields_are_all_kept() {
        let form = FormData::parse(b"events=a&name=x+y&events=b&url=https%3A%2F%2Fe.com");
        assert_eq!(form.all("events"), vec!["a", "b"]);
        assert_eq!(form.get("name"), Some("x y"));
        assert_eq!(form.get("url"), Some("https://e.com"));
        assert_eq!(form.get("missing"), None);
    }

    #[test]
    fn every_bad_field_gets_its_error_and_the_values_stay() {
        let input = WebhookInput {
            url: "not a url".into(),
            name: " ".into(),
            environment: "staging".into(),
            events: vec![],
            retry_policy: "delays".into(),
            retry_delays: "5s, 2d".into(),
            retry_on_status: vec!["404".into()],
            ordered: false,
        };
        let errors = input.parse(&DestinationPolicy::default()).unwrap_err();
        assert!(errors.url.is_some());
        assert!(errors.name.is_some());
        assert!(errors.environment.is_some());
        assert!(errors.events.is_some());
        assert!(errors.retry_policy.is_some());
        assert!(errors.retry_on_status.is_some());
        let view = input.view(*errors, "/webhooks".into(), "/t".into(), "Create webhook");
        assert_eq!(view.url, "not a url");
    }

    #[test]
    fn a_good_form_parses() {
        let input = WebhookInput {
            url: "https://example.com/hook".into(),
            name: "Employee data".into(),
            environment: "development".into(),
            events: vec!["connector_synced".into(), "connector_sync_started".into()],
            retry_policy: "delays".into(),
            retry_delays: "5s, 1m,".into(),
            retry_on_status: vec!["503".into(), "429".into()],
            ordered: true,
        };
        let new = input.parse(&DestinationPolicy::default()).unwrap();
        assert_eq!(
            new.retry.schedule,
            RetrySchedule::Delays(vec![
                std::time::Duration::from_secs(5),
                std::time::Duration::from_secs(60)
            ])
        );
        assert_eq!(new.retry.on_status, vec![429, 503]);
        assert_eq!(new.environment, Environment::Development);
        assert_eq!(
            new.events,
            vec![EventType::ConnectorSyncStarted, EventType::ConnectorSynced]
        );
    }

    #[test]
    fn test_results_read_for_people() {
        let ok = test_result(&json!({"response_code": 200, "error": null, "duration_ms": 12.34}));
        assert_eq!(ok.class, "ok");
        assert_eq!(ok.text, "Response 200 OK in 12.3 ms");
        let failed = test_result(&json!({
            "response_code": null, "error": "connect_error", "message": "refused", "duration_ms": 1.0
        }));
        assert_eq!(failed.class, "error");
        assert_eq!(failed.text, "Failed (connect_error: refused) after 1.0 ms");
    }

    #[test]
    fn the_forms_status_names_are_the_retriable_statuses() {
        let named: Vec<u16> = STATUS_NAMES.iter().map(|n| n.parse().unwrap()).collect();
        assert_eq!(named, RETRIABLE_STATUSES);
    }
}
