//! The PostgreSQL store against a throw-away cluster (testpg): one cluster per test, one
//! database each.

use std::time::Duration;

use testpg::TestPg;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::model::ResourceKind;
use crate::store::face::AdminStore;

fn options(pg: &TestPg, database: &str) -> PgOptions {
    PgOptions {
        url: pg.url_without_password(database),
        password: Some(testpg::PASSWORD.into()),
        pool_size: 4,
        connect_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(30),
        ca_file: None,
        schema: "scimsync".into(),
    }
}

async fn open(opts: &PgOptions) -> Result<PgStore, StoreError> {
    PgStore::open(opts, &OpenProgress::default(), &CancellationToken::new()).await
}

/// Turns a hang into a failure with a message (not a speed check: the bound is generous).
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f).await.unwrap_or_else(|_| panic!("{what}: no answer"))
}

#[tokio::test]
async fn migrations_apply_once_and_every_session_setting_reads_back() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    // The server's default for this database is asynchronous commit: the store's sessions
    // must turn it back on themselves, or a 2xx could be lost with the server.
    pg.psql("postgres", &format!("ALTER DATABASE {db} SET synchronous_commit = off")).unwrap();
    let store = bounded("open", open(&options(&pg, &db))).await.unwrap();
    assert_eq!(
        AdminStore::schema_version(&store).await.unwrap(),
        (PgStore::expected_schema_version(), PgStore::expected_schema_version())
    );
    let settings = AdminStore::settings(&store).await.unwrap();
    // Reading the settings refreshed the size: the schema's tables and indexes take pages.
    assert!(store.size_bytes() > 0, "the store's size was not read");
    let get = |name: &str| settings.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap();
    assert_eq!(get("synchronous_commit"), "on", "{settings:?}");
    assert_eq!(get("search_path"), "scimsync", "{settings:?}");
    assert_eq!(get("statement_timeout"), "30s", "{settings:?}");
    assert_eq!(get("application_name"), "scimsync", "{settings:?}");
    assert_eq!(get("idle_in_transaction_session_timeout"), "5s", "{settings:?}");

    // The tables are in the configured schema, not in public.
    let tables = pg
        .psql(&db, "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'scimsync'")
        .unwrap();
    for t in ["resources", "outbox", "audit_log", "rank_shards", "schema_migrations", "tokens"] {
        assert!(tables.split(',').any(|x| x == t), "{t} missing: {tables}");
    }
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").unwrap(),
        "0"
    );

    // The counting triggers work as SQLite's do.
    pg.psql(
        &db,
        "INSERT INTO scimsync.resources (id, kind, version, created, last_modified, data)
         SELECT 'u' || i, 'User', 1, 't', 't', '{}' FROM generate_series(1, 1500) i;
         DELETE FROM scimsync.resources WHERE id = 'u7'",
    )
    .unwrap();
    assert_eq!(pg.psql(&db, "SELECT sum(n) FROM scimsync.rank_shards WHERE kind = 'User'").unwrap(), "1499");
    // Seqs 1-1500 in buckets of 2048 by 8 shards: u7 (seq 7) was in shard 7.
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(n::text, ',' ORDER BY bucket, shard) FROM scimsync.rank_shards").unwrap(),
        "187,188,188,188,188,187,187,186"
    );

    // Opening again (a restart) applies nothing.
    drop(store);
    let store = bounded("reopen", open(&options(&pg, &db))).await.unwrap();
    assert_eq!(
        AdminStore::schema_version(&store).await.unwrap(),
        (PgStore::expected_schema_version(), PgStore::expected_schema_version())
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM scimsync.schema_migrations").unwrap(),
        PgStore::expected_schema_version().to_string()
    );
}

