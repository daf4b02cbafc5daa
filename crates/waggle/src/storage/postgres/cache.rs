//! What every event reads (its connector, and its organization's webhooks for its
//! environment), kept in each node's memory although other nodes change it.
//!
//! Each entry is tagged with its organization's records version, which PostgreSQL's
//! triggers bump in the transaction of every change to a webhook or connector. Every API
//! call reads the version with its key ([`RecordCache::saw`]), so an entry older than the
//! version a call has seen is read again: a change committed before a call began, on any
//! node, is seen by that call. The tag an entry gets is the version seen before it was
//! read, never newer than what it holds.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use crate::domain::connector::Connector;
use crate::domain::event::Environment;
use crate::domain::ids::{ConnectorId, OrgId};
use crate::domain::webhook::Webhook;

/// Entries of each kind, at most; past it, the map starts again empty.
const ENTRIES: usize = 10_000;

#[derive(Default)]
pub(super) struct RecordCache {
    /// The newest records version a read has found, by organization.
    versions: Mutex<HashMap<OrgId, i64>>,
    webhooks: Tagged<(OrgId, Environment), Vec<Webhook>>,
    connectors: Tagged<ConnectorId, Connector>,
}

/// Values, each with the records version it was read at.
struct Tagged<K, V>(Mutex<HashMap<K, (i64, V)>>);

impl<K, V> Default for Tagged<K, V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Hash + Eq, V: Clone> Tagged<K, V> {
    fn get(&self, key: &K, version: i64) -> Option<V> {
        let entries = self.0.lock().expect("cache lock");
        let (tag, value) = entries.get(key)?;
        (*tag >= version).then(|| value.clone())
    }

    fn keep(&self, key: K, version: i64, value: V) {
        let mut entries = self.0.lock().expect("cache lock");
        if entries.len() >= ENTRIES {
            entries.clear();
        }
        entries.insert(key, (version, value));
    }
}

impl RecordCache {
    /// A read found `org` at `version`.
    pub(super) fn saw(&self, org: OrgId, version: i64) {
        let mut versions = self.versions.lock().expect("cache lock");
        if versions.len() >= ENTRIES && !versions.contains_key(&org) {
            versions.clear();
        }
        let newest = versions.entry(org).or_insert(version);
        *newest = (*newest).max(version);
    }

    /// The version a value of `org` must have been read at to serve a read now; `None`
    /// when no read has found the organization yet (nothing is then kept).
    pub(super) fn version(&self, org: OrgId) -> Option<i64> {
        self.versions.lock().expect("cache lock").get(&org).copied()
    }

    pub(super) fn webhooks(&self, org: OrgId, env: Environment, at: i64) -> Option<Vec<Webhook>> {
        self.webhooks.get(&(org, env), at)
    }

    pub(super) fn keep_webhooks(&self, org: OrgId, env: Environment, at: i64, w: &[Webhook]) {
        self.webhooks.keep((org, env), at, w.to_vec());
    }

    /// The connector, if kept at `at` or later and of `org`.
    pub(super) fn connector(&self, org: OrgId, id: ConnectorId, at: i64) -> Option<Connector> {
        self.connectors.get(&id, at).filter(|c| c.org_id == org)
    }

    pub(super) fn keep_connector(&self, at: i64, connector: &Connector) {
        self.connectors.keep(connector.id, at, connector.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_serves_only_reads_that_saw_no_newer_version() {
        let cache = RecordCache::default();
        let org = OrgId::new();
        assert_eq!(cache.version(org), None);
        cache.saw(org, 3);
        let at = cache.version(org).unwrap();
        cache.keep_webhooks(org, Environment::Production, at, &[]);
        assert_eq!(
            cache.webhooks(org, Environment::Production, 3),
            Some(vec![])
        );
        // A call that began after a change elsewhere saw the bumped version.
        cache.saw(org, 4);
        assert_eq!(cache.version(org), Some(4));
        assert_eq!(cache.webhooks(org, Environment::Production, 4), None);
        // An older read finishing late does not take the version back.
        cache.saw(org, 2);
        assert_eq!(cache.version(org), Some(4));
        assert_eq!(cache.webhooks(org, Environment::Development, 4), None);
    }
}
