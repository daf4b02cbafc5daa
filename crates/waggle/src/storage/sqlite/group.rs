//! The writer: the one thread, on the one connection, that writes the SQLite database.
//! API events with their deliveries and the dispatcher's claims, outcome batches,
//! releases and lease renewals are group-committed; every other write (the records',
//! a resend, a delete) is a [`Command`] of its own, in its own transaction.
//!
//! SQLite's cost is mostly per transaction, so whatever is queued when the thread comes
//! round commits together, and under load one commit carries many API calls and outcome
//! batches. The thread runs each transaction start to end with prepared statements, row
//! by row: through an async driver, each statement would be a hop to the driver's thread
//! and a wake-up back on the runtime, and under load those hops, not SQLite, set the pace.
//! Each caller hears back only once its write is committed.
//!
//! The thread is its own supervisor. An error that says the file cannot be written for
//! now (a full disk; a file it may not write) fails the writes at hand with
//! [`StoreError::Unavailable`] and says so on the store's health channel (`/healthz`
//! turns 503, the dispatcher pauses); the writes that come meanwhile are tried as they
//! come, and every second a probe tries to write, until one succeeds and the health turns
//! back. A panic, or an error that says the file cannot be written again (an I/O error,
//! corruption), stops every later write for good (the process stops, to be restarted).
//! Either way, what was committed before stays, and what failed was never acknowledged.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{oneshot, watch};

use super::super::records;
use super::super::sql::Dialect;
use super::super::*;
use super::readers::Reopen;
use crate::domain::attempt::{Attempt, AttemptResult};
use crate::domain::time::{self, to_micros};

/// Where a write's answer goes once its group is committed.
pub(super) type Done<T> = oneshot::Sender<StoreResult<T>>;

/// A write for the writer thread: those of the hot path wait for the next group commit,
/// so that none of them waits on SQLite's lock for another (a busy wait sleeps for
/// milliseconds); the rest are commands.
pub(super) enum GroupWrite {
    Events {
        sync: SyncChange,
        events: Arc<[NewEvent]>,
        /// Boxed: most calls have none, and every write of the queue is as large as this.
        remember: Option<Box<Remembered>>,
        done: Done<()>,
    },
    Outcomes {
        outcomes: Arc<[DeliveryOutcome]>,
        done: Done<()>,
    },
    Claim {
        claim: Claim,
        done: Done<Vec<DeliveryJob>>,
    },
    Release {
        ids: Vec<DeliveryId>,
        unstarted: bool,
        done: Done<()>,
    },
    Renew {
        ids: Vec<DeliveryId>,
        until: Timestamp,
        done: Done<u64>,
    },
    Command(Box<dyn Command>),
}

/// A write of its own, run in a transaction of its own with foreign keys checked (and
/// their deletes cascading), which the group commit's connection otherwise does not do.
pub(super) trait Command: Send {
    fn run(&mut self, conn: &Connection) -> Ran;
    /// Answers the caller: with the write's own result, or with `failed`.
    fn answer(self: Box<Self>, failed: Option<StoreError>);
}

/// How a command's work ended.
pub(super) enum Ran {
    Done,
    /// Refused (a rule of the data, say): rolled back, the writer goes on.
    Refused,
    /// The file cannot be written, for now or for good.
    Trouble(Trouble),
}

/// Why the writer cannot write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Trouble {
    /// May pass by itself: the disk is full, the file may not be written.
    ForNow(String),
    /// Will not pass: the writer panicked, the file is corrupt or fails to read back.
    ForGood(String),
}

impl Trouble {
    fn of(e: &rusqlite::Error) -> Option<Self> {
        let why = e.to_string();
        match e.sqlite_error_code()? {
            ErrorCode::DiskFull | ErrorCode::ReadOnly | ErrorCode::CannotOpen => {
                Some(Trouble::ForNow(why))
            }
            ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::NotADatabase
            | ErrorCode::OutOfMemory => Some(Trouble::ForGood(why)),
            _ => None,
        }
    }

    fn panicked(panic: &(dyn std::any::Any + Send)) -> Self {
        Trouble::ForGood(format!("the writer panicked: {}", panic_message(panic)))
    }

    fn why(&self) -> &str {
        match self {
            Trouble::ForNow(why) | Trouble::ForGood(why) => why,
        }
    }
}

/// A command made of a closure over the writer's connection.
pub(super) struct Work<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    done: Done<T>,
}

impl<T, F> Work<T, F> {
    pub fn new(work: F, done: Done<T>) -> Self {
        Self {
            work: Some(work),
            result: None,
            done,
        }
    }
}

impl<T: Send, F: FnOnce(&Connection) -> StoreResult<T> + Send> Command for Work<T, F> {
    fn run(&mut self, conn: &Connection) -> Ran {
        let Some(work) = self.work.take() else {
            return Ran::Refused;
        };
        let result = work(conn);
        let ran = match &result {
            Ok(_) => Ran::Done,
            Err(StoreError::Sqlite(e)) => Trouble::of(e).map_or(Ran::Refused, Ran::Trouble),
            Err(_) => Ran::Refused,
        };
        self.result = Some(result);
        ran
    }

    fn answer(self: Box<Self>, failed: Option<StoreError>) {
        let answer = match (failed, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::Unavailable("the write was not run".into())),
        };
        // A caller that gave up waiting is no reason to stop.
        let _ = self.done.send(answer);
    }
}

/// The arguments of [`Store::claim_due`].
pub(super) struct Claim {
    pub now: Timestamp,
    pub lease_until: Timestamp,
    pub room: ClaimRoom,
}

/// A write's answer, sent once the group is committed.
enum Answer {
    Done(StoreResult<()>),
    Jobs(StoreResult<Vec<DeliveryJob>>),
    Count(u64),
}

