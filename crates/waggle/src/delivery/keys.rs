//! Organizations (name and signature key), cached: every event needs the name for its
//! payload and every attempt needs the key. Regenerating a key goes through
//! [`KeyCache::replace`], so every attempt that starts afterwards signs with the new key.
//!
//! When other nodes share the store, a key regenerated on any of them must sign every
//! later attempt on all of them (SPEC §4), and no notification between nodes arrives
//! before the next request can: a node that learned of the change a few milliseconds
//! late would sign with the replaced key, which receivers then reject. So on a shared
//! store every lookup is answered by a read of the organization that began after the
//! lookup did. Lookups that wait together share one read: at most one is in flight per
//! organization, and each serves every lookup made before it began, so a thousand
//! attempts a second cost a few reads, not a thousand, and none signs with a key older
//! than its own start. Only a store of this process alone is cached outright.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use std::time::Duration;

use crate::domain::ids::OrgId;
use crate::domain::signature::{RetiringKey, SignatureKey, SigningKeys};
use crate::domain::time;
use crate::storage::{Organization, Store, StoreError, StoreResult};

pub struct KeyCache {
    store: Arc<dyn Store>,
    /// Organizations read so far; a regenerate replaces the key after the store has it.
    /// Unused when other processes share the store: their changes would go unseen.
    orgs: RwLock<HashMap<OrgId, Organization>>,
    /// Whether other processes write to the store too.
    shared: bool,
    /// On a shared store, the reads of each organization.
    fresh: Mutex<HashMap<OrgId, Arc<FreshReads<Organization>>>>,
}

/// Reads of one value, one at a time, each shared by every lookup made before it began.
struct FreshReads<V> {
    /// Counts lookups: each takes a ticket as it starts.
    tickets: AtomicU64,
    /// The last read, with the first ticket it does not serve (the count of tickets
    /// taken before it began). Held while a read is in flight.
    last: tokio::sync::Mutex<Option<(u64, V)>>,
}

impl<V> Default for FreshReads<V> {
    fn default() -> Self {
        Self {
            tickets: AtomicU64::new(0),
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl<V: Clone> FreshReads<V> {
    /// The value as a read that began after this call did found it: the last read's, if
    /// it began after this call, or else a new read's.
    async fn get<E, F>(&self, read: impl FnOnce() -> F) -> Result<V, E>
    where
        F: std::future::Future<Output = Result<V, E>>,
    {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst);
        let mut last = self.last.lock().await;
        if let Some((serves_below, found)) = &*last {
            if ticket < *serves_below {
                return Ok(found.clone());
            }
        }
        // Every ticket taken so far was taken before this read begins.
        let serves_below = self.tickets.load(Ordering::SeqCst);
        let found = read().await?;
        *last = Some((serves_below, found.clone()));
        Ok(found)
    }
}

impl KeyCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            shared: store.shared(),
            store,
            orgs: RwLock::new(HashMap::new()),
            fresh: Mutex::new(HashMap::new()),
        }
    }

    pub async fn organization(&self, org: OrgId) -> StoreResult<Organization> {
        if self.shared {
            return self.read_fresh(org).await;
        }
        if let Some(found) = self.orgs.read().expect("org cache lock").get(&org) {
            return Ok(found.clone());
        }
        let stored = self.read(org).await?;
        self.orgs
            .write()
            .expect("org cache lock")
            .insert(org, stored.clone());
        Ok(stored)
    }

    /// The keys that sign the organization's deliveries now.
    pub async fn get(&self, org: OrgId) -> StoreResult<SigningKeys> {
        Ok(self.organization(org).await?.signing_keys())
    }

    async fn read(&self, org: OrgId) -> StoreResult<Organization> {
        self.store
            .organization(org)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("organization {org} is gone")))
    }

    /// The organization as a read that began after this call did found it.
    async fn read_fresh(&self, org: OrgId) -> StoreResult<Organization> {
        let reads = self
            .fresh
            .lock()
            .expect("fresh reads lock")
            .entry(org)
            .or_default()
            .clone();
        reads.get(|| self.read(org)).await
    }

    /// Stores a new key and signs with it from now on. With a `grace`, the key it
    /// replaces keeps signing `webhook-signature` beside it for that long; without one,
    /// it stops at once, and so does any key still retiring.
    pub async fn replace(
        &self,
        org: OrgId,
        key: SignatureKey,
        grace: Duration,
    ) -> StoreResult<Option<RetiringKey>> {
        let retiring = match grace.is_zero() {
            true => None,
            false => Some(RetiringKey {
                key: self.organization(org).await?.signature_key,
                until: time::now()
                    + chrono::Duration::from_std(grace).expect("a grace of at most days"),
            }),
        };
        self.store
            .set_signature_key(org, &key, retiring.as_ref())
            .await?;
        if let Some(found) = self.orgs.write().expect("org cache lock").get_mut(&org) {
            found.signature_key = key;
            found.retiring_key = retiring.clone();
        }
        Ok(retiring)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn lookups_waiting_together_share_a_read_that_began_after_them() {
        let reads = Arc::new(FreshReads::<u32>::default());
        let (count, value) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(1)));
        let gate = Arc::new(Notify::new());
        let read = {
            let (count, value, gate) = (count.clone(), value.clone(), gate.clone());
            move || {
                let (count, value, gate) = (count.clone(), value.clone(), gate.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok::<_, ()>(value.load(Ordering::SeqCst))
                }
            }
        };
        // The first lookup's read is in flight, held at the gate.
        let first = tokio::spawn({
            let (reads, read) = (reads.clone(), read.clone());
            async move { reads.get(read).await }
        });
        while count.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The value changes; fifty lookups start after that and wait together.
        value.store(2, Ordering::SeqCst);
        let waiting: Vec<_> = (0..50)
            .map(|_| {
                let (reads, read) = (reads.clone(), read.clone());
                tokio::spawn(async move { reads.get(read).await })
            })
            .collect();
        while reads.tickets.load(Ordering::SeqCst) < 51 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert_eq!(first.await.unwrap(), Ok(2), "read after the change");
        // Their read began after they all asked: one more read serves all fifty.
        while count.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for lookup in waiting {
            assert_eq!(lookup.await.unwrap(), Ok(2));
        }
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // A lookup after everything settled reads again rather than reuse an old value.
        value.store(3, Ordering::SeqCst);
        gate.notify_one();
        assert_eq!(reads.get(read).await, Ok(3));
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }
}
