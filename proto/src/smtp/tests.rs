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

/// A session as a client following the dialogue writes it: pipelined commands up to DATA,
/// then (after the 354) the message and QUIT.
const GOOD_CMDS: &[u8] = b"EHLO client.test\r\nMAIL FROM:<alice@legacy.test> BODY=8BITMIME\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\n";
const GOOD_DATA: &[u8] = b"Subject: hi\r\n\r\nHello\r\n..dot-stuffed\r\n.\r\nQUIT\r\n";
const GOOD: [&[u8]; 2] = [GOOD_CMDS, GOOD_DATA];

#[test]
fn a_whole_pipelined_session() {
    let (wire, stored, closed) = drive(&GOOD, false);
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
    let (whole, stored, _) = drive(&GOOD, false);
    for i in 0..=GOOD_CMDS.len() {
        let (a, b) = GOOD_CMDS.split_at(i);
        let (wire, st, _) = drive(&[a, b, GOOD_DATA], false);
        assert_eq!(wire, whole, "commands split at {i}");
        assert_eq!(st, stored, "commands split at {i}");
    }
    for i in 0..=GOOD_DATA.len() {
        let (a, b) = GOOD_DATA.split_at(i);
        let (wire, st, _) = drive(&[GOOD_CMDS, a, b], false);
        assert_eq!(wire, whole, "data split at {i}");
        assert_eq!(st, stored, "data split at {i}");
    }
    // And byte by byte.
    let bytes: Vec<&[u8]> = GOOD_CMDS.chunks(1).chain(GOOD_DATA.chunks(1)).collect();
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
            GOOD_CMDS,
            GOOD_DATA,
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

const HEAD: &[u8] = b"EHLO c\r\nMAIL FROM:<a@legacy.test>\r\nRCPT TO:<bob@gw.test>\r\nDATA\r\n";

#[test]
fn an_empty_message_right_after_354_is_answered() {
    // `.` as the first line of data ends an empty message; it must be answered, and what
    // follows is a command again, not data of the next letter.
    let (wire, stored, closed) = drive(&[HEAD, b".\r\n", b"NOOP\r\nQUIT\r\n"], false);
    assert_eq!(
        codes(&wire),
        ["220", "250", "250", "250", "354", "250", "250", "221"],
        "{wire}"
    );
    assert!(closed);
    assert_eq!(stored.len(), 1);
    assert!(stored[0].data.is_empty(), "{:?}", stored[0].data);
    // `.` in the same chunk as the end of the 354 dialogue, and byte by byte.
    let (wire2, stored2, _) = drive(&[HEAD, b".\r\nNOOP\r\nQUIT\r\n"], false);
    assert_eq!((wire2, stored2), (wire.clone(), stored.clone()));
    let mut chunks: Vec<&[u8]> = vec![HEAD];
    chunks.extend(b".\r\nNOOP\r\nQUIT\r\n".chunks(1));
    assert_eq!(drive(&chunks, false).0, wire);
    // A message whose first line is dot-stuffed is not an empty message.
    let (_, stored, _) = drive(&[HEAD, b"..x\r\n.\r\n"], false);
    assert_eq!(stored[0].data, b".x\r\n");
}

#[test]
fn content_pipelined_before_the_354_is_refused_and_the_session_closed() {
    let mut all = HEAD.to_vec();
    all.extend_from_slice(b"From: a@legacy.test\r\n\r\nhi\r\n.\r\nMAIL FROM:<x@gw.test>\r\n");
    let (wire, stored, closed) = drive(&[&all], false);
    assert_eq!(codes(&wire), ["220", "250", "250", "250", "554"], "{wire}");
    assert!(
        wire.contains("554 5.5.0 Error: SMTP protocol synchronization"),
        "{wire}"
    );
    assert!(closed);
    assert!(stored.is_empty());
    // Whatever arrives later is not read as commands either.
    let (wire, _, _) = drive(&[&all, b"NOOP\r\n"], false);
    assert_eq!(codes(&wire).len(), 5, "{wire}");
}

#[test]
fn postmaster_without_a_domain_is_passed_to_the_driver() {
    // RFC 5321 §4.5.1: `RCPT TO:<Postmaster>` must be accepted; the session hands it to the
    // driver (which maps it to a mailbox) instead of refusing its syntax.
    let mut seen = Vec::new();
    let (mut s, _) = Session::new(cfg());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@legacy.test>\r\n");
    for o in s.feed(b"RCPT TO:<Postmaster>\r\n") {
        if let Output::CheckRecipient(r) = o {
            seen.push(r);
        }
    }
    assert_eq!(seen, ["Postmaster"]);
    let out = s.recipient_verdict(RcptVerdict::Accept);
    assert_eq!(out, [Output::Reply(b"250 2.1.5 OK\r\n".to_vec())]);
}

#[test]
fn parameters_that_are_not_advertised_are_refused() {
    for (line, what) in [
        ("MAIL FROM:<a@legacy.test> SMTPUTF8", "SMTPUTF8"),
        (
            "MAIL FROM:<a@legacy.test> BODY=BINARYMIME",
            "BODY=BINARYMIME",
        ),
        ("MAIL FROM:<a@legacy.test> REQUIRETLS", "REQUIRETLS"),
        ("MAIL FROM:<a@legacy.test> RET=FULL", "RET"),
        ("MAIL FROM:<a@legacy.test> ENVID=abc", "ENVID"),
        ("MAIL FROM:<a@legacy.test> AUTH=<>", "AUTH"),
        ("MAIL FROM:<a@legacy.test> MT-PRIORITY=3", "MT-PRIORITY"),
    ] {
        let input = format!("EHLO c\r\n{line}\r\nRCPT TO:<bob@gw.test>\r\n");
        let (wire, _, _) = drive(&[input.as_bytes()], false);
        assert_eq!(codes(&wire), ["220", "250", "555", "503"], "{line}: {wire}");
        assert!(
            wire.contains(&format!("555 5.5.4 Unsupported option: {what}")),
            "{wire}"
        );
    }
    let (wire, _, _) = drive(
        &[b"EHLO c\r\nMAIL FROM:<a@legacy.test>\r\nRCPT TO:<bob@gw.test> NOTIFY=NEVER\r\nRCPT TO:<bob@gw.test> ORCPT=rfc822;x@y.test\r\n"],
        false,
    );
    assert_eq!(codes(&wire), ["220", "250", "250", "555", "555"], "{wire}");
    // What is advertised still works.
    let (wire, _, _) = drive(
        &[b"EHLO c\r\nMAIL FROM:<a@legacy.test> BODY=7BIT SIZE=100\r\nRSET\r\nMAIL FROM:<a@legacy.test> BODY=8BITMIME\r\n"],
        false,
    );
    assert_eq!(codes(&wire), ["220", "250", "250", "250", "250"], "{wire}");
}

#[test]
fn absurd_sizes_are_refused() {
    for size in ["99999999999999999999999", "18446744073709551616", "10001"] {
        let input = format!("EHLO c\r\nMAIL FROM:<a@legacy.test> SIZE={size}\r\n");
        let (wire, _, _) = drive(&[input.as_bytes()], false);
        assert_eq!(codes(&wire), ["220", "250", "552"], "SIZE={size}: {wire}");
        assert!(wire.contains("552 5.3.4 Message too big"), "{wire}");
    }
    for size in ["12x", "-1", ""] {
        let input = format!("EHLO c\r\nmail from:<a@legacy.test> size={size}\r\n");
        let (wire, _, _) = drive(&[input.as_bytes()], false);
        assert_eq!(codes(&wire), ["220", "250", "501"], "SIZE={size}: {wire}");
    }
    let (wire, _, _) = drive(
        &[b"EHLO c\r\nMAIL FROM:<a@legacy.test> SIZE=10000\r\n"],
        false,
    );
    assert_eq!(codes(&wire), ["220", "250", "250"], "{wire}");
}

#[test]
fn nul_in_a_command_is_refused() {
    let (wire, stored, _) = drive(
        &[b"EHLO evil\0host\r\nHELO a\0\r\nMAIL FROM:<a@legacy.test>\r\nEHLO good.test\r\nMAIL FROM:<a\0b@legacy.test>\r\n", b"QUIT\r\n"],
        false,
    );
    assert_eq!(
        codes(&wire),
        ["220", "501", "501", "503", "250", "501", "221"],
        "{wire}"
    );
    assert!(wire.contains("501 5.5.2 Syntax error: NUL"), "{wire}");
    assert!(stored.is_empty());
    // NUL in the message (here in a header) is refused too, and nothing is stored.
    let (wire, stored, _) = drive(
        &[
            HEAD,
            b"From: a@legacy.test\r\nSubject: a\0b\r\n\r\nhi\r\n.\r\n",
        ],
        false,
    );
    assert!(wire.contains("550 5.6.0 Message refused: NUL"), "{wire}");
    assert!(stored.is_empty());
    // The greeting name kept for the label is the clean one.
    let mut chunks: Vec<&[u8]> = vec![b"EHLO evil\0host\r\n"];
    chunks.extend(GOOD);
    let (_, stored, _) = drive(&chunks, false);
    assert_eq!(stored[0].helo, "client.test");
}

#[test]
fn the_error_that_reaches_the_limit_is_followed_by_421_at_once() {
    // One bad command per read, as an interactive client sends them: the 421 comes with
    // the answer to the tenth error, without waiting for an eleventh command.
    let mut chunks: Vec<&[u8]> = vec![b"FOO\r\n"; 10];
    let (wire, _, closed) = drive(&chunks, false);
    assert!(closed, "{wire}");
    assert_eq!(codes(&wire).last(), Some(&"421"), "{wire}");
    assert_eq!(codes(&wire).len(), 1 + 10 + 1, "{wire}");
    // Also when the tenth error is an over-long line still being received.
    let long = vec![b'x'; 2000];
    chunks.truncate(9);
    chunks.push(&long);
    let (wire, _, closed) = drive(&chunks, false);
    assert!(closed, "{wire}");
    assert_eq!(codes(&wire).len(), 1 + 10 + 1, "{wire}");
    assert!(
        wire.ends_with("Error: too many errors, closing connection\r\n"),
        "{wire}"
    );
}

/// A submission session (user `me`, password `pw`): the replies to each chunk, in order.
fn submission(chunks: &[&[u8]]) -> (String, Vec<Transaction>) {
    let check: CredentialCheck = Box::new(|u, p| u == b"me" && p == b"pw");
    let (mut s, greeting) = Session::new_submission(cfg(), check);
    let mut wire = Vec::new();
    let mut stored = Vec::new();
    let mut pending = vec![greeting];
    let mut chunks = chunks.iter();
    loop {
        while let Some(o) = (!pending.is_empty()).then(|| pending.remove(0)) {
            match o {
                Output::Reply(b) => wire.extend_from_slice(&b),
                Output::CheckRecipient(_) => {
                    pending.splice(0..0, s.recipient_verdict(RcptVerdict::Accept));
                }
                Output::Deliver(tx) => {
                    stored.push(tx);
                    pending.splice(0..0, s.delivery_result(DeliveryResult::Stored("q1".into())));
                }
                Output::StartTls | Output::Close => {}
            }
        }
        match chunks.next() {
            Some(c) => pending = s.feed(c),
            None => break,
        }
    }
    (String::from_utf8(wire).unwrap(), stored)
}

#[test]
fn submission_requires_auth_before_mail() {
    let (wire, stored) = submission(&[b"EHLO app\r\n", b"MAIL FROM:<me@x.test>\r\n"]);
    assert!(
        wire.contains("250-AUTH PLAIN LOGIN\r\n") || wire.contains("250 AUTH PLAIN LOGIN\r\n"),
        "{wire}"
    );
    assert_eq!(codes(&wire).last(), Some(&"530"));
    assert!(stored.is_empty());
}

#[test]
fn submission_auth_plain_and_login() {
    // PLAIN with an initial response ("\0me\0pw"), then a message.
    let (wire, stored) = submission(&[
        b"EHLO app\r\nAUTH PLAIN AG1lAHB3\r\n",
        b"MAIL FROM:<me@x.test>\r\nRCPT TO:<a@y.test>\r\nDATA\r\n",
        b"Subject: s\r\n\r\nhi\r\n.\r\n",
    ]);
    assert_eq!(
        codes(&wire),
        vec!["220", "250", "235", "250", "250", "354", "250"],
        "{wire}"
    );
    assert_eq!(stored.len(), 1);
    // LOGIN in two steps ("me", "pw").
    let (wire, _) = submission(&[b"EHLO app\r\n", b"AUTH LOGIN\r\n", b"bWU=\r\n", b"cHc=\r\n"]);
    assert_eq!(
        codes(&wire),
        vec!["220", "250", "334", "334", "235"],
        "{wire}"
    );
    // PLAIN without an initial response, wrong password.
    let (wire, _) = submission(&[
        b"EHLO app\r\n",
        b"AUTH PLAIN\r\n",
        b"AG1lAHh4\r\n",
        b"MAIL FROM:<me@x.test>\r\n",
    ]);
    assert_eq!(
        codes(&wire),
        vec!["220", "250", "334", "535", "530"],
        "{wire}"
    );
    // Cancel, garbage, unknown mechanism.
    let (wire, _) =
        submission(&[b"EHLO app\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\n"]);
    assert_eq!(
        codes(&wire),
        vec!["220", "250", "334", "501", "501", "504"],
        "{wire}"
    );
}

#[test]
fn gateway_sessions_still_refuse_auth() {
    let (wire, _, _) = drive(&[b"EHLO x\r\nAUTH PLAIN AG1lAHB3\r\n"], false);
    assert!(!wire.contains("AUTH PLAIN LOGIN"));
    assert_eq!(codes(&wire).last(), Some(&"502"));
}
