//! The store's read connections: a few read-only connections to the database file, each
//! used by one blocking task at a time. In WAL mode readers never wait for the writer,
//! nor it for them.
//!
//! The connections of one process to one file share its WAL index, opened the way the
//! first of them found the file: a file the node started on read-only keeps a read-only
//! index until every connection to it is closed. So the writer, while it cannot write,
//! has the readers' connections closed before each try ([`Reopen`]); each is opened
//! again when next used.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::storage::{StoreError, StoreResult};

pub(super) struct Readers {
    path: Arc<PathBuf>,
    /// The connections not in use. A permit of `free` is one of them.
    idle: Arc<Mutex<Vec<Reader>>>,
    free: Arc<Semaphore>,
    /// Connections opened before the latest [`Reopen::all`] are closed, not used.
    generation: Arc<AtomicU64>,
}

/// One connection's place: `None` once closed, until it is next used.
struct Reader {
    conn: Option<Connection>,
    generation: u64,
}

/// Closes the readers' connections: the idle ones at once, those in use when their read
/// ends.
#[derive(Clone)]
pub(super) struct Reopen {
    idle: Arc<Mutex<Vec<Reader>>>,
    generation: Arc<AtomicU64>,
}

impl Reopen {
    pub fn all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for reader in self.idle.lock().expect("readers lock").iter_mut() {
            reader.conn = None;
        }
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;")?;
    Ok(conn)
}

impl Readers {
    pub fn open(path: &Path, count: usize) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            let conn = open(path).with_context(|| format!("opening {} to read", path.display()))?;
            idle.push(Reader {
                conn: Some(conn),
                generation: 0,
            });
        }
        Ok(Self {
            path: Arc::new(path.to_owned()),
            idle: Arc::new(Mutex::new(idle)),
            free: Arc::new(Semaphore::new(count)),
            generation: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn reopen(&self) -> Reopen {
        Reopen {
            idle: self.idle.clone(),
            generation: self.generation.clone(),
        }
    }

    /// Runs `read` on a free connection, off the async runtime. The connection goes back
    /// to the pool when `read` ends, even if the caller stopped waiting for it.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = self
            .free
            .clone()
            .acquire_owned()
            .await
            .expect("the readers' semaphore is never closed");
        let (idle, path, generation) = (
            self.idle.clone(),
            self.path.clone(),
            self.generation.clone(),
        );
        let task = tokio::task::spawn_blocking(move || {
            let mut reader = idle
                .lock()
                .expect("readers lock")
                .pop()
                .expect("a permit stands for an idle connection");
            let current = generation.load(Ordering::Acquire);
            if reader.generation != current {
                reader.conn = None;
            }
            let result = match &reader.conn {
                Some(conn) => Ok(conn),
                None => match open(&path) {
                    Ok(conn) => {
                        reader.generation = current;
                        Ok(&*reader.conn.insert(conn))
                    }
                    Err(e) => Err(StoreError::Unavailable(format!("cannot open to read: {e}"))),
                },
            }
            .and_then(|conn| {
                catch_unwind(AssertUnwindSafe(|| read(conn)))
                    .unwrap_or_else(|_| Err(StoreError::Corrupt("a read panicked".into())))
            });
            // Closed meanwhile: it goes back closed.
            if reader.generation != generation.load(Ordering::Acquire) {
                reader.conn = None;
            }
            idle.lock().expect("readers lock").push(reader);
            drop(permit);
            result
        });
        task.await
            .map_err(|e| StoreError::Corrupt(format!("a read did not finish: {e}")))?
    }
}
