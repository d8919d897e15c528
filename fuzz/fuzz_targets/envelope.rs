#![no_main]
use libfuzzer_sys::fuzz_target;
use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Envelope::decode(data) {
        assert_eq!(e.encode(), data, "decode then encode is the identity");
    }
    let _ = Envelope::peek_ids(data);
});
