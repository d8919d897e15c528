use super::*;

fn cfg() -> SmtpConfig {
    SmtpConfig {
        hostname: "gw.test".into(),
        max_message_bytes: 10_000,
        max_recipients: 3,
        ..SmtpConfig::default()
    }
}

/// Drives a session like a gateway would: recipients on `gw.test` named bob or carol are
/// accepted, others on gw.test are unknown, other domains are relay attempts; every
/// delivery is stored. Returns everything written to the client and the stored messages.
fn drive(chunks: &[&[u8]], starttls: bool) -> (String, Vec<Transaction>, bool) {
    let mut c = cfg();
    c.starttls = starttls;
    let (mut s, greeting) = Session::new(c);
    let mut wire = Vec::new();
    let mut stored = Vec::new();
    let mut closed = false;
    let mut pending: Vec<Output> = vec![greeting];
    let mut chunks = chunks.iter();
    loop {
        while let Some(o) = (!pending.is_empty()).then(|| pending.remove(0)) {
            match o {
                Output::Reply(b) => wire.extend_from_slice(&b),
                Output::Close => closed = true,
                Output::StartTls => s.tls_established(),
                Output::CheckRecipient(r) => {
                    let v = match r.split_once('@') {
                        Some(("bob" | "carol", "gw.test")) => RcptVerdict::Accept,
                        Some((_, "gw.test")) => RcptVerdict::UnknownUser,
                        _ => RcptVerdict::RelayDenied,
                    };
                    let more = s.recipient_verdict(v);
                    pending.splice(0..0, more);
                }
                Output::Deliver(tx) => {
                    stored.push(tx);
                    let more =
                        s.delivery_result(DeliveryResult::Stored(format!("id{}", stored.len())));
                    pending.splice(0..0, more);
                }
            }
        }
        match chunks.next() {
            Some(c) => pending = s.feed(c),
            None => break,
        }
    }
    (String::from_utf8(wire).unwrap(), stored, closed)
}

fn codes(wire: &str) -> Vec<&str> {
    wire.split("\r\n")
        .filter(|l| l.len() >= 4 && &l[3..4] == " ")
        .map(|l| &l[..3])
        .collect()
}

const GOOD: &[u8] = b"EHLO client.test\r\nMAIL FROM:<alice@legacy.test> BODY=8BITMIME\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\nSubject: hi\r\n\r\nHello\r\n..dot-stuffed\r\n.\r\nQUIT\r\n";

#[test]
fn a_whole_pipelined_session() {
    let (wire, stored, closed) = drive(&[GOOD], false);
    assert_eq!(
        codes(&wire),
        ["220", "250", "250", "250", "354", "250", "221"],
        "{wire}"
    );
    assert!(
        wire.contains("250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME"),
        "{wire}"
    );
    assert!(closed);
    assert_eq!(stored.len(), 1);
    let tx = &stored[0];
    assert_eq!(tx.mail_from, "alice@legacy.test");
    assert_eq!(tx.rcpt_to, ["bob@gw.test"]);
    assert!(tx.eight_bit);
    assert_eq!(tx.data, b"Subject: hi\r\n\r\nHello\r\n.dot-stuffed\r\n");
}

#[test]
fn every_split_point_gives_the_same_session() {
    let (whole, stored, _) = drive(&[GOOD], false);
    for i in 0..=GOOD.len() {
        let (a, b) = GOOD.split_at(i);
        let (wire, st, _) = drive(&[a, b], false);
        assert_eq!(wire, whole, "split at {i}");
        assert_eq!(st, stored, "split at {i}");
    }
    // And byte by byte.
    let bytes: Vec<&[u8]> = GOOD.chunks(1).collect();
    let (wire, st, _) = drive(&bytes, false);
    assert_eq!((wire, st), (whole, stored));
}

#[test]
fn every_command_split_at_every_byte() {
    let commands: &[&[u8]] = &[
        b"EHLO a.test\r\n",
        b"HELO a.test\r\n",
        b"MAIL FROM:<x@y.test> SIZE=100\r\n",
        b"MAIL FROM:<>\r\n",
        b"RCPT TO:<bob@gw.test>\r\n",
        b"RCPT TO:<eve@elsewhere.test>\r\n",
        b"DATA\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"VRFY bob\r\n",
        b"EXPN list\r\n",
        b"HELP\r\n",
        b"STARTTLS\r\n",
        b"AUTH PLAIN AGJvYgBwdw==\r\n",
        b"BDAT 10 LAST\r\n",
        b"WHAT is this\r\n",
        b"QUIT\r\n",
    ];
    for cmd in commands {
        let prefix: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@legacy.test>\r\n";
        let whole = drive(&[prefix, cmd], false);
        for i in 0..=cmd.len() {
            let (a, b) = cmd.split_at(i);
            assert_eq!(
                drive(&[prefix, a, b], false),
                whole,
                "{:?} split at {i}",
                String::from_utf8_lossy(cmd)
            );
        }
    }
}

#[test]
fn open_relay_and_unknown_users_are_refused() {
    let (wire, stored, _) = drive(
        &[b"EHLO c\r\nMAIL FROM:<a@legacy.test>\r\nRCPT TO:<eve@elsewhere.test>\r\nRCPT TO:<nobody@gw.test>\r\nDATA\r\n"],
        false,
    );
    assert_eq!(
        codes(&wire),
        ["220", "250", "250", "550", "550", "554"],
        "{wire}"
    );
    assert!(wire.contains("5.7.1 Relaying denied"));
    assert!(wire.contains("5.1.1 No such user"));
    assert!(stored.is_empty());
}

