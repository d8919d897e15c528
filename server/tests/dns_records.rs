//! `sealpost-node dns-records --config F`: every record an operator publishes, with the
//! DKIM keys checked against the key files by openssl (not by our own code).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sealpost-node");

fn node(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of the zone line for `name` (TXT strings joined).
fn txt(zone: &str, name: &str) -> String {
    let line = zone
        .lines()
        .find(|l| l.starts_with(&format!("{name}.\tIN\tTXT\t")))
        .unwrap_or_else(|| panic!("no record {name} in\n{zone}"));
    let value = line.splitn(4, '\t').nth(3).unwrap();
    value
        .split("\" \"")
        .map(|s| s.trim_matches('"'))
        .collect::<String>()
}

#[test]
fn dns_records_names_mx_spf_both_dkim_keys_dmarc_and_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, _, err) = node(&["init", "--dir", d, "--public-url", "https://node.gw.test"]);
    assert!(ok, "{err}");
    let config = dir.path().join("node.toml");

    // Without the gateway: only how the node is found.
    let (ok, zone, err) = node(&["dns-records", "--config", config.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        zone.contains("/.well-known/sealpost/node") && zone.contains("https://node.gw.test"),
        "{zone}"
    );
    assert!(!zone.contains("IN\tMX"), "{zone}");

    let text = std::fs::read_to_string(&config).unwrap();
    let (head, gateway) = text.split_once("[gateway]\n").unwrap();
    let gateway = gateway
        .replacen("enabled = false", "enabled = true", 1)
        .replacen("domain = \"\"", "domain = \"gw.test\"", 1)
        .replacen("postmaster = \"\"", "postmaster = \"dave@gw.test\"", 1);
    let text = format!("{head}[gateway]\n{gateway}");
    std::fs::write(&config, text).unwrap();
    let (ok, zone, err) = node(&["dns-records", "--config", config.to_str().unwrap()]);
    assert!(ok, "{err}\n{}", std::fs::read_to_string(&config).unwrap());
    assert!(
        zone.contains("gw.test.\tIN\tMX\t10 node.gw.test."),
        "{zone}"
    );
    assert_eq!(txt(&zone, "gw.test"), "v=spf1 mx -all");
    assert_eq!(
        txt(&zone, "_dmarc.gw.test"),
        "v=DMARC1; p=reject; adkim=s; aspf=r; rua=mailto:dave@gw.test"
    );
    // The RSA key, as openssl reads the key file the node made.
    let rsa = txt(&zone, "sealpost-rsa._domainkey.gw.test");
    let der = Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(dir.path().join("keys/dkim.rsa.pem"))
        .output()
        .unwrap();
    assert!(der.status.success());
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der.stdout);
    assert_eq!(rsa, format!("v=DKIM1; k=rsa; p={b64}"));
    assert!(
        zone.lines()
            .filter(|l| l.starts_with("sealpost-rsa."))
            .all(|l| l.split('"').all(|s| s.len() <= 255)),
        "TXT strings are at most 255 bytes: {zone}"
    );
    let ed = txt(&zone, "sealpost._domainkey.gw.test");
    assert!(ed.starts_with("v=DKIM1; k=ed25519; p="), "{ed}");
    // A second run prints the same keys (made once).
    let (_, again, _) = node(&["dns-records", "--config", config.to_str().unwrap()]);
    assert_eq!(again, zone);
}
