//! `sealpost-bench`: measures Sealpost against peers run on the same machine in the same run
//! (Postfix for ingest, gpg and raw sequoia for crypto) and prints a table of ratios, plus
//! JSON. `make bench` runs it in release mode; `--quick` is the smoke run `make test` uses.

mod bridge;
mod crypto;
mod fetch;
mod gateway;
mod ingest;
mod latency;
mod node;
mod postfix;
mod report;

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "sealpost-bench",
    about = "Benchmarks as ratios against Postfix and gpg measured in the same run"
)]
struct Args {
    /// Tiny sizes: checks that the harness works, measures nothing worth reporting.
    #[arg(long)]
    quick: bool,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The repository (for scripts/postfix-private.sh).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Concurrent senders for the ingest runs.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Rounds of each rate measurement (ingest, gateway), ours and the peer's interleaved;
    /// the table shows the median and the range.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Messages per ingest and gateway run (default 20,000).
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Which sections to run (default: all): ingest, gateway, fetch, bridge, latency, crypto.
    #[arg(long = "only")]
    only: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let work = tempfile::Builder::new()
        .prefix("sealpost-bench")
        .tempdir()?;
    let want = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let mut rows = Vec::new();
    let mut failed = false;
    // A section that fails is a row saying so, and the run goes on to the others (the exit
    // status is still a failure); in the smoke run (`--quick`) it stops the run.
    let quick = args.quick;
    let section = |rows: &mut Vec<report::Row>,
                   failed: &mut bool,
                   name: &str,
                   result: Result<Vec<report::Row>>| {
        match result {
            Ok(r) => rows.extend(r),
            Err(e) if quick => return Err(e.context(format!("section {name}"))),
            Err(e) => {
                eprintln!("bench: section {name} FAILED: {e:#}");
                *failed = true;
                rows.push(
                    report::Row::single(format!("{name}: FAILED"), 0.0, "–").note(format!("{e:#}")),
                );
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let repeats = if args.quick { 1 } else { args.repeats.max(1) };
    eprintln!("bench: load before the run {}", ingest::load());

    if want("ingest") {
        let p = if args.quick {
            ingest::Params {
                count: 50,
                size: 10 * 1024,
                clients: 4,
            }
        } else {
            // 20,000 messages: about 4 s of our load and 20 s of Postfix's per round.
            ingest::Params {
                count: args.messages,
                size: 10 * 1024,
                clients: args.clients,
            }
        };
        eprintln!(
            "bench: durable ingest ({} messages, {} clients) ...",
            p.count, p.clients
        );
        section(
            &mut rows,
            &mut failed,
            "ingest",
            rt.block_on(ingest::run(&args.repo, work.path(), &p, repeats)),
        )?;
    }
    if want("gateway") {
        let p = if args.quick {
            gateway::Params {
                count: 20,
                size: 10 * 1024,
                sessions: 4,
            }
        } else {
            gateway::Params {
                count: args.messages,
                size: 10 * 1024,
                sessions: args.clients,
            }
        };
        eprintln!(
            "bench: gateway ingest ({} messages, {} sessions) ...",
            p.count, p.sessions
        );
        section(
            &mut rows,
            &mut failed,
            "gateway",
            rt.block_on(gateway::run(&args.repo, work.path(), &p, repeats)),
        )?;
    }
    if want("fetch") {
        let n = if args.quick { 20 } else { 10_000 };
        eprintln!("bench: client fetch of {n} letters ...");
        section(
            &mut rows,
            &mut failed,
            "fetch",
            rt.block_on(fetch::run(work.path(), n, repeats)),
        )?;
    }
    if want("bridge") {
        let n = if args.quick { 50 } else { 10_000 };
        eprintln!("bench: bridge vs Dovecot, mbsync of {n} letters ...");
        section(
            &mut rows,
            &mut failed,
            "bridge",
            rt.block_on(bridge::run(work.path(), n)),
        )?;
    }
    if want("latency") {
        let p = if args.quick {
            latency::Params {
                rate: 50,
                seconds: 1,
            }
        } else {
            latency::Params {
                rate: 500,
                seconds: 10,
            }
        };
        eprintln!(
            "bench: end-to-end latency ({} letters/s for {} s) ...",
            p.rate, p.seconds
        );
        section(
            &mut rows,
            &mut failed,
            "latency",
            rt.block_on(latency::run(work.path(), &p)),
        )?;
    }
    if want("crypto") {
        let p = if args.quick {
            crypto::Params {
                small_iters: 5,
                large_iters: 1,
                gpg_iters: 1,
                repeats,
            }
        } else {
            crypto::Params {
                small_iters: 5000,
                large_iters: 300,
                gpg_iters: 20,
                repeats,
            }
        };
        eprintln!("bench: crypto ...");
        section(&mut rows, &mut failed, "crypto", crypto::run(&p))?;
    }

    eprintln!("bench: load after the run {}", ingest::load());
    println!("{}", report::markdown(&rows));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")?;
    }
    if failed {
        anyhow::bail!("a section failed (see its row)");
    }
    Ok(())
}
