#![no_main]
use libfuzzer_sys::fuzz_target;
use sealpost_proto::letter::Letter;

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = Letter::from_rfc5322(data) {
        // Whatever parses must re-encode (or be refused by validation), never panic.
        let _ = l.to_rfc5322();
    }
});