/// Several daemons starting together on one new schema: all open, the migrations ran once
/// (without the advisory lock, the losers fail on "relation already exists"). Another schema
/// in the same database is a store of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_opens_on_one_schema_all_succeed_and_migrate_once() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let opts = options(&pg, &db);
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let opts = opts.clone();
            tokio::spawn(async move { open(&opts).await })
        })
        .collect();
    for o in opens {
        let store = bounded("racing open", o).await.unwrap().expect("every racing open succeeds");
        assert_eq!(
            AdminStore::schema_version(&store).await.unwrap(),
            (PgStore::expected_schema_version(), PgStore::expected_schema_version())
        );
    }
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(version::text, ',' ORDER BY version) FROM scimsync.schema_migrations").unwrap(),
        (1..=PgStore::expected_schema_version()).map(|v| v.to_string()).collect::<Vec<_>>().join(",")
    );

    let other = PgOptions { schema: "tenant_b".into(), ..opts };
    let store = bounded("open tenant_b", open(&other)).await.unwrap();
    assert_eq!(store.read_settings().await.unwrap()[1], ("search_path".to_string(), "tenant_b".to_string()));
    pg.psql(&db, "INSERT INTO tenant_b.tokens (id, label, hash, created_at) VALUES ('t', 'l', '\\x00', 'now')")
        .unwrap();
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM scimsync.tokens").unwrap(), "0");
}

