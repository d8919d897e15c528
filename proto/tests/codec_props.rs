//! Property tests for every codec type: decode(encode(x)) == x; decoding arbitrary or cut
//! bytes never panics and never succeeds on a strict prefix.

use proptest::prelude::*;
use sealpost_proto::batch::{BatchEntry, EnvelopeBatch};
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::{NodeDescriptor, SignedDescriptor};
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::record::{Home, MailboxRecord, SignedRecord};
use sealpost_proto::{Address, EnvelopeId, MailboxId, NodeUrl};

fn address() -> impl Strategy<Value = Address> {
    (
        "[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]",
        "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,3}",
    )
        .prop_filter_map("valid", |(l, d)| Address::parse(&format!("{l}@{d}")).ok())
}

fn url() -> impl Strategy<Value = NodeUrl> {
    (
        "https?",
        "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,2}",
        proptest::option::of(1u16..),
        "(/[a-z0-9]{1,8}){0,2}",
    )
        .prop_filter_map("valid", |(s, h, p, path)| {
            let port = p.map(|p| format!(":{p}")).unwrap_or_default();
            NodeUrl::parse(&format!("{s}://{h}{port}{path}")).ok()
        })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        proptest::collection::vec(any::<u8>(), 1..300),
        bytes(40),
    )
        .prop_map(|(i, m, sealed, token)| Envelope {
            id: EnvelopeId(i),
            mailbox: MailboxId(m),
            sealed,
            token,
        })
}

fn hop() -> impl Strategy<Value = HopWrapper> {
    (url(), proptest::collection::vec(any::<u8>(), 1..300)).prop_map(|(destination, payload)| {
        HopWrapper {
            destination,
            payload,
        }
    })
}

fn record() -> impl Strategy<Value = MailboxRecord> {
    let home = (url(), any::<[u8; 32]>(), any::<[u8; 16]>()).prop_map(|(url, node_key, m)| Home {
        url,
        node_key,
        mailbox: MailboxId(m),
    });
    (
        address(),
        bytes(200),
        proptest::collection::vec(home, 1..=8),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(address, cert, homes, created, expires, sequence)| MailboxRecord {
                address,
                cert,
                homes,
                created,
                expires,
                sequence,
            },
        )
}

fn descriptor() -> impl Strategy<Value = NodeDescriptor> {
    (
        url(),
        any::<[u8; 32]>(),
        bytes(200),
        any::<u32>(),
        "[ -~]{0,64}",
        any::<u64>(),
    )
        .prop_map(
            |(url, node_key, encryption_cert, max_envelope, software, created)| NodeDescriptor {
                url,
                node_key,
                encryption_cert,
                max_envelope,
                software,
                created,
                ohttp_key: None,
            },
        )
}

fn check_round_trip<T: Codec + PartialEq + std::fmt::Debug>(x: &T) -> Result<(), TestCaseError> {
    let enc = x.encode();
    prop_assert_eq!(&T::decode(&enc).unwrap(), x);
    // No strict prefix decodes, and one extra byte is refused.
    for cut in [0, 1, enc.len() / 2, enc.len() - 1] {
        prop_assert!(T::decode(&enc[..cut]).is_err());
    }
    let mut longer = enc.clone();
    longer.push(0);
    prop_assert!(T::decode(&longer).is_err());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn envelope_round_trips(x in envelope()) { check_round_trip(&x)?; }

    #[test]
    fn hop_round_trips(x in hop()) { check_round_trip(&x)?; }

    #[test]
    fn record_round_trips(x in record()) { check_round_trip(&x)?; }

    #[test]
    fn signed_record_round_trips(body in bytes(300), signature in bytes(200)) {
        check_round_trip(&SignedRecord { body, signature })?;
    }

    #[test]
    fn descriptor_round_trips(x in descriptor()) { check_round_trip(&x)?; }

    #[test]
    fn signed_descriptor_round_trips(body in bytes(300), signature in any::<[u8; 32]>()) {
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&signature);
        check_round_trip(&SignedDescriptor { body, signature: sig })?;
    }

    #[test]
    fn envelope_batch_round_trips(entries in proptest::collection::vec(
        (any::<u64>(), proptest::option::of(bytes(64))), 0..20)
    ) {
        let b = EnvelopeBatch {
            entries: entries
                .into_iter()
                .map(|(seq, envelope)| BatchEntry { seq, envelope })
                .collect(),
        };
        check_round_trip(&b)?;
    }

    #[test]
    fn decoders_never_panic(data in bytes(512)) {
        let _ = Envelope::decode(&data);
        let _ = HopWrapper::decode(&data);
        let _ = MailboxRecord::decode(&data);
        let _ = SignedRecord::decode(&data);
        let _ = NodeDescriptor::decode(&data);
        let _ = SignedDescriptor::decode(&data);
        let _ = Envelope::peek_ids(&data);
        let _ = EnvelopeBatch::decode(&data);
    }

    #[test]
    fn decoders_never_panic_near_valid_input(x in envelope(), i in any::<usize>(), b in any::<u8>()) {
        let mut enc = x.encode();
        let i = i % enc.len();
        enc[i] = b;
        let _ = Envelope::decode(&enc);
    }

    #[test]
    fn names_never_panic(s in "\\PC{0,300}") {
        let _ = Address::parse(&s);
        let _ = NodeUrl::parse(&s);
        let _ = MailboxId::from_hex(&s);
    }

    #[test]
    fn addresses_round_trip(a in address()) {
        prop_assert_eq!(Address::parse(a.as_str()).unwrap(), a);
    }
}
