//! dkimpy (Debian's python3-dkim, with python3-nacl for Ed25519) as the independent DKIM
//! verifier of the gateway's tests: the key records are given locally instead of DNS; and
//! as the signer of a legacy sender's mail ([`dkimpy_sign`]).

use std::io::Write;
use std::process::{Command, Stdio};

/// dkimpy's verdict on each DKIM-Signature of `message`, with `records` instead of DNS.
pub fn dkimpy(message: &[u8], records: &[(String, String)]) -> Vec<bool> {
    let script = r#"
import sys, json, dkim
records = dict(json.loads(sys.argv[1]))
msg = sys.stdin.buffer.read()
def dns(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    value = records.get(name.rstrip('.'))
    return value.encode() if value else None
d = dkim.DKIM(msg)
n = len([l for l in msg.split(b'\r\n\r\n', 1)[0].split(b'\r\n') if l.lower().startswith(b'dkim-signature:')])
def check(i):
    try:
        return bool(d.verify(idx=i, dnsfunc=dns))
    except Exception as e:
        sys.stderr.write('signature %d: %s\n' % (i, e))
        return False
print(json.dumps([check(i) for i in range(n)]))
"#;
    serde_json::from_slice(&python(
        script,
        &[&serde_json::to_string(records).unwrap()],
        message,
    ))
    .unwrap()
}

/// `message` with a DKIM-Signature by dkimpy for `domain` and `selector`, RSA-SHA256
/// relaxed/simple over From, To, Subject and Date, with the private key in `key_pem`.
pub fn dkimpy_sign(
    message: &[u8],
    key_pem: &std::path::Path,
    domain: &str,
    selector: &str,
) -> Vec<u8> {
    let script = r#"
import sys, dkim
key = open(sys.argv[1], 'rb').read()
msg = sys.stdin.buffer.read()
sig = dkim.sign(msg, sys.argv[3].encode(), sys.argv[2].encode(), key,
                include_headers=[b'from', b'to', b'subject', b'date'])
sys.stdout.buffer.write(sig + msg)
"#;
    let key = key_pem.to_str().expect("a UTF-8 key path");
    python(script, &[key, domain, selector], message)
}

/// Runs `script` with `args`, `stdin` as its input; its output, or a panic with its errors.
fn python(script: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with python3-dkim is installed (make deps)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
