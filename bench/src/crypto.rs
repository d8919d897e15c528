//! Seal+sign and open+verify: Sealpost's layer, raw sequoia (the floor), and gpg as a user
//! runs it (one process per message).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sealpost_proto::identity::{SecretIdentity, cert_to_armored, policy};
use sealpost_proto::letter::Letter;
use sealpost_proto::openpgp::parse::Parse;
use sealpost_proto::openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use sealpost_proto::openpgp::serialize::stream::{
    Encryptor, LiteralWriter, Message, Recipient, Signer,
};
use sealpost_proto::openpgp::types::Features;
use sealpost_proto::openpgp::{self, Cert, KeyHandle};
use sealpost_proto::{Address, seal};

use crate::report::Row;

pub struct Params {
    pub small_iters: usize,
    pub large_iters: usize,
    pub gpg_iters: usize,
    /// Rounds; in each, ours and raw sequoia alternate.
    pub repeats: usize,
}

pub fn run(p: &Params) -> Result<Vec<Row>> {
    let alice = SecretIdentity::generate(&Address::parse("alice@alpha.test")?, None)?;
    let bob = SecretIdentity::generate(&Address::parse("bob@beta.test")?, None)?;
    let alice_keys = alice.unlock(None)?;
    let bob_keys = bob.unlock(None)?;
    let alice_cert = alice.public_cert();
    let bob_cert = bob.public_cert();
    let lookup = |h: &KeyHandle| {
        alice_cert
            .keys()
            .any(|k| k.key().key_handle().aliases(h))
            .then(|| alice_cert.clone())
    };
    let gpg = GpgHome::new(&alice, &bob)?;

    let mut rows = Vec::new();
    for (label, size, iters) in [
        ("4 KiB", 4096usize, p.small_iters),
        ("1 MiB", 1 << 20, p.large_iters),
    ] {
        let letter = Letter::new(
            Address::parse("alice@alpha.test")?,
            vec![Address::parse("bob@beta.test")?],
            "bench",
            "x".repeat(size),
            1_700_000_000,
        );
        let eml = letter.to_rfc5322()?;

        let alice_tsk = Cert::from_bytes(&alice.to_bytes())?;
        let bob_tsk = Cert::from_bytes(&bob.to_bytes())?;
        let rate = |t: Instant| iters as f64 / t.elapsed().as_secs_f64();
        let (mut ours_seal, mut ours_open, mut raw_seal, mut raw_open) =
            (vec![], vec![], vec![], vec![]);
        for _ in 0..p.repeats {
            // Ours: seal (sign, pad to the bucket, encrypt) and open (decrypt, verify, parse).
            let t = Instant::now();
            let mut sealed = Vec::new();
            for _ in 0..iters {
                sealed = seal::seal(&letter, &alice_keys, &bob_cert)?;
            }
            ours_seal.push(rate(t));
            // Raw sequoia: sign+encrypt the same RFC 5322 bytes, no padding, no parsing.
            let t = Instant::now();
            let mut raw = Vec::new();
            for _ in 0..iters {
                raw = raw_sign_encrypt(&eml, &alice_tsk, &bob_cert)?;
            }
            raw_seal.push(rate(t));
            let t = Instant::now();
            for _ in 0..iters {
                seal::open_verified(&sealed, &bob_keys, &lookup)?;
            }
            ours_open.push(rate(t));
            let t = Instant::now();
            for _ in 0..iters {
                raw_decrypt_verify(&raw, &bob_tsk, &alice_cert)?;
            }
            raw_open.push(rate(t));
        }

        // gpg: one process per message, as a user or a script would run it.
        let gi = p.gpg_iters.max(1);
        std::fs::write(gpg.path("in.eml"), &eml)?;
        let t = Instant::now();
        for _ in 0..gi {
            gpg.run(&[
                "--yes",
                "--trust-model",
                "always",
                "-u",
                "alice@alpha.test",
                "-r",
                "bob@beta.test",
                "--sign",
                "--encrypt",
                "-o",
                &gpg.path("out.gpg"),
                &gpg.path("in.eml"),
            ])?;
        }
        let gpg_seal = gi as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..gi {
            gpg.run(&[
                "--yes",
                "-o",
                &gpg.path("dec.eml"),
                "--decrypt",
                &gpg.path("out.gpg"),
            ])?;
        }
        let gpg_open = gi as f64 / t.elapsed().as_secs_f64();

        let gpg_seal = vec![gpg_seal; p.repeats];
        let gpg_open = vec![gpg_open; p.repeats];
        for (what, ours, raw, gpg) in [
            ("seal+sign", &ours_seal, &raw_seal, &gpg_seal),
            ("open+verify", &ours_open, &raw_open, &gpg_open),
        ] {
            rows.push(Row::repeated(
                format!("{what} {label} letters/s vs raw sequoia"),
                ours,
                raw,
                "letters/s",
            ));
            rows.push(
                Row::repeated(
                    format!("{what} {label} letters/s vs gpg"),
                    ours,
                    gpg,
                    "letters/s",
                )
                .note("gpg measured once (one process per message)"),
            );
        }
    }
    Ok(rows)
}

