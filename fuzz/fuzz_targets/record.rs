#![no_main]
use libfuzzer_sys::fuzz_target;
use sealpost_proto::codec::Codec;
use sealpost_proto::record::{MailboxRecord, SignedRecord};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = MailboxRecord::decode(data) {
        assert_eq!(MailboxRecord::decode(&r.encode()).as_ref(), Ok(&r));
    }
    if let Ok(s) = SignedRecord::decode(data) {
        let _ = s.verify(1_800_000_000);
    }
});
