//! The `sealpost` CLI where trust is at stake, against real processes: legacy routing only
//! for domains that really take e-mail (a private dnsmasq answers for the test zone), a
//! node behind a private CA (certificates made with `openssl`), the passphrase asked at a
//! real terminal (a pseudo-terminal), Ctrl-C during `send` (a real SIGINT while our home
//! node hangs, holding the lookup), output into a closed pipe, and what `init` keeps and says.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sealpost_testkit::pki::certificates;
use sealpost_tests::dns::{Dns, Record};
use sealpost_tests::{FAST_RELAY, Node, Resolve, TempDir, User, cli_bin, node_bin, run_cli};

/// How long a letter may take to arrive, a process to start or end.
const DEADLINE: Duration = Duration::from_secs(90);

fn init_args(address: &str, nodes: &[&str]) -> Vec<String> {
    let mut args = vec!["init".to_string(), address.to_string()];
    for n in nodes {
        args.extend(["--node".to_string(), n.to_string()]);
    }
    args
}

fn outbox_len(u: &User) -> usize {
    u.ok(&["outbox", "list", "--json"], b"")
        .json()
        .as_array()
        .map_or(0, |a| a.len())
}

// ---------------------------------------------------------------------------------------
// Legacy routing

/// A node with the SMTP gateway of gw.test (its smarthost never answers: the letters only
/// have to reach the gateway here), bob's node, and a DNS where legacy.test takes mail,
/// nomx.test is a web host without mail, and every other name does not exist.
#[test]
fn a_typo_never_becomes_mail_and_a_first_letter_to_a_legacy_address_needs_consent() {
    let dns = Dns::start(&[
        Record::mx("legacy.test", "mail.legacy.test", 10),
        Record::a("mail.legacy.test", "127.0.0.1"),
        Record::a("nomx.test", "127.0.0.1"),
    ]);
    let smarthost = format!(
        "gateway.smarthost=\"{}\"",
        sealpost_tests::dead_url().trim_start_matches("http://")
    );
    let mut args: Vec<&str> = FAST_RELAY.to_vec();
    for s in [
        "gateway.enabled=true",
        // Sender checks are gateway_auth_e2e's; here no DNS is asked.
        "gateway.verify=false",
        "gateway.domain=\"gw.test\"",
        "gateway.listen=\"127.0.0.1:0\"",
        &smarthost,
    ] {
        args.extend(["--set", s]);
    }
    let gw = Node::start_with("gw", &args);
    let beta = Node::start("beta");
    let mut resolve = Resolve::default();
    resolve.add("gw.test", &gw.url);
    resolve.add("beta.test", &beta.url);
    let bob = User::init("bob@beta.test", &[&beta], &resolve);

    // Alice names the DNS server once, at init; the profile keeps it.
    let mut alice = User::new("alice@gw.test", &resolve);
    alice
        .env
        .push(("SEALPOST_DNS_SERVER".into(), dns.server_arg()));
    let out = alice.run_owned(&init_args("alice@gw.test", &[&gw.url]), b"");
    assert!(out.ok(), "{out:?}");
    alice.env.clear();
    let config = std::fs::read_to_string(alice.profile().join("config.json")).unwrap();
    assert!(config.contains(&dns.server_arg()), "{config}");

    alice.ok(
        &["send", "--to", "bob@beta.test", "--subject", "hi"],
        b"Hi Bob\n",
    );
    let before = alice.snapshot();

    // The typo: beta.tset does not exist. An error naming bob's domain, never mail.
    let out = alice.run(
        &["send", "--to", "bob@beta.tset", "--subject", "oops"],
        b"x\n",
    );
    assert_eq!(out.code, 1, "{out:?}");
    let line = out.error_line();
    assert!(
        line.contains("beta.tset does not exist") && line.contains("did you mean beta.test?"),
        "{line}"
    );
    assert!(!out.stderr.contains("NOT end-to-end"), "{out:?}");
    assert_eq!(alice.snapshot(), before, "nothing queued, nothing pinned");

    // A web host without MX takes no mail.
    let out = alice.run(&["send", "--to", "x@nomx.test"], b"x\n");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.error_line().contains("takes no e-mail"), "{out:?}");
    assert_eq!(alice.snapshot(), before);

    // A real legacy domain: the warning comes first, and without a terminal the first
    // letter needs --legacy.
    let out = alice.run(&["send", "--to", "carol@legacy.test"], b"x\n");
    assert_eq!(out.code, 1, "{out:?}");
    let warning = out
        .stderr
        .lines()
        .position(|l| l.starts_with("sealpost: warning: ") && l.contains("NOT end-to-end"))
        .unwrap_or_else(|| panic!("no warning: {out:?}"));
    assert!(
        out.stderr
            .lines()
            .nth(warning)
            .unwrap()
            .contains("carol@legacy.test (no Sealpost node: "),
        "{out:?}"
    );
    assert!(
        out.error_line().contains("--legacy carol@legacy.test"),
        "{out:?}"
    );
    assert_eq!(alice.snapshot(), before, "nothing sent without consent");

    let out = alice.ok(
        &[
            "send",
            "--to",
            "carol@legacy.test",
            "--legacy",
            "carol@legacy.test",
        ],
        b"Hello Carol\n",
    );
    assert!(
        out.stdout
            .contains("sent to carol@legacy.test as legacy e-mail through gateway@gw.test"),
        "{out:?}"
    );
    // Agreed once: the next letter is routed by lookup and does not ask again.
    let out = alice.ok(&["send", "--to", "carol@legacy.test"], b"Again\n");
    assert!(
        out.stderr.contains("carol@legacy.test (no Sealpost node: "),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("sent to carol@legacy.test as legacy e-mail"),
        "{out:?}"
    );

    // At a terminal the first letter asks, after the warning; only a yes sends.
    let body = alice.scratch().join("body.txt");
    std::fs::write(&body, "Hello Dan\n").unwrap();
    let editor = format!("cp {}", body.display());
    let mut t = cli_at_terminal_editing(&alice, &["send", "--to", "dan@legacy.test"], &editor);
    t.expect("dan@legacy.test (no Sealpost node: ");
    t.expect("NOT end-to-end encrypted");
    t.expect("Send to dan@legacy.test as ordinary e-mail, NOT end-to-end encrypted? [y/N] ");
    t.type_line("n");
    let (code, screen) = t.finish();
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("nothing was sent"), "{screen}");
    let mut t = cli_at_terminal_editing(&alice, &["send", "--to", "dan@legacy.test"], &editor);
    t.expect("[y/N] ");
    t.type_line("y");
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("sent to dan@legacy.test as legacy e-mail through gateway@gw.test"),
        "{screen}"
    );
    let config = std::fs::read_to_string(alice.profile().join("config.json")).unwrap();
    assert!(
        config.contains("dan@legacy.test"),
        "agreed, and kept: {config}"
    );

    // No DNS answer decides nothing: nothing is sent.
    drop(dns);
    let before = alice.snapshot();
    let out = alice.run(
        &["--timeout", "2", "send", "--to", "erin@legacy.test"],
        b"x\n",
    );
    assert_eq!(out.code, 2, "{out:?}");
    out.error_line();
    assert_eq!(alice.snapshot(), before);
    drop(bob);
}

