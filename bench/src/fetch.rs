//! Fetch: how long the real client (`sealpost fetch`) takes to fetch, decrypt, verify and
//! store N letters from a node, and ack them.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::SecretIdentity;
use sealpost_proto::letter::Letter;
use sealpost_proto::seal::{encrypt_to, seal};
use sealpost_proto::{Address, EnvelopeId, MailboxId};

use crate::gateway::cli_user;
use crate::ingest::BENCH_SETS;
use crate::node::{self, NodeProc, bin_dir};
use crate::report::Row;

pub async fn run(work: &Path, count: usize) -> Result<Vec<Row>> {
    let node = NodeProc::start(&work.join("fetch-node"), BENCH_SETS)?;
    let alice_profile = cli_user(work, &node, "alice@fetch.test")?;
    let bob_profile = cli_user(work, &node, "bob@fetch.test")?;
    let alice = SecretIdentity::from_bytes(&std::fs::read(alice_profile.join("secret.key"))?)?;
    let bob_config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bob_profile.join("config.json"))?)?;
    let bob_mailbox = MailboxId::from_hex(
        bob_config["homes"][0]["mailbox"]
            .as_str()
            .context("bob's mailbox")?,
    )?;
    let http = reqwest::Client::new();
    let (node_cert, _) = node::descriptor(&http, &node.url).await?;
    let bob_cert =
        sealpost_proto::identity::cert_from_bytes(&std::fs::read(bob_profile.join("secret.key"))?)?;

    // Seal and deliver the letters before the clock starts.
    let keys = Arc::new(alice.unlock(None)?);
    let peer = node::ed25519_random();
    for i in 0..count {
        let letter = Letter::new(
            Address::parse("alice@fetch.test")?,
            vec![Address::parse("bob@fetch.test")?],
            format!("letter {i}"),
            format!("This is letter number {i}.\r\n"),
            1_700_000_000 + i as i64,
        );
        let sealed = seal(&letter, &keys, &bob_cert)?;
        let env = Envelope {
            id: EnvelopeId::random(),
            mailbox: bob_mailbox,
            sealed,
            token: vec![],
        };
        if !node::deliver(
            &http,
            &node.url,
            &peer,
            encrypt_to(&env.encode(), &node_cert)?,
        )
        .await?
        {
            bail!("letter {i} not stored");
        }
    }

    let t = Instant::now();
    let mut fetched = 0usize;
    while fetched < count {
        let out = Command::new(bin_dir().join("sealpost"))
            .arg("--profile")
            .arg(&bob_profile)
            .args([
                "--resolve",
                &format!("fetch.test={}", node.url),
                "--json",
                "fetch",
            ])
            .output()?;
        if !out.status.success() {
            bail!("sealpost fetch: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let n = v["new"].as_array().map_or(0, Vec::len);
        if n == 0 {
            bail!(
                "fetch returned nothing with {} of {count} letters fetched",
                fetched
            );
        }
        fetched += n;
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(vec![
        Row::single(
            format!("client fetch+verify+store of {count} letters"),
            secs,
            "s",
        ),
        Row::single("client fetch rate".into(), count as f64 / secs, "letters/s"),
    ])
}
