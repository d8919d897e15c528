//! The fuzz targets' checks (tests/fuzz_checks) on generated inputs and on every saved
//! input under tests/fuzz_regressions/TARGET/, so a crash found once stays a test.

mod fuzz_checks;

fn corpus() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = vec![
        b"1 SELECT INBOX\r\n2 FETCH 1:* (FLAGS BODY.PEEK[] BODYSTRUCTURE ENVELOPE)\r\n3 UID SEARCH OR BODY x NOT SEEN\r\n".to_vec(),
        b"1 APPEND INBOX (\\Seen kw) {12}\r\nSubject: x\r\n\r\n2 SELECT INBOX\r\n3 STORE 1:* +FLAGS (\\Deleted)\r\n4 EXPUNGE\r\n".to_vec(),
        b"1 CREATE a/b\r\n2 RENAME a c\r\n3 LIST \"\" *\r\n4 DELETE c/b\r\n5 STATUS INBOX (MESSAGES UIDNEXT)\r\n".to_vec(),
        b"1 SELECT INBOX\r\n2 IDLE\r\nDONE\r\n3 UID MOVE 1:* Trash\r\n4 UID COPY 1 Archive\r\n5 LOGOUT\r\n".to_vec(),
        b"1 APPEND INBOX {99999999999}\r\n".to_vec(),
        b"1 FETCH 1 BODY[1.2.3.HEADER.FIELDS (a b)]<0.10>\r\n\n\r\x00\xff".to_vec(),
        b"EHLO a\r\nAUTH PLAIN AG1lQGEudGVzdABwdw==\r\nMAIL FROM:<me@a.test>\r\nRCPT TO:<b@c>\r\nDATA\r\n".to_vec(),
        b"EHLO a\r\nMAIL FROM:<x@y>\r\nAUTH LOGIN\r\n*\r\nAUTH LOGIN bWVAYS50ZXN0\r\ncHc=\r\nRCPT TO:<q@r>\r\n".to_vec(),
    ];
    // Deterministic noise and mutations of the seeds (xorshift).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = seeds.clone();
    for i in 0..300 {
        let mut s = base[i % base.len()].clone();
        for _ in 0..(next() % 6) {
            let pos = (next() as usize) % (s.len() + 1);
            match next() % 3 {
                0 if pos < s.len() => s[pos] = next() as u8,
                1 => s.insert(pos, next() as u8),
                _ if pos < s.len() => {
                    s.remove(pos);
                }
                _ => {}
            }
        }
        seeds.push(s);
    }
    seeds
}

fn saved(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn imap_session_survives_hostile_input() {
    for input in corpus().iter().chain(saved("bridge_imap").iter()) {
        fuzz_checks::imap(input);
    }
}

#[test]
fn smtp_session_survives_hostile_input() {
    for input in corpus().iter().chain(saved("bridge_smtp").iter()) {
        fuzz_checks::smtp(input);
    }
}