impl GroupWrite {
    fn answer(self, answer: Answer) {
        // A caller that gave up waiting is no reason to stop.
        let _ = match (self, answer) {
            (GroupWrite::Events { done, .. }, Answer::Done(r))
            | (GroupWrite::Outcomes { done, .. }, Answer::Done(r))
            | (GroupWrite::Release { done, .. }, Answer::Done(r)) => done.send(r).map_err(drop),
            (GroupWrite::Claim { done, .. }, Answer::Jobs(r)) => done.send(r).map_err(drop),
            (GroupWrite::Renew { done, .. }, Answer::Count(n)) => done.send(Ok(n)).map_err(drop),
            (write, _) => {
                write.fail(StoreError::Corrupt(
                    "the group commit answered out of kind".into(),
                ));
                Ok(())
            }
        };
    }

    fn fail(self, error: StoreError) {
        let _ = match self {
            GroupWrite::Events { done, .. }
            | GroupWrite::Outcomes { done, .. }
            | GroupWrite::Release { done, .. } => done.send(Err(error)).map_err(drop),
            GroupWrite::Claim { done, .. } => done.send(Err(error)).map_err(drop),
            GroupWrite::Renew { done, .. } => done.send(Err(error)).map_err(drop),
            GroupWrite::Command(command) => {
                command.answer(Some(error));
                Ok(())
            }
        };
    }
}

/// The most writes one group commit carries.
const GROUP_MAX: usize = 256;

/// How often a writer that cannot write for now tries again by itself.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Opens the writer's connection to the (already migrated) database file and starts its
/// thread, which ends when every sender of the queue is dropped. `health` hears whether
/// the writer can write.
pub(super) fn start(
    path: &Path,
    sync: SqliteSync,
    health: watch::Sender<Health>,
    readers: Reopen,
) -> anyhow::Result<mpsc::Sender<GroupWrite>> {
    use anyhow::Context;
    let conn =
        open(path, sync).with_context(|| format!("opening {} for the writer", path.display()))?;
    let (queue, writes) = mpsc::channel();
    let path = path.to_string_lossy().into_owned();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            let mut writer = Writer {
                conn: Some(conn),
                path,
                sync,
                health,
                readers,
            };
            writer.run(writes)
        })
        .context("starting the writer thread")?;
    Ok(queue)
}

/// The writer's connection.
fn open(path: &Path, sync: SqliteSync) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Foreign keys are not checked by the group commit: every row it writes refers to
    // rows that exist by construction (the event written in the same transaction, the
    // organization and the claimed delivery, none of which is ever deleted), so each
    // check was a lookup per row for nothing, three per delivery. The one row that may
    // refer to something gone is a sync job whose connector was deleted meanwhile; it
    // can only be reached through its connector, so it stays unseen, where a checked
    // insert would have failed every other write of its group with it. Commands, which
    // delete, turn them on for their own transaction, so that deletes cascade.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = OFF; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;",
        sync.pragma()
    ))?;
    Ok(conn)
}

struct Writer {
    /// `None` while a probe found the file could not be opened at all.
    conn: Option<Connection>,
    /// The database file, which names this writer to a test's injected fault.
    path: String,
    /// What a commit waits for (the probe's fresh connection too).
    sync: SqliteSync,
    /// Whether the writer can write, as its last write or probe found.
    health: watch::Sender<Health>,
    /// Closes the readers' connections, which a probe needs (see `readers`).
    readers: Reopen,
}

impl Drop for Writer {
    /// However the thread ends (a panic outside any write included), the store hears it.
    fn drop(&mut self) {
        self.health.send_if_modified(|health| {
            if !matches!(health, Health::Broken(_)) {
                *health = Health::Broken("the SQLite writer stopped".into());
            }
            true
        });
    }
}

/// How a write went, for the writer's health.
type Wrote = Result<(), Option<Trouble>>;

impl Writer {
    fn run(&mut self, writes: mpsc::Receiver<GroupWrite>) {
        let mut group = Vec::with_capacity(GROUP_MAX);
        loop {
            let unavailable = matches!(*self.health.borrow(), Health::Unavailable(_));
            let first = match unavailable {
                false => writes.recv().ok(),
                true => match writes.recv_timeout(PROBE_EVERY) {
                    Ok(write) => Some(write),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let probed = self.probe();
                        heard(&self.health, probed);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                },
            };
            let Some(first) = first else { return };
            if let Health::Broken(why) = &*self.health.borrow() {
                first.fail(StoreError::Unavailable(why.clone()));
                continue;
            }
            let Some(conn) = self.conn.as_mut() else {
                let health = self.health.borrow();
                first.fail(StoreError::Unavailable(
                    health
                        .trouble()
                        .unwrap_or("the database cannot be opened")
                        .to_owned(),
                ));
                continue;
            };
            let mut commands = Vec::new();
            for write in std::iter::once(first).chain(writes.try_iter().take(GROUP_MAX - 1)) {
                match write {
                    GroupWrite::Command(command) => commands.push(command),
                    write => group.push(write),
                }
            }
            if !group.is_empty() {
                let fault = injected_fault(&self.path);
                let health = &self.health;
                let (writes, started) = (group.len(), std::time::Instant::now());
                settle(
                    conn,
                    &mut group,
                    |conn, group| commit_group(conn, group, fault),
                    |wrote| heard(health, wrote),
                );
                crate::telemetry::metrics::group_commit(writes, started.elapsed());
            }
            for command in commands {
                match &*self.health.borrow() {
                    Health::Broken(why) => {
                        command.answer(Some(StoreError::Unavailable(why.clone())));
                        continue;
                    }
                    Health::Ok | Health::Unavailable(_) => {}
                }
                let health = &self.health;
                run_command(conn, command, |wrote| heard(health, wrote));
            }
        }
    }

