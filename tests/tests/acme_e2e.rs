//! Automatic certificates against a real ACME CA: a `sealpost-node` process with
//! `[tls.acme]` obtains its certificate from a private `pebble` by TLS-ALPN-01 on its own
//! HTTPS port (pebble resolves the node's name through a private dnsmasq and really
//! validates), a client verifies the node's HTTPS against pebble's root, the files are
//! mode 0600, and with a short certificate lifetime the node renews under load without a
//! failed request and without a restart; after a restart it serves the stored certificate.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sealpost_tests::Node;
use sealpost_tests::dns::{Dns, Record};
use sealpost_tests::pebble::Pebble;

const NAME: &str = "node.sealpost.test";
/// Short enough that a renewal (two thirds in, at 30 s) happens within the test, long
/// enough that a loaded machine renews before the old certificate expires (15 s later).
const VALIDITY: Duration = Duration::from_secs(45);
const DEADLINE: Duration = Duration::from_secs(90);

/// A client that trusts only `root` and reaches NAME at the node's loopback port. Each
/// request below uses a new one: a full TLS handshake that shows the certificate served
/// now (a client that keeps its session would resume it without a certificate).
fn client(root: &str, port: u16) -> reqwest::Client {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).expect("root"))
        .resolve(NAME, addr)
        .pool_max_idle_per_host(0)
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GET the node's descriptor over verified HTTPS with a fresh client; the leaf
/// certificate it presented.
async fn fetch(root: &str, port: u16) -> Result<Vec<u8>, String> {
    let c = client(root, port);
    let url = format!("https://{NAME}:{port}/.well-known/sealpost/node");
    let resp = c.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let leaf = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or("no peer certificate")?;
    resp.bytes().await.map_err(|e| e.to_string())?;
    Ok(leaf)
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_obtains_and_renews_its_certificate_from_pebble_under_load() {
    let dns = Dns::start(&[Record::a(NAME, "127.0.0.1")]);
    // Pebble must know the node's port and the node pebble's directory URL: the node
    // starts plain on port 0 (reported), pebble starts validating on that port, and the
    // node restarts on the same port with [tls.acme] pointing at pebble.
    let mut node = Node::start("acme");
    let pebble = Pebble::start(node.port, dns.addr, VALIDITY);
    let set = |k: &str, v: String| ["--set".to_string(), format!("tls.acme.{k}={v}")];
    let mut args: Vec<String> = Vec::new();
    args.extend(set("directory", format!("{:?}", pebble.directory)));
    args.extend(set("names", format!("[{NAME:?}]")));
    args.extend(set("contact", "[\"mailto:ops@sealpost.test\"]".into()));
    args.extend(set(
        "directory_ca",
        format!("{:?}", pebble.https_ca().display().to_string()),
    ));
    // The gateway, whose STARTTLS must present the same certificate.
    for kv in [
        "gateway.enabled=true",
        "gateway.verify=false",
        "gateway.domain=\"sealpost.test\"",
        "gateway.listen=\"127.0.0.1:0\"",
    ] {
        args.extend(["--set".to_string(), kv.to_string()]);
    }
    node.restart_with(&args);
    let root = pebble.root_pem().await;

    // 1. The node obtains a certificate; the client verifies it against pebble's root.
    let start = Instant::now();
    let first = loop {
        match fetch(&root, node.port).await {
            Ok(leaf) => break leaf,
            Err(_) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "no verified HTTPS in time: {e}\n--- node ---\n{}\n--- pebble ---\n{}",
                node.log(),
                pebble.log()
            ),
        }
    };
    println!("first certificate after {:?}", start.elapsed());
    let acme = node.dir().join("acme");
    for f in ["account.json", "cert.pem", "key.pem"] {
        assert_eq!(mode(&acme.join(f)), 0o600, "{f} is owner-only");
    }
    assert_eq!(mode(&acme), 0o700);
    // Pebble really validated (nothing listens on its HTTP-01 port, and the node answers
    // only TLS-ALPN-01).
    assert!(
        pebble.log().contains("set VALID by completed challenge"),
        "pebble validated a challenge:\n{}",
        pebble.log()
    );

    // The gateway's STARTTLS presents the ACME certificate: OpenSSL verifies it against
    // pebble's root for the node's name.
    let smtp = node.stdout_line(sealpost_testkit::process::GATEWAY_READY_PREFIX);
    let root_file = node.dir().join("pebble-root.pem");
    std::fs::write(&root_file, &root).expect("write root");
    let s_client = std::process::Command::new("openssl")
        .args(["s_client", "-connect", smtp.trim(), "-starttls", "smtp"])
        .args([
            "-servername",
            NAME,
            "-verify_hostname",
            NAME,
            "-verify_return_error",
        ])
        .arg("-CAfile")
        .arg(&root_file)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let said = String::from_utf8_lossy(&s_client.stdout);
    assert!(
        said.contains("Verify return code: 0 (ok)"),
        "STARTTLS certificate verified: {said}\n{}",
        String::from_utf8_lossy(&s_client.stderr)
    );

    // The admin CLI reaches the running node over its socket.
    let admin = std::process::Command::new(sealpost_tests::node_bin())
        .args(["admin", "--config"])
        .arg(node.config_path())
        .args(["peers", "list"])
        .output()
        .expect("sealpost-node admin");
    assert!(admin.status.success(), "{admin:?}");
    assert_eq!(String::from_utf8_lossy(&admin.stdout), "no pinned peers\n");

    // 2. Load until a second certificate is served: no request may fail meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (root, stop, ok, port) = (root.clone(), stop.clone(), ok.clone(), node.port);
        workers.push(tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match fetch(&root, port).await {
                    Ok(leaf) => {
                        seen.insert(leaf);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e),
                }
            }
            (seen, failures)
        }));
    }
    let start = Instant::now();
    let second = loop {
        let leaf = fetch(&root, node.port)
            .await
            .expect("a request during renewal");
        if leaf != first {
            break leaf;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no renewal within {DEADLINE:?}\n--- node ---\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("renewed after {:?} more", start.elapsed());
    // Keep the load on a little past the swap.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = HashSet::new();
    for w in workers {
        let (seen, failures) = w.await.expect("worker");
        assert!(
            failures.is_empty(),
            "requests failed during renewal: {failures:?}"
        );
        all.extend(seen);
    }
    let served = ok.load(Ordering::Relaxed);
    println!(
        "{served} verified requests under load, {} certificates seen",
        all.len()
    );
    assert!(served > 20, "the load was real: {served} requests");
    assert!(
        all.contains(&second),
        "the load saw the renewed certificate"
    );
    assert!(node.log().contains("ACME: new certificate in use"));

    // 3. A restart serves the stored certificate at once (no ACME round first).
    node.restart();
    let leaf = fetch(&root, node.port).await.unwrap_or_else(|e| {
        panic!(
            "no verified HTTPS right after a restart: {e}\n{}",
            node.log()
        )
    });
    let stored = std::fs::read(node.dir().join("acme/cert.pem")).expect("stored chain");
    assert_eq!(
        leaf,
        pem_leaf(&stored),
        "the restarted node serves the stored certificate"
    );
    node.stop();
}

/// The DER of the first certificate in a PEM chain.
fn pem_leaf(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("PEM is text");
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 leaf")
}
