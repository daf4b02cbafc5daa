//! Organizations (name and signature key), cached: every event needs the name for its
//! payload and every attempt needs the key. Regenerating a key goes through
//! [`KeyCache::replace`], so every attempt that starts afterwards signs with the new key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::ids::OrgId;
use crate::domain::signature::SignatureKey;
use crate::storage::{Organization, Store, StoreError, StoreResult};

pub struct KeyCache {
    store: Arc<dyn Store>,
    /// Organizations read so far; a regenerate replaces the key after the store has it.
    orgs: RwLock<HashMap<OrgId, Organization>>,
}

impl KeyCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            orgs: RwLock::new(HashMap::new()),
        }
    }

    pub async fn organization(&self, org: OrgId) -> StoreResult<Organization> {
        if let Some(found) = self.orgs.read().expect("org cache lock").get(&org) {
            return Ok(found.clone());
        }
        let stored = self
            .store
            .organization(org)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("organization {org} is gone")))?;
        self.orgs
            .write()
            .expect("org cache lock")
            .insert(org, stored.clone());
        Ok(stored)
    }

    pub async fn get(&self, org: OrgId) -> StoreResult<SignatureKey> {
        Ok(self.organization(org).await?.signature_key)
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
