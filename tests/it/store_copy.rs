//! `scimsync store copy` (issue 14, moving over): a SQLite store with users, a group, queued
//! changes, a token and audit records goes into an empty PostgreSQL schema whole (every id
//! kept, every table's count and the outbox's states checked), the SQLite file is left as it
//! was, and a second copy into the now non-empty schema is refused without writing.

use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_copies_whole_into_an_empty_postgres_schema_and_is_left_untouched() {
    // The source is a SQLite store whichever backend the suite runs on.
    let mut d = Daemon::start_with_env("", &[("SCIMSYNC_STORE__BACKEND", "sqlite")]);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(d.create_user(&format!("copy{i}@example.com")).await);
    }
    let group = d.create_group("Copied", &[&ids[0], &ids[1]]).await;
    let r = d
        .patch(
            &format!("/Users/{}", ids[2]),
            serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                               "Operations": [{"op": "replace", "path": "title", "value": "Engineer"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = d.delete(&format!("/Users/{}", ids[3])).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    d.stop();
    let db = d.data_dir().join("scimsync.db");
    let digest = || hex::encode(Sha256::digest(std::fs::read(&db).unwrap()));
    let before = digest();

    let pg = testpg::TestPg::start().unwrap();
    let database = pg.create_database().unwrap();
    let copy = |schema: &str| {
        d.cli_command(&["store", "copy", "--to", &pg.url_without_password(&database)])
            .env("SCIMSYNC_STORE__POSTGRES__PASSWORD", testpg::PASSWORD)
            .env("SCIMSYNC_STORE__POSTGRES__SCHEMA", schema)
            .output()
            .unwrap()
    };
    let out = copy("copied");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("counts checked"), "{stdout}");
    assert_eq!(digest(), before, "the SQLite file changed");

    let q = |sql: &str| pg.psql(&database, &format!("SET search_path = copied; {sql}")).unwrap();
    assert_eq!(q("SELECT count(*) FROM resources WHERE kind = 'User'"), "4");
    assert_eq!(q("SELECT sum(n) FROM rank_shards WHERE kind = 'User'"), "4", "counts rebuilt by the triggers");
    assert_eq!(
        q(&format!(
            "SELECT count(*) FROM group_members gm JOIN resources g ON g.seq = gm.group_seq WHERE g.id = '{group}'"
        )),
        "2"
    );
    assert_eq!(
        q(&format!("SELECT data ->> 'title' FROM resources WHERE id = '{}'", ids[2])),
        "Engineer",
        "attributes copied as JSON"
    );
    let sqlite = rusqlite::Connection::open(&db).unwrap();
    let from_sqlite = |sql: &str| -> String {
        sqlite
            .query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
    };
    for sql in [
        "SELECT count(*) FROM outbox",
        "SELECT max(id) FROM outbox",
        "SELECT count(*) FROM audit_log",
        "SELECT count(*) FROM tokens",
        "SELECT count(*) FROM deleted_accounts",
        "SELECT group_concat(id || ':' || state, ',') FROM (SELECT id, state FROM outbox ORDER BY id) AS o",
    ] {
        let pg_sql = sql.replace("group_concat(id || ':' || state, ',')", "string_agg(id || ':' || state, ',')");
        assert_eq!(q(&pg_sql), from_sqlite(sql), "{sql}");
    }
    // The sequences go on after the copied ids: the next change gets a new idempotency key.
    let next: i64 = q("SELECT nextval(pg_get_serial_sequence('outbox', 'id'))").parse().unwrap();
    let max: i64 = from_sqlite("SELECT max(id) FROM outbox").parse().unwrap();
    assert!(next > max, "next outbox id {next} after {max}");

    // Into a schema that holds a store already: refused, nothing written.
    let outbox_before = q("SELECT count(*) FROM outbox");
    let out = copy("copied");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(q("SELECT count(*) FROM outbox"), outbox_before);
}
