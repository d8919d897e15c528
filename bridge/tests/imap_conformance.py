#!/usr/bin/env python3
"""One IMAP conformance script, run against Dovecot (the reference) and the Sealpost bridge.

Usage: imap_conformance.py HOST PORT USER PASSWORD

Starts from an account whose INBOX, Work and Drafts are empty (Sent, Drafts, Trash, Archive
exist), and exercises what mail apps rely on: LOGIN, CAPABILITY, LIST, SELECT, APPEND,
FETCH BODY[] (byte-exact), UID FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE, IDLE (a second
connection sees new mail), APPEND to Drafts, and UIDVALIDITY/UIDs stable across sessions.
Exits non-zero with the failed check on the first difference.
"""

import imaplib
import re
import select
import sys
import time

HOST, PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

MSGS = [
    b"From: Alice <alice@alpha.test>\r\nTo: bob@beta.test\r\nSubject: alpha report\r\n"
    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@alpha.test>\r\n\r\n"
    b"The kiwi harvest was good.\r\n",
    b"From: Carol <carol@gamma.test>\r\nTo: bob@beta.test\r\nSubject: beta plans\r\n"
    b"Date: Mon, 30 Nov 2026 11:00:00 +0000\r\nMessage-ID: <m2@gamma.test>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n--XYZ\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nSee the attached plan.\r\n--XYZ\r\n"
    b"Content-Type: application/octet-stream; name=\"plan.bin\"\r\n"
    b"Content-Disposition: attachment; filename=\"plan.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AAECAwQFBgcICQ==\r\n--XYZ--\r\n",
    b"From: Dave <dave@delta.test>\r\nTo: bob@beta.test\r\nSubject: gamma notes\r\n"
    b"Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMessage-ID: <m3@delta.test>\r\n\r\n"
    b"Nothing about fruit.\r\n",
]


def check(cond, what):
    if not cond:
        print("FAIL:", what, file=sys.stderr)
        sys.exit(1)
    print("ok:", what)


def flat(data):
    """All bytes of a FETCH answer, whatever the order of its items."""
    out = b""
    for d in data:
        out += b"".join(d) if isinstance(d, tuple) else (d or b"")
    return out


def ok(resp, what):
    typ, data = resp
    check(typ == "OK", f"{what} ({typ} {data!r})")
    return data


def connect():
    m = imaplib.IMAP4(HOST, PORT)
    ok(m.login(USER, PASSWORD), "LOGIN")
    return m


def uidvalidity(m, box):
    ok(m.select(box), f"SELECT {box}")
    return int(m.untagged_responses.get("UIDVALIDITY", [b"0"])[-1])


# Wrong password: NO, not a crash.
m = imaplib.IMAP4(HOST, PORT)
try:
    m.login(USER, PASSWORD + "x")
    check(False, "LOGIN with a wrong password is refused")
except imaplib.IMAP4.error:
    check(True, "LOGIN with a wrong password is refused")
m.logout()

m = connect()
caps = ok(m.capability(), "CAPABILITY")[0].decode().upper()
for cap in ["IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "UNSELECT", "NAMESPACE", "ID", "SPECIAL-USE"]:
    check(cap in caps.split(), f"CAPABILITY has {cap}")

# LIST: the standard folders, with SPECIAL-USE attributes.
lines = [l.decode() for l in ok(m.list('""', "*"), "LIST")]
names = {re.sub(r'^\(.*?\) "?/"? ', "", l).strip('"'): l for l in lines}
for box in ["INBOX", "Sent", "Drafts", "Trash", "Archive"]:
    check(box in names, f"LIST shows {box}")
for box, attr in [("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Archive", "\\Archive")]:
    check(attr in names[box], f"{box} is marked {attr}")
ok(m.create("Work"), "CREATE Work")

# APPEND three letters and read them back byte for byte.
appended_uids = []
for raw in MSGS:
    typ, data = m.append("INBOX", None, None, raw)
    check(typ == "OK", "APPEND to INBOX")
    mo = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    check(mo is not None, "APPEND answers APPENDUID")
    appended_uids.append(int(mo.group(2)))
check(appended_uids == sorted(appended_uids) and len(set(appended_uids)) == 3, "APPENDUIDs grow")

validity = uidvalidity(m, "INBOX")
check(int(m.untagged_responses["EXISTS"][-1]) == 3, "SELECT INBOX: 3 EXISTS")
typ, data = m.fetch("1:3", "(BODY.PEEK[])")
check(typ == "OK", "FETCH BODY.PEEK[]")
bodies = [d[1] for d in data if isinstance(d, tuple)]
check(bodies == MSGS, "FETCH BODY[] returns the appended bytes exactly")

typ, data = m.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE)")
check(typ == "OK", "UID FETCH 1:*")
uids = [int(re.search(rb"UID (\d+)", d if isinstance(d, bytes) else d[0]).group(1)) for d in data if d]
check(uids == appended_uids, "UID FETCH lists the APPENDUIDs")
sizes = [int(re.search(rb"RFC822.SIZE (\d+)", d).group(1)) for d in data if d]
check(sizes == [len(x) for x in MSGS], "RFC822.SIZE is the byte length")

typ, data = m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
check(data[0][1].strip() == b"Subject: beta plans", "BODY[HEADER.FIELDS (SUBJECT)]")
typ, data = m.fetch("2", "(BODY.PEEK[2])")
check(data[0][1].strip() == b"AAECAwQFBgcICQ==", "BODY[2] is the attachment part")
typ, data = m.fetch("1", "(FLAGS)")
check(b"\\Seen" not in data[0], "PEEK leaves \\Seen unset")
typ, data = m.fetch("1", "(BODY[TEXT])")
check(any(isinstance(d, tuple) and d[1] == b"The kiwi harvest was good.\r\n" for d in data), "BODY[TEXT]")
typ, data = m.fetch("1", "(FLAGS)")
check(b"\\Seen" in data[0], "BODY[] sets \\Seen")

