//! The bridge against real IMAP clients, with Dovecot as the reference: one Python imaplib
//! conformance script must pass against both; mbsync syncs the bridge into a Maildir and a
//! second run transfers nothing; curl's imap:// lists and fetches.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sealpost_bridge::import;
use sealpost_bridge::source::{Folder, Letter, Verdict};
use support::{Bridge, Dovecot, PASSWORD, USER, run, script};

fn conformance(port: u16) -> (bool, String) {
    run(Command::new("python3")
        .arg(script("imap_conformance.py"))
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(USER)
        .arg(PASSWORD))
}

#[test]
fn conformance_script_passes_against_dovecot_and_the_bridge() {
    let dovecot = Dovecot::start(USER, PASSWORD);
    let (ok, out) = conformance(dovecot.port);
    assert!(
        ok,
        "reference run against Dovecot failed:\n{out}\nlog:\n{}",
        dovecot.log()
    );
    let bridge = Bridge::start();
    let (ok, out) = conformance(bridge.port);
    assert!(ok, "bridge failed the conformance script:\n{out}");
    assert!(out.contains("ALL OK"));
}

fn letters(n: usize, first: usize) -> Vec<Letter> {
    (first..first + n)
        .map(|i| Letter {
            id: format!("envelope-{i}"),
            rfc5322: format!(
                "From: Alice <alice@alpha.test>\r\nTo: {USER}\r\nSubject: letter {i}\r\nMessage-ID: <{i}@alpha.test>\r\n\r\nBody of letter {i}.\r\n"
            )
            .into_bytes(),
            verdict: if i % 2 == 0 {
                Verdict::Verified { signer: "alice@alpha.test".into() }
            } else {
                Verdict::Legacy { note: "arrived via the SMTP gateway".into() }
            },
            received: 1_790_000_000 + i as i64,
            folder: Folder::Inbox,
        })
        .collect()
}

fn mbsync_conf(dir: &Path, port: u16) -> PathBuf {
    let conf = dir.join("mbsyncrc");
    let mail = dir.join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::write(
        &conf,
        format!(
            "IMAPAccount bridge\nHost 127.0.0.1\nPort {port}\nUser {USER}\nPass {PASSWORD}\nSSLType None\nAuthMechs PLAIN LOGIN\n\n\
             IMAPStore remote\nAccount bridge\n\n\
             MaildirStore local\nPath {m}/\nInbox {m}/INBOX\nSubFolders Verbatim\n\n\
             Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\nSyncState *\n",
            m = mail.display()
        ),
    )
    .unwrap();
    conf
}

fn maildir_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["cur", "new"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            out.extend(rd.map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

#[test]
fn mbsync_syncs_the_bridge_and_a_second_run_transfers_nothing() {
    let bridge = Bridge::start();
    let n = import::import(&bridge.shared, &letters(20, 0)).unwrap();
    assert_eq!(n, 20);
    // The same letters again (a source that repeats itself) are not imported twice.
    assert_eq!(import::import(&bridge.shared, &letters(20, 0)).unwrap(), 0);
    let tmp = tempfile::tempdir().unwrap();
    let conf = mbsync_conf(tmp.path(), bridge.port);
    let (ok, out) = run(Command::new("mbsync")
        .arg("-V")
        .arg("-c")
        .arg(&conf)
        .arg("-a"));
    assert!(ok, "mbsync failed:\n{out}");
    let inbox = tmp.path().join("mail/INBOX");
    let files = maildir_files(&inbox);
    assert_eq!(files.len(), 20, "{out}");
    // mbsync stores messages with LF line ends (and adds X-TUID while it works).
    let all: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().replace("\r\n", "\n"))
        .collect();
    let verified = all
        .iter()
        .find(|m| m.contains("Subject: letter 4\n"))
        .expect("letter 4 synced");
    assert!(
        verified.starts_with("Authentication-Results: sealpost.bridge; sealpost=pass"),
        "{verified}"
    );
    let legacy = all
        .iter()
        .find(|m| m.contains("letter 3\n"))
        .expect("letter 3 synced");
    assert!(
        legacy.contains("Subject: [not end-to-end] letter 3\n"),
        "{legacy}"
    );
    for folder in ["Sent", "Drafts", "Trash", "Archive"] {
        assert!(
            tmp.path().join("mail").join(folder).join("cur").is_dir(),
            "{folder} created by mbsync"
        );
    }
    // Nothing transferred either way: the Maildir (names carry the flags) and the bridge's
    // store (UIDs, flags) are exactly as before the second run.
    let snapshot = |b: &Bridge| {
        b.shared
            .with_store(|s| (s.version(), s.mailbox("INBOX").unwrap().messages.clone()))
    };
    let before: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read(f).unwrap()))
        .collect();
    let store_before = snapshot(&bridge);
    let (ok, out) = run(Command::new("mbsync")
        .arg("-V")
        .arg("-c")
        .arg(&conf)
        .arg("-a"));
    assert!(ok, "second mbsync failed:\n{out}");
    let after: Vec<(PathBuf, Vec<u8>)> = maildir_files(&inbox)
        .iter()
        .map(|f| (f.clone(), std::fs::read(f).unwrap()))
        .collect();
    assert_eq!(before, after, "second run changed the Maildir:\n{out}");
    assert_eq!(
        store_before,
        snapshot(&bridge),
        "second run changed the bridge:\n{out}"
    );
    // Two new letters: only they come.
    import::import(&bridge.shared, &letters(2, 100)).unwrap();
    let (ok, out) = run(Command::new("mbsync")
        .arg("-V")
        .arg("-c")
        .arg(&conf)
        .arg("-a"));
    assert!(ok, "incremental run:\n{out}");
    let files = maildir_files(&inbox);
    assert_eq!(files.len(), 22);
    let new: Vec<&PathBuf> = files
        .iter()
        .filter(|f| !before.iter().any(|(p, _)| p == *f))
        .collect();
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|f| {
        std::fs::read_to_string(f)
            .unwrap()
            .contains("Body of letter 10")
    }));
}

