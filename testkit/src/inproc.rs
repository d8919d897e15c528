//! The node inside the test process: `init_node` in a temporary directory, then
//! `sealpost_server::run_with` on a listener bound to `127.0.0.1:0` (or re-bound to the port
//! it had), with a ready signal and a graceful stop. Much faster to start than a child
//! process and no binary to build first; use [`crate::process`] for what only a whole
//! process shows (crashes, signals, the CLI's flags and environment).
//!
//! The node still talks HTTP over loopback: its peers (the relay) and the API client are
//! HTTP clients, and the API handler takes hyper's connection-bound body type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sealpost_proto::NodeUrl;
use sealpost_server::{Config, InitOptions, Ready, init_node, run_with};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long anything in a test may take before it counts as failed.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `f` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node running inside the test process.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub addr: SocketAddr,
    pub url: NodeUrl,
    pub node_key: [u8; 32],
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl TestNode {
    /// Initialises a node directory and starts it on `127.0.0.1:0`. `tweak` edits the config.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            listen: Some("127.0.0.1:0".parse().expect("invariant: a valid address")),
            ..Default::default()
        };
        let done = init_node(dir.path(), &opts).expect("init");
        let mut config = Config::load(&done.config_path).expect("config");
        config.shutdown_grace = sealpost_server::config::Secs::from_secs(5);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut node = TestNode {
            dir,
            config,
            addr: listener.local_addr().expect("bound address"),
            url: NodeUrl::parse("http://127.0.0.1:1").expect("invariant: a valid URL"),
            node_key: [0; 32],
            stop: None,
            task: None,
        };
        node.launch(listener).await;
        node
    }

    async fn launch(&mut self, listener: tokio::net::TcpListener) {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<Ready>();
        let config = self.config.clone();
        let task = tokio::spawn(async move {
            run_with(
                listener,
                config,
                async {
                    let _ = stop_rx.await;
                },
                move |r| {
                    let _ = ready_tx.send(r.clone());
                },
            )
            .await
            .map_err(|e| chain(&e))
        });
        let ready = tokio::time::timeout(DEADLINE, ready_rx)
            .await
            .expect("node ready in time")
            .expect("node started");
        self.addr = ready.addr;
        self.url = ready.url;
        self.node_key = ready.node_key;
        self.stop = Some(stop_tx);
        self.task = Some(task);
    }

    /// Stops the node gracefully and waits until its store is closed.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(DEADLINE, t)
                .await
                .expect("node stops in time")
                .expect("join")
                .expect("run");
        }
    }

    /// Starts the node again on the port it had, with the same directory.
    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "stop the node first");
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("re-bind the same port");
        self.launch(listener).await;
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.resolve(&self.config.data_dir)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // RocksDB must be closed before the process exits; a node left running is a bug in
        // the test (call `stop`).
        if self.task.is_some() && !std::thread::panicking() {
            panic!("TestNode dropped while running: call stop().await at the end of the test");
        }
    }
}

/// An error with its causes, `a: b: c`, as the binary prints it (typed errors keep their
/// causes in `source()`, which `{:#}` does not follow).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
