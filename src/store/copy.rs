//! Moving over: copy an embedded SQLite store into an empty PostgreSQL schema (issue 14,
//! `scimsync store copy`), leaving the SQLite file untouched.
//!
//! The copy reads one SQLite snapshot (a read transaction on a read-only connection) and
//! writes everything in one PostgreSQL transaction, table by table in the order their foreign
//! keys need, keeping every id (resources' `seq`, outbox ids: the idempotency keys the app has
//! seen). Derived tables (the counts in `rank_shards`) are rebuilt by PostgreSQL's
//! triggers as the resources go in; the identity sequences are moved past the copied ids.
//! Then it checks, in the same transaction, that every table holds as many rows as the
//! snapshot and the outbox as many rows in each state, and commits only if so.
//!
//! Values cross as text and are cast to each PostgreSQL column's type in SQL
//! (`$n::text::jsonb`), so SQLite's flexible typing (an integer in a TEXT column) cannot fail
//! a bind. The daemon must be stopped: changes accepted after the snapshot would not be in
//! the copy.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::postgres::{OpenProgress, PgOptions, PgStore};
use super::types::StoreError;

/// Copied in this order (parents before children); `deletion_guard` is updated in place
/// (PostgreSQL's migration made its one row); derived and bookkeeping tables are not copied.
const TABLES: &[&str] = &[
    "resources",
    "resource_emails",
    "group_members",
    "outbox",
    "outbox_attempts",
    "tokens",
    "id_map",
    "sync_runs",
    "drift_items",
    "audit_log",
    "deleted_accounts",
    "delivery_target",
];

/// Identity columns whose sequences must start after the copied ids.
const IDENTITIES: &[(&str, &str)] =
    &[("resources", "seq"), ("outbox", "id"), ("outbox_attempts", "id"), ("sync_runs", "id"), ("audit_log", "id")];

/// Rows per INSERT statement.
const BATCH: usize = 200;

/// What a finished copy holds, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// (table, rows), in copy order.
    pub tables: Vec<(String, u64)>,
    /// (outbox state, rows).
    pub outbox: Vec<(String, u64)>,
}

/// Copy the SQLite store in `data_dir` into the empty schema `pg.schema` (created and
/// migrated when missing). Refuses a schema that holds resources, changes, tokens or audit
/// records already, and a SQLite store of another schema version than this build's.
pub async fn sqlite_to_postgres(data_dir: &Path, pg: &PgOptions) -> Result<CopyReport, StoreError> {
    let db = super::Store::database_path(data_dir);
    if !db.exists() {
        return Err(StoreError::Internal(format!("no SQLite store at {}", db.display())));
    }
    let src = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    src.busy_timeout(std::time::Duration::from_secs(30))?;
    let (have, want) = (super::sqlite::schema_version(&src)?, super::sqlite::expected_schema_version());
    if have != want {
        return Err(StoreError::Internal(format!(
            "the SQLite store is at schema version {have}, this build at {want}: start `scimsync serve` of this \
             version on it once (it migrates), stop it, then copy"
        )));
    }
    let store = PgStore::open(pg, &OpenProgress::default(), &tokio_util::sync::CancellationToken::new()).await?;
    let mut conn = store.client().await?;
    let tx = conn.transaction().await?;
    // Reading a big SQLite table between two statements may take longer than the daemon's
    // idle-in-transaction bound; this session is the only writer and is watched by its user.
    tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = 0").await?;
    for t in ["resources", "outbox", "tokens", "audit_log", "sync_runs"] {
        let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await?.get(0);
        if n > 0 {
            return Err(StoreError::Internal(format!(
                "the PostgreSQL schema {:?} is not empty ({t} has {n} rows): copy into a new schema \
                 (store.postgres.schema) or an empty database",
                pg.schema
            )));
        }
    }
    // One snapshot of SQLite for everything read below.
    src.execute_batch("BEGIN")?;
    let mut tables = Vec::new();
    for table in TABLES {
        let n = copy_table(&src, &tx, table).await?;
        tables.push((table.to_string(), n));
    }
    let guard: (Option<String>, Option<i64>, i64) =
        src.query_row("SELECT tripped_at, trip_count, reset_after_id FROM deletion_guard WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    tx.execute(
        "UPDATE deletion_guard SET tripped_at = $1, trip_count = $2, reset_after_id = $3 WHERE id = 1",
        &[&guard.0, &guard.1, &guard.2],
    )
    .await?;
    for (table, column) in IDENTITIES {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), coalesce(max({column}), 0) + 1, false) \
                 FROM {table}"
            ),
            &[],
        )
        .await?;
    }
    // Check before committing: every table as many rows as the snapshot, the outbox as many
    // in each state, the rebuilt counts as many as there are resources of each kind.
    for (table, n) in &tables {
        let have: i64 = tx.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0);
        if have as u64 != *n {
            return Err(StoreError::Internal(format!("copy check: {table} has {have} rows, the SQLite store {n}")));
        }
    }
    let outbox: Vec<(String, u64)> = {
        let mut st = src.prepare("SELECT state, count(*) FROM outbox GROUP BY state ORDER BY state")?;
        st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?.collect::<Result<_, _>>()?
    };
    let copied: Vec<(String, u64)> = tx
        .query("SELECT state, count(*) FROM outbox GROUP BY state ORDER BY state", &[])
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect();
    if copied != outbox {
        return Err(StoreError::Internal(format!("copy check: outbox states {copied:?}, the SQLite store {outbox:?}")));
    }
    let counts: Vec<(String, i64, i64)> = tx
        .query(
            "SELECT c.kind, c.n, (SELECT count(*) FROM resources r WHERE r.kind = c.kind)
             FROM (SELECT kind, sum(n)::bigint AS n FROM rank_shards GROUP BY kind) c",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    if let Some((kind, n, real)) = counts.iter().find(|(_, n, real)| n != real) {
        return Err(StoreError::Internal(format!("copy check: {kind} counted {n}, {real} copied")));
    }
    src.execute_batch("COMMIT")?;
    tx.commit().await?;
    Ok(CopyReport { tables, outbox })
}

