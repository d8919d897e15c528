//! Micro-benchmarks of the sans-IO core: codec round trips and seal/open at two sizes.
//! `cargo bench -p sealpost-proto`. The whole-system numbers with peers are `make bench`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::SecretIdentity;
use sealpost_proto::letter::Letter;
use sealpost_proto::openpgp::KeyHandle;
use sealpost_proto::seal::{open_verified, seal};
use sealpost_proto::{Address, EnvelopeId, MailboxId};

fn codec(c: &mut Criterion) {
    let env = Envelope {
        id: EnvelopeId([1; 16]),
        mailbox: MailboxId([2; 16]),
        sealed: vec![0xc1; 16 * 1024],
        token: vec![],
    };
    let bytes = env.encode();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("envelope encode 16 KiB", |b| {
        b.iter(|| std::hint::black_box(env.encode()))
    });
    g.bench_function("envelope decode 16 KiB", |b| {
        b.iter(|| Envelope::decode(std::hint::black_box(&bytes)).unwrap())
    });
    g.bench_function("envelope peek ids", |b| {
        b.iter(|| Envelope::peek_ids(std::hint::black_box(&bytes)).unwrap())
    });
    g.finish();
}

fn crypto(c: &mut Criterion) {
    let alice =
        SecretIdentity::generate(&Address::parse("alice@alpha.test").unwrap(), None).unwrap();
    let bob = SecretIdentity::generate(&Address::parse("bob@beta.test").unwrap(), None).unwrap();
    let (ak, bk, bc, ac) = (
        alice.unlock(None).unwrap(),
        bob.unlock(None).unwrap(),
        bob.public_cert(),
        alice.public_cert(),
    );
    let lookup = |h: &KeyHandle| {
        ac.keys()
            .any(|k| k.key().key_handle().aliases(h))
            .then(|| ac.clone())
    };
    let mut g = c.benchmark_group("seal");
    g.sample_size(20);
    for (label, size) in [("4 KiB", 4096usize), ("1 MiB", 1 << 20)] {
        let letter = Letter::new(
            Address::parse("alice@alpha.test").unwrap(),
            vec![Address::parse("bob@beta.test").unwrap()],
            "bench",
            "x".repeat(size),
            0,
        );
        let sealed = seal(&letter, &ak, &bc).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("seal {label}"), |b| {
            b.iter(|| seal(&letter, &ak, &bc).unwrap())
        });
        g.bench_function(format!("open {label}"), |b| {
            b.iter(|| open_verified(&sealed, &bk, &lookup).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, codec, crypto);
criterion_main!(benches);