// ---------------------------------------------------------------------------------------
// A private CA

#[test]
fn a_node_behind_a_private_ca_is_reached_with_cacert_and_the_profile_keeps_it() {
    let pki = TempDir::new("pki");
    let (ca, cert, key) = certificates(pki.path());
    let tls_cert = format!("tls.cert=\"{}\"", cert.display());
    let tls_key = format!("tls.key=\"{}\"", key.display());
    let node = Node::start_with("tls", &["--set", &tls_cert, "--set", &tls_key]);
    assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);

    let alice = User::new("alice@alpha.test", &Resolve::default());
    let init = init_args("alice@alpha.test", &[&node.url]);
    // Without the CA: a clear error that names the way out, and no profile.
    let out = alice.run_owned(&init, b"");
    assert_eq!(out.code, 2, "{out:?}");
    let line = out.error_line();
    assert!(
        line.contains("--cacert") && line.contains("UnknownIssuer"),
        "{line}"
    );
    assert!(!alice.profile().exists());

    // A file that holds no certificate is refused as such.
    let junk = pki.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let mut with_junk = vec!["--cacert".to_string(), junk.display().to_string()];
    with_junk.extend(init.iter().cloned());
    let out = alice.run_owned(&with_junk, b"");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.error_line().contains("junk.pem"), "{out:?}");

    // With it: init works and keeps the CA in the profile...
    let mut with_ca = vec!["--cacert".to_string(), ca.display().to_string()];
    with_ca.extend(init.iter().cloned());
    let out = alice.run_owned(&with_ca, b"");
    assert!(out.ok(), "{out:?}");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(alice.profile().join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["tls"]["ca_certs"][0], ca.display().to_string());
    // ...so that later commands reach the node without --cacert.
    let fetched = alice.ok(&["fetch", "--json"], b"").json();
    assert_eq!(fetched["nodes"][0]["ok"], true, "{fetched:#}");
}

