//! Every input the fuzzers once crashed on (or that is worth keeping), saved as a file under
//! `fuzz_regressions/TARGET/`, runs through the same check as its fuzz target
//! (`fuzz_checks/mod.rs`). To keep a crasher: copy `fuzz/artifacts/TARGET/crash-*` there
//! with a name that says what it was.

#[path = "fuzz_checks/mod.rs"]
mod fuzz_checks;

use std::path::Path;

#[test]
fn saved_fuzz_inputs_pass_their_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut ran = 0;
    let mut failed = Vec::new();
    for entry in std::fs::read_dir(&root).expect("tests/fuzz_regressions exists") {
        let dir = entry.expect("directory entry").path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some((_, check)) = fuzz_checks::TARGETS.iter().find(|(t, _)| *t == name) else {
            panic!("{}: no fuzz target of that name", dir.display());
        };
        for file in std::fs::read_dir(&dir).expect("read target directory") {
            let path = file.expect("entry").path();
            let data = std::fs::read(&path).expect("read input");
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(path.display().to_string());
            }
            ran += 1;
        }
    }
    assert!(
        failed.is_empty(),
        "saved fuzz inputs fail again: {failed:#?}"
    );
    assert!(ran > 0, "no saved inputs found under {}", root.display());
}
