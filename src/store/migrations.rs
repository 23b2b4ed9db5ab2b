//! Schema migrations: numbered SQL files under `migrations/`, applied in order by
//! `rusqlite_migration`, which records the version in `PRAGMA user_version`.

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

use super::StoreError;

const MIGRATIONS: &[M<'static>] =
    &[M::up(include_str!("../../migrations/0001_init.sql")), M::up(include_str!("../../migrations/0002_delivery.sql"))];

pub fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    Migrations::from_slice(MIGRATIONS)
        .to_latest(conn)
        .map_err(|e| StoreError::Internal(format!("database migration failed: {e}")))
}

/// The schema version recorded in the database (`PRAGMA user_version`).
pub fn current(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?.max(0) as u64)
}

/// The schema version this build migrates to.
pub fn expected() -> u64 {
    MIGRATIONS.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid_and_apply() {
        assert!(Migrations::from_slice(MIGRATIONS).validate().is_ok());
        let mut c = Connection::open_in_memory().unwrap();
        apply(&mut c).unwrap();
        // Applying again is a no-op, as at every restart.
        apply(&mut c).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }
}
