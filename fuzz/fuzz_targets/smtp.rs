#![no_main]
use libfuzzer_sys::fuzz_target;
use sealpost_proto::smtp::{DeliveryResult, Output, RcptVerdict, Session, SmtpConfig};

// Feeds arbitrary bytes in arbitrary chunks; answers every question; never panics, and the
// session's outputs are well-formed replies.
fuzz_target!(|data: &[u8]| {
    let cfg = SmtpConfig { max_message_bytes: 4096, ..SmtpConfig::default() };
    let (mut s, _) = Session::new(cfg);
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    for chunk in data.chunks(split) {
        let mut pending = s.feed(chunk);
        while let Some(o) = (!pending.is_empty()).then(|| pending.remove(0)) {
            match o {
                Output::Reply(b) => assert!(b.is_empty() || b.ends_with(b"\r\n")),
                Output::CheckRecipient(r) => {
                    let v = if r.len() % 2 == 0 { RcptVerdict::Accept } else { RcptVerdict::UnknownUser };
                    pending.splice(0..0, s.recipient_verdict(v));
                }
                Output::Deliver(tx) => {
                    assert!(!tx.rcpt_to.is_empty());
                    assert!(!tx.data.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "bare LF accepted");
                    pending.splice(0..0, s.delivery_result(DeliveryResult::Stored("x".into())));
                }
                Output::StartTls => s.tls_established(),
                Output::Close => return,
            }
        }
    }
});
