//! The check of the `config` fuzz target (`fuzz/fuzz_targets/config.rs`), shared with
//! `server/tests/config_fuzz_regressions.rs`. The includer provides `crate::config_under_test`
//! (the node's `config` module).
//!
//! Input: `node.toml` text, then optionally a NUL byte and `--set` overrides, one per line.
//! `Config::load_with` never panics, and loading the same input twice gives the same result.

#![allow(dead_code)]

use std::path::PathBuf;

use crate::config_under_test::Config;

/// A file of our own to write the text to (`load_with` reads a path).
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sealpost-fuzz-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir.join("node.toml")
}

pub fn config(data: &[u8]) {
    let (text, overrides) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let overrides: Vec<String> = String::from_utf8_lossy(overrides)
        .lines()
        .map(str::to_string)
        .collect();
    let path = scratch();
    std::fs::write(&path, text).expect("write scratch config");
    let first = Config::load_with(&path, &overrides);
    let again = Config::load_with(&path, &overrides);
    match (&first, &again) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "the same input loads the same config");
            // Everything `run` checks before it binds anything.
            assert!(a.validate().is_ok(), "a loaded config validates");
            let _ = a.resolve(&a.data_dir);
        }
        (Err(_), Err(_)) => {}
        _ => panic!("the same input loaded once and failed once"),
    }
}
