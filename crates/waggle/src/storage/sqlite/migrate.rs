//! Runs the SQLite migrations (`migrations/sqlite/`, embedded by `sqlx::migrate!`) on
//! the store's own driver, keeping their record in `_sqlx_migrations` as sqlx did (the
//! same columns and checksums), so a database any earlier waggle migrated opens as it is.

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};

/// Runs the migrations not yet run, on a connection of their own with foreign keys off:
/// SQLite changes a table's constraints only by making the table anew, and dropping the
/// old one would otherwise cascade to every row referring to it (SQLite's own procedure
/// for schema changes). References are counted before and after, and a migration that
/// left more broken than it found fails the start. (Some may be there before: the group
/// commit does not check foreign keys, and a sync job may outlive its connector.)
pub(super) fn run(conn: &mut Connection) -> anyhow::Result<()> {
    run_before(conn, i64::MAX)
}

/// Runs the migrations before `version` only: as an older waggle left a database.
pub(super) fn run_before(conn: &mut Connection, version: i64) -> anyhow::Result<()> {
    let migrator = sqlx::migrate!("./migrations/sqlite");
    conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    // A new file gives the pages of removed rows back while open (`--retention` removes
    // old rows, then `Store::reclaim_space` shrinks the file); the mode can only be
    // chosen before the first table is made.
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
    if tables == 0 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations ( \
           version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
           installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
           success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
    )?;
    let dirty: Option<i64> = conn
        .query_row(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(version) = dirty {
        anyhow::bail!("migration {version} was left half done; restore a backup of the database");
    }
    let applied: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (version, checksum) in &applied {
        let known = migrator.iter().find(|m| m.version == *version);
        match known {
            None => anyhow::bail!(
                "the database was migrated by a newer waggle (migration {version} is unknown here)"
            ),
            Some(m) if m.checksum.as_ref() != checksum.as_slice() => {
                anyhow::bail!("migration {version} was changed after it ran on this database")
            }
            Some(_) => {}
        }
    }
    let pending: Vec<_> = migrator
        .iter()
        .filter(|m| m.version < version && !applied.iter().any(|(v, _)| *v == m.version))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    // Counted only when something is to run: it reads every reference of the database.
    let before = broken_references(conn)?;
    for m in pending {
        let started = std::time::Instant::now();
        let tx = conn.transaction()?;
        tx.execute_batch(&m.sql)
            .with_context(|| format!("running migration {} ({})", m.version, m.description))?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (?, ?, TRUE, ?, ?)",
            params![
                m.version,
                &*m.description,
                m.checksum.as_ref(),
                started.elapsed().as_nanos() as i64
            ],
        )?;
        tx.commit()?;
    }
    let after = broken_references(conn)?;
    if after > before {
        anyhow::bail!(
            "the migrations left {} rows referring to rows that do not exist",
            after - before
        );
    }
    Ok(())
}

fn broken_references(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
        row.get(0)
    })
}
