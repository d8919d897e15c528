//! The bridge against real IMAP clients, with Dovecot as the reference: one Python imaplib
//! conformance script must pass against both; mbsync syncs the bridge into a Maildir and a
//! second run transfers nothing; curl's imap:// lists and fetches.

mod support;

use std::process::Command;

use support::{Bridge, Dovecot, PASSWORD, USER, run, script};

fn conformance(port: u16) -> (bool, String) {
    run(Command::new("python3").arg(script("imap_conformance.py")).arg("127.0.0.1").arg(port.to_string()).arg(USER).arg(PASSWORD))
}

#[test]
fn conformance_script_passes_against_dovecot_and_the_bridge() {
    let dovecot = Dovecot::start();
    let (ok, out) = conformance(dovecot.port);
    assert!(ok, "reference run against Dovecot failed:\n{out}\nlog:\n{}", dovecot.log());
    let bridge = Bridge::start();
    let (ok, out) = conformance(bridge.port);
    assert!(ok, "bridge failed the conformance script:\n{out}");
    assert!(out.contains("ALL OK"));
}