#[test]
fn the_node_says_the_scheme_it_serves_and_warns_about_an_https_url_without_tls() {
    let node = Node::start_with("plain", &["--public-url", "https://alpha.example"]);
    assert!(
        node.url.starts_with("http://127.0.0.1:"),
        "plain HTTP, whatever public_url says: {}",
        node.url
    );
    let log = node.log();
    assert!(
        log.contains("public_url https://alpha.example") && log.contains("plain HTTP"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------
// Ctrl-C during send

/// Lookups go through the user's own home (oblivious lookups, the default), so a home
/// that hangs holds the lookup of the recipient: the letter was kept in the outbox before
/// it, and Ctrl-C leaves it waiting there; it goes out, once, when the home is back.
#[test]
fn ctrl_c_while_our_node_hangs_keeps_the_letter_in_the_outbox_and_says_so() {
    let mut alpha = Node::start("alpha");
    let beta = Node::start("beta");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &alpha.url);
    resolve.add("beta.test", &beta.url);
    let alice = User::init("alice@alpha.test", &[&alpha], &resolve);
    let bob = User::init("bob@beta.test", &[&beta], &resolve);

    // Alice's home hangs: something takes connections on its port and never answers.
    alpha.stop();
    let hang = TcpListener::bind(("127.0.0.1", alpha.port)).expect("alpha's port is free again");
    let (accepted_tx, accepted) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let hanger = std::thread::spawn(move || {
        let held = hang.accept();
        let _ = accepted_tx.send(());
        // Hold the connection (and the port) until the test lets go.
        let _ = released.recv();
        drop(held);
        drop(hang);
    });

    let mut cmd = Command::new(cli_bin());
    cmd.arg("--profile").arg(alice.profile());
    for (d, u) in &resolve.0 {
        cmd.args(["--resolve", &format!("{d}={u}")]);
    }
    cmd.args([
        "--timeout",
        "600",
        "send",
        "--to",
        "bob@beta.test",
        "--subject",
        "Cut",
    ])
    .env_remove("SEALPOST_PASSPHRASE")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello Bob\n")
        .unwrap();
    // The first connection to alpha during a send is the lookup of bob relayed through
    // it; the letter is in the outbox before.
    accepted
        .recv_timeout(DEADLINE)
        .expect("the CLI connects to its home to look bob up");
    // SAFETY: signalling the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = wait_with_deadline(child);
    assert_eq!(out.0, 130, "{out:?}");
    let line = out.2.lines().last().unwrap_or_default().to_string();
    assert!(
        line.starts_with("sealpost: error: interrupted: ")
            && line.contains("kept in the outbox")
            && line.contains("sealpost outbox flush"),
        "{out:?}"
    );
    assert!(!out.2.contains("panicked"), "{out:?}");
    assert_eq!(outbox_len(&alice), 1, "the letter waits in the outbox");
    let waiting = alice.ok(&["outbox", "list", "--json"], b"").json();
    assert_eq!(waiting[0]["waiting_for"], "lookups", "{waiting:#}");
    assert_eq!(waiting[0]["recipients"][0], "bob@beta.test", "{waiting:#}");

    // The node comes back: the outbox delivers it, once.
    release.send(()).unwrap();
    hanger.join().unwrap();
    alpha.restart();
    let out = alice.ok(&["outbox", "flush"], b"");
    assert!(out.stdout.contains("submitted 1, waiting 0"), "{out:?}");
    let fetches = bob.fetch_until(DEADLINE, |f| {
        f.iter()
            .flat_map(|x| x["new"].as_array().cloned().unwrap_or_default())
            .count()
            >= 1
    });
    let subjects: Vec<String> = fetches
        .iter()
        .flat_map(|x| x["new"].as_array().cloned().unwrap_or_default())
        .map(|m| m["header"]["subject"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(subjects, ["Cut"], "{fetches:#?}");
}

/// (exit code, stdout, stderr) of `child`, killed if it outlives [`DEADLINE`].
fn wait_with_deadline(mut child: std::process::Child) -> (i32, String, String) {
    let end = Instant::now() + DEADLINE;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the CLI did not exit after SIGINT");
        }
        // Waiting for a process to exit: no readiness signal to wait on but its end.
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        out_t.join().unwrap(),
        err_t.join().unwrap(),
    )
}

// ---------------------------------------------------------------------------------------
// Closed pipes

/// Runs the CLI with stdout (and, with `close_stderr`, stderr) going into a pipe whose
/// reader has already gone, as after `| head -c1`. Returns (exit code, stderr).
fn run_into_closed_pipe(u: &User, args: &[&str], close_stderr: bool) -> (i32, String) {
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    let mut cmd = Command::new(cli_bin());
    cmd.arg("--profile").arg(u.profile());
    for (d, url) in &u.resolve.0 {
        cmd.args(["--resolve", &format!("{d}={url}")]);
    }
    cmd.args(args)
        .env_remove("SEALPOST_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(closed())
        .stderr(if close_stderr {
            closed()
        } else {
            Stdio::piped()
        });
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_command_panics_when_its_reader_goes_away() {
    let node = Node::start("pipes");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &node.url);
    let alice = User::init("alice@alpha.test", &[&node], &resolve);
    let bob = User::init("bob@alpha.test", &[&node], &resolve);
    bob.ok(
        &["send", "--to", "alice@alpha.test", "--subject", "Pipes"],
        b"Hi\n",
    );
    let fetches = alice.fetch_until(DEADLINE, |f| {
        f.iter()
            .any(|x| x["new"].as_array().is_some_and(|a| !a.is_empty()))
    });
    let id = fetches
        .iter()
        .flat_map(|x| x["new"].as_array().cloned().unwrap_or_default())
        .next()
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Every command with --json output (spec/client.md §7).
    let json_commands: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["read", &id[..8]],
        vec!["fetch"],
        vec!["whoami"],
        vec!["fingerprint"],
        vec!["contact", "list"],
        vec!["contact", "show", "bob@alpha.test"],
        vec!["node", "list"],
        vec!["outbox", "list"],
        vec!["resolve", "list"],
        vec!["legacy", "list"],
        vec!["gateway", "show"],
    ];
    for args in &json_commands {
        let mut a = vec!["--json"];
        a.extend(args);
        let (code, stderr) = run_into_closed_pipe(&alice, &a, false);
        assert!(!stderr.contains("panicked"), "{a:?}: {stderr}");
        assert_eq!(code, 0, "{a:?}: {stderr}");
        // And with stderr gone as well.
        let (code, _) = run_into_closed_pipe(&alice, &a, true);
        assert_eq!(code, 0, "{a:?} with stderr closed");
    }
    // export-key has no --json but writes to stdout all the same.
    for args in [vec!["export-key"], vec!["export-key", "--secret"]] {
        for close_stderr in [false, true] {
            let (code, stderr) = run_into_closed_pipe(&alice, &args, close_stderr);
            assert_eq!(
                code, 0,
                "{args:?} (stderr closed: {close_stderr}): {stderr}"
            );
            assert!(stderr.is_empty(), "{args:?}: {stderr}");
        }
    }
    // Quiet about a closed pipe only: a backup that did not reach a full disk is an error.
    let out = Command::new(cli_bin())
        .arg("--profile")
        .arg(alice.profile())
        .args(["export-key", "--secret"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("writing to stdout") && stderr.contains("No space left"),
        "{stderr}"
    );
    // init --json, into a closed pipe: the profile is made all the same.
    let carol = User::new("carol@alpha.test", &resolve);
    let (code, stderr) = run_into_closed_pipe(
        &carol,
        &["--json", "init", "carol@alpha.test", "--node", &node.url],
        false,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(carol.profile().join("config.json").exists());

    // The shell pipeline of the issue, with bash's exit status of the first command.
    let line = format!(
        "set -o pipefail; '{}' --profile '{}' --json list | head -c1 >/dev/null",
        cli_bin().display(),
        alice.profile().display()
    );
    let out = Command::new("bash").args(["-c", &line]).output().unwrap();
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );

    // The node's own output too.
    let dir = TempDir::new("node-pipe");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(node_bin())
        .args(["init", "--dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );
    assert!(dir.path().join("node.toml").exists());
}

// ---------------------------------------------------------------------------------------
// init: what it keeps, says and asks

#[test]
fn init_keeps_its_resolve_entries_says_when_it_follows_a_descriptor_and_warns_without_passphrase() {
    let node = Node::start("init");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &node.url);
    let alice = User::new("alice@alpha.test", &resolve);
    // Given as localhost; the node's descriptor names 127.0.0.1.
    let localhost = node.url.replace("127.0.0.1", "localhost");
    let out = alice.run_owned(&init_args("alice@alpha.test", &[&localhost]), b"");
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{localhost} names itself {}", node.url)),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("sealpost: warning: no passphrase")
            && out.stderr.contains("unprotected on disk"),
        "{out:?}"
    );
    // Without any --resolve now: the profile has the entry.
    let listed = run_cli(
        &alice.profile(),
        &Resolve::default(),
        &[],
        &["resolve".into(), "list".into(), "--json".into()],
        b"",
    );
    assert!(listed.ok(), "{listed:?}");
    assert_eq!(listed.json()["alpha.test"], node.url.as_str(), "{listed:?}");

    // With a passphrase: no warning, and a locked key needs it later.
    let mut bob = User::new("bob@alpha.test", &resolve);
    bob.env
        .push(("SEALPOST_PASSPHRASE".into(), "s3cret".into()));
    let out = bob.run_owned(&init_args("bob@alpha.test", &[&node.url]), b"");
    assert!(out.ok() && !out.stderr.contains("unprotected"), "{out:?}");
    bob.env.clear();
    let out = bob.run(&["fetch"], b"");
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.error_line().contains("SEALPOST_PASSPHRASE"), "{out:?}");
}

/// A child process on a new pseudo-terminal (its controlling terminal); the test types.
struct Pty {
    master: std::fs::File,
    seen: mpsc::Receiver<u8>,
    screen: String,
    child: std::process::Child,
}

impl Pty {
    fn spawn(mut cmd: Command) -> Pty {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty fills two descriptors we then own.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: fresh descriptors from openpty, owned from here on.
        let (master, slave): (std::fs::File, std::fs::File) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(master),
                std::fs::File::from_raw_fd(slave),
            )
        };
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: setsid and TIOCSCTTY between fork and exec, async-signal-safe: the pty
        // becomes the child's controlling terminal (/dev/tty).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd);
        let (tx, seen) = mpsc::channel();
        let mut reader = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                for b in &buf[..n] {
                    let _ = tx.send(*b);
                }
            }
        });
        Pty {
            master,
            seen,
            screen: String::new(),
            child,
        }
    }

    /// Waits until the terminal shows `text` (after what was already waited for).
    fn expect(&mut self, text: &str) {
        let end = Instant::now() + DEADLINE;
        while !self.screen.contains(text) {
            let left = end.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(b) => self.screen.push(b as char),
                Err(_) => panic!("terminal never showed {text:?}; it shows {:?}", self.screen),
            }
        }
        let at = self.screen.find(text).unwrap() + text.len();
        self.screen.drain(..at);
    }

    fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// The exit code, once the rest of the screen has been read; and that rest.
    fn finish(mut self) -> (i32, String) {
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "still running: {:?}", self.screen);
            if let Ok(b) = self.seen.recv_timeout(Duration::from_millis(50)) {
                self.screen.push(b as char);
            }
        };
        while let Ok(b) = self.seen.recv_timeout(Duration::from_millis(200)) {
            self.screen.push(b as char);
        }
        (status.code().unwrap_or(-1), self.screen)
    }
}

