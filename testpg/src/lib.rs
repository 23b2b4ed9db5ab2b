//! A throw-away PostgreSQL cluster for tests (unit tests, `tests/it/`, the bench).
//!
//! [`TestPg::start`] finds the machine's PostgreSQL server binaries (the newest
//! `/usr/lib/postgresql/*/bin`, or `TESTPG_BIN_DIR`; `scripts/pg-env.sh` installs Debian's
//! `postgresql` where they are missing), runs `initdb` into a fresh temporary directory (as the
//! `postgres` user when the tests run as root, because PostgreSQL refuses to run as root),
//! starts `postgres` on a free loopback port and waits until it accepts connections. Tests
//! create one database each ([`TestPg::create_database`]) and connect with [`TestPg::url`].
//! Dropping the value stops the server by its PID (a fast shutdown, then SIGKILL) and removes
//! the directory.
//!
//! The cluster runs with PostgreSQL's defaults and `fsync=on`: tests that check durability kill
//! the daemon, never the cluster, and must see what a real server keeps. Password
//! authentication (`scram-sha-256`) is on for TCP, so a test can check what a wrong password
//! does; the superuser is `postgres` with [`PASSWORD`].
//!
//! It drives the cluster through the server's own command-line tools, so it needs no
//! PostgreSQL client library and does not depend on the code under test.

use std::fmt;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The superuser's password in every throw-away cluster (it is a test fixture, not a secret).
pub const PASSWORD: &str = "testpg-secret";

/// The superuser's name.
pub const USER: &str = "postgres";

/// How long the server may take to accept connections after it started: generous, because CI
/// has two cores shared with compiling test binaries. Exceeding it is an error with the log.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// How long a fast shutdown may take before the server is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Attempts to find a port: the port is free when we probe it, but another process can take it
/// before `postgres` binds it; then the server exits at once and we try another.
const PORT_ATTEMPTS: usize = 5;

/// Why the cluster could not be started or used; the message carries the tool's output or the
/// server log, so a failing test says what went wrong.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(message: impl Into<String>) -> Error {
    Error(message.into())
}

/// A running throw-away cluster; stopped and removed on drop.
pub struct TestPg {
    /// The `postgres` process itself (not a wrapper), so its PID is the server's.
    child: Child,
    port: u16,
    bin: PathBuf,
    /// Removed on drop, after the server has stopped.
    dir: tempfile::TempDir,
    /// The uid/gid the server runs as (`None`: ours).
    user: Option<(u32, u32)>,
    /// `-c name=value` settings the server runs with (kept for a restart).
    settings: Vec<String>,
    /// Numbers the databases [`TestPg::create_database`] makes.
    next_database: AtomicU32,
}

/// The directory holding `initdb` and `postgres`: `TESTPG_BIN_DIR` if set, otherwise the newest
/// `/usr/lib/postgresql/<version>/bin` that has `initdb` (Debian's layout; not on `PATH`).
pub fn bin_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("TESTPG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(err(format!("TESTPG_BIN_DIR={} has no initdb", dir.display())))
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
        .map_err(|e| {
            err(format!(
                "no PostgreSQL server binaries ({}: {e}); run scripts/pg-env.sh to install Debian's postgresql",
                root.display()
            ))
        })?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            let bin = entry.path().join("bin");
            Some((version?, bin)).filter(|(_, bin)| bin.join("initdb").is_file())
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        err(format!("no initdb under {}/*/bin; run scripts/pg-env.sh to install Debian's postgresql", root.display()))
    })
}

/// The uid and gid to run the server as: `None` when we are not root (run as ourselves),
/// the `postgres` user's otherwise.
fn server_user() -> Result<Option<(u32, u32)>, Error> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| err(format!("/etc/passwd: {e}")))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&USER))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            err("running as root but there is no usable postgres user in /etc/passwd (Debian's postgresql package creates it)")
        })
}

fn chown(path: &Path, user: Option<(u32, u32)>) -> Result<(), Error> {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| err(format!("chown {}: {e}", path.display())))?;
    }
    Ok(())
}

