//! Organizations (name and signature key), cached: every event needs the name for its
//! payload and every attempt needs the key. Regenerating a key goes through
//! [`KeyCache::replace`], so every attempt that starts after it returns signs with the new
//! key.
//!
//! When other nodes share the store, a key regenerated on any of them must sign every
//! later attempt on all of them (SPEC §4), and no notification between nodes is sure to
//! arrive before the next request: a node that learned of the change a few milliseconds
//! late would sign with the replaced key, which receivers then reject. So on a shared
//! store a node uses what it read of an organization for [`KEY_LEASE`] after that read
//! began, and a regenerate answers only once that long has passed since the new key was
//! stored: by then every copy read before it has run out, on every node. An attempt then
//! costs no read; an organization costs a node one read per lease, and a regenerate a
//! second's wait. Only a store of this process alone is cached for good.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use std::time::Duration;
use tokio::time::Instant;

use crate::domain::ids::OrgId;
use crate::domain::signature::{RetiringKey, SignatureKey, SigningKeys};
use crate::domain::time;
use crate::storage::{Organization, Store, StoreError, StoreResult};

/// On a shared store, how long a node uses an organization as it read it, from the start
/// of that read; and so how long a regenerate waits once the new key is stored.
pub const KEY_LEASE: Duration = Duration::from_secs(1);

pub struct KeyCache {
    store: Arc<dyn Store>,
    /// How long a read serves: [`KEY_LEASE`] where other processes share the store, for
    /// good where they do not (this process sees every change).
    lease: Option<Duration>,
    orgs: Mutex<HashMap<OrgId, Arc<Leased<Organization>>>>,
}

/// A value as last read, used for `lease` after its read began (for good without one).
/// Reads go one at a time, and lookups that wait for one use what it read.
struct Leased<V> {
    lease: Option<Duration>,
    last: RwLock<Option<(Instant, V)>>,
    reading: tokio::sync::Mutex<()>,
}

impl<V: Clone> Leased<V> {
    fn new(lease: Option<Duration>) -> Self {
        Self {
            lease,
            last: RwLock::new(None),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The last read's value while it serves.
    fn current(&self) -> Option<V> {
        let last = self.last.read().expect("leased value lock");
        let (began, value) = last.as_ref()?;
        self.lease
            .is_none_or(|lease| began.elapsed() < lease)
            .then(|| value.clone())
    }

    /// The value, read anew once the last read no longer serves.
    async fn get<E, F>(&self, read: impl FnOnce() -> F) -> Result<V, E>
    where
        F: std::future::Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.current() {
            return Ok(value);
        }
        let _one = self.reading.lock().await;
        if let Some(value) = self.current() {
            return Ok(value);
        }
        let began = Instant::now();
        let value = read().await?;
        *self.last.write().expect("leased value lock") = Some((began, value.clone()));
        Ok(value)
    }

    /// Forgets the value: the next lookup reads.
    fn forget(&self) {
        *self.last.write().expect("leased value lock") = None;
    }
}

impl KeyCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            lease: store.shared().then_some(KEY_LEASE),
            store,
            orgs: Mutex::new(HashMap::new()),
        }
    }

    fn leased(&self, org: OrgId) -> Arc<Leased<Organization>> {
        self.orgs
            .lock()
            .expect("org cache lock")
            .entry(org)
            .or_insert_with(|| Arc::new(Leased::new(self.lease)))
            .clone()
    }

    pub async fn organization(&self, org: OrgId) -> StoreResult<Organization> {
        self.leased(org).get(|| self.read(org)).await
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

    /// Stores a new key and signs with it from now on, on every node once this returns.
    /// With a `grace`, the key it replaces keeps signing `webhook-signature` beside it for
    /// that long; without one, it stops at once, and so does any key still retiring.
    pub async fn replace(
        &self,
        org: OrgId,
        key: SignatureKey,
        grace: Duration,
    ) -> StoreResult<Option<RetiringKey>> {
        let leased = self.leased(org);
        let retiring = {
            // No read of this node's overlaps the change.
            let _one = leased.reading.lock().await;
            let retiring = match grace.is_zero() {
                true => None,
                false => Some(RetiringKey {
                    key: self.read(org).await?.signature_key,
                    until: time::now()
                        + chrono::Duration::from_std(grace).expect("a grace of at most days"),
                }),
            };
            self.store
                .set_signature_key(org, &key, retiring.as_ref())
                .await?;
            leased.forget();
            retiring
        };
        if self.lease.is_some() {
            // What other nodes read before the key was stored serves them this long more.
            tokio::time::sleep(KEY_LEASE).await;
        }
        Ok(retiring)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::Notify;

    use super::*;

    /// A read that counts itself, waits at `gate`, and finds `value`.
    #[derive(Clone, Default)]
    struct Source {
        reads: Arc<AtomicU32>,
        value: Arc<AtomicU32>,
        gate: Arc<Notify>,
    }

    impl Source {
        async fn read(&self) -> Result<u32, ()> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.gate.notified().await;
            Ok(self.value.load(Ordering::SeqCst))
        }

        fn reads(&self) -> u32 {
            self.reads.load(Ordering::SeqCst)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_serves_every_lookup_for_its_lease_from_when_it_began() {
        let leased = Arc::new(Leased::<u32>::new(Some(KEY_LEASE)));
        let source = Source::default();
        source.value.store(1, Ordering::SeqCst);
        // Fifty lookups at once: one reads, the others wait for it and use what it read.
        let lookups: Vec<_> = (0..50)
            .map(|_| {
                let (leased, source) = (leased.clone(), source.clone());
                tokio::spawn(async move { leased.get(|| source.read()).await })
            })
            .collect();
        while source.reads() == 0 {
            tokio::task::yield_now().await;
        }
        // The read takes a while: its lease counts from when it began.
        tokio::time::advance(KEY_LEASE / 4).await;
        source.gate.notify_one();
        for lookup in lookups {
            assert_eq!(lookup.await.unwrap(), Ok(1));
        }
        assert_eq!(source.reads(), 1);

        // Within the lease, a change in the store goes unseen, and nothing is read.
        source.value.store(2, Ordering::SeqCst);
        tokio::time::advance(KEY_LEASE / 2).await;
        assert_eq!(leased.get(|| source.read()).await, Ok(1));
        assert_eq!(source.reads(), 1);

        // Once the lease (from the read's start) has run out, a lookup reads again.
        tokio::time::advance(KEY_LEASE / 4).await;
        source.gate.notify_one();
        assert_eq!(leased.get(|| source.read()).await, Ok(2));
        assert_eq!(source.reads(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_lease_a_read_serves_until_forgotten() {
        let leased = Leased::<u32>::new(None);
        let source = Source::default();
        source.value.store(1, Ordering::SeqCst);
        source.gate.notify_one();
        assert_eq!(leased.get(|| source.read()).await, Ok(1));
        source.value.store(2, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(leased.get(|| source.read()).await, Ok(1));
        leased.forget();
        source.gate.notify_one();
        assert_eq!(leased.get(|| source.read()).await, Ok(2));
        assert_eq!(source.reads(), 2);
    }
}
