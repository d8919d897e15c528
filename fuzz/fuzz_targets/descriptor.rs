#![no_main]
use libfuzzer_sys::fuzz_target;
use sealpost_proto::codec::Codec;
use sealpost_proto::descriptor::{NodeDescriptor, SignedDescriptor};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = NodeDescriptor::decode(data) {
        assert_eq!(NodeDescriptor::decode(&d.encode()).as_ref(), Ok(&d));
    }
    if let Ok(s) = SignedDescriptor::decode(data) {
        let _ = s.verify();
    }
});
