//! Events and the exact bytes of the POST body each webhook receives (SPEC §2).
//!
//! The parts every webhook of an event shares (`connector`, `data` and the extras) are
//! serialized once per event; each delivery only adds its own `webhook` object. The same
//! inputs always make the same bytes, so every retry sends what the first attempt sent.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::connector::{Connector, SyncError, SyncJob, SyncType};
use super::event::{Environment, EventType};
use super::ids::{EventId, OrgId, WebhookId};
use super::time::{self, Timestamp};

/// What an event says beyond its connector.
#[derive(Debug, Clone)]
pub enum EventData {
    /// A sync job started, completed or failed.
    Sync(SyncJob),
    /// Records of a unified model were created or modified.
    Change { model: String, ids: Vec<String> },
}

/// One thing that happened, with the snapshot of its connector taken when it happened.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    pub org_id: OrgId,
    pub org_name: String,
    pub event_type: EventType,
    pub connector: Connector,
    pub data: EventData,
    pub created_at: Timestamp,
}

impl Event {
    pub fn environment(&self) -> Environment {
        self.connector.environment
    }

    /// Serializes the shared parts once; [`RenderedEvent::body_for`] then makes each body.
    pub fn render(&self) -> RenderedEvent {
        let c = &self.connector;
        let connector = to_raw(&ConnectorPart {
            id: &c.id.to_string(),
            display_name: &c.display_name,
            integration_slug: &c.integration_slug,
            categories: &c.categories,
            org_name: &self.org_name,
            origin_id: &c.origin_id,
            connector_status: c.connector_status.as_str(),
            end_user_name: &c.end_user_name,
            end_user_email: &c.end_user_email,
        });
        let (data, extras) = match &self.data {
            EventData::Sync(job) => (
                to_raw(&SyncData {
                    id: &job.id.to_string(),
                    integration_name: &c.integration_slug,
                    initial_sync: job.initial_sync,
                    category: c.categories.first().map(String::as_str),
                    display_status: job.display_status.as_str(),
                    last_sync_start_time: time::format(&job.last_sync_start_time),
                }),
                to_raw(&SyncExtras {
                    sync: SyncPart {
                        sync_id: &job.id.to_string(),
                        sync_type: job.sync_type,
                    },
                    error: job.error.as_ref(),
                }),
            ),
            EventData::Change { model, ids } => (to_raw(ids), to_raw(&ChangeExtras { model })),
        };
        let members = extras.get();
        // `extras` is an object: its members follow `data` at the top level.
        let members = members[1..members.len() - 1].trim();
        let mut shared =
            Vec::with_capacity(32 + connector.get().len() + data.get().len() + members.len());
        shared.extend_from_slice(b",\"connector\":");
        shared.extend_from_slice(connector.get().as_bytes());
        shared.extend_from_slice(b",\"data\":");
        shared.extend_from_slice(data.get().as_bytes());
        if !members.is_empty() {
            shared.push(b',');
            shared.extend_from_slice(members.as_bytes());
        }
        shared.push(b'}');
        RenderedEvent {
            event_type: self.event_type,
            shared: shared.into(),
        }
    }
}

/// The parts of an event's payload that every webhook receives alike, serialized once.
#[derive(Debug, Clone)]
pub struct RenderedEvent {
    event_type: EventType,
    shared: Bytes,
}

impl RenderedEvent {
    /// The exact body sent to one webhook.
    pub fn body_for(&self, webhook_id: WebhookId, url: &str) -> Vec<u8> {
        body(webhook_id, url, self.event_type, &self.shared)
    }

    /// What follows the `webhook` object in every body of the event, up to its end
    /// (`,"connector":…,"data":…}`): a store may keep it once per event, and remake
    /// each body from it with [`body`].
    pub fn shared(&self) -> &Bytes {
        &self.shared
    }
}

/// The exact body one webhook receives of an event of type `event_type` whose shared
/// parts are `shared` ([`RenderedEvent::shared`]): the same bytes on every call.
pub fn body(webhook_id: WebhookId, url: &str, event_type: EventType, shared: &[u8]) -> Vec<u8> {
    let webhook = WebhookPart {
        webhook_id: &webhook_id.to_string(),
        url,
        event: event_type,
    };
    let mut body = Vec::with_capacity(96 + url.len() + shared.len());
    body.extend_from_slice(b"{\"webhook\":");
    serde_json::to_writer(&mut body, &webhook).expect("serializing to memory cannot fail");
    body.extend_from_slice(shared);
    body
}

fn to_raw<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("payload parts always serialize")
}

#[derive(Serialize)]
struct WebhookPart<'a> {
    webhook_id: &'a str,
    url: &'a str,
    event: EventType,
}

#[derive(Serialize)]
struct ConnectorPart<'a> {
    id: &'a str,
    display_name: &'a str,
    integration_slug: &'a str,
    categories: &'a [String],
    org_name: &'a str,
    origin_id: &'a str,
    connector_status: &'a str,
    end_user_name: &'a str,
    end_user_email: &'a str,
}

#[derive(Serialize)]
struct SyncData<'a> {
    id: &'a str,
    integration_name: &'a str,
    initial_sync: bool,
    category: Option<&'a str>,
    display_status: &'a str,
    last_sync_start_time: String,
}

