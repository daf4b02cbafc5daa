//! The fan-out rule (SPEC §2): an event goes to every enabled webhook of its organization
//! whose type is the event's environment and whose events include its type. Each delivery's
//! body is rendered here, once, for its first attempt; the event, the part its bodies
//! share and its deliveries are stored in one transaction.

use bytes::Bytes;

use super::Dispatcher;
use crate::domain::connector::Connector;
use crate::domain::event::EventType;
use crate::domain::ids::{DeliveryId, EventId};
use crate::domain::payload::{Event, EventData};
use crate::domain::time;
use crate::storage::{
    DeliveryJob, NewDelivery, NewEvent, Organization, RememberWith, Store, StoreResult, SyncChange,
};

/// What [`emit`] did.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub event_ids: Vec<EventId>,
    pub deliveries: usize,
}

/// Records `events` of `connector` with their deliveries, the sync change behind them and
/// the call's answer made by `remember` (under its idempotency key), then hands the
/// deliveries to this node's dispatcher, if it runs one.
pub async fn emit(
    store: &dyn Store,
    dispatcher: Option<&Dispatcher>,
    org: &Organization,
    connector: &Connector,
    sync: SyncChange,
    events: Vec<(EventType, EventData)>,
    remember: Option<&RememberWith<Emitted>>,
) -> StoreResult<Emitted> {
    let webhooks = store.webhooks_for(org.id, connector.environment).await?;
    let lease_until = dispatcher.map(Dispatcher::lease_for_new);
    let created_at = time::now();
    let traceparent = crate::telemetry::traces::current_traceparent();
    let mut records = Vec::with_capacity(events.len());
    let mut jobs = Vec::new();
    for (event_type, data) in events {
        let event = Event {
            id: EventId::new(),
            org_id: org.id,
            org_name: org.name.clone(),
            event_type,
            connector: connector.clone(),
            data,
            created_at,
        };
        let rendered = event.render();
        let deliveries: Vec<NewDelivery> = webhooks
            .iter()
            .filter(|w| w.wants(connector.environment, event_type))
            .map(|w| NewDelivery {
                id: DeliveryId::new(),
                webhook_id: w.webhook_id,
                webhook_name: w.name.clone(),
                url: w.url.clone(),
                body: Bytes::from(rendered.body_for(w.webhook_id, &w.url)),
                // A webhook this node has no room for gets its delivery unclaimed: the
                // poller (here or on another node) takes it when there is room, and the
                // API call does not pay for handing it over and back. So does a webhook
                // that wants its connectors' events in order: the store decides whether
                // the delivery is due or waits behind another, and the poller takes it
                // when it is due.
                lease_until: lease_until
                    .filter(|_| !w.ordered && dispatcher.is_some_and(|d| d.has_room(w.webhook_id))),
                ordered_by: w.ordered.then_some(connector.id),
            })
            .collect();
        jobs.extend(
            deliveries
                .iter()
                .filter(|d| d.lease_until.is_some())
                .map(|d| DeliveryJob {
                    id: d.id,
                    org_id: org.id,
                    webhook_id: d.webhook_id,
                    url: d.url.clone(),
                    body: d.body.clone(),
                    attempt_number: 1,
                    attempts_recorded: 0,
                    first_attempt_at: None,
                    ordered_by: None,
                    event_type: Some(event_type),
                    traceparent: traceparent.clone(),
                }),
        );
        records.push(NewEvent {
            event,
            shared_body: rendered.shared().clone(),
            deliveries,
            traceparent: traceparent.clone(),
        });
    }
    let records: std::sync::Arc<[NewEvent]> = records.into();
    let emitted = Emitted {
        event_ids: records.iter().map(|r| r.event.id).collect(),
        deliveries: records.iter().map(|r| r.deliveries.len()).sum(),
    };
    let remember = remember.map(|with| with(&emitted));
    store.record_events(sync, records.clone(), remember).await?;
    for record in records.iter() {
        crate::telemetry::metrics::deliveries_created(
            record.event.event_type,
            record.deliveries.len(),
        );
    }
    if let Some(dispatcher) = dispatcher {
        dispatcher.submit(jobs).await;
        let mut deliveries = records.iter().flat_map(|r| r.deliveries.iter());
        if deliveries.any(|d| d.ordered_by.is_some()) {
            dispatcher.wake();
        }
    }
    Ok(emitted)
}
