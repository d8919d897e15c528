//! The bridge against Dovecot, serving the same letters in the same run: mbsync (isync)
//! syncs each into a fresh Maildir (full), then again after 10 new letters (incremental).
//! Both servers are warmed first (Dovecot builds its index, the bridge opens its store), so
//! the times are those of a mail app's sync, not of first-time set-up.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sealpost_bridge::auth::Credentials;
use sealpost_bridge::import;
use sealpost_bridge::shared::Shared;
use sealpost_bridge::source::{Folder, Letter, Verdict};
use sealpost_bridge::store::Store;
use sealpost_testkit::dovecot::Dovecot;

use crate::report::Row;

const USER: &str = "bench@beta.test";
const PASSWORD: &str = "bench-password";
pub const NEW: usize = 10;

fn letter(i: usize) -> Letter {
    let body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(30);
    Letter {
        id: format!("bench-{i}"),
        rfc5322: format!(
            "From: Alice <alice@alpha.test>\r\nTo: {USER}\r\nSubject: Letter number {i}\r\n\
             Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}@alpha.test>\r\n\r\n{body}\r\n"
        )
        .into_bytes(),
        verdict: Verdict::Verified { signer: "alice@alpha.test".into() },
        received: 1_790_000_000 + i as i64,
        folder: Folder::Inbox,
    }
}

/// Puts letters `range` into the bridge (import) and Dovecot's Maildir (files, as delivered).
fn add(shared: &Shared, maildir: &Path, range: std::ops::Range<usize>) -> Result<()> {
    let letters: Vec<Letter> = range.map(letter).collect();
    for chunk in letters.chunks(1000) {
        import::import(shared, chunk)?;
        for l in chunk {
            // The very bytes the bridge serves, so both sides move the same data.
            let served = import::compose(l);
            let name = maildir
                .join("new")
                .join(format!("{}.{}.bench", l.received, l.id));
            std::fs::write(&name, served)?;
        }
    }
    let ok = Command::new("chown")
        .arg("-R")
        .arg("nobody:nogroup")
        .arg(maildir)
        .status()?;
    if !ok.success() {
        bail!("chown of Dovecot's Maildir failed");
    }
    Ok(())
}

fn mbsync_conf(dir: &Path, port: u16) -> Result<std::path::PathBuf> {
    let mail = dir.join("mail");
    std::fs::create_dir_all(&mail)?;
    let conf = dir.join("mbsyncrc");
    std::fs::write(
        &conf,
        format!(
            "IMAPAccount a\nHost 127.0.0.1\nPort {port}\nUser {USER}\nPass {PASSWORD}\nSSLType None\nAuthMechs PLAIN LOGIN\n\n\
             IMAPStore remote\nAccount a\n\nMaildirStore local\nPath {m}/\nInbox {m}/INBOX\nSubFolders Verbatim\n\n\
             Channel c\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSyncState *\n",
            m = mail.display()
        ),
    )?;
    Ok(conf)
}

fn mbsync(conf: &Path) -> Result<Duration> {
    let start = Instant::now();
    let out = Command::new("mbsync")
        .arg("-c")
        .arg(conf)
        .arg("-a")
        .output()
        .context("running mbsync")?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("mbsync failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

fn count(dir: &Path) -> usize {
    ["cur", "new"]
        .iter()
        .filter_map(|s| std::fs::read_dir(dir.join(s)).ok())
        .map(|d| d.count())
        .sum()
}

/// Warms a server: one EXAMINE of INBOX (Dovecot indexes its Maildir here).
fn warm(port: u16) -> Result<()> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "300",
            "-u",
            &format!("{USER}:{PASSWORD}"),
            "-X",
            "EXAMINE INBOX",
        ])
        .arg(format!("imap://127.0.0.1:{port}/"))
        .output()?;
    if !out.status.success() {
        bail!(
            "warming 127.0.0.1:{port} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub async fn run(work: &Path, n: usize) -> Result<Vec<Row>> {
    let dovecot = tokio::task::spawn_blocking(|| Dovecot::start(USER, PASSWORD)).await?;
    let maildir = dovecot.maildir();
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub))?;
    }
    let state = work.join("bridge-state");
    let shared = Shared::new(
        Store::open(&state)?,
        Credentials::new(USER.into(), PASSWORD.into()),
    );
    let (work2, shared2, maildir2) = (work.to_owned(), shared.clone(), maildir.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(sealpost_bridge::server::serve(
        listener,
        None,
        shared.clone(),
        sealpost_bridge::server::imap_handler,
        std::future::pending(),
    ));
    let dport = dovecot.port;
    let rows = tokio::task::spawn_blocking(move || -> Result<Vec<Row>> {
        add(&shared2, &maildir2, 0..n)?;
        warm(port)?;
        warm(dport)?;
        let (bdir, ddir) = (work2.join("mbsync-bridge"), work2.join("mbsync-dovecot"));
        let (bconf, dconf) = (mbsync_conf(&bdir, port)?, mbsync_conf(&ddir, dport)?);
        let full_b = mbsync(&bconf)?;
        let full_d = mbsync(&dconf)?;
        if count(&bdir.join("mail/INBOX")) != n || count(&ddir.join("mail/INBOX")) != n {
            bail!("full sync did not bring {n} letters to both Maildirs");
        }
        add(&shared2, &maildir2, n..n + NEW)?;
        warm(dport)?;
        // mbsync sleeps when its Maildir changed within the last second (a timestamp
        // guard); wait that out, so neither incremental run pays for it.
        std::thread::sleep(Duration::from_millis(1100));
        let inc_b = mbsync(&bconf)?;
        let inc_d = mbsync(&dconf)?;
        if count(&bdir.join("mail/INBOX")) != n + NEW || count(&ddir.join("mail/INBOX")) != n + NEW
        {
            bail!("incremental sync did not bring the {NEW} new letters to both Maildirs");
        }
        let mut full = Row::ratio(
            format!("mbsync full sync of {n} letters, bridge vs Dovecot"),
            full_b.as_secs_f64(),
            full_d.as_secs_f64(),
            "s",
        );
        full.note = "lower is better; same letters, same run".into();
        let mut inc = Row::ratio(
            format!("mbsync incremental sync ({NEW} new of {})", n + NEW),
            inc_b.as_secs_f64(),
            inc_d.as_secs_f64(),
            "s",
        );
        inc.note = "lower is better; goal < 1 s".into();
        Ok(vec![full, inc])
    })
    .await??;
    drop(dovecot);
    Ok(rows)
}
