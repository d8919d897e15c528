#![no_main]
//! Fuzz target `oblivious`: padded Binary HTTP lookups and answers, OHTTP requests opened by
//! a gateway, key configurations. The check is `proto/tests/fuzz_checks/mod.rs` (shared with
//! the regression test that replays saved inputs).
use libfuzzer_sys::fuzz_target;

#[path = "../../proto/tests/fuzz_checks/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::oblivious(data));