#[derive(Serialize)]
struct SyncPart<'a> {
    sync_id: &'a str,
    sync_type: SyncType,
}

#[derive(Serialize)]
struct SyncExtras<'a> {
    sync: SyncPart<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a SyncError>,
}

#[derive(Serialize)]
struct ChangeExtras<'a> {
    model: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::connector::{ConnectorStatus, DisplayStatus};
    use crate::domain::ids::{ConnectorId, SyncId};
    use serde_json::{json, Value};

    fn connector() -> Connector {
        Connector {
            id: ConnectorId::new(),
            org_id: OrgId::new(),
            environment: Environment::Production,
            display_name: "BreatheHR".into(),
            integration_slug: "breathehr".into(),
            categories: vec!["HRIS".into()],
            origin_id: "user_123".into(),
            connector_status: ConnectorStatus::Complete,
            end_user_name: "John Doe".into(),
            end_user_email: "abc@xyz.com".into(),
            created_at: time::now(),
        }
    }

    fn event(event_type: EventType, data: EventData) -> Event {
        Event {
            id: EventId::new(),
            org_id: OrgId::new(),
            org_name: "Test Org".into(),
            event_type,
            connector: connector(),
            data,
            created_at: time::now(),
        }
    }

    #[test]
    fn sync_started_has_the_provider_sample_shape_plus_sync() {
        let c = connector();
        let job = SyncJob {
            id: SyncId::new(),
            connector_id: c.id,
            initial_sync: true,
            sync_type: SyncType::Manual,
            display_status: DisplayStatus::Syncing,
            last_sync_start_time: time::parse("2024-07-22T09:49:30.478384+00:00").unwrap(),
            finished_at: None,
            error: None,
        };
        let e = event(
            EventType::ConnectorSyncStarted,
            EventData::Sync(job.clone()),
        );
        let hook = WebhookId::new();
        let body = e.render().body_for(hook, "https://example.com/h");
        let v: Value = serde_json::from_slice(&body).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["webhook", "connector", "data", "sync"]);
        assert_eq!(
            v["webhook"],
            json!({"webhook_id": hook.to_string(), "url": "https://example.com/h", "event": "connector_sync_started"})
        );
        assert_eq!(v["connector"]["org_name"], "Test Org");
        assert_eq!(v["connector"]["categories"], json!(["HRIS"]));
        assert_eq!(
            v["data"],
            json!({"id": job.id.to_string(), "integration_name": "breathehr", "initial_sync": true,
                   "category": "HRIS", "display_status": "Syncing",
                   "last_sync_start_time": "2024-07-22T09:49:30.478384+00:00"})
        );
        assert_eq!(
            v["sync"],
            json!({"sync_id": job.id.to_string(), "sync_type": "MANUAL"})
        );
    }

    #[test]
    fn sync_error_carries_the_error() {
        let c = connector();
        let failed_at = time::parse("2024-07-22T10:00:00Z").unwrap();
        let job = SyncJob {
            id: SyncId::new(),
            connector_id: c.id,
            initial_sync: false,
            sync_type: SyncType::Automated,
            display_status: DisplayStatus::Failed,
            last_sync_start_time: failed_at,
            finished_at: Some(failed_at),
            error: Some(SyncError {
                failed_at,
                message: "token expired".into(),
                detail: json!({"code": 401}),
            }),
        };
        let body = event(EventType::ConnectorSyncError, EventData::Sync(job))
            .render()
            .body_for(WebhookId::new(), "u");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"]["display_status"], "Failed");
        assert_eq!(
            v["error"],
            json!({"failed_at": "2024-07-22T10:00:00.000000+00:00", "message": "token expired", "detail": {"code": 401}})
        );
    }

    #[test]
    fn data_change_lists_ids_and_model() {
        let e = event(
            EventType::EmployeeDataChanged,
            EventData::Change {
                model: "employee".into(),
                ids: vec!["e1".into(), "e2".into()],
            },
        );
        let v: Value = serde_json::from_slice(&e.render().body_for(WebhookId::new(), "u")).unwrap();
        assert_eq!(v["data"], json!(["e1", "e2"]));
        assert_eq!(v["model"], "employee");
        assert_eq!(v["webhook"]["event"], "employee_data_changed");
    }

    #[test]
    fn a_body_remade_from_the_shared_parts_is_the_same_bytes() {
        let e = event(
            EventType::ConnectorDataModified,
            EventData::Change {
                model: "employee \"\u{1}\u{e9}".into(),
                ids: vec!["e1".into()],
            },
        );
        let rendered = e.render();
        let hook = WebhookId::new();
        let url = "https://h\u{e9}.example/p?q=\"a\"&r=\\\u{7}";
        let kept = rendered.shared().to_vec();
        assert_eq!(
            body(hook, url, EventType::ConnectorDataModified, &kept),
            rendered.body_for(hook, url)
        );
        let v: Value = serde_json::from_slice(&rendered.body_for(hook, url)).unwrap();
        assert_eq!(v["webhook"]["url"], url);
        assert_eq!(v["model"], "employee \"\u{1}\u{e9}");
    }
}
