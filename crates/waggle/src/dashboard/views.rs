//! What the templates (`templates/dashboard/`) show: page structs and the plain view
//! models they read, every value already formatted, so the templates hold no logic but
//! loops and conditions.

use askama::Template;

use crate::api::pagination;
use crate::domain::attempt::{Attempt, AttemptResult};
use crate::domain::time::Timestamp;
use crate::domain::webhook::Webhook;
use crate::storage::{ApiKey, LogEntry};

/// What every page's frame needs.
pub struct Layout {
    pub title: String,
    /// The sidebar, for a signed-in user.
    pub nav: Option<Nav>,
    /// A one-line confirmation of what the last form did.
    pub notice: Option<&'static str>,
}

pub struct Nav {
    pub org_name: String,
    pub csrf: String,
    /// `webhooks` or `logs`: the sidebar entry to mark.
    pub active: &'static str,
}

impl Layout {
    /// A page without the sidebar (login, errors).
    pub fn bare(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            nav: None,
            notice: None,
        }
    }

    pub fn signed_in(
        title: impl Into<String>,
        org_name: &str,
        csrf: &str,
        active: &'static str,
        notice: Option<&str>,
    ) -> Self {
        Self {
            title: title.into(),
            nav: Some(Nav {
                org_name: org_name.to_owned(),
                csrf: csrf.to_owned(),
                active,
            }),
            notice: notice.and_then(notice_text),
        }
    }
}

/// The confirmations a redirect can ask for, by key: never text from the query itself.
fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "created" => "Webhook created.",
        "saved" => "Changes saved.",
        "enabled" => "Webhook enabled.",
        "disabled" => "Webhook disabled: it receives no new events until enabled again.",
        "deleted" => "Webhook deleted. Its logs stay under Logs.",
        "key-regenerated" => {
            "Signature key regenerated. Every delivery from now on is signed with the new key."
        }
        "grace-invalid" => "The key was not regenerated: the grace period is at most 7 days.",
        "resent" => "Resent: this is the new delivery of the same body.",
        "password-changed" => "Password changed. Your other sessions have ended.",
        "api-key-name" => "The key was not created: give it a name of at most 255 characters.",
        "api-key-deleted" => "API key deleted: calls with it are refused from now on.",
        "last-api-key" => {
            "That is the organization's last API key: create another one before deleting it."
        }
        _ => return None,
    })
}

#[derive(Template)]
#[template(path = "dashboard/login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub email: String,
    pub next: String,
    pub error: Option<&'static str>,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "dashboard/password.html")]
pub struct PasswordPage {
    pub layout: Layout,
    pub csrf: String,
    pub error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub heading: &'static str,
    pub message: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard/webhooks.html")]
pub struct WebhooksPage {
    pub layout: Layout,
    pub csrf: String,
    pub webhooks: Vec<WebhookRow>,
    pub next_page: Option<String>,
    pub form: WebhookFormView,
    pub signature_key: String,
    /// The same key in the Standard Webhooks form (`whsec_…`).
    pub standard_secret: String,
    /// Until when the key it replaced still signs `webhook-signature`, if it does.
    pub retiring_until: Option<String>,
    /// Shows the key at once (right after regenerating it).
    pub key_open: bool,
    pub api_keys: Vec<ApiKeyRow>,
}

/// An API key as the Security page lists it.
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub last_used: String,
}

impl From<&ApiKey> for ApiKeyRow {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created: when(&k.created_at),
            last_used: k
                .last_used_at
                .as_ref()
                .map(when)
                .unwrap_or_else(|| "Never".into()),
        }
    }
}

/// A new API key, shown this once.
#[derive(Template)]
#[template(path = "dashboard/api_key.html")]
pub struct ApiKeyPage {
    pub layout: Layout,
    pub name: String,
    pub prefix: String,
    pub key: String,
}

#[derive(Template)]
#[template(path = "dashboard/webhook.html")]
pub struct WebhookPage {
    pub layout: Layout,
    pub csrf: String,
    pub webhook: WebhookRow,
    pub form: WebhookFormView,
    pub recover: RecoverView,
    pub chart: ChartView,
    pub logs: LogList,
}

