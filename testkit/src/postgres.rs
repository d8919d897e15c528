//! A private PostgreSQL server for tests and benchmarks: Debian's PostgreSQL 15
//! (`/usr/lib/postgresql/15/bin`, `scripts/deps.sh`; `SEALPOST_PG_BIN` names another
//! directory), `initdb` into a temporary directory as the unprivileged user `nobody`
//! (PostgreSQL refuses to run as root), listening on a free port of 127.0.0.1 only (no Unix
//! socket), trust authentication for the superuser `sealpost`. [`PgServer::stop`] and
//! `Drop` SIGKILL and reap the postmaster; the directory goes with it (and at exit, by
//! [`crate::hygiene`]).

use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::hygiene::{TempDir, kill_and_reap, spawn_tied};

/// The superuser the cluster is made with.
pub const SUPERUSER: &str = "sealpost";
/// How long the server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL binaries not found in {0} (scripts/deps.sh installs postgresql-15)")]
    NoBinaries(PathBuf),
    #[error("the unprivileged user `nobody` has no uid here")]
    NoUser,
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("initdb failed: {0}")]
    Initdb(String),
    #[error("postgres did not accept connections within {0:?}; its log:\n{1}")]
    Start(Duration, String),
    #[error("SQL {0}")]
    Sql(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> PgError {
    move |source| PgError::Io { what, source }
}

/// One running PostgreSQL cluster.
pub struct PgServer {
    bin: PathBuf,
    dir: TempDir,
    uid: u32,
    gid: u32,
    port: u16,
    child: Option<Child>,
}

fn bin_dir() -> PathBuf {
    std::env::var_os("SEALPOST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// uid and gid of `nobody`.
fn nobody() -> Result<(u32, u32), PgError> {
    let name = std::ffi::CString::new("nobody").expect("invariant: no NUL");
    // SAFETY: getpwnam returns a pointer to static storage or NULL; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(PgError::NoUser);
    }
    // SAFETY: non-null result of getpwnam.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn free_port() -> Result<u16, PgError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("binding a free port"))?;
    Ok(l.local_addr().map_err(io("reading the port"))?.port())
}

impl PgServer {
    /// initdb and start. Blocks until the server accepts connections.
    pub fn start() -> Result<PgServer, PgError> {
        let bin = bin_dir();
        if !bin.join("postgres").exists() || !bin.join("initdb").exists() {
            return Err(PgError::NoBinaries(bin));
        }
        let (uid, gid) = nobody()?;
        let dir = TempDir::new("pg");
        chown(dir.path(), Some(uid), Some(gid)).map_err(io("chown of the cluster directory"))?;
        let data = dir.path().join("data");
        let out = Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale=C", "--no-instructions"])
            .uid(uid)
            .gid(gid)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(io("running initdb"))?;
        if !out.status.success() {
            return Err(PgError::Initdb(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut server = PgServer {
            bin,
            dir,
            uid,
            gid,
            port: 0,
            child: None,
        };
        server.launch()?;
        Ok(server)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Starts the postmaster on the cluster (a free port the first time, the same after).
    fn launch(&mut self) -> Result<(), PgError> {
        let first = self.port == 0;
        for _ in 0..5 {
            if first {
                self.port = free_port()?;
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .map_err(io("opening the postgres log"))?;
            chown(self.log_path(), Some(self.uid), Some(self.gid))
                .map_err(io("chown of the postgres log"))?;
            let err = log.try_clone().map_err(io("postgres log"))?;
            let mut cmd = Command::new(self.bin.join("postgres"));
            cmd.arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", &format!("port={}", self.port)])
                .args(["-c", "unix_socket_directories="])
                .args(["-c", "max_connections=200"])
                .args(["-c", "shared_buffers=32MB"])
                .args(["-c", "log_min_messages=warning"])
                .uid(self.uid)
                .gid(self.gid)
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err);
            let child = spawn_tied(cmd).map_err(io("starting postgres"))?;
            self.child = Some(child);
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.stop();
                    // Another process may have taken the port meanwhile: try another.
                    if !first {
                        return Err(e);
                    }
                }
            }
        }
        Err(PgError::Start(START_DEADLINE, self.log()))
    }

    fn wait_ready(&mut self) -> Result<(), PgError> {
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                crate::hygiene::reaped(child);
                self.child = None;
                return Err(PgError::Start(START_DEADLINE, self.log()));
            }
            if self.log().contains("ready to accept connections") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(PgError::Start(START_DEADLINE, self.log()))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of database `db` (node.toml `storage.postgres.url`).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` (letters, digits and `_`) unless it exists. Creations are
    /// serialised within the process, and retried while another process copies the template.
    pub async fn create_database(&self, name: &str) -> Result<(), PgError> {
        use tokio_postgres::error::SqlState;
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(PgError::Sql(format!("bad database name {name:?}")));
        }
        let _turn = ONE_AT_A_TIME.lock().await;
        let sql = |e: tokio_postgres::Error| {
            PgError::Sql(match e.as_db_error() {
                Some(d) => format!("{}: {}", d.code().code(), d.message()),
                None => e.to_string(),
            })
        };
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(sql)?;
        let conn = tokio::spawn(conn);
        let mut tries = 0;
        let r = loop {
            tries += 1;
            let exists = client
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .map_err(sql)?
                .is_some();
            if exists {
                break Ok(());
            }
            match client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
            {
                Ok(()) => break Ok(()),
                // Created meanwhile, or the template is busy: look again.
                Err(e)
                    if tries < 50
                        && matches!(e.code(), Some(c) if *c == SqlState::DUPLICATE_DATABASE
                            || *c == SqlState::UNIQUE_VIOLATION
                            || *c == SqlState::OBJECT_IN_USE) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => break Err(sql(e)),
            }
        };
        drop(client);
        let _ = conn.await;
        r
    }

    /// SIGKILLs the postmaster and reaps it (as a crash of the database server). Its
    /// backends notice and exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
            // The backends exit once they see the postmaster gone; a restart waits for the
            // shared memory to be released (postmaster.pid names the dead postmaster).
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && backends_alive(self.dir.path()) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts the cluster again after [`stop`](Self::stop), on the same port and data
    /// (crash recovery replays the WAL).
    pub fn restart(&mut self) -> Result<(), PgError> {
        self.stop();
        self.launch()
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// Whether a process still has the cluster's data directory as its working directory or
/// open files (the backends of a killed postmaster, until they exit).
fn backends_alive(dir: &Path) -> bool {
    let data = dir.join("data");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    for p in procs.flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(cwd) = std::fs::read_link(p.path().join("cwd"))
            && cwd.starts_with(&data)
        {
            return true;
        }
    }
    false
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