    /// Tries a write of nothing that matters (the schema's user version, set to itself),
    /// on a fresh connection. Every connection of the process is closed first: they share
    /// one WAL index, and one opened while the file was read-only stays read-only until
    /// the last of them closes.
    fn probe(&mut self) -> Wrote {
        self.readers.all();
        self.conn = None;
        let conn = self
            .conn
            .insert(open(Path::new(&self.path), self.sync).map_err(|e| Trouble::of(&e))?);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| Trouble::of(&e))?;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; PRAGMA user_version = {version}; COMMIT;"
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            Trouble::of(&e)
        })
    }
}

/// Takes in how a write went: trouble says the store cannot write (for now or for
/// good), a write that went through says it can again. Called before the write's caller
/// hears of it, so that a caller that heard of trouble finds the health saying so.
fn heard(health: &watch::Sender<Health>, wrote: Wrote) {
    health.send_if_modified(|health| match (&*health, wrote) {
        (Health::Broken(_), _) | (Health::Ok, Ok(()) | Err(None)) => false,
        (Health::Unavailable(_), Err(None)) => false,
        (_, Err(Some(Trouble::ForGood(why)))) => {
            tracing::error!(error = %why, "the SQLite writer stopped: no write is possible until a restart");
            *health = Health::Broken(why);
            true
        }
        (Health::Ok, Err(Some(Trouble::ForNow(why)))) => {
            tracing::error!(error = %why, "the SQLite database cannot be written; retrying every {PROBE_EVERY:?}");
            *health = Health::Unavailable(why);
            true
        }
        (Health::Unavailable(_), Err(Some(Trouble::ForNow(why)))) => {
            *health = Health::Unavailable(why);
            false
        }
        (Health::Unavailable(_), Ok(())) => {
            tracing::info!("the SQLite database can be written again");
            *health = Health::Ok;
            true
        }
    });
}

/// A fault a test injects into the writer of the database at `path`, with
/// `fail::cfg("sqlite-writer", "return(<panic|io>:<path>)")`; nothing in a build without
/// the `failpoints` feature of `fail`.
fn injected_fault(path: &str) -> Option<Fault> {
    fail::fail_point!("sqlite-writer", |arg: Option<String>| {
        let arg = arg.unwrap_or_default();
        let (kind, at) = arg.split_once(':')?;
        (at == path).then_some(if kind == "panic" {
            Fault::Panic
        } else {
            Fault::Io
        })
    });
    let _ = path;
    None
}

/// A fault injected just before a group commits.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // made only where the tests' fail points are compiled in
enum Fault {
    Panic,
    Io,
}

/// Commits `group` with `commit` and answers each of its writes. A panic fails the
/// group's writes (its transaction rolls back as the panic unwinds), and so does an
/// error; `report` hears whether the writer could write, before the writes do.
fn settle(
    conn: &mut Connection,
    group: &mut Vec<GroupWrite>,
    commit: impl FnOnce(&mut Connection, &[GroupWrite]) -> rusqlite::Result<Vec<Answer>>,
    report: impl FnOnce(Wrote),
) {
    let committed = catch_unwind(AssertUnwindSafe(|| commit(conn, group)));
    let (failed, trouble) = match committed {
        Ok(Ok(answers)) => {
            report(Ok(()));
            for (write, answer) in group.drain(..).zip(answers) {
                write.answer(answer);
            }
            return;
        }
        Ok(Err(e)) => (e.to_string(), Trouble::of(&e)),
        Err(panic) => {
            let trouble = Trouble::panicked(&*panic);
            (trouble.why().to_owned(), Some(trouble))
        }
    };
    tracing::error!(error = %failed, writes = group.len(), "group commit failed");
    let unwritable = trouble.is_some();
    report(Err(trouble));
    for write in group.drain(..) {
        write.fail(failure(&failed, unwritable));
    }
}

/// What a write that failed for `why` answers: the store is unavailable when the file
/// cannot be written, else this write failed.
fn failure(why: &str, unwritable: bool) -> StoreError {
    match unwritable {
        true => StoreError::Unavailable(why.to_owned()),
        false => StoreError::Corrupt(format!("write failed: {why}")),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Runs a command in a transaction of its own, foreign keys checked; `report` hears
/// whether the writer could write, before the command's caller does.
fn run_command(conn: &mut Connection, mut command: Box<dyn Command>, report: impl FnOnce(Wrote)) {
    let ran = catch_unwind(AssertUnwindSafe(|| -> rusqlite::Result<Ran> {
        conn.execute_batch("PRAGMA foreign_keys = ON")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ran = command.run(&tx);
        if let Ran::Done = ran {
            tx.commit()?;
        }
        Ok(ran)
    }));
    let reset = conn.execute_batch("PRAGMA foreign_keys = OFF");
    let (why, trouble) = match (ran, reset) {
        (Ok(Ok(Ran::Done)), Ok(())) => {
            report(Ok(()));
            command.answer(None);
            return;
        }
        (Ok(Ok(Ran::Refused)), Ok(())) => {
            report(Err(None));
            command.answer(None);
            return;
        }
        (Ok(Ok(Ran::Trouble(trouble))), _) => (trouble.why().to_owned(), Some(trouble)),
        (Ok(Err(e)), _) | (_, Err(e)) => (e.to_string(), Trouble::of(&e)),
        (Err(panic), _) => {
            let trouble = Trouble::panicked(&*panic);
            (trouble.why().to_owned(), Some(trouble))
        }
    };
    let unwritable = trouble.is_some();
    report(Err(trouble));
    command.answer(Some(failure(&why, unwritable)));
}

/// One transaction for the group, its writes in the order they came. Idempotency keys and
/// sync changes go first: a refused one (the key is another call's, the job had already
/// finished) writes nothing, and its write's events are then left out, so each write is
/// all or nothing while the group shares a commit.
fn commit_group(
    conn: &mut Connection,
    group: &[GroupWrite],
    fault: Option<Fault>,
) -> rusqlite::Result<Vec<Answer>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut synced = Vec::with_capacity(group.len());
    for write in group {
        synced.push(match write {
            GroupWrite::Events { sync, remember, .. } => {
                apply_call_changes(&tx, sync, remember.as_deref())?
            }
            _ => Ok(()),
        });
    }
    let mut answers = Vec::with_capacity(group.len());
    for (write, synced) in group.iter().zip(synced) {
        answers.push(match write {
            GroupWrite::Events { events, .. } => {
                if synced.is_ok() {
                    insert_events(&tx, events)?;
                }
                Answer::Done(synced)
            }
            GroupWrite::Outcomes { outcomes, .. } => {
                write_outcomes(&tx, outcomes)?;
                Answer::Done(Ok(()))
            }
            GroupWrite::Claim { claim, .. } => Answer::Jobs(claim_due(&tx, claim)?),
            GroupWrite::Release { ids, unstarted, .. } => {
                release(&tx, ids, *unstarted)?;
                Answer::Done(Ok(()))
            }
            GroupWrite::Renew { ids, until, .. } => Answer::Count(renew(&tx, ids, until)?),
            GroupWrite::Command(_) => unreachable!("commands run apart from the group"),
        });
    }
    match fault {
        Some(Fault::Panic) => panic!("a fault injected into the group commit"),
        Some(Fault::Io) => {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some("an I/O error injected into the group commit".into()),
            ))
        }
        None => {}
    }
    tx.commit()?;
    Ok(answers)
}

