//! A throwaway certificate authority made with the `openssl` command, for tests of TLS
//! nodes and of clients that trust a private CA.

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, leaf.pem, leaf.key).
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let run = |line: String| openssl(dir, &line.split_whitespace().collect::<Vec<_>>());
    run(format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=sealpost-test-CA"
    ));
    run(format!(
        "req {ec} -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1"
    ));
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run("x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile leaf.ext".into());
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// Another server certificate signed by the CA that [`certificates`] made in `dir`, for
/// the DNS names `names`: (leaf.pem, leaf.key), named after `stem`.
pub fn leaf_for_names(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let run = |line: String| openssl(dir, &line.split_whitespace().collect::<Vec<_>>());
    run(format!(
        "req {ec} -keyout {stem}.key -out {stem}.csr -subj /CN={}",
        names[0]
    ));
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join(format!("{stem}.ext")),
        format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
            sans.join(",")
        ),
    )
    .unwrap();
    run(format!(
        "x509 -req -in {stem}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {stem}.pem -days 2 -extfile {stem}.ext"
    ));
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}
