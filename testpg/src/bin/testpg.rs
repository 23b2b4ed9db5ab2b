//! `testpg`: a throw-away PostgreSQL cluster for scripts (the conformance run and the
//! benchmark on the PostgreSQL store). Starts a cluster, creates one database, prints
//! `URL_WITHOUT_PASSWORD PASSWORD` on one line of stdout, then runs until it is killed: a
//! reaper watching this process then stops the cluster and removes its directory (so even
//! SIGKILL leaves nothing behind).
//!
//! Usage from a script: `testpg >"$dir/pg" & PG=$!`, wait for the line, `kill $PG` at the end.

use std::io::Write;

fn main() {
    let pg = match testpg::TestPg::start() {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("testpg: {e}");
            std::process::exit(1);
        }
    };
    let ready = pg.reap_when_gone(std::process::id()).and_then(|()| pg.create_database());
    let database = match ready {
        Ok(db) => db,
        Err(e) => {
            eprintln!("testpg: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{} {}", pg.url_without_password(&database), testpg::PASSWORD);
    let _ = out.flush();
    drop(out);
    // The cluster lives as long as this process; its reaper ends it.
    let _keep = pg;
    loop {
        std::thread::park();
    }
}
