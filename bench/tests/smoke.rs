//! The benchmark harness works end to end at tiny sizes (real node processes, real Postfix,
//! real gpg). It measures nothing: `make bench` does, in release mode.

use std::process::Command;

#[test]
fn quick_run_produces_every_row() {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let json = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost-bench"))
        .args(["--quick", "--repo", repo, "--json"])
        .arg(json.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for want in [
        "durable ingest",
        "node peak RSS",
        "end-to-end latency p99",
        "seal+sign 4 KiB letters/s vs gpg",
        "open+verify 1 MiB letters/s vs raw sequoia",
        "mbsync full sync of",
        "mbsync incremental sync",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "no row {want:?} in {names:?}"
        );
    }
    for r in &rows {
        let v = r["sealpost"].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{r}");
        if let Some(ratio) = r["ratio"].as_f64() {
            assert!(ratio.is_finite() && ratio > 0.0, "{r}");
        }
    }
}