/// The last day of a webhook's deliveries as a bar chart drawn on the server (an SVG of
/// 24 hourly bars, succeeded below and failed above), with the figures beside it.
pub struct ChartView {
    pub bars: Vec<Bar>,
    /// What the tallest bar counts.
    pub peak: u64,
    /// The figures of the last hour and the last day, in words.
    pub last_hour: String,
    pub last_day: String,
}

/// One hour's bar: its succeeded and failed parts, in the chart's units.
pub struct Bar {
    pub x: u32,
    pub ok_y: u32,
    pub ok_height: u32,
    pub failed_y: u32,
    pub failed_height: u32,
    /// What the bar shows, for a tooltip and for screen readers.
    pub title: String,
}

/// The chart's drawing area: 24 bars of [`BAR_WIDTH`] with a gap, [`CHART_HEIGHT`] tall.
pub const CHART_HEIGHT: u32 = 100;
const BAR_WIDTH: u32 = 16;

impl ChartView {
    pub fn of(stats: &crate::domain::stats::WebhookStats) -> Self {
        let peak = stats
            .hourly
            .iter()
            .map(|h| h.succeeded + h.failed)
            .max()
            .unwrap_or(0);
        let scale = |n: u64| match peak {
            0 => 0,
            peak => ((n as f64 / peak as f64) * CHART_HEIGHT as f64).round() as u32,
        };
        let bars = stats
            .hourly
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (ok_height, failed_height) = (scale(h.succeeded), scale(h.failed));
                let ok_y = CHART_HEIGHT - ok_height;
                Bar {
                    x: i as u32 * (BAR_WIDTH + 4),
                    ok_y,
                    ok_height,
                    failed_y: ok_y - failed_height.min(ok_y),
                    failed_height: failed_height.min(ok_y),
                    title: format!(
                        "{}: {} succeeded, {} failed",
                        h.start.format("%H:%M UTC"),
                        h.succeeded,
                        h.failed
                    ),
                }
            })
            .collect();
        Self {
            bars,
            peak,
            last_hour: window_text(&stats.last_hour),
            last_day: window_text(&stats.last_day),
        }
    }
}

fn window_text(w: &crate::domain::stats::Window) -> String {
    let rate = w
        .success_rate
        .map(|r| format!("{:.1} % succeeded", r * 100.0))
        .unwrap_or_else(|| "none ended yet".into());
    let latency = match (w.p50_ms, w.p99_ms) {
        (Some(p50), Some(p99)) => format!(", answered in {p50} ms (p50) / {p99} ms (p99)"),
        _ => String::new(),
    };
    let plural = if w.deliveries == 1 { "y" } else { "ies" };
    format!("{} deliver{plural}, {rate}{latency}", w.deliveries)
}

/// The "Recover failed deliveries" form, and the recovery it last started.
pub struct RecoverView {
    /// The range as typed (`datetime-local` values, UTC).
    pub since: String,
    pub until: String,
    pub error: Option<String>,
    /// How the recovery it started is going, in words.
    pub progress: Option<String>,
}

impl RecoverView {
    /// A new form: the last day.
    pub fn blank() -> Self {
        let since = crate::domain::time::now() - chrono::Duration::days(1);
        Self {
            since: since.format("%Y-%m-%dT%H:%M").to_string(),
            until: String::new(),
            error: None,
            progress: None,
        }
    }