fn run_as(bin: &Path, program: &str, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(bin.join(program));
    if let Some((uid, gid)) = user {
        // std drops the supplementary groups when it changes the uid, and execs the program
        // directly: no runuser/setpriv wrapper whose PID would stand between us and the server.
        command.uid(uid).gid(gid);
    }
    // Messages in English and a locale that exists everywhere.
    command.env("LC_ALL", "C").env("LANG", "C");
    command
}

fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("bind 127.0.0.1:0: {e}")))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| err(format!("local_addr: {e}")))
}

impl TestPg {
    /// Initialise and start a cluster, and wait until it accepts connections on its port.
    pub fn start() -> Result<TestPg, Error> {
        Self::start_inner(None)
    }

    /// The same, serving TLS (`ssl=on`) with this certificate chain and key (PEM), so a test
    /// can check the client's certificate verification; plain connections still work.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<TestPg, Error> {
        Self::start_inner(Some((cert_pem, key_pem)))
    }

    fn start_inner(tls: Option<(&str, &str)>) -> Result<TestPg, Error> {
        let bin = bin_dir()?;
        let user = server_user()?;
        let dir = tempfile::Builder::new().prefix("testpg-").tempdir().map_err(|e| err(format!("temp dir: {e}")))?;
        chown(dir.path(), user)?;
        let password_file = dir.path().join("password");
        fs::write(&password_file, PASSWORD).map_err(|e| err(format!("password file: {e}")))?;
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600))
            .map_err(|e| err(format!("password file: {e}")))?;
        chown(&password_file, user)?;
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        fs::create_dir(&socket_dir).map_err(|e| err(format!("socket dir: {e}")))?;
        chown(&socket_dir, user)?;

        // UTF8 with the C locale: deterministic, whatever the machine's LANG is (an unset LANG
        // would otherwise give SQL_ASCII). --no-sync only skips initdb's own final flush of a
        // directory we throw away; the server itself runs with fsync on.
        let init = run_as(&bin, "initdb", user)
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--encoding=UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", password_file.display()))
            .current_dir(dir.path())
            .output()
            .map_err(|e| err(format!("initdb: {e}")))?;
        if !init.status.success() {
            return Err(err(format!("initdb failed ({}):\n{}", init.status, output_text(&init))));
        }

        let mut settings = vec!["listen_addresses=127.0.0.1".to_string(), "fsync=on".to_string()];
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = dir.path().join(name);
                fs::write(&path, pem).map_err(|e| err(format!("{name}: {e}")))?;
                // The server refuses a key others can read.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                    .map_err(|e| err(format!("{name}: {e}")))?;
                chown(&path, user)?;
            }
            settings.push("ssl=on".into());
            settings.push(format!("ssl_cert_file={}", dir.path().join("server.crt").display()));
            settings.push(format!("ssl_key_file={}", dir.path().join("server.key").display()));
        }
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match spawn_ready(&bin, user, dir.path(), port, &settings) {
                Ok(child) => {
                    return Ok(TestPg { child, port, bin, dir, user, settings, next_database: AtomicU32::new(1) });
                }
                // The server has exited: try another port.
                Err(Retry::OtherPort(log)) => last_log = log,
                Err(Retry::No(e)) => return Err(e),
            }
        }
        Err(err(format!("postgres could not bind a free port in {PORT_ATTEMPTS} attempts; last log:\n{last_log}")))
    }

    /// Stop the server (fast shutdown: clients are disconnected), keeping its data and port,
    /// to test what a client does while the database is down.
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Start the server again after [`TestPg::stop`], on the same port and data.
    pub fn restart(&mut self) -> Result<(), Error> {
        stop_child(&mut self.child);
        self.child =
            spawn_ready(&self.bin, self.user, self.dir.path(), self.port, &self.settings).map_err(|r| match r {
                Retry::OtherPort(log) => {
                    err(format!("port {} was taken while the server was stopped:\n{log}", self.port))
                }
                Retry::No(e) => e,
            })?;
        Ok(())
    }

    /// Start a streaming-replication standby of this cluster (`pg_basebackup -R`: a copy of
    /// every database, `standby.signal` and the `primary_conninfo` to follow this server) on a
    /// port of its own, and wait until it accepts (read-only) connections. Used to test what a
    /// client does when the database fails over: [`TestPg::crash`] this one, then
    /// [`TestPg::promote`] the standby. With `synchronous`, this server is first told to wait
    /// for a standby's flush at every commit (`synchronous_standby_names = '*'`), so nothing it
    /// acknowledges can be missing on the standby.
    pub fn start_standby(&self, synchronous: bool) -> Result<TestPg, Error> {
        let dir =
            tempfile::Builder::new().prefix("testpg-standby-").tempdir().map_err(|e| err(format!("temp dir: {e}")))?;
        chown(dir.path(), self.user)?;
        let socket_dir = dir.path().join("socket");
        fs::create_dir(&socket_dir).map_err(|e| err(format!("socket dir: {e}")))?;
        chown(&socket_dir, self.user)?;
        let data = dir.path().join("data");
        let backup = run_as(&self.bin, "pg_basebackup", self.user)
            .args(["-h", "127.0.0.1", "-U", USER, "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-D")
            .arg(&data)
            .env("PGPASSWORD", PASSWORD)
            .current_dir(dir.path())
            .output()
            .map_err(|e| err(format!("pg_basebackup: {e}")))?;
        if !backup.status.success() {
            return Err(err(format!("pg_basebackup failed ({}):\n{}", backup.status, output_text(&backup))));
        }
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match spawn_ready(&self.bin, self.user, dir.path(), port, &self.settings) {
                Ok(child) => {
                    let standby = TestPg {
                        child,
                        port,
                        bin: self.bin.clone(),
                        dir,
                        user: self.user,
                        settings: self.settings.clone(),
                        next_database: AtomicU32::new(self.next_database.load(Ordering::Relaxed)),
                    };
                    if synchronous {
                        self.psql("postgres", "ALTER SYSTEM SET synchronous_standby_names = '*'")?;
                        self.psql("postgres", "SELECT pg_reload_conf()")?;
                        standby.wait_streaming_from(self)?;
                    }
                    return Ok(standby);
                }
                Err(Retry::OtherPort(log)) => last_log = log,
                Err(Retry::No(e)) => return Err(e),
            }
        }
        Err(err(format!("the standby could not bind a free port in {PORT_ATTEMPTS} attempts; last log:\n{last_log}")))
    }

    /// Wait until `primary` lists a synchronous standby that is streaming (so commits wait
    /// for it from now on).
    fn wait_streaming_from(&self, primary: &TestPg) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let state = primary.psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'sync'",
            )?;
            if state.trim() == "1" {
                return Ok(());
            }
            if started.elapsed() > START_DEADLINE {
                return Err(err(format!(
                    "the standby did not stream synchronously within {START_DEADLINE:?}; its log:\n{}",
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Crash the server: an immediate shutdown (SIGQUIT: every session is cut, nothing is
    /// flushed beyond what commits already flushed, crash recovery on the next start), as a
    /// primary lost to a failure would be. Its data and port are kept.
    pub fn crash(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill has no memory-safety preconditions; the PID is our own child, not
            // yet reaped, so it cannot name another process.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGQUIT);
            }
            let asked = Instant::now();
            while let Ok(None) = self.child.try_wait() {
                if asked.elapsed() > STOP_DEADLINE {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Promote a standby to a primary (`pg_promote`, waiting until it accepts writes).
    pub fn promote(&self) -> Result<(), Error> {
        let done = self.psql("postgres", "SELECT pg_promote(true, 60)")?;
        if done.trim() == "t" {
            Ok(())
        } else {
            Err(err(format!("pg_promote answered {done:?}; log:\n{}", self.log())))
        }
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID (the postmaster itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One cluster for the whole test process, started on first use (the integration suite's
    /// PostgreSQL run gives each daemon a database of it). A static is never dropped, so a
    /// reaper process stops the server and removes its directory once this process is gone
    /// ([`TestPg::reap_when_gone`]).
    pub fn shared() -> Result<&'static TestPg, Error> {
        static SHARED: std::sync::OnceLock<TestPg> = std::sync::OnceLock::new();
        static START: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = START.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pg) = SHARED.get() {
            return Ok(pg);
        }
        let pg = TestPg::start()?;
        pg.reap_when_gone(std::process::id())?;
        Ok(SHARED.get_or_init(|| pg))
    }

    /// Start a detached reaper that, once process `watched` has exited, stops this server
    /// (fast shutdown, then SIGKILL after 10 s) and removes its directory: for a cluster whose
    /// owner will not drop it.
    pub fn reap_when_gone(&self, watched: u32) -> Result<(), Error> {
        let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
kill -INT "$2" 2>/dev/null
i=0; while kill -0 "$2" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.5; i=$((i+1)); done
kill -KILL "$2" 2>/dev/null
rm -rf "$3""#;
        let mut reaper = Command::new("sh");
        reaper
            .args(["-c", script, "testpg-reaper"])
            .arg(watched.to_string())
            .arg(self.pid().to_string())
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own session: a signal to the test's process group does not take it too.
        // SAFETY: setsid is async-signal-safe and touches nothing of the parent's.
        unsafe {
            reaper.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        reaper.spawn().map_err(|e| err(format!("cannot start the reaper: {e}")))?;
        Ok(())
    }

    /// The server binaries' directory in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// A libpq-style URL for `database` with the superuser's name and password.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}", self.port)
    }

    /// The same URL without the password (for tests that pass the password separately).
    pub fn url_without_password(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Create a new, empty database with a name unique in this cluster and return the name.
    pub fn create_database(&self) -> Result<String, Error> {
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// Run SQL in `database` through `psql` (as the superuser, over TCP) and return its
    /// unaligned, tuples-only output; an SQL error is an `Err` with psql's message.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, Error> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", USER, "-d", database])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .env("PGPASSWORD", PASSWORD)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("psql: {e}")))?;
        if !output.status.success() {
            return Err(err(format!("psql {sql:?} failed ({}): {}", output.status, output_text(&output))));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_owned())
    }

    /// The server log so far (for a failing test's message).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

/// Start `postgres` on `dir/data` and `port` and wait until it accepts connections.
fn spawn_ready(
    bin: &Path,
    user: Option<(u32, u32)>,
    dir: &Path,
    port: u16,
    settings: &[String],
) -> Result<Child, Retry> {
    let log_path = dir.join("postgres.log");
    let io = |e: std::io::Error| Retry::No(err(format!("log file: {e}")));
    let log = fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io)?;
    let log2 = log.try_clone().map_err(io)?;
    let mut child = run_as(bin, "postgres", user)
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir.join("socket"))
        .args(settings.iter().flat_map(|s| ["-c", s.as_str()]))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| Retry::No(err(format!("postgres: {e}"))))?;
    match wait_ready(&mut child, port, bin, &log_path) {
        Ok(()) => Ok(child),
        Err(e) => {
            stop_child(&mut child);
            Err(e)
        }
    }
}

/// Fast shutdown (SIGINT), then SIGKILL after [`STOP_DEADLINE`]; reaps the process.
fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SIGINT is PostgreSQL's "fast" shutdown: it disconnects clients and stops cleanly.
        // SIGTERM ("smart") would wait for every client to leave, and a test's pool may
        // still hold connections whose runtime has not been dropped yet.
        // SAFETY: kill has no memory-safety preconditions; the PID is our own child, not
        // yet reaped, so it cannot name another process.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let asked = Instant::now();
        while let Ok(None) = child.try_wait() {
            if asked.elapsed() > STOP_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn wait_ready(child: &mut Child, port: u16, bin: &Path, log_path: &Path) -> Result<(), Retry> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| Retry::No(err(e.to_string())))? {
            let log = fs::read_to_string(log_path).unwrap_or_default();
            if log.contains("Address already in use") {
                return Err(Retry::OtherPort(log));
            }
            return Err(Retry::No(err(format!(
                "postgres exited ({status}) before accepting connections; log:\n{log}"
            ))));
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-U", USER, "-d", "postgres"])
            .arg("-p")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| Retry::No(err(format!("pg_isready: {e}"))))?;
        if ready.success() {
            return Ok(());
        }
        if started.elapsed() > START_DEADLINE {
            let log = fs::read_to_string(log_path).unwrap_or_default();
            return Err(Retry::No(err(format!(
                "postgres did not accept connections within {START_DEADLINE:?}; log:\n{log}"
            ))));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

enum Retry {
    OtherPort(String),
    No(Error),
}

impl Drop for TestPg {
    fn drop(&mut self) {
        stop_child(&mut self.child);
        // The TempDir field removes the directory after this.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster nobody drops is stopped and removed by its reaper once the watched
    /// process is gone.
    #[test]
    fn the_reaper_stops_and_removes_a_cluster_whose_owner_is_gone() {
        let pg = TestPg::start().expect("start");
        let mut owner = Command::new("sleep").arg("30").spawn().unwrap();
        pg.reap_when_gone(owner.id()).unwrap();
        let (pid, dir) = (pg.pid(), pg.dir.path().to_owned());
        assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1", "running while its owner lives");
        std::mem::forget(pg);
        owner.kill().unwrap();
        owner.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The server is our child here (in the shared case it outlives us and init reaps
            // it): reap it once it exits, or it would stay a zombie that signal 0 still finds.
            // SAFETY: waitpid with WNOHANG on our own child, and signal 0, only query.
            let alive = unsafe {
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG);
                libc::kill(pid as libc::pid_t, 0) == 0
            };
            if !alive && !dir.exists() {
                break;
            }
            assert!(Instant::now() < deadline, "postgres {pid} alive: {alive}, {} exists", dir.display());
            thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn starts_creates_databases_and_stops_by_pid() {
        let pg = TestPg::start().expect("start");
        let db = pg.create_database().expect("create database");
        let other = pg.create_database().expect("create database");
        assert_ne!(db, other);
        assert_eq!(pg.psql(&db, "SELECT 1 + 1").unwrap(), "2");
        assert_eq!(pg.psql(&db, "SHOW fsync").unwrap(), "on");
        assert_eq!(pg.psql(&db, "SHOW server_encoding").unwrap(), "UTF8");
        // Listening on loopback TCP only.
        assert_eq!(pg.psql(&db, "SHOW listen_addresses").unwrap(), "127.0.0.1");
        let pid = pg.pid();
        let dir = pg.dir.path().to_owned();
        drop(pg);
        // SAFETY: signal 0 only checks for existence. The PID was reaped by Drop; it could in
        // principle be reused, which would only make this assertion fail, never pass wrongly.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
        assert!(!alive, "postgres {pid} still running after drop");
        assert!(!dir.exists(), "{} not removed", dir.display());
    }

    #[test]
    fn stops_and_restarts_on_the_same_port_keeping_data() {
        let mut pg = TestPg::start().expect("start");
        let db = pg.create_database().unwrap();
        pg.psql(&db, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)").unwrap();
        let port = pg.port();
        pg.stop();
        assert!(pg.psql(&db, "SELECT 1").is_err(), "still answering after stop");
        pg.restart().expect("restart");
        assert_eq!(pg.port(), port);
        assert_eq!(pg.psql(&db, "SELECT x FROM t").unwrap(), "7");
    }

    #[test]
    fn a_standby_follows_synchronously_and_takes_over_when_promoted() {
        let mut primary = TestPg::start().unwrap();
        let db = primary.create_database().unwrap();
        primary.psql(&db, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)").unwrap();
        let standby = primary.start_standby(true).unwrap();
        // Read-only while it follows; a commit on the primary is on the standby once acknowledged.
        assert!(standby.psql(&db, "INSERT INTO t VALUES (2)").is_err());
        primary.psql(&db, "INSERT INTO t VALUES (3)").unwrap();
        assert_eq!(standby.psql(&db, "SELECT string_agg(n::text, ',' ORDER BY n) FROM t").unwrap(), "1,3");
        primary.crash();
        assert!(primary.psql(&db, "SELECT 1").is_err());
        standby.promote().unwrap();
        standby.psql(&db, "INSERT INTO t VALUES (4)").unwrap();
        assert_eq!(standby.psql(&db, "SELECT count(*) FROM t").unwrap(), "3");
    }

    #[test]
    fn a_wrong_password_is_refused() {
        let pg = TestPg::start().expect("start");
        let output = Command::new(pg.bin_dir().join("psql"))
            .args(["-X", "-h", "127.0.0.1", "-U", USER, "-d", "postgres", "-w"])
            .arg("-p")
            .arg(pg.port().to_string())
            .args(["-c", "SELECT 1"])
            .env("PGPASSWORD", "wrong")
            .output()
            .unwrap();
        assert!(!output.status.success());
        assert!(output_text(&output).contains("password authentication failed"), "{}", output_text(&output));
    }
}