/// Copy one table's rows (all its columns, which PostgreSQL's table must have too) in
/// batches; returns how many.
async fn copy_table(src: &Connection, tx: &deadpool_postgres::Transaction<'_>, table: &str) -> Result<u64, StoreError> {
    let columns: Vec<String> = {
        let mut st = src.prepare(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))?;
        st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    let mut types = Vec::with_capacity(columns.len());
    for c in &columns {
        let ty: Option<String> = tx
            .query_opt(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                 WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
                &[&table, c],
            )
            .await?
            .map(|r| r.get(0));
        let Some(ty) = ty else {
            return Err(StoreError::Internal(format!("the PostgreSQL table {table} has no column {c}")));
        };
        types.push(ty);
    }
    let list = columns.join(", ");
    // By the first column (the key: resources in `seq` order, as the rank triggers expect).
    let mut st = src.prepare(&format!("SELECT {list} FROM {table} ORDER BY 1"))?;
    let mut rows = st.query([])?;
    let mut batch: Vec<Option<String>> = Vec::new();
    let mut total = 0u64;
    let width = columns.len();
    loop {
        let row = rows.next()?;
        if let Some(r) = row {
            for i in 0..width {
                batch.push(text(r.get_ref(i)?));
            }
        }
        let full = batch.len() >= BATCH * width;
        if (row.is_none() || full) && !batch.is_empty() {
            let n = batch.len() / width;
            let values: Vec<String> = (0..n)
                .map(|row| {
                    let cells: Vec<String> =
                        (0..width).map(|i| format!("${}::text::{}", row * width + i + 1, types[i])).collect();
                    format!("({})", cells.join(", "))
                })
                .collect();
            let sql = format!("INSERT INTO {table} ({list}) VALUES {}", values.join(", "));
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                batch.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            tx.execute(&sql, &params).await?;
            total += n as u64;
            batch.clear();
        }
        if row.is_none() {
            return Ok(total);
        }
    }
}

/// A SQLite value as the text PostgreSQL casts to the column's type (`bytea` from `\x` hex).
fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Some(format!("\\x{}", hex::encode(b))),
    }
}
