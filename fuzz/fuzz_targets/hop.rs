#![no_main]
use libfuzzer_sys::fuzz_target;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::HopWrapper;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = HopWrapper::decode(data) {
        // URLs are normalised, so re-encoding may differ; it must decode to the same value.
        assert_eq!(HopWrapper::decode(&h.encode()).as_ref(), Ok(&h));
    }
});
