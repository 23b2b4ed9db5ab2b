//! Test set-up shared by the PostgreSQL store's tests: options for a database of a
//! throw-away cluster, and a PostgreSQL store opened beside a SQLite one for the
//! differential tests.

use std::time::Duration;

use testpg::TestPg;
use tokio_util::sync::CancellationToken;

use super::{OpenProgress, PgOptions, PgStore};
use crate::store::{Store, StoreOptions};

/// Options for `database` of `pg`, schema `scimsync`, a pool of `pool_size`.
pub fn options(pg: &TestPg, database: &str, pool_size: usize) -> PgOptions {
    PgOptions {
        url: pg.url_without_password(database),
        password: Some(testpg::PASSWORD.into()),
        pool_size,
        connect_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(60),
        ca_file: None,
        schema: "scimsync".into(),
    }
}

/// A PostgreSQL store on `database` of `pg`.
pub async fn open_pg(pg: &TestPg, database: &str, pool_size: usize) -> PgStore {
    PgStore::open(&options(pg, database, pool_size), &OpenProgress::default(), &CancellationToken::new())
        .await
        .expect("open the PostgreSQL store")
}

/// A SQLite store in a temp dir (kept alive by the returned guard), the reference the
/// differential tests compare PostgreSQL with.
pub fn open_sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreOptions {
        data_dir: dir.path().to_path_buf(),
        busy_timeout_seconds: 5,
        readers: 2,
        max_batch: 64,
    })
    .unwrap();
    (dir, store)
}
