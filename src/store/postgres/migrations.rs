//! The PostgreSQL schema's migrations: numbered SQL files under `migrations/postgres/`,
//! embedded, applied at start in the configured schema and recorded in its
//! `schema_migrations` table.
//!
//! Several daemons may start together on one database: each takes a session advisory lock
//! (one per schema) on a connection of its own before it reads the version, so the
//! migrations run once, one at a time, and the others find them applied. Each migration and
//! its version row commit in one transaction (PostgreSQL's DDL is transactional): a failed
//! migration leaves the schema at the version before it.

use tokio_postgres::Client;

use crate::store::StoreError;

/// (version, name, SQL), in order; the version is the file's number.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "0001_init", include_str!("../../../migrations/postgres/0001_init.sql")),
    (2, "0002_filter_functions", include_str!("../../../migrations/postgres/0002_filter_functions.sql")),
    (3, "0003_open_rows_by_resource", include_str!("../../../migrations/postgres/0003_open_rows_by_resource.sql")),
    (4, "0004_sharded_counts", include_str!("../../../migrations/postgres/0004_sharded_counts.sql")),
    (5, "0005_cluster", include_str!("../../../migrations/postgres/0005_cluster.sql")),
    (6, "0006_cluster_ops", include_str!("../../../migrations/postgres/0006_cluster_ops.sql")),
];

/// The schema version this build migrates to.
pub fn expected() -> u64 {
    MIGRATIONS.len() as u64
}

/// The advisory lock key for migrating `schema`: FNV-1a of a fixed prefix and the schema
/// name, so daemons on different schemas of one database do not wait for each other.
pub(super) fn lock_key(schema: &str) -> i64 {
    advisory_key("scimsync migrations:", schema)
}

/// An advisory lock key for one purpose (`prefix`) on one schema: FNV-1a of both.
pub(super) fn advisory_key(prefix: &str, schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in prefix.bytes().chain(schema.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Create `schema` when missing and bring it to the latest version. `schema` must be a plain
/// identifier (checked by the caller: it is written into DDL).
pub async fn apply(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    let key = lock_key(schema);
    client.execute("SELECT pg_advisory_lock($1)", &[&key]).await?;
    let result = apply_locked(client, schema).await;
    // The lock also goes with the connection, which the caller drops after this.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&key]).await;
    result?;
    unlocked?;
    Ok(())
}

async fn apply_locked(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS \"{schema}\".schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TEXT NOT NULL
             );"
        ))
        .await?;
    let current = current(client, schema).await?;
    if current > expected() {
        return Err(StoreError::Internal(format!(
            "the database schema {schema:?} is at version {current}, newer than this build knows ({}): \
             run the newer scimsync, or restore a backup",
            expected()
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v as u64 > current) {
        let tx = client.transaction().await?;
        // search_path names the schema (set per connection), so the files use plain names.
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Internal(format!("PostgreSQL migration {name} failed: {}", super::describe(&e)))
        })?;
        tx.execute(
            &format!("INSERT INTO \"{schema}\".schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)"),
            &[version, name, &crate::model::now()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(schema, migration = name, "PostgreSQL migration applied");
    }
    Ok(())
}

/// The version recorded in `schema` (0 when none is).
pub async fn current(client: &Client, schema: &str) -> Result<u64, StoreError> {
    let row =
        client.query_one(&format!("SELECT coalesce(max(version), 0) FROM \"{schema}\".schema_migrations"), &[]).await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered_from_one_without_gaps() {
        for (i, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1);
            assert!(name.starts_with(&format!("{version:04}_")), "{name}");
        }
    }

    #[test]
    fn schemas_lock_apart() {
        assert_ne!(lock_key("scimsync"), lock_key("tenant_a"));
        assert_eq!(lock_key("scimsync"), lock_key("scimsync"));
    }
}