#[test]
fn curl_lists_and_fetches() {
    let bridge = Bridge::start();
    import::import(&bridge.shared, &letters(3, 0)).unwrap();
    let url = format!("imap://127.0.0.1:{}/", bridge.port);
    let user = format!("{USER}:{PASSWORD}");
    let (ok, out) = run(Command::new("curl").args(["-sS", "--max-time", "20", "-u", &user, &url]));
    assert!(ok, "curl LIST failed: {out}");
    for folder in ["INBOX", "Sent", "Drafts", "Trash", "Archive"] {
        assert!(out.contains(folder), "curl list lacks {folder}: {out}");
    }
    let (ok, out) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "20",
        "-u",
        &user,
        &format!("{url}INBOX;UID=2"),
    ]));
    assert!(ok, "curl FETCH failed: {out}");
    assert!(
        out.contains("Subject: [not end-to-end] letter 1") && out.contains("Body of letter 1."),
        "{out}"
    );
    let (ok, _) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "20",
        "-u",
        &format!("{USER}:wrong"),
        &url,
    ]));
    assert!(!ok, "curl with a wrong password must fail");
}

/// Reads lines until one contains `needle` (or the deadline passes).
fn read_until(r: &mut impl std::io::BufRead, needle: &str, deadline: std::time::Instant) -> String {
    let mut all = String::new();
    while std::time::Instant::now() < deadline {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                all.push_str(&line);
                if line.contains(needle) {
                    return all;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {needle:?} before the deadline; got:\n{all}");
}

#[test]
fn idle_shows_an_imported_letter_within_one_second_and_state_survives_restart() {
    use std::io::{BufReader, Write};
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::start_in(tmp.path());
    import::import(&bridge.shared, &letters(1, 0)).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", bridge.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = tcp.try_clone().unwrap();
    let mut r = BufReader::new(tcp);
    let far = || Instant::now() + Duration::from_secs(10);
    read_until(&mut r, "* OK", far());
    write!(w, "a LOGIN {USER} {PASSWORD}\r\nb SELECT INBOX\r\n").unwrap();
    let selected = read_until(&mut r, "b OK", far());
    let validity: String = selected
        .split("UIDVALIDITY ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    write!(w, "c IDLE\r\n").unwrap();
    read_until(&mut r, "+ ", far());
    let t0 = Instant::now();
    import::import(&bridge.shared, &letters(1, 7)).unwrap();
    read_until(&mut r, "* 2 EXISTS", t0 + Duration::from_secs(1));
    let elapsed = t0.elapsed();
    assert!(elapsed < Duration::from_secs(1), "IDLE took {elapsed:?}");
    write!(w, "DONE\r\nd LOGOUT\r\n").unwrap();
    read_until(&mut r, "c OK", far());
    drop((r, w));
    // A restart keeps UIDVALIDITY and UIDs; an old letter offered again is not re-imported.
    bridge.stop();
    let bridge = Bridge::start_in(tmp.path());
    assert_eq!(import::import(&bridge.shared, &letters(1, 7)).unwrap(), 0);
    let (ok, out) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "20",
        "-u",
        &format!("{USER}:{PASSWORD}"),
        "-X",
        "EXAMINE INBOX",
        &format!("imap://127.0.0.1:{}/", bridge.port),
    ]));
    assert!(
        ok && out.contains(&format!("UIDVALIDITY {validity}")) && out.contains("UIDNEXT 3"),
        "{out}"
    );
}

#[test]
fn tls_listener_serves_imaps_and_plain_non_loopback_is_refused() {
    use sealpost_bridge::server;
    // Without TLS only loopback; with TLS any address.
    assert!(server::check_listen("0.0.0.0:1143".parse().unwrap(), false).is_err());
    assert!(server::check_listen("192.0.2.1:1143".parse().unwrap(), false).is_err());
    assert!(server::check_listen("0.0.0.0:1143".parse().unwrap(), true).is_ok());
    assert!(server::check_listen("127.0.0.1:1143".parse().unwrap(), false).is_ok());
    assert!(server::check_listen("[::1]:1143".parse().unwrap(), false).is_ok());

    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = sealpost_testkit::pki::certificates(pki.path());
    let acceptor = server::tls_acceptor(&cert, &key).unwrap();
    let bridge = Bridge::start();
    let shared = bridge.shared.clone();
    import::import(&shared, &letters(1, 0)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let _ = server::serve(
            listener,
            Some(acceptor),
            shared,
            server::imap_handler,
            std::future::pending(),
        )
        .await;
    });
    let (ok, out) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "20",
        "--cacert",
        ca.to_str().unwrap(),
        "-u",
        &format!("{USER}:{PASSWORD}"),
        &format!("imaps://127.0.0.1:{port}/INBOX;UID=1"),
    ]));
    assert!(ok && out.contains("Body of letter 0."), "{out}");
    // A plain-text client on the TLS port gets nothing it can use.
    let (ok, _) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "5",
        "-u",
        &format!("{USER}:{PASSWORD}"),
        &format!("imap://127.0.0.1:{port}/"),
    ]));
    assert!(!ok);
    rt.shutdown_background();
}