/// Due deliveries the first look at the queue reads, in due order, at most. Past that,
/// the rest is looked for webhook by webhook.
const SCAN: u32 = 4096;

/// The webhooks that have unclaimed pending deliveries, each once: a walk of their
/// queues' index that jumps from one webhook to the next, so it reads an entry per such
/// webhook, however many deliveries each holds and however many other webhooks exist.
/// (Every webhook of the table would be a probe per webhook per claim: with thousands of
/// webhooks and one dead destination's backlog, that is a claim that holds every write
/// of the store for milliseconds, several times a second.)
const QUEUED_WEBHOOKS: &str = "WITH RECURSIVE queued (webhook_id) AS ( \
       SELECT MIN(webhook_id) FROM deliveries WHERE status = 'pending' AND lease_until IS NULL \
       UNION ALL \
       SELECT (SELECT MIN(webhook_id) FROM deliveries WHERE status = 'pending' \
               AND lease_until IS NULL AND webhook_id > queued.webhook_id) \
       FROM queued WHERE queued.webhook_id IS NOT NULL) \
     SELECT webhook_id FROM queued WHERE webhook_id IS NOT NULL";

/// One webhook's unclaimed due deliveries, earliest first.
const WEBHOOK_QUEUE: &str = "SELECT rowid FROM deliveries WHERE webhook_id = ? \
     AND status = 'pending' AND lease_until IS NULL AND next_attempt_at <= ? \
     ORDER BY next_attempt_at LIMIT ?";

