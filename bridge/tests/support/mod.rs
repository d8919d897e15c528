//! Test support: a private Dovecot on loopback (the reference IMAP server) and an
//! in-process bridge on 127.0.0.1:0, both with one account.

#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sealpost_bridge::auth::Credentials;
use sealpost_bridge::server;
use sealpost_bridge::shared::Shared;
use sealpost_bridge::smtp;
use sealpost_bridge::source::{SendError, SendOutcome, Sender, Submission};
use sealpost_bridge::store::Store;
#[allow(unused_imports)]
pub use sealpost_testkit::dovecot::Dovecot;

/// A sender that records what it is given; recipients at `nogateway.test` fail for good,
/// at `later.test` for now.
#[derive(Default)]
pub struct FakeSender {
    pub sent: std::sync::Mutex<Vec<Submission>>,
}

impl Sender for FakeSender {
    async fn send(&self, s: Submission) -> Result<SendOutcome, SendError> {
        if s.rcpt_to.iter().any(|r| r.ends_with("@nogateway.test")) {
            return Err(SendError::Permanent(
                "no gateway for legacy e-mail to nogateway.test".into(),
            ));
        }
        if s.rcpt_to.iter().any(|r| r.ends_with("@later.test")) {
            return Err(SendError::Temporary("home node unreachable".into()));
        }
        let outcome = SendOutcome {
            sealed: s.rcpt_to.clone(),
            legacy: Vec::new(),
            copy_ids: Vec::new(),
        };
        self.sent.lock().unwrap().push(s);
        Ok(outcome)
    }
}

pub const USER: &str = "bob@beta.test";
pub const PASSWORD: &str = "correct-horse-battery";

/// A bridge serving IMAP on 127.0.0.1:0 from a store in a temp dir, on its own runtime.
pub struct Bridge {
    pub port: u16,
    /// SMTP submission port (0 when not started).
    pub smtp_port: u16,
    pub shared: Arc<Shared>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bridge {
    pub fn start() -> Bridge {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut b = Bridge::start_in(&dir);
        b._tmp = Some(tmp);
        b
    }

    pub fn start_in(dir: &Path) -> Bridge {
        Bridge::start_full(dir, None::<Arc<FakeSender>>)
    }

    /// IMAP and SMTP submission, sending through `sender`.
    pub fn start_with_sender<S: Sender>(sender: Arc<S>) -> Bridge {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut b = Bridge::start_full(&dir, Some(sender));
        b._tmp = Some(tmp);
        b
    }

    pub fn start_full<S: Sender>(dir: &Path, sender: Option<Arc<S>>) -> Bridge {
        let store = Store::open(dir).unwrap();
        let shared = Shared::new(store, Credentials::new(USER.into(), PASSWORD.into()));
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let smtp_listener = StdListener::bind("127.0.0.1:0").unwrap();
        smtp_listener.set_nonblocking(true).unwrap();
        let smtp_port = if sender.is_some() {
            smtp_listener.local_addr().unwrap().port()
        } else {
            0
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s2 = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, rx) = tokio::sync::watch::channel(false);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut rx1 = rx.clone();
                let imap = tokio::spawn(server::serve(
                    listener,
                    None,
                    s2.clone(),
                    server::imap_handler,
                    async move {
                        let _ = rx1.wait_for(|v| *v).await;
                    },
                ));
                if let Some(sender) = sender {
                    let smtp_listener = tokio::net::TcpListener::from_std(smtp_listener).unwrap();
                    let mut rx2 = rx.clone();
                    tokio::spawn(server::serve(
                        smtp_listener,
                        None,
                        s2,
                        move |io, shared| smtp::serve_connection(io, shared, sender.clone()),
                        async move {
                            let _ = rx2.wait_for(|v| *v).await;
                        },
                    ));
                }
                let _ = stopped.await;
                let _ = tx.send(true);
                let _ = imap.await;
            });
        });
        Bridge {
            port,
            smtp_port,
            shared,
            dir: dir.to_owned(),
            _tmp: None,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// Runs a command, returns (success, stdout + stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
