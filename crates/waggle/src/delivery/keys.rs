//! Organizations (name and signature key), cached: every event needs the name for its
//! payload and every attempt needs the key. Regenerating a key goes through
//! [`KeyCache::replace`], so every attempt that starts afterwards signs with the new key.
//!
//! When other nodes share the store, a key regenerated on any of them must sign every
//! later attempt on all of them (SPEC §4), and no notification between nodes arrives
//! before the next request can: a node that learned of the change a few milliseconds
//! late would sign with the replaced key, which receivers then reject. So on a shared
//! store every lookup reads the organization (one primary-key read per attempt), and
//! only a store of this process alone is cached.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::ids::OrgId;
use crate::domain::signature::SignatureKey;
use crate::storage::{Organization, Store, StoreError, StoreResult};

pub struct KeyCache {
    store: Arc<dyn Store>,
    /// Organizations read so far; a regenerate replaces the key after the store has it.
    /// Unused when other processes share the store: their changes would go unseen.
    orgs: RwLock<HashMap<OrgId, Organization>>,
    /// Whether other processes write to the store too.
    shared: bool,
}

impl KeyCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            shared: store.shared(),
            store,
            orgs: RwLock::new(HashMap::new()),
        }
    }

    pub async fn organization(&self, org: OrgId) -> StoreResult<Organization> {
        if self.shared {
            return self.read(org).await;
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

    pub async fn get(&self, org: OrgId) -> StoreResult<SignatureKey> {
        Ok(self.organization(org).await?.signature_key)
    }

    async fn read(&self, org: OrgId) -> StoreResult<Organization> {
        self.store
            .organization(org)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("organization {org} is gone")))
    }

    /// Stores a new key and signs with it from now on.
    pub async fn replace(&self, org: OrgId, key: SignatureKey) -> StoreResult<()> {
        self.store.set_signature_key(org, &key).await?;
        if let Some(found) = self.orgs.write().expect("org cache lock").get_mut(&org) {
            found.signature_key = key;
        }
        Ok(())
    }
}