/// Claims due deliveries (see [`Store::claim_due`]), holding each webhook to its room.
///
/// Claims that ran out come first: they are due already, and their index holds nothing
/// else. The unclaimed deliveries are picked next in due order. When that order starts
/// with more than [`SCAN`] deliveries this claim may not take (a dead destination's
/// backlog, whose lane is full), going on through it would cost a read per delivery on
/// every poll, however large the backlog grows; instead, each webhook that has a queue
/// and room is looked up in it, which costs a read per such webhook. A row that does not
/// parse is a corrupt store, answered to the caller rather than failing the group.
fn claim_due(conn: &Connection, claim: &Claim) -> rusqlite::Result<StoreResult<Vec<DeliveryJob>>> {
    let now = to_micros(&claim.now);
    let limit = claim.room.limit as usize;
    let mut picker = Picker::new(&claim.room);
    let mut ran_out = conn.prepare_cached(
        "SELECT rowid, webhook_id FROM deliveries WHERE status = 'pending' \
         AND lease_until IS NOT NULL AND lease_until <= ? ORDER BY lease_until LIMIT ?",
    )?;
    let mut rows = ran_out.query(params![now, limit as i64])?;
    while let Some(row) = rows.next()? {
        picker.offer(row.get(0)?, row.get_ref(1)?.as_str()?);
    }
    drop(rows);
    let mut scan = conn.prepare_cached(
        "SELECT rowid, webhook_id FROM deliveries WHERE status = 'pending' \
         AND lease_until IS NULL AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
    )?;
    let mut rows = scan.query(params![now, SCAN])?;
    let mut scanned = 0;
    while picker.picked.len() < limit {
        let Some(row) = rows.next()? else { break };
        scanned += 1;
        picker.offer(row.get(0)?, row.get_ref(1)?.as_str()?);
    }
    drop(rows);
    if scanned == SCAN && picker.picked.len() < limit {
        let webhooks: Vec<String> = conn
            .prepare_cached(QUEUED_WEBHOOKS)?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut queue = conn.prepare_cached(WEBHOOK_QUEUE)?;
        for webhook in webhooks {
            let left = picker
                .room_of(&webhook)
                .min((limit - picker.picked.len()) as u32);
            if left == 0 {
                continue;
            }
            // Those the looks before picked come first again.
            let again = picker.taken_of(&webhook);
            let mut rows = queue.query(params![webhook, now, left + again])?;
            while let Some(row) = rows.next()? {
                picker.offer(row.get(0)?, &webhook);
            }
            if picker.picked.len() == limit {
                break;
            }
        }
    }
    // Read, then claimed: a RETURNING clause would have SQLite keep the returned row in a
    // b-tree of its own, made and torn down for each delivery claimed, when this thread
    // is the only writer of the rows it reads.
    let mut read = conn.prepare_cached(
        "SELECT id, org_id, webhook_id, url, body, attempt_count, attempts_started + 1, \
         first_attempt_at, event_id, ordered_by, traceparent FROM deliveries WHERE rowid = ?",
    )?;
    let mut take = conn.prepare_cached(
        "UPDATE deliveries SET attempts_started = attempts_started + 1, lease_until = ? \
         WHERE rowid = ?",
    )?;
    let mut event_of =
        conn.prepare_cached("SELECT event_type, shared_body FROM events WHERE id = ?")?;
    // Deliveries of one event are often claimed together: its shared part is read once.
    let mut event: Option<(String, String, Option<Vec<u8>>)> = None;
    let lease_until = to_micros(&claim.lease_until);
    let mut jobs = Vec::with_capacity(picker.picked.len());
    for rowid in picker.picked {
        let mut rows = read.query([rowid])?;
        let Some(row) = rows.next()? else { continue };
        let text = |column: usize| row.get::<_, String>(column);
        let (delivery, org, webhook, url) = (text(0)?, text(1)?, text(2)?, text(3)?);
        let (Ok(id), Ok(org_id), Ok(webhook_id)) = (delivery.parse(), org.parse(), webhook.parse())
        else {
            return Ok(Err(StoreError::Corrupt(format!(
                "bad id in claimed delivery {delivery} (org {org}, webhook {webhook})"
            ))));
        };
        let own: Option<Vec<u8>> = row.get(4)?;
        // A delivery with a body of its own (a resend) reads no event.
        let of_event = own.is_none();
        let event_id = text(8)?;
        if own.is_none() && event.as_ref().is_none_or(|(of, ..)| *of != event_id) {
            let (event_type, shared) = event_of
                .query_row([&event_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?
                .unwrap_or_default();
            event = Some((event_id, event_type, shared));
        }
        let (event_type, shared) = match &event {
            Some((_, event_type, shared)) => (event_type.as_str(), shared.as_deref()),
            None => ("", None),
        };
        let body = match delivery_body(own, webhook_id, &url, event_type, shared) {
            Ok(body) => body,
            Err(e) => return Ok(Err(e)),
        };
        jobs.push(DeliveryJob {
            id,
            org_id,
            webhook_id,
            url,
            body,
            attempts_recorded: row.get::<_, i64>(5)? as u32,
            attempt_number: row.get::<_, i64>(6)? as u32,
            first_attempt_at: row.get::<_, Option<i64>>(7)?.map(time::from_micros),
            event_type: of_event
                .then(|| EventType::parse(event_type).ok())
                .flatten(),
            ordered_by: match row.get::<_, Option<String>>(9)?.map(|c| c.parse()) {
                Some(Ok(connector)) => Some(connector),
                Some(Err(_)) => {
                    return Ok(Err(StoreError::Corrupt(format!(
                        "bad ordered_by in claimed delivery {delivery}"
                    ))))
                }
                None => None,
            },
            traceparent: row.get::<_, Option<String>>(10)?.map(Into::into),
        });
        drop(rows);
        take.execute(params![lease_until, rowid])?;
    }
    Ok(Ok(jobs))
}

/// The deliveries a claim picks, within the room of each webhook (named as stored).
struct Picker {
    /// Room left, of the webhooks listed in the claim's room.
    room: HashMap<String, u32>,
    otherwise: u32,
    /// Picked so far, of each webhook.
    taken: HashMap<String, u32>,
    picked: Vec<i64>,
    seen: HashSet<i64>,
}

impl Picker {
    fn new(room: &ClaimRoom) -> Self {
        Self {
            room: room
                .webhooks
                .iter()
                .map(|(webhook, room)| (webhook.to_string(), *room))
                .collect(),
            otherwise: room.otherwise,
            taken: HashMap::new(),
            picked: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn taken_of(&self, webhook: &str) -> u32 {
        self.taken.get(webhook).copied().unwrap_or(0)
    }

    fn room_of(&self, webhook: &str) -> u32 {
        let room = self.room.get(webhook).copied().unwrap_or(self.otherwise);
        room.saturating_sub(self.taken_of(webhook))
    }

    /// Picks the delivery in row `rowid` if its webhook has room and it is not picked yet.
    fn offer(&mut self, rowid: i64, webhook: &str) {
        if self.room_of(webhook) == 0 || !self.seen.insert(rowid) {
            return;
        }
        match self.taken.get_mut(webhook) {
            Some(taken) => *taken += 1,
            None => {
                self.taken.insert(webhook.to_owned(), 1);
            }
        }
        self.picked.push(rowid);
    }
}

/// Gives claims back (see [`Store::release`]).
fn release(conn: &Connection, ids: &[DeliveryId], unstarted: bool) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "UPDATE deliveries SET lease_until = NULL, \
         attempts_started = MAX(attempts_started - ?, 0) WHERE id = ? AND status = 'pending'",
    )?;
    for id in ids {
        statement.execute(params![unstarted as i64, id.to_string()])?;
    }
    Ok(())
}

/// Extends claims still held (see [`Store::renew_leases`]); answers how many.
fn renew(conn: &Connection, ids: &[DeliveryId], until: &Timestamp) -> rusqlite::Result<u64> {
    let mut statement = conn.prepare_cached(
        "UPDATE deliveries SET lease_until = ? \
         WHERE id = ? AND status = 'pending' AND lease_until IS NOT NULL",
    )?;
    let until = to_micros(until);
    let mut renewed = 0;
    for id in ids {
        renewed += statement.execute(params![until, id.to_string()])? as u64;
    }
    Ok(renewed)
}

/// A call's answer under its idempotency key, then its sync change: both or neither.
fn apply_call_changes(
    conn: &Connection,
    sync: &SyncChange,
    remember: Option<&Remembered>,
) -> rusqlite::Result<StoreResult<()>> {
    let Some(r) = remember else {
        return apply_sync_change(conn, sync);
    };
    if super::execute(conn, &records::remember(Dialect::Sqlite, r))? == 0 {
        return Ok(Err(StoreError::KeyTaken));
    }
    let synced = apply_sync_change(conn, sync)?;
    if synced.is_err() {
        super::execute(conn, &records::unremember(Dialect::Sqlite, r))?;
    }
    Ok(synced)
}

fn apply_sync_change(conn: &Connection, sync: &SyncChange) -> rusqlite::Result<StoreResult<()>> {
    let Some(change) = records::sync_change(Dialect::Sqlite, sync) else {
        return Ok(Ok(()));
    };
    Ok(match super::execute(conn, &change)? {
        0 => Err(StoreError::Conflict(
            "the sync job has already finished".into(),
        )),
        _ => Ok(()),
    })
}

/// Inserts events and their deliveries.
/// The deliveries keep no body (each is remade from the event's shared part) and none of
/// the log's fields that are the event's.
fn insert_events(conn: &Connection, events: &[NewEvent]) -> rusqlite::Result<()> {
    let mut insert_event = conn.prepare_cached(
        "INSERT INTO events (id, org_id, event_type, environment, connector_id, created_at, \
         shared_body, integration_name, end_user_name, origin_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    // A delivery its webhook wants in order waits, with no next attempt, while another of
    // its webhook and connector is pending (this thread is the only writer: the rows it
    // reads are all there).
    let mut insert_delivery = conn.prepare_cached(
        "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, url, status, \
         created_at, next_attempt_at, lease_until, attempts_started, ordered_by, traceparent) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, \
         CASE WHEN ?10 IS NOT NULL AND EXISTS (SELECT 1 FROM deliveries \
           WHERE webhook_id = ?4 AND ordered_by = ?10 AND status = 'pending') \
         THEN NULL ELSE ?7 END, ?8, ?9, ?10, ?11)",
    )?;
    for NewEvent {
        event,
        shared_body,
        deliveries,
        traceparent,
    } in events
    {
        let (event_id, org_id) = (event.id.to_string(), event.org_id.to_string());
        let c = &event.connector;
        let created = to_micros(&event.created_at);
        insert_event.execute(params![
            event_id,
            org_id,
            event.event_type.as_str(),
            event.environment().as_str(),
            c.id.to_string(),
            created,
            &shared_body[..],
            c.integration_slug,
            c.end_user_name,
            c.origin_id,
        ])?;
        for d in deliveries {
            insert_delivery.execute(params![
                d.id.to_string(),
                org_id,
                event_id,
                d.webhook_id.to_string(),
                d.webhook_name,
                d.url,
                created,
                d.lease_until.as_ref().map(to_micros),
                d.lease_until.is_some() as i64,
                d.ordered_by.map(|c| c.to_string()),
                traceparent.as_deref(),
            ])?;
        }
    }
    Ok(())
}

/// Records attempts and the deliveries' new states, one outcome after another: each
/// applies only while its delivery is pending, so of two outcomes of one delivery in a
/// group, the second adds to a scheduled retry and changes nothing after a final one.
fn write_outcomes(conn: &Connection, outcomes: &[DeliveryOutcome]) -> rusqlite::Result<()> {
    let mut attempt_insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO attempts (delivery_id, number, started_at, duration_us, \
         request_url, request_headers, response_status, response_headers, response_body, \
         error_category, error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    let mut update_delivery = conn.prepare_cached(
        "UPDATE deliveries SET status = ?, attempt_count = attempt_count + ?, \
         response_code = ?, last_error = ?, \
         first_attempt_at = COALESCE(first_attempt_at, ?), \
         next_attempt_at = ?, lease_until = ?, finished_at = ? \
         WHERE id = ? AND status = 'pending'",
    )?;
    let now = to_micros(&time::now());
    let mut json = [Vec::with_capacity(512), Vec::with_capacity(512)];
    for o in outcomes {
        let delivery_id = o.delivery_id.to_string();
        if let Some(a) = &o.attempt {
            insert_attempt(&mut attempt_insert, &delivery_id, a, &mut json)?;
        }
        let (response_code, next_attempt_at, finished) = match o.state {
            DeliveryState::Delivered { status } => (Some(status as i64), None, Some(now)),
            DeliveryState::RetryScheduled { at, status } => {
                (status.map(i64::from), Some(to_micros(&at)), None)
            }
            DeliveryState::Failed => (None, None, Some(now)),
        };
        update_delivery.execute(params![
            o.state.status_str(),
            o.attempt.is_some() as i64,
            response_code,
            o.last_error,
            o.first_attempt_at.as_ref().map(to_micros),
            next_attempt_at,
            o.lease_until.as_ref().map(to_micros),
            finished,
            delivery_id,
        ])?;
    }
    // The end of an ordered delivery lets the next one of its webhook and connector go:
    // the first pending one, when it waits.
    let mut let_next_go = conn.prepare_cached(
        "UPDATE deliveries SET next_attempt_at = ?3 WHERE rowid = (SELECT rowid \
         FROM deliveries WHERE webhook_id = ?1 AND ordered_by = ?2 AND status = 'pending' \
         ORDER BY id LIMIT 1) AND next_attempt_at IS NULL",
    )?;
    for (webhook, connector) in outcomes.iter().filter_map(DeliveryOutcome::lets_next_go) {
        let_next_go.execute(params![webhook.to_string(), connector.to_string(), now])?;
    }
    // Every attempt triggers its webhook, whether or not its outcome still applied; the
    // row is written when that moves it by TRIGGERED_PRECISION or changes failing_since.
    let mut update_webhook = conn.prepare_cached(
        "UPDATE webhooks SET last_triggered_at = MAX(COALESCE(last_triggered_at, 0), ?1), \
         failing_since = CASE WHEN ?2 = 0 THEN NULL WHEN ?3 = 1 THEN ?4 \
           ELSE COALESCE(failing_since, ?4) END \
         WHERE id = ?5 AND (last_triggered_at IS NULL OR ?1 >= last_triggered_at + ?6 \
           OR (failing_since IS NULL) = ?2 OR (?3 = 1 AND failing_since IS NOT ?4))",
    )?;
    let precision = crate::storage::TRIGGERED_PRECISION.as_micros() as i64;
    for (webhook, t) in crate::storage::triggered(outcomes) {
        let (failing, since, afresh) = t.failing.columns();
        let since = since.as_ref().map(to_micros);
        update_webhook.execute(params![
            to_micros(&t.at),
            failing,
            afresh,
            since,
            webhook.to_string(),
            precision
        ])?;
    }
    Ok(())
}

/// Inserts one attempt's row. Its header lists are written as JSON into `json`, which
/// the caller keeps from one attempt to the next, and every column is bound as it is:
/// a row of owned strings and boxed values cost a dozen allocations per attempt, on the
/// thread every write waits for.
fn insert_attempt(
    statement: &mut rusqlite::CachedStatement<'_>,
    delivery_id: &str,
    a: &Attempt,
    json: &mut [Vec<u8>; 2],
) -> rusqlite::Result<()> {
    let [request_headers, response_headers] = json;
    let text = |buffer: &mut Vec<u8>, headers: &[(String, String)]| {
        buffer.clear();
        serde_json::to_writer(&mut *buffer, headers).expect("headers serialize");
    };
    text(request_headers, &a.request_headers);
    let request_headers = std::str::from_utf8(request_headers).expect("JSON is UTF-8");
    let (status, response_headers, body, category, message) = match &a.result {
        AttemptResult::Response {
            status,
            headers,
            body,
        } => {
            text(response_headers, headers);
            (
                Some(*status as i64),
                Some(std::str::from_utf8(response_headers).expect("JSON is UTF-8")),
                Some(body.as_slice()),
                None,
                None,
            )
        }
        AttemptResult::Failure { category, message } => (
            None,
            None,
            None,
            Some(category.as_str()),
            Some(message.as_str()),
        ),
    };
    statement.execute(params![
        delivery_id,
        a.number as i64,
        to_micros(&a.started_at),
        a.duration.as_micros() as i64,
        a.request_url,
        request_headers,
        status,
        response_headers,
        body,
        category,
        message,
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteStore;

    #[tokio::test]
    async fn the_writer_syncs_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.db");
        drop(
            SqliteStore::open(&format!("sqlite://{}", path.display()), SqliteSync::Full)
                .await
                .unwrap(),
        );
        // SQLite's own numbers: 1 NORMAL, 2 FULL.
        for (sync, expected) in [(SqliteSync::Full, 2), (SqliteSync::Normal, 1)] {
            let conn = open(&path, sync).unwrap();
            let synchronous: i64 = conn
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap();
            assert_eq!(synchronous, expected, "{sync:?}");
        }
        assert_eq!(SqliteSync::default(), SqliteSync::Full);
        assert_eq!(SqliteSync::parse(" Normal "), Ok(SqliteSync::Normal));
        assert!(SqliteSync::parse("off").is_err());
    }

    /// A migrated database whose only rows are these webhooks, each with its number of
    /// due, unclaimed deliveries, in the order given: the first webhook's are due first.
    async fn queued(dir: &Path, queues: &[(WebhookId, usize)]) -> Connection {
        let path = dir.join("claims.db");
        drop(
            SqliteStore::open(&format!("sqlite://{}", path.display()), SqliteSync::Full)
                .await
                .unwrap(),
        );
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        let tx = conn.transaction().unwrap();
        let mut due = 0;
        for (webhook, count) in queues {
            tx.execute(
                "INSERT INTO webhooks (id, org_id, name, url, type, events, is_enabled, created_at) \
                 VALUES (?, 'org', 'hook', 'http://x/', 'production', '[]', 1, 0)",
                params![webhook.to_string()],
            )
            .unwrap();
            for _ in 0..*count {
                due += 1;
                tx.execute(
                    "INSERT INTO deliveries (id, org_id, event_id, webhook_id, webhook_name, url, \
                     body, status, created_at, next_attempt_at) VALUES (?, ?, 'event', ?, 'hook', \
                     'http://x/', x'7b7d', 'pending', 0, ?)",
                    params![
                        DeliveryId::new().to_string(),
                        OrgId::new().to_string(),
                        webhook.to_string(),
                        due
                    ],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        conn
    }

    fn claim(
        conn: &Connection,
        limit: u32,
        rooms: &[(WebhookId, u32)],
        otherwise: u32,
    ) -> Vec<DeliveryJob> {
        let now = time::now();
        let claim = Claim {
            now,
            lease_until: now + chrono::Duration::seconds(10),
            room: ClaimRoom {
                limit,
                webhooks: rooms.iter().copied().collect(),
                otherwise,
            },
        };
        claim_due(conn, &claim).unwrap().unwrap()
    }

    fn claim_all(done: Done<Vec<DeliveryJob>>) -> GroupWrite {
        GroupWrite::Claim {
            claim: Claim {
                now: time::now(),
                lease_until: time::now() + chrono::Duration::seconds(10),
                room: ClaimRoom {
                    limit: 10,
                    webhooks: HashMap::new(),
                    otherwise: 10,
                },
            },
            done,
        }
    }

    #[tokio::test]
    async fn a_panic_fails_its_group_rolls_it_back_and_says_the_writer_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let webhook = WebhookId::new();
        let mut conn = queued(dir.path(), &[(webhook, 3)]).await;
        let (done, answer) = oneshot::channel();
        let mut group = vec![claim_all(done)];
        let mut broken = None;
        settle(
            &mut conn,
            &mut group,
            |conn, group| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if let GroupWrite::Claim { claim, .. } = &group[0] {
                    assert_eq!(claim_due(&tx, claim)?.unwrap().len(), 3);
                }
                panic!("in the middle of the transaction");
            },
            |wrote| broken = Some(wrote),
        );
        match broken.expect("reported") {
            Err(Some(Trouble::ForGood(why))) => assert!(why.contains("panicked"), "{why}"),
            other => panic!("a panic is trouble for good: {other:?}"),
        }
        let failed = answer.await.unwrap().unwrap_err();
        assert!(matches!(failed, StoreError::Unavailable(_)), "{failed}");
        // Nothing of the failed group stayed.
        let (done, answer) = oneshot::channel();
        let mut group = vec![claim_all(done)];
        let mut wrote = None;
        settle(
            &mut conn,
            &mut group,
            |conn, group| commit_group(conn, group, None),
            |w| wrote = Some(w),
        );
        assert_eq!(wrote, Some(Ok(())));
        assert_eq!(answer.await.unwrap().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_refused_command_is_rolled_back_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = queued(dir.path(), &[(WebhookId::new(), 1)]).await;
        let (done, answer) = oneshot::channel::<StoreResult<()>>();
        let refused = Work::new(
            |conn: &Connection| {
                conn.execute("DELETE FROM deliveries", [])?;
                // A webhook of an organization that does not exist: its key is checked.
                conn.execute(
                    "INSERT INTO webhooks (id, org_id, name, url, type, events, is_enabled, \
                     created_at) VALUES ('w', 'no such org', 'h', 'http://x/', 'production', \
                     '[]', 1, 0)",
                    [],
                )?;
                Ok(())
            },
            done,
        );
        let mut wrote = None;
        run_command(&mut conn, Box::new(refused), |w| wrote = Some(w));
        assert_eq!(
            wrote,
            Some(Err(None)),
            "refused, and the file can still be written"
        );
        assert!(answer.await.unwrap().is_err());
        let left: i64 = conn
            .query_row("SELECT count(*) FROM deliveries", [], |row| row.get(0))
            .unwrap();
        assert_eq!(left, 1);
    }

    fn count(jobs: &[DeliveryJob], webhook: WebhookId) -> usize {
        jobs.iter().filter(|j| j.webhook_id == webhook).count()
    }

    #[tokio::test]
    async fn each_webhook_gets_no_more_than_its_room_and_the_claim_no_more_than_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (WebhookId::new(), WebhookId::new());
        let conn = queued(dir.path(), &[(a, 10), (b, 10)]).await;
        let jobs = claim(&conn, 100, &[(a, 2)], 3);
        assert_eq!((count(&jobs, a), count(&jobs, b)), (2, 3));
        assert!(jobs.iter().all(|j| j.attempt_number == 1));
        // What is claimed is not claimed again; the limit holds across webhooks.
        let jobs = claim(&conn, 4, &[], 100);
        assert_eq!((count(&jobs, a), count(&jobs, b)), (4, 0));
        let jobs = claim(&conn, 100, &[(a, 0)], 100);
        assert_eq!((count(&jobs, a), count(&jobs, b)), (0, 7));
    }

    #[tokio::test]
    async fn a_backlog_the_claim_may_not_take_does_not_hide_what_is_due_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let (dead, live) = (WebhookId::new(), WebhookId::new());
        let backlog = SCAN as usize + 100;
        let conn = queued(dir.path(), &[(dead, backlog), (live, 3)]).await;
        let jobs = claim(&conn, 100, &[(dead, 0)], 256);
        assert_eq!((count(&jobs, dead), count(&jobs, live)), (0, 3));
        // A lane with a little room takes that much of the backlog, the earliest first.
        let jobs = claim(&conn, 100, &[(dead, 5)], 256);
        assert_eq!(count(&jobs, dead), 5);
        let due_first: Vec<String> = conn
            .prepare("SELECT id FROM deliveries ORDER BY next_attempt_at LIMIT 5")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let claimed: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
        assert_eq!(claimed, due_first);
    }

    #[tokio::test]
    async fn past_a_backlog_only_the_webhooks_with_a_queue_are_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let (dead, live) = (WebhookId::new(), WebhookId::new());
        // A thousand more webhooks, with nothing queued.
        let mut queues = vec![(dead, SCAN as usize + 100), (live, 3)];
        queues.extend((0..1000).map(|_| (WebhookId::new(), 0)));
        let conn = queued(dir.path(), &queues).await;
        let jobs = claim(&conn, 100, &[(dead, 0)], 256);
        assert_eq!((count(&jobs, dead), count(&jobs, live)), (0, 3));
        // The one webhook with a queue and room was looked up, none of the idle ones.
        let looked_up = conn
            .prepare_cached(WEBHOOK_QUEUE)
            .unwrap()
            .get_status(rusqlite::StatementStatus::Run);
        assert_eq!(looked_up, 1);
    }

    #[tokio::test]
    async fn a_claim_is_taken_again_only_once_it_has_run_out() {
        let dir = tempfile::tempdir().unwrap();
        let webhook = WebhookId::new();
        let conn = queued(dir.path(), &[(webhook, 4)]).await;
        assert_eq!(claim(&conn, 2, &[], 100).len(), 2);
        // Two are claimed for 10 s: the next claim takes the other two, then nothing.
        assert_eq!(claim(&conn, 100, &[], 100).len(), 2);
        assert!(claim(&conn, 100, &[], 100).is_empty());
        // One claim runs out (its node died): it is due again, as the next attempt.
        conn.execute(
            "UPDATE deliveries SET lease_until = 1 WHERE rowid = (SELECT MIN(rowid) FROM deliveries)",
            [],
        )
        .unwrap();
        let jobs = claim(&conn, 100, &[], 100);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].attempt_number, 2);
        // A webhook without room leaves even a claim that ran out where it is.
        conn.execute("UPDATE deliveries SET lease_until = 1", [])
            .unwrap();
        assert!(claim(&conn, 100, &[(webhook, 0)], 100).is_empty());
        assert_eq!(claim(&conn, 100, &[(webhook, 3)], 100).len(), 3);
    }
}