# STORE and SEARCH.
typ, data = m.store("3", "+FLAGS", "(\\Flagged $Important)")
check(typ == "OK" and b"\\Flagged" in data[0] and b"$Important" in data[0], "STORE +FLAGS answers the new flags")
check(ok(m.search(None, "FLAGGED"), "SEARCH FLAGGED") == [b"3"], "SEARCH FLAGGED finds 3")
check(ok(m.search(None, "KEYWORD", "$Important"), "SEARCH KEYWORD") == [b"3"], "SEARCH KEYWORD finds 3")
check(ok(m.search(None, "SUBJECT", '"beta"'), "SEARCH SUBJECT") == [b"2"], "SEARCH SUBJECT finds 2")
check(ok(m.search(None, "BODY", "kiwi"), "SEARCH BODY") == [b"1"], "SEARCH BODY finds 1")
check(ok(m.search(None, "FROM", "carol"), "SEARCH FROM") == [b"2"], "SEARCH FROM finds 2")
check(ok(m.search(None, "UNSEEN"), "SEARCH UNSEEN") == [b"2 3"], "SEARCH UNSEEN finds 2 3")
check(ok(m.search(None, "OR", "SUBJECT", "alpha", "TEXT", "fruit"), "SEARCH OR") == [b"1 3"], "SEARCH OR")
typ, data = m.uid("SEARCH", None, "ALL")
check([int(x) for x in data[0].split()] == appended_uids, "UID SEARCH ALL gives UIDs")
typ, data = m.store("3", "-FLAGS", "($Important)")
check(b"$Important" not in data[0] and b"\\Flagged" in data[0], "STORE -FLAGS")

# COPY to Work (COPYUID), then MOVE to Archive (EXPUNGE in the source).
typ, data = m.copy("1", "Work")
check(typ == "OK" and b"COPYUID" in data[0], "COPY answers COPYUID")
typ, data = m.uid("MOVE", str(appended_uids[2]), "Archive")
check(typ == "OK", "UID MOVE to Archive")
check(m.untagged_responses.pop("EXPUNGE", [None])[-1] == b"3", "MOVE expunges message 3")
ok(m.noop(), "NOOP")

# EXPUNGE: \Deleted message 1 goes, 2 becomes 1.
ok(m.store("1", "+FLAGS.SILENT", "(\\Deleted)"), "STORE \\Deleted")
typ, data = m.expunge()
check(typ == "OK" and data == [b"1"], f"EXPUNGE reports 1 ({data!r})")
typ, data = m.fetch("1", "(UID)")
check(int(re.search(rb"UID (\d+)", data[0]).group(1)) == appended_uids[1], "after EXPUNGE, 1 is the old 2")

ok(m.select("Work"), "SELECT Work")
check(int(m.untagged_responses["EXISTS"][-1]) == 1, "Work has the copy")
typ, data = m.fetch("1", "(BODY.PEEK[] FLAGS)")
check(data[0][1] == MSGS[0] and b"\\Seen" in flat(data), "the copy keeps bytes and flags")
ok(m.select("Archive"), "SELECT Archive")
typ, data = m.fetch("1", "(BODY.PEEK[])")
check(data[0][1] == MSGS[2], "the moved letter is in Archive")

# IDLE: a second connection idling on INBOX sees an APPEND from the first within 1 s.
w = connect()
ok(w.select("INBOX"), "watcher SELECT INBOX")
tag = w._new_tag().decode()
w.send(f"{tag} IDLE\r\n".encode())
line = w.readline()
check(line.startswith(b"+"), "IDLE is accepted")
m.append("INBOX", None, None, MSGS[0])
start = time.monotonic()
seen = b""
while time.monotonic() - start < 5:
    r, _, _ = select.select([w.sock], [], [], 5)
    if not r:
        break
    seen += w.readline()
    if b"EXISTS" in seen:
        break
elapsed = time.monotonic() - start
check(b"* 2 EXISTS" in seen, f"IDLE reports the new message ({seen!r})")
check(elapsed < 1.0, f"IDLE reported it within 1 s ({elapsed:.3f} s)")
w.send(b"DONE\r\n")
while True:
    line = w.readline()
    if line.startswith(tag.encode()):
        check(b"OK" in line, "IDLE ends with OK")
        break
w.logout()

# APPEND to Drafts with \Draft.
typ, data = m.append("Drafts", "(\\Draft)", None, b"Subject: draft\r\n\r\nunfinished\r\n")
check(typ == "OK" and b"APPENDUID" in data[0], "APPEND to Drafts")
ok(m.select("Drafts"), "SELECT Drafts")
typ, data = m.fetch("1", "(FLAGS)")
check(b"\\Draft" in data[0], "the draft keeps \\Draft")

# UNSELECT, STATUS, then a new session sees the same UIDVALIDITY and UIDs.
typ, _ = m._simple_command("UNSELECT")
check(typ == "OK", "UNSELECT")
typ, data = m.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
check(typ == "OK" and b"MESSAGES 2" in data[0], f"STATUS INBOX ({data!r})")
m.logout()

m = connect()
check(uidvalidity(m, "INBOX") == validity, "UIDVALIDITY stable across sessions")
typ, data = m.uid("FETCH", "1:*", "(UID)")
now = [int(re.search(rb"UID (\d+)", d).group(1)) for d in data if d]
check(now[0] == appended_uids[1] and now[1] > appended_uids[2], "UIDs kept, new UID not reused")
m.logout()
print("ALL OK")