/// A daemon that waits for another's migrations longer than `statement_timeout` still
/// opens: the migration connection runs without the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_another_daemons_migrations_outlasts_the_statement_timeout() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let key = super::migrations::lock_key("scimsync");
    // Another daemon holds the migration lock for 3 s.
    let mut holder = std::process::Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", testpg::USER, "-d", &db, "-p", &pg.port().to_string()])
        .args(["-c", &format!("SELECT pg_advisory_lock({key})"), "-c", "SELECT pg_sleep(3)"])
        .env("PGPASSWORD", testpg::PASSWORD)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut polls = 0;
    while pg.psql(&db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted").unwrap() != "1" {
        polls += 1;
        assert!(polls < 600, "the holder never took the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opts = PgOptions { statement_timeout: Duration::from_secs(1), ..options(&pg, &db) };
    let store = bounded("open behind the lock", open(&opts)).await.expect("opens once the lock is free");
    let (have, want) = store.schema_version().await.unwrap();
    assert_eq!(have, want);
    // Requests still run under the timeout.
    assert_eq!(store.read_settings().await.unwrap()[2], ("statement_timeout".to_string(), "1s".to_string()));
    holder.wait().unwrap();
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_with_a_clear_error() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let opts = PgOptions { password: Some("wrong".into()), ..options(&pg, &db) };
    let progress = OpenProgress::default();
    let err = bounded("open with a wrong password", PgStore::open(&opts, &progress, &CancellationToken::new()))
        .await
        .err()
        .expect("a wrong password must fail");
    let text = err.to_string();
    assert!(text.contains("password authentication failed for user \"postgres\""), "{text}");
    assert!(text.contains("store.postgres.password"), "the message says what to check: {text}");
    assert!(!text.contains("wrong"), "the password is not in the message: {text}");
    // Not retried: another attempt cannot fix it.
    assert_eq!(progress.snapshot().failed_attempts, 0);
    // No such database: the same.
    let err = bounded("open a missing database", open(&options(&pg, "nosuchdb"))).await.err().unwrap().to_string();
    assert!(err.contains("database \"nosuchdb\" does not exist") && err.contains("create the database"), "{err}");
}

/// A database that is down at start is tried again (the progress says so, for /readyz)
/// until it comes up, and then the store opens; cancelling the wait ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_at_start_is_retried_until_it_answers() {
    let mut pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    pg.stop();
    let progress = OpenProgress::default();
    let opening = {
        let (opts, progress) = (options(&pg, &db), progress.clone());
        tokio::spawn(async move { PgStore::open(&opts, &progress, &CancellationToken::new()).await })
    };
    let mut polls = 0;
    while progress.snapshot().failed_attempts < 2 {
        polls += 1;
        assert!(polls < 1200, "no failed attempts recorded: {:?}", progress.snapshot());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = progress.snapshot();
    assert!(!state.ready && !opening.is_finished(), "{state:?}");
    assert!(state.last_error.as_deref().unwrap_or_default().contains("error connecting to server"), "{state:?}");
    tokio::task::block_in_place(|| pg.restart()).unwrap();
    let store = bounded("open after restart", opening).await.unwrap().expect("opens once the database is up");
    assert!(progress.snapshot().ready);
    assert_eq!(
        AdminStore::schema_version(&store).await.unwrap(),
        (PgStore::expected_schema_version(), PgStore::expected_schema_version())
    );

    // Down again, and the daemon is told to stop while it waits.
    pg.stop();
    let cancel = CancellationToken::new();
    let progress = OpenProgress::default();
    let opening = {
        let (opts, progress, cancel) = (options(&pg, &db), progress.clone(), cancel.clone());
        tokio::spawn(async move { PgStore::open(&opts, &progress, &cancel).await })
    };
    let mut polls = 0;
    while progress.snapshot().failed_attempts < 1 {
        polls += 1;
        assert!(polls < 1200, "no failed attempt recorded: {:?}", progress.snapshot());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    assert!(matches!(bounded("cancelled open", opening).await.unwrap(), Err(StoreError::Closed)));
}

/// A private CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, cert PEM, key PEM).
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "scimsync test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// TLS with `sslmode=require`: the server's certificate is checked against `ca_file` (the
/// session is encrypted: pg_stat_ssl says so); without the CA it is refused, not trusted.
#[tokio::test]
async fn tls_checks_the_server_certificate_against_the_ca_file() {
    let (ca, cert, key) = private_ca();
    let pg = TestPg::start_with_tls(&cert, &key).unwrap();
    let db = pg.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let url = format!("{}?sslmode=require", pg.url_without_password(&db));
    let opts = PgOptions { url: url.clone(), ca_file: Some(ca_file), ..options(&pg, &db) };
    let store = bounded("open over TLS", open(&opts)).await.unwrap();
    let conn = store.conn().await.unwrap();
    let ssl: bool =
        conn.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(ssl, "the session is not encrypted");

    // Without the CA the certificate is unknown: refused on every attempt (retried, as a
    // certificate can be fixed on the server while the daemon waits).
    let opts = PgOptions { url, ..options(&pg, &db) };
    let progress = OpenProgress::default();
    let cancel = CancellationToken::new();
    let opening = {
        let (progress, cancel) = (progress.clone(), cancel.clone());
        tokio::spawn(async move { PgStore::open(&opts, &progress, &cancel).await })
    };
    let mut polls = 0;
    while progress.snapshot().failed_attempts < 1 {
        polls += 1;
        assert!(polls < 1200, "no failed attempt recorded: {:?}", progress.snapshot());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = progress.snapshot();
    assert!(!state.ready, "{state:?}");
    let error = state.last_error.unwrap_or_default();
    assert!(error.contains("TLS") && error.contains("UnknownIssuer"), "{error}");
    cancel.cancel();
    assert!(matches!(bounded("cancelled open", opening).await.unwrap(), Err(StoreError::Closed)));
    // A CA file that is not PEM is a clear error.
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    let opts = PgOptions { ca_file: Some(dir.path().join("bad.pem")), ..options(&pg, &db) };
    let err = bounded("open", open(&opts)).await.err().unwrap().to_string();
    assert!(err.contains("holds no certificate"), "{err}");
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    drop(bounded("open", open(&options(&pg, &db))).await.unwrap());
    pg.psql(&db, "INSERT INTO scimsync.schema_migrations VALUES (999, '0999_future', 'now')").unwrap();
    let err = bounded("open", open(&options(&pg, &db))).await.err().unwrap().to_string();
    assert!(err.contains("version 999, newer than this build"), "{err}");
}

#[test]
fn the_schema_name_is_checked_before_it_reaches_sql() {
    for bad in ["", "a;drop", "A", "a b", "a\"b", "1a"] {
        assert!(check_schema_name(bad).is_err(), "{bad:?}");
    }
    check_schema_name("scimsync_2").unwrap();
}

#[test]
fn session_options_are_added_to_the_urls_own() {
    let opts = PgOptions {
        url: "postgres://u@h/db?options=-c%20work_mem%3D8MB&application_name=mine".into(),
        password: None,
        pool_size: 1,
        connect_timeout: Duration::from_secs(3),
        statement_timeout: Duration::from_millis(2500),
        ca_file: None,
        schema: "s".into(),
    };
    let c = connection_config(&opts).unwrap();
    assert_eq!(
        c.get_options(),
        Some(
            "-c work_mem=8MB -c synchronous_commit=on -c statement_timeout=2500 -c search_path=s \
             -c idle_in_transaction_session_timeout=5000"
        )
    );
    assert_eq!(c.get_application_name(), Some("mine"));
    assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
}

/// A database that goes away answers `Unavailable` (the API's 503, never a 500 and never an
/// acknowledgement), and the store recovers by itself once it is back: no restart of ours.
#[tokio::test]
async fn a_database_that_goes_away_is_unavailable_then_recovers_by_itself() {
    use crate::store::face::TokenStore;
    let mut pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let store = bounded("open", open(&options(&pg, &db))).await.unwrap();
    let audit = || crate::store::NewAudit::new("test", "token create", "token");
    bounded("a write", store.create("before", audit())).await.unwrap();

    pg.stop();
    let write = bounded("a write while down", store.create("during", audit())).await;
    assert!(matches!(write, Err(StoreError::Unavailable(_))), "{write:?}");
    let read = bounded("a read while down", TokenStore::list(&store)).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");

    pg.restart().unwrap();
    // Connections the restart broke are replaced as they are found broken: within a few
    // calls (one per pooled connection at most) the store answers again.
    let mut answered = None;
    for _ in 0..20 {
        match bounded("a write after restart", store.create("after", audit())).await {
            Ok(t) => {
                answered = Some(t);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("after the restart: {e}"),
        }
    }
    assert!(answered.is_some(), "the store did not recover after the database came back");
    let labels: Vec<String> = TokenStore::list(&store).await.unwrap().into_iter().map(|t| t.label).collect();
    assert_eq!(labels, ["before", "after"], "nothing written while down, everything acknowledged kept");
}

/// Filters on indexed attributes are served from their indexes (not a scan of every
/// resource), also in a database whose default collation is not C: the columns are
/// `COLLATE "C"`, as the translated comparisons are.
#[tokio::test]
async fn indexed_filters_use_their_indexes() {
    use crate::model::query::{AttrInfo, AttrPath, AttrType, CompareOp, Filter, Literal};
    let pg = TestPg::start().unwrap();
    pg.psql("postgres", "CREATE DATABASE icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'").unwrap();
    let store = bounded("open", open(&options(&pg, "icu"))).await.unwrap();
    let path = |name: &str, sub: Option<&str>, case_exact: bool, multi_valued: bool| AttrPath {
        urn: None,
        name: name.into(),
        sub: sub.map(str::to_string),
        info: AttrInfo { resolved: true, ty: AttrType::String, case_exact, multi_valued },
    };
    let cmp = |p: AttrPath, op| Filter::Compare(p, op, Literal::String("Élodie@X.example".into()));
    let cases = [
        (cmp(path("userName", None, false, false), CompareOp::Eq), "user_name_ci"),
        (cmp(path("userName", None, false, false), CompareOp::Ge), "user_name_ci"),
        (cmp(path("displayName", None, false, false), CompareOp::Eq), "display_name_ci"),
        (cmp(path("externalId", None, true, false), CompareOp::Eq), "external_id"),
        (cmp(path("emails", Some("value"), false, true), CompareOp::Eq), "value_ci"),
        (
            Filter::ValuePath(
                AttrPath {
                    info: AttrInfo { ty: AttrType::Complex, ..path("emails", None, false, true).info },
                    ..path("emails", None, false, true)
                },
                Box::new(cmp(path("value", None, false, false), CompareOp::Eq)),
            ),
            "value_ci",
        ),
    ];
    let conn = store.conn().await.unwrap();
    // Planned as for a large directory: with sequential scans priced out, a filter that can
    // use an index does.
    conn.batch_execute("SET enable_seqscan = off").await.unwrap();
    // `column`: the indexed column the index condition must name (an index used only for
    // `kind` would still scan every user).
    for (f, column) in cases {
        let sql = filter_sql::translate(ResourceKind::User, &f).unwrap();
        let text =
            filter_sql::number(&format!("EXPLAIN SELECT r.id FROM resources r WHERE r.kind = 'User' AND {}", sql.text));
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            sql.params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let plan: Vec<String> = conn.query(&text, &params).await.unwrap().iter().map(|r| r.get(0)).collect();
        let cond = plan.iter().any(|l| l.contains("Index Cond") && l.contains(column));
        assert!(cond, "{f:?} is not looked up by {column} in an index:\n{}", plan.join("\n"));
    }
}