    pub fn progress_of(recovery: &crate::domain::recovery::Recovery) -> String {
        use crate::domain::recovery::RecoveryStatus;
        let range = format!("{} to {}", when(&recovery.since), when(&recovery.until));
        match (recovery.status, recovery.deliveries) {
            (_, 0) => format!("No failed deliveries to recover from {range}."),
            (RecoveryStatus::Running, n) => format!(
                "Recovering {n} failed deliveries from {range}: {} sent again so far.",
                recovery.recovered
            ),
            (RecoveryStatus::Done, n) => format!(
                "Recovered: {} of {n} failed deliveries from {range} sent again.",
                recovery.recovered
            ),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/confirm.html")]
pub struct ConfirmPage {
    pub layout: Layout,
    pub csrf: String,
    pub heading: String,
    pub paragraphs: Vec<String>,
    /// Offers a grace period for the key being replaced (`grace_period` in the form).
    pub grace: bool,
    pub action: String,
    pub button: &'static str,
    pub cancel: String,
}

#[derive(Template)]
#[template(path = "dashboard/logs.html")]
pub struct LogsPage {
    pub layout: Layout,
    pub filters: LogFilters,
    pub logs: LogList,
}

#[derive(Template)]
#[template(path = "dashboard/log.html")]
pub struct LogPage {
    pub layout: Layout,
    pub csrf: String,
    pub log: LogRow,
    pub url: String,
    pub webhook_id: String,
    pub connector: String,
    pub body: String,
    pub attempts: Vec<AttemptView>,
}

/// A webhook as the list and its page show it.
pub struct WebhookRow {
    pub id: String,
    pub name: String,
    pub url: String,
    pub environment: &'static str,
    pub events: Vec<&'static str>,
    pub enabled: bool,
    pub created_at: String,
    pub last_triggered: String,
    /// Why and when waggle disabled it by itself, if it did.
    pub auto_disabled: Option<(String, String)>,
}

impl From<&Webhook> for WebhookRow {
    fn from(w: &Webhook) -> Self {
        Self {
            id: w.webhook_id.to_string(),
            name: w.name.clone(),
            url: w.url.clone(),
            environment: w.environment.label(),
            events: w.events.iter().map(|e| e.label()).collect(),
            enabled: w.is_enabled,
            created_at: when(&w.created_at),
            last_triggered: w
                .last_triggered_at
                .as_ref()
                .map(when)
                .unwrap_or_else(|| "Never".to_owned()),
            auto_disabled: match (&w.disabled_reason, &w.disabled_at) {
                (Some(reason), Some(at)) => Some((reason.clone(), when(at))),
                _ => None,
            },
        }
    }
}

/// The webhook form, for a new webhook or an existing one.
pub struct WebhookFormView {
    pub url: String,
    pub name: String,
    pub environments: Vec<Choice>,
    pub events: Vec<Choice>,
    /// The retry schedules, one checked.
    pub schedules: Vec<Choice>,
    pub retry_delays: String,
    pub ordered: bool,
    /// The statuses that may be retried, those chosen checked.
    pub statuses: Vec<Choice>,
    pub url_error: Option<String>,
    pub name_error: Option<String>,
    pub type_error: Option<String>,
    pub events_error: Option<String>,
    pub retry_policy_error: Option<String>,
    pub retry_on_status_error: Option<String>,
    pub action: String,
    pub test_action: String,
    pub submit_label: &'static str,
    /// The last Test URL's result, when the page is its answer (without JavaScript).
    pub test: Option<TestResultView>,
}

impl WebhookFormView {
    pub fn has_errors(&self) -> bool {
        self.url_error.is_some()
            || self.name_error.is_some()
            || self.type_error.is_some()
            || self.events_error.is_some()
            || self.retry_policy_error.is_some()
            || self.retry_on_status_error.is_some()
    }
}

/// A radio button or checkbox with its label and the provider's explanation.
pub struct Choice {
    pub value: &'static str,
    pub label: &'static str,
    pub hint: &'static str,
    pub checked: bool,
}

pub struct TestResultView {
    /// `ok`, `warn` or `error`.
    pub class: &'static str,
    pub text: String,
}

/// The logs filter form, as typed.
pub struct LogFilters {
    pub webhooks: Vec<FilterOption>,
    pub events: Vec<FilterOption>,
    pub response_code: String,
    pub errors_only: bool,
    pub created_at_from: String,
    pub created_at_to: String,
    /// Problems with the filters, by field name, and ones of no field.
    pub errors: Vec<(String, String)>,
}

impl LogFilters {
    pub fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn other_errors(&self) -> Vec<&str> {
        const FIELDS: [&str; 5] = [
            "webhook_id",
            "webhook_action",
            "response_code",
            "created_at_from",
            "created_at_to",
        ];
        self.errors
            .iter()
            .filter(|(f, _)| !FIELDS.contains(&f.as_str()))
            .map(|(_, m)| m.as_str())
            .collect()
    }

    pub fn is_filtered(&self) -> bool {
        self.webhooks.iter().any(|w| w.selected)
            || self.events.iter().any(|e| e.selected)
            || !self.response_code.is_empty()
            || self.errors_only
            || !self.created_at_from.is_empty()
            || !self.created_at_to.is_empty()
    }
}

pub struct FilterOption {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// One page of logs.
pub struct LogList {
    pub rows: Vec<LogRow>,
    /// Link to the next (older) page.
    pub older: Option<String>,
    /// Link back to the first page, when this is not it.
    pub newest: Option<String>,
    /// The webhook column, left out on a webhook's own page.
    pub show_webhook: bool,
    pub empty_text: &'static str,
}

impl LogList {
    /// Builds a page from up to `page_size + 1` fetched entries; `link` makes a page's URL
    /// from its cursor.
    pub fn from_fetched(
        entries: Vec<LogEntry>,
        page_size: u32,
        first_page: bool,
        link: impl Fn(Option<&str>) -> String,
        show_webhook: bool,
        empty_text: &'static str,
    ) -> Self {
        let page = pagination::Page::from_fetched(entries, page_size, |e| e.id);
        Self {
            older: page.cursor.as_deref().map(|c| link(Some(c))),
            newest: (!first_page).then(|| link(None)),
            rows: page.items.iter().map(LogRow::from).collect(),
            show_webhook,
            empty_text,
        }
    }
}

/// A delivery as a row of the logs.
pub struct LogRow {
    pub id: String,
    pub created_at: String,
    pub event: &'static str,
    pub event_label: &'static str,
    pub webhook_name: String,
    pub integration: String,
    pub end_user: String,
    pub status: String,
    /// `ok`, `warn`, `error` or `pending`.
    pub status_class: &'static str,
    pub attempts: u32,
}

impl From<&LogEntry> for LogRow {
    fn from(e: &LogEntry) -> Self {
        let (status, status_class) = match (e.response_code, e.status.as_str()) {
            (Some(code), _) => (
                code.to_string(),
                match code {
                    200..=299 => "ok",
                    300..=399 => "warn",
                    _ => "error",
                },
            ),
            (None, "pending") if e.attempt_count > 0 => ("Retrying".to_owned(), "pending"),
            (None, "pending") => ("Pending".to_owned(), "pending"),
            (None, "blocked") => ("Blocked · waits for the one before".to_owned(), "pending"),
            (None, "cancelled") => ("Cancelled".to_owned(), "warn"),
            (None, _) => (
                format!(
                    "Failed{}",
                    e.last_error
                        .as_deref()
                        .map(|c| format!(" · {c}"))
                        .unwrap_or_default()
                ),
                "error",
            ),
        };
        Self {
            id: e.id.to_string(),
            created_at: when(&e.created_at),
            event: e.event_type.as_str(),
            event_label: e.event_type.label(),
            webhook_name: e.webhook_name.clone(),
            integration: e.integration_name.clone(),
            end_user: e.end_user_name.clone(),
            status,
            status_class,
            attempts: e.attempt_count,
        }
    }
}

/// One attempt of a delivery: what was sent and what came back.
pub struct AttemptView {
    pub number: u32,
    pub started_at: String,
    pub duration: String,
    pub request_url: String,
    pub request_headers: Vec<(String, String)>,
    pub response: Option<ResponseView>,
    pub failure: Option<(String, String)>,
}

pub struct ResponseView {
    pub status: String,
    pub status_class: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        let (response, failure) = match &a.result {
            AttemptResult::Response {
                status,
                headers,
                body,
            } => (
                Some(ResponseView {
                    status: format!(
                        "{status} {}",
                        axum::http::StatusCode::from_u16(*status)
                            .ok()
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("")
                    )
                    .trim_end()
                    .to_owned(),
                    status_class: if (200..300).contains(status) {
                        "ok"
                    } else if *status < 400 {
                        "warn"
                    } else {
                        "error"
                    },
                    headers: headers.clone(),
                    body: pretty_body(body),
                }),
                None,
            ),
            AttemptResult::Failure { category, message } => {
                (None, Some((category.as_str().to_owned(), message.clone())))
            }
        };
        Self {
            number: a.number,
            started_at: when(&a.started_at),
            duration: format!("{:.1} ms", a.duration.as_secs_f64() * 1000.0),
            request_url: a.request_url.clone(),
            request_headers: a.request_headers.clone(),
            response,
            failure,
        }
    }
}

/// A body to read: indented when it is JSON, as text otherwise.
pub fn pretty_body(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// A time as people read it, in UTC.
pub fn when(ts: &Timestamp) -> String {
    ts.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
