#![no_main]
//! Fuzz target `batch`: the check is `proto/tests/fuzz_checks/mod.rs` (shared with the
//! regression test that replays saved crashers).
use libfuzzer_sys::fuzz_target;

#[path = "../../proto/tests/fuzz_checks/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::batch(data));
