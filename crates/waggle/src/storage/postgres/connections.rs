//! Connections kept between statements, so that a statement costs PostgreSQL one round
//! trip and not three.
//!
//! sqlx's pool sends each connection that comes back to it a round trip of its own (a
//! `Sync`, to learn whether the connection survived whatever its last user did) and, by
//! default, one more before handing it out again. PostgreSQL answers each like a small
//! statement: a wake-up and two system calls on both sides. A connection whose last use
//! completed is known to be in order, so it comes back here instead ([`Conn::keep`]),
//! and the next statement takes it as it is. A connection whose user failed or was
//! cancelled midway goes back to the pool, which checks it.
//!
//! What a restart of PostgreSQL cut is found by asking, not by failing a call: a
//! connection kept here longer than [`FRESH`] goes back to the pool, and the pool asks a
//! connection idle for [`FRESH`] or more whether it answers before handing it out
//! ([`ask_if_idle`]).

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::pool::{PoolConnection, PoolConnectionMetadata};
use sqlx::{Connection as _, PgConnection, PgPool, Postgres};

/// How long a connection not used since is taken as it is.
pub(super) const FRESH: Duration = Duration::from_secs(1);

/// The pool's check before it hands out a connection (sqlx's `before_acquire`): one
/// idle for [`FRESH`] or more must answer first.
pub(super) fn ask_if_idle(
    conn: &mut PgConnection,
    meta: PoolConnectionMetadata,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for >= FRESH {
            conn.ping().await?;
        }
        Ok(true)
    })
}

/// The node's pool and the connections kept out of it, at most `keep` (fewer than the
/// pool's size: what uses the pool directly, such as the health probe, always finds one).
pub(super) struct Connections {
    pool: PgPool,
    keep: usize,
    /// Newest last, each with when it was kept.
    kept: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
}

impl Connections {
    pub(super) fn new(pool: PgPool, keep: usize) -> Self {
        Self {
            pool,
            keep,
            kept: Mutex::default(),
        }
    }

    /// A kept connection, or one of the pool's.
    pub(super) async fn get(&self) -> Result<Conn<'_>, sqlx::Error> {
        let (kept, stale) = {
            let mut kept = self.kept.lock().expect("connections lock");
            let stale = take_stale(&mut kept);
            (kept.pop(), stale)
        };
        // Dropped outside the lock: the pool checks them as they go back.
        drop(stale);
        let conn = match kept {
            Some((conn, _)) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(Conn {
            conn: Some(conn),
            home: self,
            in_order: false,
        })
    }

    /// The pool's connections, and of them those idle (kept here or in the pool).
    pub(super) fn usage(&self) -> (u32, usize) {
        let kept = self.kept.lock().expect("connections lock").len();
        (self.pool.size(), kept + self.pool.num_idle())
    }
}

/// The connections kept for [`FRESH`] or more, out of `kept`.
fn take_stale(
    kept: &mut Vec<(PoolConnection<Postgres>, Instant)>,
) -> Vec<(PoolConnection<Postgres>, Instant)> {
    // Oldest first: the stale ones lead.
    let fresh = kept
        .iter()
        .position(|(_, at)| at.elapsed() < FRESH)
        .unwrap_or(kept.len());
    kept.drain(..fresh).collect()
}

/// A connection in use. Dropped without [`Conn::keep`], it goes back to the pool.
pub(super) struct Conn<'a> {
    conn: Option<PoolConnection<Postgres>>,
    home: &'a Connections,
    in_order: bool,
}

impl Conn<'_> {
    /// Its use completed: it is kept for the next statement.
    pub(super) fn keep(mut self) {
        self.in_order = true;
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !self.in_order {
            return;
        }
        let mut kept = self.home.kept.lock().expect("connections lock");
        let stale = take_stale(&mut kept);
        let spare = match kept.len() < self.home.keep {
            true => {
                kept.push((conn, Instant::now()));
                None
            }
            false => Some(conn),
        };
        drop(kept);
        drop((stale, spare));
    }
}

impl Deref for Conn<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("a connection until dropped")
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a connection until dropped")
    }
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgPoolOptions;

    use super::*;

    /// The test server's pool, or `None` (the test is skipped) when there is none and
    /// none is required.
    async fn pool() -> Option<PgPool> {
        let url = std::env::var("WAGGLE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        match PgPoolOptions::new().max_connections(4).connect(&url).await {
            Ok(pool) => Some(pool),
            Err(e) => {
                assert!(
                    std::env::var("WAGGLE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                    "WAGGLE_REQUIRE_POSTGRES=1 but {url} is unreachable: {e}"
                );
                eprintln!("SKIPPED: no PostgreSQL at {url}");
                None
            }
        }
    }

    fn kept(conns: &Connections) -> usize {
        let len = conns.kept.lock().unwrap().len();
        len
    }

    async fn backend(conn: &mut PgConnection) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn only_a_connection_whose_use_completed_is_taken_again_as_it_is() {
        let Some(pool) = pool().await else { return };
        let conns = Connections::new(pool, 2);
        let mut conn = conns.get().await.unwrap();
        let first = backend(&mut conn).await;
        conn.keep();
        assert_eq!(kept(&conns), 1);

        // Taken again, then cancelled in the middle of a statement.
        let mut conn = conns.get().await.unwrap();
        assert_eq!(kept(&conns), 0);
        let slow = sqlx::query("SELECT pg_sleep(3)").execute(&mut *conn);
        assert!(tokio::time::timeout(Duration::from_millis(100), slow)
            .await
            .is_err());
        drop(conn);
        assert_eq!(kept(&conns), 0);

        // The next statement runs on another connection, at once.
        let mut conn = conns.get().await.unwrap();
        let started = Instant::now();
        assert_ne!(backend(&mut conn).await, first);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_connection_kept_for_longer_than_fresh_goes_back_to_the_pool() {
        let Some(pool) = pool().await else { return };
        let conns = Connections::new(pool, 2);
        let (one, two) = (conns.get().await.unwrap(), conns.get().await.unwrap());
        one.keep();
        tokio::time::sleep(FRESH + Duration::from_millis(100)).await;
        two.keep();
        // Only the fresh one is taken; the stale one is given back on the way.
        let conn = conns.get().await.unwrap();
        assert_eq!(kept(&conns), 0);
        drop(conn);
        // And a full stash gives back what it cannot keep.
        let taken: Vec<Conn<'_>> = futures::future::try_join_all((0..3).map(|_| conns.get()))
            .await
            .unwrap();
        taken.into_iter().for_each(Conn::keep);
        assert_eq!(kept(&conns), 2);
    }
}