#[test]
fn smuggling_is_refused() {
    // <LF>.<LF> would end the message for a lax server and start a smuggled one.
    let attacks: &[&[u8]] = &[
        b"Subject: a\r\n\r\nbody\n.\nMAIL FROM:<admin@gw.test>\r\n.\r\n",
        b"Subject: a\r\n\r\nbody\r\n.\nMAIL FROM:<admin@gw.test>\r\n.\r\n",
        b"Subject: a\r\n\r\nbody\n.\r\nMAIL FROM:<admin@gw.test>\r\n.\r\n",
        b"Subject: a\r\n\r\nbody\r.\rMAIL FROM:<admin@gw.test>\r\n.\r\n",
        b"Subject: a\r\n\r\nbare lf\nline\r\n.\r\n",
    ];
    for body in attacks {
        let (wire, stored, _) = drive(
            &[
                b"EHLO c\r\nMAIL FROM:<a@legacy.test>\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\n",
                body,
                b"QUIT\r\n",
            ],
            false,
        );
        assert!(
            stored.is_empty(),
            "{:?} was stored",
            String::from_utf8_lossy(body)
        );
        assert_eq!(
            codes(&wire),
            ["220", "250", "250", "250", "354", "550", "221"],
            "{:?}: {wire}",
            String::from_utf8_lossy(body)
        );
        assert!(wire.contains("bare <"), "{wire}");
    }
}

#[test]
fn oversize_messages_are_refused_and_the_session_goes_on() {
    let big = vec![b'a'; 900];
    let mut body = Vec::new();
    for _ in 0..20 {
        body.extend_from_slice(&big);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    let (wire, stored, _) = drive(
        &[
            b"EHLO c\r\nMAIL FROM:<a@legacy.test>\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\n",
            &body,
            GOOD,
        ],
        false,
    );
    assert_eq!(
        codes(&wire)[..6],
        ["220", "250", "250", "250", "354", "552"],
        "{wire}"
    );
    assert_eq!(stored.len(), 1, "the next, good transaction is stored");
    // SIZE declared too big is refused at MAIL.
    let (wire, _, _) = drive(
        &[b"EHLO c\r\nMAIL FROM:<a@legacy.test> SIZE=999999\r\n"],
        false,
    );
    assert_eq!(codes(&wire), ["220", "250", "552"]);
}

#[test]
fn overlong_lines_are_refused() {
    let mut line = b"EHLO ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 2000));
    line.extend_from_slice(b"\r\nNOOP\r\n");
    let (wire, _, _) = drive(&[&line], false);
    assert_eq!(codes(&wire), ["220", "500", "250"], "{wire}");
    let mut data = b"Subject: x\r\n\r\n".to_vec();
    data.extend(std::iter::repeat_n(b'y', 1200));
    data.extend_from_slice(b"\r\n.\r\n");
    let (wire, stored, _) = drive(
        &[
            b"EHLO c\r\nMAIL FROM:<a@legacy.test>\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\n",
            &data,
        ],
        false,
    );
    assert!(stored.is_empty());
    assert!(
        wire.contains("550 5.5.2 Message refused: line longer than 998"),
        "{wire}"
    );
}

#[test]
fn sequence_errors_and_limits() {
    let (wire, _, _) = drive(
        &[b"MAIL FROM:<a@b.test>\r\nEHLO c\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\n"],
        false,
    );
    assert_eq!(codes(&wire), ["220", "503", "250", "503", "503"], "{wire}");
    let (wire, _, _) = drive(
        &[b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@gw.test>\r\nRCPT TO:<carol@gw.test>\r\nRCPT TO:<bob@gw.test>\r\nRCPT TO:<carol@gw.test>\r\n"],
        false,
    );
    assert_eq!(
        codes(&wire),
        ["220", "250", "250", "250", "250", "250", "452"],
        "{wire}"
    );
}

#[test]
fn too_many_errors_close_the_session() {
    let junk = b"FOO\r\n".repeat(20);
    let (wire, _, closed) = drive(&[&junk], false);
    assert!(closed);
    assert!(wire.contains("421 4.7.0"), "{wire}");
    assert_eq!(codes(&wire).len(), 1 + 10 + 1);
}

#[test]
fn starttls_discards_pipelined_plaintext_and_restarts() {
    let (wire, stored, _) = drive(
        &[
            b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n",
            b"MAIL FROM:<a@b.test>\r\n",
        ],
        true,
    );
    assert!(wire.contains("250 STARTTLS\r\n"), "{wire}");
    // After TLS the session is fresh again: MAIL without EHLO is refused, and the injected
    // command never ran.
    assert_eq!(codes(&wire), ["220", "250", "220", "503"], "{wire}");
    assert!(stored.is_empty());
    let (wire, _, _) = drive(&[b"EHLO c\r\nSTARTTLS\r\n"], false);
    assert_eq!(codes(&wire), ["220", "250", "502"]);
}

#[test]
fn vrfy_and_friends_are_polite() {
    let (wire, _, _) = drive(
        &[b"EHLO c\r\nVRFY bob\r\nEXPN x\r\nAUTH PLAIN x\r\nRSET\r\nNOOP\r\n"],
        false,
    );
    assert_eq!(
        codes(&wire),
        ["220", "250", "252", "502", "502", "250", "250"],
        "{wire}"
    );
}
