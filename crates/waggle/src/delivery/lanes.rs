//! Each webhook's share of the dispatcher: its concurrent attempts, and how many of its
//! jobs memory holds, so that one slow or dead destination cannot take the room of others.
//!
//! A lane exists while its webhook has jobs held and is forgotten with its last one: the
//! webhooks a long-running node has ever delivered to would otherwise pile up in memory,
//! and every claim looks at every lane.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::domain::ids::WebhookId;
use crate::storage::ClaimRoom;

/// The most deliveries one claim takes.
const CLAIM_MAX: usize = 1024;

struct Lane {
    /// Its concurrent attempts.
    slots: Arc<Semaphore>,
    /// Its jobs held in memory (waiting for a slot, in flight, or being recorded). Capped,
    /// so that a destination that hangs cannot fill the whole job budget: past the cap,
    /// its deliveries wait in the store, where the poller leaves them until there is room.
    held: usize,
}

pub(super) struct Lanes {
    /// Concurrent attempts to one webhook.
    concurrency: usize,
    /// Jobs one webhook may hold.
    cap: usize,
    lanes: HashMap<WebhookId, Lane>,
}

impl Lanes {
    /// A webhook may hold enough jobs to keep its slots busy while outcomes are recorded,
    /// and never more than the whole budget of `max_jobs`.
    pub(super) fn new(concurrency: usize, max_jobs: usize) -> Self {
        Self {
            concurrency,
            cap: (concurrency * 4).min(max_jobs),
            lanes: HashMap::new(),
        }
    }

    /// Whether `webhook` has room for one more job.
    pub(super) fn has_room(&self, webhook: WebhookId) -> bool {
        self.lanes
            .get(&webhook)
            .is_none_or(|lane| lane.held < self.cap)
    }

    /// Counts a job against its webhook's share, if there is room.
    pub(super) fn admit(&mut self, webhook: WebhookId) -> bool {
        let cap = self.cap;
        let lane = self.lane(webhook);
        if lane.held >= cap {
            return false;
        }
        lane.held += 1;
        true
    }

    /// The attempt slots of `webhook`, for a job [`admit`](Self::admit) counted.
    pub(super) fn slots(&mut self, webhook: WebhookId) -> Arc<Semaphore> {
        self.lane(webhook).slots.clone()
    }

    fn lane(&mut self, webhook: WebhookId) -> &mut Lane {
        let concurrency = self.concurrency;
        self.lanes.entry(webhook).or_insert_with(|| Lane {
            slots: Arc::new(Semaphore::new(concurrency)),
            held: 0,
        })
    }

    /// Takes a job off its webhook's share; answers whether the lane was full before.
    /// No job of a lane with none held holds one of its slots, so the lane can go.
    pub(super) fn leave(&mut self, webhook: WebhookId) -> bool {
        let Some(lane) = self.lanes.get_mut(&webhook) else {
            return false;
        };
        let was_full = lane.held >= self.cap;
        lane.held = lane.held.saturating_sub(1);
        if lane.held == 0 {
            self.lanes.remove(&webhook);
        }
        was_full
    }

    /// What the next claim may take, from one look at the lanes: of each webhook with
    /// jobs held, the room left in its lane; of any other, a whole lane; in all, no more
    /// than `available` jobs, and no more than the room of the lanes held with a lane's
    /// worth of attempts for the others. A claim sized by the job budget alone took, when
    /// a full lane freed a few places, up to 1,024 deliveries its lanes could not hold,
    /// only to give them back at once.
    pub(super) fn room(&self, available: usize) -> ClaimRoom {
        let mut room = 0;
        let mut webhooks = HashMap::with_capacity(self.lanes.len());
        for (webhook, lane) in &self.lanes {
            let left = self.cap.saturating_sub(lane.held);
            room += left;
            webhooks.insert(*webhook, left as u32);
        }
        let limit = available.min(CLAIM_MAX).min(room + self.concurrency);
        ClaimRoom {
            limit: limit as u32,
            webhooks,
            otherwise: self.cap as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> WebhookId {
        WebhookId::new()
    }

    #[test]
    fn a_lane_holds_up_to_its_cap_and_says_when_a_full_one_frees_room() {
        let mut lanes = Lanes::new(2, 100);
        let (slow, other) = (webhook(), webhook());
        for _ in 0..8 {
            assert!(lanes.admit(slow));
        }
        assert!(!lanes.admit(slow), "past 4 × concurrency");
        assert!(!lanes.has_room(slow));
        assert!(
            lanes.has_room(other) && lanes.admit(other),
            "the others keep theirs"
        );
        assert!(lanes.leave(slow), "it was full");
        assert!(lanes.has_room(slow));
        assert!(!lanes.leave(slow), "no longer full");
        assert_eq!(lanes.slots(slow).available_permits(), 2);
    }

    #[test]
    fn the_cap_never_exceeds_the_whole_budget() {
        let mut lanes = Lanes::new(64, 10);
        let w = webhook();
        assert_eq!((0..20).filter(|_| lanes.admit(w)).count(), 10);
        assert_eq!(lanes.room(100).otherwise, 10);
    }

    #[test]
    fn a_lane_is_forgotten_with_its_last_job() {
        let mut lanes = Lanes::new(4, 100);
        let kept = webhook();
        assert!(lanes.admit(kept));
        for _ in 0..1000 {
            let w = webhook();
            assert!(lanes.admit(w) && lanes.admit(w));
            lanes.leave(w);
            lanes.leave(w);
        }
        assert_eq!(
            lanes.lanes.len(),
            1,
            "only the lane with a job held is left"
        );
        let room = lanes.room(usize::MAX);
        assert_eq!(room.webhooks.len(), 1);
        assert_eq!(room.webhooks[&kept], 15);
        // A leave without a job held changes nothing.
        assert!(!lanes.leave(webhook()));
        assert_eq!(lanes.lanes.len(), 1);
    }

    #[test]
    fn a_claim_takes_no_more_than_the_lanes_and_the_budget_hold() {
        let mut lanes = Lanes::new(4, 1000);
        let (full, busy) = (webhook(), webhook());
        while lanes.admit(full) {}
        for _ in 0..6 {
            assert!(lanes.admit(busy));
        }
        let room = lanes.room(5000);
        assert_eq!(room.webhooks[&full], 0);
        assert_eq!(room.webhooks[&busy], 10);
        assert_eq!(room.full(), vec![full]);
        // 10 left of the lanes held, and a lane's worth of attempts for any other.
        assert_eq!(room.limit, 14);
        assert_eq!(lanes.room(3).limit, 3, "no more than the budget has");
        assert_eq!(Lanes::new(4, 100_000).room(100_000).limit, 4);
    }
}
