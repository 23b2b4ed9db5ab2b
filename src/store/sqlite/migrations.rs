//! Schema migrations: numbered SQL files under `migrations/`, applied in order by
//! `rusqlite_migration`, which records the version in `PRAGMA user_version`.

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

use super::StoreError;

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("../../../migrations/0001_init.sql")),
    M::up(include_str!("../../../migrations/0002_delivery.sql")),
    M::up(include_str!("../../../migrations/0003_deletion_guard.sql")),
    M::up(include_str!("../../../migrations/0004_reconcile.sql")),
    M::up(include_str!("../../../migrations/0005_audit.sql")),
    M::up(include_str!("../../../migrations/0006_deleted_accounts.sql")),
    M::up(include_str!("../../../migrations/0007_audit_index.sql")),
    M::up(include_str!("../../../migrations/0008_superseded_and_target.sql")),
    M::up(include_str!("../../../migrations/0009_list_counts.sql")),
    M::up(include_str!("../../../migrations/0010_open_rows_by_resource.sql")),
];

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

    /// Every outbox row's id and state, in id order.
    fn outbox_states(c: &Connection) -> Vec<(i64, String)> {
        c.prepare("SELECT id, state FROM outbox ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

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

    /// 0003 rebuilds the outbox (to allow `held`): rows, attempts and ids written under
    /// 0001+0002 survive it, with foreign keys on as in production.
    #[test]
    fn deletion_guard_migration_keeps_the_outbox() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        Migrations::from_slice(&MIGRATIONS[..2]).to_latest(&mut c).unwrap();
        c.execute_batch(
            "INSERT INTO outbox (id, resource_kind, resource_id, op, version, payload, state, attempts, created_at, done_at)
                 VALUES (7, 'User', 'u1', 'create', 1, '{}', 'done', 1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z');
             INSERT INTO outbox (id, resource_kind, resource_id, op, version, payload, state, created_at)
                 VALUES (8, 'User', 'u1', 'delete', 2, '{}', 'dead', '2026-01-01T00:00:02.000Z');
             INSERT INTO outbox_attempts (outbox_id, started_at, finished_at, outcome, detail)
                 VALUES (7, 'a', 'b', 'success', NULL), (8, 'c', 'd', 'permanent', '400');
             INSERT INTO id_map VALUES ('u1', 'User', 'app-1', 'x');",
        )
        .unwrap();
        apply(&mut c).unwrap();
        let rows = outbox_states(&c);
        assert_eq!(rows, vec![(7, "done".to_string()), (8, "dead".to_string())]);
        let attempts: i64 = c.query_row("SELECT count(*) FROM outbox_attempts", [], |r| r.get(0)).unwrap();
        assert_eq!(attempts, 2, "attempts survive the rebuild");
        let fk: i64 = c.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
        assert_eq!(fk, 0);
        c.execute("UPDATE outbox SET state = 'held' WHERE id = 8", []).unwrap();
        // The cascade still works on the rebuilt tables.
        c.execute("DELETE FROM outbox WHERE id = 8", []).unwrap();
        let attempts: i64 = c.query_row("SELECT count(*) FROM outbox_attempts", [], |r| r.get(0)).unwrap();
        assert_eq!(attempts, 1);
        assert!(c.execute("UPDATE outbox SET state = 'bogus' WHERE id = 7", []).is_err(), "the CHECK is kept");
    }

    /// 0008 rebuilds the attempts (to allow `superseded`): attempts written under 0007
    /// survive with their ids, foreign keys hold, and the cascade from the outbox still works.
    #[test]
    fn superseded_migration_keeps_the_attempts() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        Migrations::from_slice(&MIGRATIONS[..7]).to_latest(&mut c).unwrap();
        c.execute_batch(
            "INSERT INTO outbox (id, resource_kind, resource_id, op, version, payload, state, created_at)
                 VALUES (8, 'User', 'u1', 'create', 1, '{}', 'dead', '2026-01-01T00:00:02.000Z');
             INSERT INTO outbox_attempts (id, outbox_id, started_at, finished_at, outcome, detail)
                 VALUES (41, 8, 'c', 'd', 'permanent', '400');",
        )
        .unwrap();
        apply(&mut c).unwrap();
        let a: (i64, String) =
            c.query_row("SELECT id, outcome FROM outbox_attempts", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!(a, (41, "permanent".to_string()));
        c.execute("INSERT INTO outbox_attempts (outbox_id, started_at, finished_at, outcome) VALUES (8, 'e', 'e', 'superseded')", [])
            .unwrap();
        assert!(
            c.execute("INSERT INTO outbox_attempts (outbox_id, started_at, finished_at, outcome) VALUES (8, 'e', 'e', 'bogus')", [])
                .is_err(),
            "the CHECK is kept"
        );
        let fk: i64 = c.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).unwrap();
        assert_eq!(fk, 0);
        c.execute("DELETE FROM outbox WHERE id = 8", []).unwrap();
        let left: i64 = c.query_row("SELECT count(*) FROM outbox_attempts", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0, "the cascade works on the rebuilt table");
    }

    /// 0010 swaps the outbox's resource index for one of undelivered rows: every row stays,
    /// and the new index holds the open ones only.
    #[test]
    fn open_rows_index_migration_keeps_the_outbox() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        Migrations::from_slice(&MIGRATIONS[..9]).to_latest(&mut c).unwrap();
        c.execute_batch(
            "INSERT INTO outbox (id, resource_kind, resource_id, op, version, payload, state, created_at)
                 VALUES (1, 'User', 'u1', 'create', 1, '{}', 'done', '2026-01-01T00:00:00.000Z'),
                        (2, 'User', 'u1', 'update', 2, '{}', 'pending', '2026-01-01T00:00:01.000Z'),
                        (3, 'User', 'u2', 'create', 1, '{}', 'dead', '2026-01-01T00:00:02.000Z');
             INSERT INTO outbox_attempts (outbox_id, started_at, finished_at, outcome) VALUES (1, 'a', 'b', 'success');",
        )
        .unwrap();
        apply(&mut c).unwrap();
        let rows = outbox_states(&c);
        assert_eq!(rows, vec![(1, "done".into()), (2, "pending".into()), (3, "dead".into())]);
        let attempts: i64 = c.query_row("SELECT count(*) FROM outbox_attempts", [], |r| r.get(0)).unwrap();
        assert_eq!(attempts, 1);
        let indexed: i64 = c
            .query_row(
                "SELECT count(*) FROM outbox INDEXED BY outbox_open_by_resource WHERE state != 'done'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 2);
        let old: i64 =
            c.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'outbox_resource'", [], |r| r.get(0)).unwrap();
        assert_eq!(old, 0, "the index of every row is gone");
    }
}