fn cli_at_terminal(u: &User, args: &[&str]) -> Pty {
    cli_at_terminal_editing(u, args, "false")
}

/// At a terminal, `send` takes the body from $EDITOR: `editor` is run with the draft's path.
fn cli_at_terminal_editing(u: &User, args: &[&str], editor: &str) -> Pty {
    let mut cmd = Command::new(cli_bin());
    cmd.arg("--profile").arg(u.profile());
    for (d, url) in &u.resolve.0 {
        cmd.args(["--resolve", &format!("{d}={url}")]);
    }
    cmd.args(args)
        .env_remove("SEALPOST_PASSPHRASE")
        .env("EDITOR", editor)
        .env("VISUAL", editor);
    Pty::spawn(cmd)
}

#[test]
fn at_a_terminal_init_asks_for_a_passphrase_and_commands_ask_for_it_without_echo() {
    let node = Node::start("tty");
    let mut resolve = Resolve::default();
    resolve.add("alpha.test", &node.url);
    let alice = User::new("alice@alpha.test", &resolve);

    let mut t = cli_at_terminal(&alice, &["init", "alice@alpha.test", "--node", &node.url]);
    t.expect("Passphrase for your new secret key (empty for none): ");
    t.type_line("correct horse");
    t.expect("The same passphrase again: ");
    t.type_line("correct horse");
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains("correct horse"), "echoed: {screen}");
    assert!(!screen.contains("unprotected"), "{screen}");
    let whoami = alice.ok(&["whoami", "--json"], b"").json();
    assert_eq!(whoami["locked"], true);

    // A command that needs the key asks; a wrong answer gets another try.
    let mut t = cli_at_terminal(&alice, &["fetch"]);
    t.expect("Passphrase for alice@alpha.test: ");
    t.type_line("wrong horse");
    t.expect("wrong passphrase; try again");
    t.expect("Passphrase for alice@alpha.test: ");
    t.type_line("correct horse");
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("0 new letters"), "{screen}");
    assert!(!screen.contains("horse"), "echoed: {screen}");

    // An empty passphrase at init is allowed, with the warning.
    let bob = User::new("bob@alpha.test", &resolve);
    let mut t = cli_at_terminal(&bob, &["init", "bob@alpha.test", "--node", &node.url]);
    t.expect("Passphrase for your new secret key (empty for none): ");
    t.type_line("");
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("unprotected on disk"), "{screen}");
}
