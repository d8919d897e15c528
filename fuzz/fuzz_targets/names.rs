#![no_main]
use libfuzzer_sys::fuzz_target;
use sealpost_proto::{Address, NodeUrl};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(a) = Address::parse(s) {
            assert_eq!(Address::parse(a.as_str()).as_ref(), Ok(&a), "normal form is stable");
        }
        if let Ok(u) = NodeUrl::parse(s) {
            assert_eq!(NodeUrl::parse(u.as_str()).as_ref(), Ok(&u), "normal form is stable");
        }
    }
});
