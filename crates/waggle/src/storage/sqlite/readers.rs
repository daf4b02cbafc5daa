//! The store's read connections: a few read-only connections to the database file, each
//! used by one blocking task at a time. In WAL mode readers never wait for the writer,
//! nor it for them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::storage::{StoreError, StoreResult};

pub(super) struct Readers {
    /// The connections not in use. A permit of `free` is one of them.
    idle: Arc<Mutex<Vec<Connection>>>,
    free: Arc<Semaphore>,
}

impl Readers {
    pub fn open(path: &Path, count: usize) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .with_context(|| format!("opening {} to read", path.display()))?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.execute_batch("PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;")?;
            idle.push(conn);
        }
        Ok(Self {
            idle: Arc::new(Mutex::new(idle)),
            free: Arc::new(Semaphore::new(count)),
        })
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
        let idle = self.idle.clone();
        let task = tokio::task::spawn_blocking(move || {
            let conn = idle
                .lock()
                .expect("readers lock")
                .pop()
                .expect("a permit stands for an idle connection");
            let result = catch_unwind(AssertUnwindSafe(|| read(&conn)));
            idle.lock().expect("readers lock").push(conn);
            drop(permit);
            result.unwrap_or_else(|_| Err(StoreError::Corrupt("a read panicked".into())))
        });
        task.await
            .map_err(|e| StoreError::Corrupt(format!("a read did not finish: {e}")))?
    }
}
