//! What the bridge's fuzz targets check, in one place: `fuzz/fuzz_targets/bridge_*.rs`
//! include this file by path, and `bridge/tests/fuzz_sessions.rs` runs generated and saved
//! inputs through the same functions in `make test`.
//!
//! Input is what an untrusted mail app might send. The IMAP session (logged in, as an app
//! would be after LOGIN) and the SMTP submission session must never panic, must answer in
//! well-formed lines, and must stay within their bounds; SMTP must never deliver before AUTH.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use sealpost_bridge::auth::Credentials;
use sealpost_bridge::imap::Harness;
use sealpost_bridge::shared::Shared;
use sealpost_bridge::store::Store;
use sealpost_proto::smtp::{CredentialCheck, DeliveryResult, Output, RcptVerdict, Session};

/// One store for the whole run (a temp dir that lives as long as the process).
fn shared() -> Arc<Shared> {
    static SHARED: OnceLock<(tempfile::TempDir, Arc<Shared>)> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path()).expect("store opens");
            let shared = Shared::new(store, Credentials::new("me@a.test".into(), "pw".into()));
            (dir, shared)
        })
        .1
        .clone()
}

/// Output of a session never grows beyond this per input byte (plus a fixed allowance for
/// FETCH of stored messages): a bound on what one command can make the bridge say.
const MAX_OUTPUT: usize = 64 * 1024 * 1024;

pub fn imap(data: &[u8]) {
    let mut h = Harness::new(shared());
    let (greeting, _) = h.step();
    assert!(greeting.starts_with(b"* OK"), "greeting");
    h.feed(b"a LOGIN me@a.test pw\r\n");
    let (out, _) = h.step();
    assert!(
        out.starts_with(b"a OK"),
        "login: {}",
        String::from_utf8_lossy(&out)
    );
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let mut total = 0usize;
    for chunk in data.chunks(split) {
        if h.is_closing() {
            return;
        }
        h.feed(chunk);
        let (out, _) = h.step();
        total += out.len();
        assert!(total <= MAX_OUTPUT, "output unbounded");
        if !out.is_empty() {
            assert!(
                out.ends_with(b"\r\n") || h.is_closing() || out.ends_with(b"}\r\n"),
                "a response ends its line"
            );
        }
    }
}

pub fn smtp(data: &[u8]) {
    let check: CredentialCheck = Box::new(|u, p| u == b"me@a.test" && p == b"pw");
    let (mut s, _) = Session::new_submission(sealpost_bridge::smtp::config(), check);
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    for chunk in data.chunks(split) {
        let mut pending = s.feed(chunk);
        while let Some(o) = (!pending.is_empty()).then(|| pending.remove(0)) {
            match o {
                Output::Reply(b) => assert!(b.is_empty() || b.ends_with(b"\r\n")),
                Output::CheckRecipient(_) => {
                    assert!(s.is_authenticated(), "RCPT before AUTH");
                    pending.splice(0..0, s.recipient_verdict(RcptVerdict::Accept));
                }
                Output::Deliver(tx) => {
                    assert!(s.is_authenticated(), "delivery before AUTH");
                    assert!(!tx.rcpt_to.is_empty());
                    pending.splice(0..0, s.delivery_result(DeliveryResult::Stored("x".into())));
                }
                Output::StartTls => panic!("STARTTLS is not offered"),
                Output::Close => return,
            }
        }
    }
}