fn raw_sign_encrypt(data: &[u8], signer: &Cert, recipient: &Cert) -> Result<Vec<u8>> {
    let signer = signer
        .keys()
        .unencrypted_secret()
        .with_policy(policy(), None)
        .for_signing()
        .next()
        .context("signing key")?
        .key()
        .clone()
        .into_keypair()?;
    let valid = recipient.with_policy(policy(), None)?;
    let keys: Vec<_> = valid
        .keys()
        .for_transport_encryption()
        .map(|k| k.key().clone())
        .collect();
    let recipients = keys
        .iter()
        .map(|k| Recipient::new(Features::empty().set_seipdv1(), None, k));
    let mut sink = Vec::with_capacity(data.len() + 1024);
    let m = Message::new(&mut sink);
    let m = Encryptor::for_recipients(m, recipients).build()?;
    let m = Signer::new(m, signer)?.build()?;
    let mut m = LiteralWriter::new(m).build()?;
    m.write_all(data)?;
    m.finalize()?;
    Ok(sink)
}

fn raw_decrypt_verify(data: &[u8], recipient: &Cert, sender: &Cert) -> Result<Vec<u8>> {
    struct H<'a> {
        recipient: &'a Cert,
        sender: &'a Cert,
    }
    impl VerificationHelper for H<'_> {
        fn get_certs(&mut self, _: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
            Ok(vec![self.sender.clone()])
        }
        fn check(&mut self, s: MessageStructure) -> openpgp::Result<()> {
            for layer in s.into_iter() {
                if let openpgp::parse::stream::MessageLayer::SignatureGroup { results } = layer
                    && results.iter().any(|r| r.is_err())
                {
                    return Err(anyhow::anyhow!("bad signature"));
                }
            }
            Ok(())
        }
    }
    impl DecryptionHelper for H<'_> {
        fn decrypt(
            &mut self,
            pkesks: &[openpgp::packet::PKESK],
            _: &[openpgp::packet::SKESK],
            sym: Option<openpgp::types::SymmetricAlgorithm>,
            decrypt: &mut dyn FnMut(
                Option<openpgp::types::SymmetricAlgorithm>,
                &openpgp::crypto::SessionKey,
            ) -> bool,
        ) -> openpgp::Result<Option<Cert>> {
            for ka in self
                .recipient
                .keys()
                .unencrypted_secret()
                .with_policy(policy(), None)
                .for_transport_encryption()
            {
                let mut pair = ka.key().clone().into_keypair()?;
                for p in pkesks {
                    if let Some((a, sk)) = p.decrypt(&mut pair, sym)
                        && decrypt(a, &sk)
                    {
                        return Ok(None);
                    }
                }
            }
            Err(anyhow::anyhow!("no key"))
        }
    }
    let mut d =
        DecryptorBuilder::from_bytes(data)?.with_policy(policy(), None, H { recipient, sender })?;
    let mut out = Vec::new();
    d.read_to_end(&mut out)?;
    Ok(out)
}

struct GpgHome {
    dir: tempfile::TempDir,
}

impl GpgHome {
    fn new(alice: &SecretIdentity, bob: &SecretIdentity) -> Result<GpgHome> {
        let dir = tempfile::Builder::new().prefix("gpgb").tempdir_in("/tmp")?;
        let g = GpgHome { dir };
        std::fs::write(g.path("alice.sec"), alice.to_bytes())?;
        std::fs::write(g.path("bob.sec"), bob.to_bytes())?;
        std::fs::write(g.path("alice.asc"), cert_to_armored(&alice.public_cert()))?;
        g.run(&["--import", &g.path("alice.sec")])?;
        g.run(&["--import", &g.path("bob.sec")])?;
        Ok(g)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.dir.path())
            .args([
                "--batch",
                "--no-tty",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running gpg")?;
        if !out.status.success() {
            bail!("gpg {:?}: {}", args, String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.dir.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}
