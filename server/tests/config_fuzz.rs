//! Saved inputs of the `config` fuzz target (`fuzz/fuzz_targets/config.rs`) under
//! `fuzz_regressions/config/`, replayed through the same check (`fuzz_checks/config.rs`):
//! `node.toml` text and `--set` overrides through `Config::load_with`, which must never
//! panic. To keep a crasher, copy `fuzz/artifacts/config/crash-*` there.

#[path = "fuzz_checks/config.rs"]
mod fuzz_checks;

/// What the shared check calls `config`.
mod config_under_test {
    pub use sealpost_server::config::*;
}

use std::path::Path;

#[test]
fn saved_config_fuzz_inputs_pass_the_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/config");
    let mut failed = Vec::new();
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fuzz_regressions/config exists") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read input");
        if std::panic::catch_unwind(|| fuzz_checks::config(&data)).is_err() {
            failed.push(path.display().to_string());
        }
        ran += 1;
    }
    assert!(
        failed.is_empty(),
        "saved config inputs fail again: {failed:#?}"
    );
    assert!(ran > 0, "no saved inputs in {}", dir.display());
}
