//! The API's key lookups: every call with several nodes reads its key (a key another node
//! deleted is refused at once) and its organization's records version (see `cache.rs`).
//! One statement at a time looks up every key asked for meanwhile, as the event writer
//! does for events: a lookup is a round trip to PostgreSQL, whose cost is the messages
//! and the wake-ups of both sides, not the rows.
//!
//! A lookup's statement starts after the lookup was asked for, so it sees every change
//! committed before its call began, as a statement of its own would.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::Row as _;
use tokio::sync::{mpsc, oneshot};

use super::connections::Connections;
use super::{planned, PgColumns};
use crate::domain::ids::{ApiKeyId, OrgId};
use crate::storage::rows;
use crate::storage::{StoreError, StoreResult};

/// Keys in one statement, at most.
const MAX_KEYS: usize = 256;
/// Lookups waiting for a statement; more wait to be queued.
const QUEUE: usize = 4096;

/// A key's id, its organization, and the organization's records version.
pub(super) type KeyOwner = (ApiKeyId, OrgId, i64);

struct Ask {
    hash: String,
    answer: oneshot::Sender<StoreResult<Option<KeyOwner>>>,
}

/// The handle of the node's key lookups; the task stops when it is dropped.
pub(super) struct KeyLookups {
    asks: mpsc::Sender<Ask>,
}

impl KeyLookups {
    pub(super) fn start(conns: Arc<Connections>) -> Self {
        let (asks, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(conns, queue));
        Self { asks }
    }

    /// The owner of the key whose SHA-256 is `hash`, if there is such a key.
    pub(super) async fn find(&self, hash: &str) -> StoreResult<Option<KeyOwner>> {
        let (answer, answered) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the key lookups have stopped".into());
        self.asks
            .send(Ask {
                hash: hash.to_owned(),
                answer,
            })
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn run(conns: Arc<Connections>, mut queue: mpsc::Receiver<Ask>) {
    let mut asks = Vec::with_capacity(MAX_KEYS);
    while queue.recv_many(&mut asks, MAX_KEYS).await > 0 {
        let hashes: Vec<&str> = asks.iter().map(|a| a.hash.as_str()).collect();
        match look_up(&conns, &hashes).await {
            Ok(found) => {
                for ask in asks.drain(..) {
                    let _ = ask.answer.send(Ok(found.get(&ask.hash).copied()));
                }
            }
            Err(e) if asks.len() == 1 || e.is_unavailable() => {
                super::fail_all(asks.drain(..).map(|a| a.answer), e)
            }
            // Each alone, so that each gets its own answer.
            Err(_) => {
                for ask in asks.drain(..) {
                    let found = look_up(&conns, &[ask.hash.as_str()]).await;
                    let _ = ask.answer.send(found.map(|f| f.get(&ask.hash).copied()));
                }
            }
        }
    }
}

/// The owners of the keys found among `hashes`, by hash.
async fn look_up(conns: &Connections, hashes: &[&str]) -> StoreResult<HashMap<String, KeyOwner>> {
    let mut conn = conns.get().await?;
    // One key, as is most often the case unless the node is busy: a statement whose
    // cached plan is good whatever the table's size, where a batch is planned each time.
    let rows = match hashes {
        [one] => {
            sqlx::query(
                "SELECT k.hash, k.id, k.org_id, o.records_version FROM api_keys k \
             JOIN organizations o ON o.id = k.org_id WHERE k.hash = $1",
            )
            .bind(one)
            .fetch_all(&mut *conn)
            .await?
        }
        _ => {
            planned(
                "SELECT k.hash, k.id, k.org_id, o.records_version FROM api_keys k \
             JOIN organizations o ON o.id = k.org_id WHERE k.hash = ANY($1)",
            )
            .bind(hashes)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    conn.keep();
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let hash: String = row.try_get("hash")?;
        found.insert(hash, rows::api_key_owner(&PgColumns(row))?);
    }
    Ok(found)
}
