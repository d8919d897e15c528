#![no_main]
//! Fuzz target `bridge_smtp`: the bridge's SMTP session fed by an untrusted mail app. The
//! check is `bridge/tests/fuzz_checks/mod.rs` (shared with bridge/tests/fuzz_sessions.rs).
use libfuzzer_sys::fuzz_target;

#[path = "../../bridge/tests/fuzz_checks/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::smtp(data));
