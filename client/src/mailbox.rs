//! [`Mailbox`], the part of a [`crate::Client`] that holds the user's letters: the local
//! letter store ([`MessageStore`]) and the fetching that fills it.
//!
//! Fetching: list every trusted home in parallel (each with a timeout), download each new
//! envelope id once, open it and decide who sent it, store it durably, and only then ack
//! (delete) it on every home that holds it. A node that does not answer is reported and
//! asked again next time; what it holds is still there. Who sent a letter is judged against
//! the pins of the [`Directory`] (a new sender is looked up there) and the user's own
//! [`Profile`].

use std::collections::{BTreeMap, HashMap, HashSet};

use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::{Keyring, cert_addresses};
use sealpost_proto::letter::Letter;
use sealpost_proto::limits::MAX_ENVELOPE_BYTES;
use sealpost_proto::seal::{SignatureStatus, open};
use sealpost_proto::{Address, EnvelopeId, NodeUrl};

use crate::api::{ListItem, Net};
use crate::contacts::PinOutcome;
use crate::directory::Directory;
use crate::error::{Error, NetFailure, Result};
use crate::gateway::default_gateway;
use crate::outbox::FlushReport;
use crate::profile::{HomeEntry, Profile};
use crate::progress::Progress;
use crate::store::{Folder, Header, MessageStore, StoredMessage, Trust};
use crate::verify::{Certs, judge, judge_legacy, legacy_view};
use crate::{join_all, now, readstate};

#[derive(Clone, Debug)]
pub struct NodeReport {
    pub url: NodeUrl,
    /// Why the node could not be listed; `None` when it answered.
    pub error: Option<String>,
    pub listed: usize,
    pub acked: usize,
    pub ack_errors: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct FetchReport {
    /// Letters received, stored by this fetch.
    pub new: Vec<StoredMessage>,
    /// Sent copies stored by this fetch: letters the user sent from another device (a copy
    /// sent from this device is stored when it is sent, and counts as a duplicate here).
    pub sent: Vec<StoredMessage>,
    /// Envelopes already stored (fetched before or from another home): acked, not stored.
    pub duplicates: usize,
    pub nodes: Vec<NodeReport>,
    /// Contacts pinned on first use while opening letters.
    pub new_contacts: Vec<Address>,
    /// Letters marked read because another device of the user read them
    /// ([`crate::readstate`]).
    pub read_elsewhere: usize,
    /// Things the user should know: key changes, failed downloads or sender lookups.
    pub warnings: Vec<String>,
    pub flush: FlushReport,
}

/// A stored message opened again.
#[derive(Clone, Debug)]
pub struct ReadMessage {
    pub meta: StoredMessage,
    /// `None` when it could not be opened.
    pub letter: Option<Letter>,
}

/// Every place (home index, listing item) an envelope id was listed at.
pub(crate) type Places = Vec<(usize, ListItem)>;

/// Groups the listings of several homes by envelope id, in the order ids were first seen:
/// one letter delivered to two homes is one entry with two places (the dedupe of fetch).
pub(crate) fn group_by_envelope(
    listings: Vec<(usize, Vec<ListItem>)>,
) -> Vec<(EnvelopeId, Places)> {
    let mut out: Vec<(EnvelopeId, Places)> = Vec::new();
    let mut index: HashMap<EnvelopeId, usize> = HashMap::new();
    for (home, items) in listings {
        for item in items {
            let at = *index.entry(item.id).or_insert_with(|| {
                out.push((item.id, Vec::new()));
                out.len() - 1
            });
            out[at].1.push((home, item));
        }
    }
    out
}

/// Signature context of one run: certificates to check against and what is pinned.
struct Judge {
    certs: Certs,
    pinned: BTreeMap<Address, String>,
    /// Certificates of our own home nodes by the address they name (`postmaster@HOST`):
    /// a node's bounces are signed with it (`spec/api.md` §Relay). Several nodes on one
    /// host share the address, hence a list.
    nodes: BTreeMap<Address, Vec<String>>,
    looked_up: HashSet<Address>,
}

impl Judge {
    /// The key `from` must have signed with: the pinned one, or, for the postmaster of one
    /// of our homes, whichever of their keys did sign.
    fn expected_signer(&self, from: &Address, status: &SignatureStatus) -> Option<String> {
        if let Some(p) = self.pinned.get(from) {
            return Some(p.clone());
        }
        match status {
            SignatureStatus::Good { signer } => {
                let hex = signer.to_hex();
                self.nodes
                    .get(from)
                    .filter(|keys| keys.contains(&hex))
                    .map(|_| hex)
            }
            _ => None,
        }
    }
}

/// The signature context of `me` with the pins and cached nodes of `directory`.
fn judge_state(me: &Profile, directory: &Directory) -> Result<Judge> {
    let mut certs = Certs::new(vec![me.cert()]);
    let mut pinned = BTreeMap::new();
    pinned.insert(me.address().clone(), me.config.fingerprint.clone());
    for c in directory.contacts().all()? {
        certs.push(c.parsed_cert()?);
        pinned.insert(c.address.clone(), c.fingerprint.clone());
    }
    let mut nodes: BTreeMap<Address, Vec<String>> = BTreeMap::new();
    {
        for h in &me.config.homes {
            let Some(node) = directory.cached_node(&h.url) else {
                continue;
            };
            if node.descriptor.node_key != h.node_key_bytes()? {
                continue;
            }
            for a in cert_addresses(&node.cert) {
                if let Ok(a) = Address::parse(&a) {
                    nodes
                        .entry(a)
                        .or_default()
                        .push(node.cert.fingerprint().to_hex());
                }
            }
            certs.push(node.cert);
        }
    }
    Ok(Judge {
        certs,
        pinned,
        nodes,
        looked_up: HashSet::new(),
    })
}

/// The folder of a letter fetched into the mailbox of `me`: a letter that `me` signed (with
/// the key pinned for their own address) and that is not addressed to them is the sent
/// copy of a letter they wrote (on any of their devices, [`crate::send`]); everything else
/// was received. A letter the user writes to themselves is received (no sent copy is made
/// of it).
pub fn folder_of(me: &Profile, trust: &Trust, header: Option<&Header>) -> Folder {
    match header {
        Some(h)
            if trust.is_verified()
                && &h.from == me.address()
                && !h.to.iter().chain(&h.cc).any(|a| a == me.address()) =>
        {
            Folder::Sent
        }
        _ => Folder::Inbox,
    }
}

/// The trusted homes of `me`, fetched from and submitted through; an error when there is
/// none.
pub fn trusted_homes(me: &Profile) -> Result<Vec<HomeEntry>> {
    let homes: Vec<_> = me.config.trusted_homes().cloned().collect();
    if homes.is_empty() {
        return Err(Error::input(
            "homes",
            "no trusted home node; trust one with `sealpost node trust URL`",
        ));
    }
    Ok(homes)
}

/// The user's letters: see the module documentation.
pub struct Mailbox {
    net: Net,
    messages: MessageStore,
}

impl Mailbox {
    /// The letters of the profile in `profile_dir`, fetched through `net`.
    pub fn new(profile_dir: &std::path::Path, net: Net) -> Mailbox {
        Mailbox {
            net,
            messages: MessageStore::new(profile_dir),
        }
    }

    /// The letters stored.
    pub fn messages(&self) -> &MessageStore {
        &self.messages
    }

    /// Fetches from every one of `homes` (the trusted homes of `me`) that answers. The
    /// report's `flush` is left empty: flushing the outbox first is the caller's.
    pub async fn fetch(
        &self,
        me: &Profile,
        directory: &Directory,
        homes: &[HomeEntry],
        keys: &Keyring,
        progress: &dyn Progress,
    ) -> Result<FetchReport> {
        let mut report = FetchReport::default();
        let timeout = self.net.config().timeout;
        let listings = join_all(
            homes
                .iter()
                .map(|h| async move {
                    match tokio::time::timeout(timeout, self.net.list_all(&h.url, h.mailbox, keys))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(Error::Unreachable {
                            url: h.url.to_string(),
                            reason: "timed out".into(),
                            failure: NetFailure::TimedOut,
                        }),
                    }
                })
                .collect(),
        )
        .await;

        let mut answered = Vec::new();
        for (i, (h, listing)) in homes.iter().zip(listings).enumerate() {
            let mut nr = NodeReport {
                url: h.url.clone(),
                error: None,
                listed: 0,
                acked: 0,
                ack_errors: Vec::new(),
            };
            match listing {
                Ok(items) => {
                    nr.listed = items.len();
                    answered.push((i, items));
                }
                Err(e) => nr.error = Some(e.to_string()),
            }
            report.nodes.push(nr);
        }
        if report.nodes.iter().all(|n| n.error.is_some()) {
            let details = report
                .nodes
                .iter()
                .map(|n| n.error.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::NoNodeAnswered { details });
        }

        let mut opener = Opener {
            me,
            directory,
            keys,
            judge: judge_state(me, directory)?,
        };
        let mut acks: Vec<Vec<u64>> = vec![Vec::new(); homes.len()];
        for (id, places) in &group_by_envelope(answered) {
            let id = *id;
            if self.messages.contains(&id) {
                report.duplicates += 1;
                self.note_nodes(&id, places.iter().map(|(i, _)| &homes[*i].url))?;
                for (i, item) in places {
                    acks[*i].push(item.seq);
                }
                continue;
            }
            let mut got = None;
            for (i, item) in places {
                let h = &homes[*i];
                if item.size > MAX_ENVELOPE_BYTES as u64 {
                    report.warnings.push(format!(
                        "{}: envelope {id} is {} bytes, over the limit; left there",
                        h.url, item.size
                    ));
                    continue;
                }
                let t = progress.transfer(&format!("from {}", h.url.authority()), item.size);
                match self
                    .net
                    .get_envelope(&h.url, h.mailbox, keys, item.seq, &*t)
                    .await
                {
                    Ok(bytes) => {
                        got = Some((*i, bytes));
                        break;
                    }
                    Err(e) => report
                        .warnings
                        .push(format!("download of {id} failed: {e}")),
                }
            }
            // Not downloaded from anywhere: left on the nodes for the next fetch.
            let Some((i, bytes)) = got else { continue };
            let (sealed, trust, header) = match Envelope::decode(&bytes) {
                Ok(env) if env.id == id && env.mailbox == homes[i].mailbox => {
                    let (trust, header) = opener.open_and_judge(&env.sealed, &mut report).await;
                    (env.sealed, trust, header)
                }
                Ok(_) => (
                    bytes,
                    Trust::Unreadable {
                        reason: "envelope does not match its listing (id or mailbox)".into(),
                    },
                    None,
                ),
                Err(e) => (
                    bytes,
                    Trust::Unreadable {
                        reason: format!("not an envelope: {e}"),
                    },
                    None,
                ),
            };
            let mut nodes: Vec<NodeUrl> = Vec::new();
            for (j, _) in places {
                if !nodes.contains(&homes[*j].url) {
                    nodes.push(homes[*j].url.clone());
                }
            }
            if let Some(ids) = readstate::state_ids(me.address(), &trust, header.as_ref()) {
                // Another device (or this one) read these: a state letter is applied, not
                // stored, and acked like any letter.
                for seen in &ids {
                    if self.messages.contains(seen) {
                        let mut m = self.messages.get(seen)?;
                        if !m.seen {
                            m.seen = true;
                            self.messages.update(&m)?;
                            report.read_elsewhere += 1;
                        }
                    }
                }
                for (i, item) in places {
                    acks[*i].push(item.seq);
                }
                continue;
            }
            let folder = folder_of(me, &trust, header.as_ref());
            let meta = StoredMessage {
                id,
                received_at: now(),
                nodes,
                size: sealed.len() as u64,
                trust,
                // The user wrote it: nothing to read.
                seen: folder == Folder::Sent,
                header,
                folder,
            };
            // Durable (fsync) before any ack.
            self.messages.put(&meta, &sealed)?;
            match folder {
                Folder::Inbox => report.new.push(meta),
                Folder::Sent => report.sent.push(meta),
            }
            for (i, item) in places {
                acks[*i].push(item.seq);
            }
        }

        let results = join_all(
            homes
                .iter()
                .zip(&acks)
                .map(|(h, seqs)| async move {
                    let mut ok = 0;
                    let mut errors = Vec::new();
                    for seq in seqs {
                        match self.net.delete(&h.url, h.mailbox, keys, *seq).await {
                            Ok(()) => ok += 1,
                            Err(e) => {
                                errors.push(e.to_string());
                                if matches!(e, Error::Unreachable { .. }) {
                                    break;
                                }
                            }
                        }
                    }
                    (ok, errors)
                })
                .collect(),
        )
        .await;
        for (nr, (ok, errors)) in report.nodes.iter_mut().zip(results) {
            nr.acked = ok;
            nr.ack_errors = errors;
        }
        directory.save_nodes()?;
        Ok(report)
    }

    /// Stores the sent copy of a letter this device has just sent: `sealed`, sealed to the
    /// user's own key and signed by `me`, under the envelope id `id` of the copy queued for
    /// the user's own mailbox. It shows at once; fetching that envelope later finds it stored.
    pub fn store_sent(
        &self,
        me: &Profile,
        id: EnvelopeId,
        sealed: &[u8],
        letter: &Letter,
    ) -> Result<StoredMessage> {
        let meta = StoredMessage {
            id,
            received_at: now(),
            nodes: Vec::new(),
            size: sealed.len() as u64,
            trust: Trust::Verified {
                signer: me.config.fingerprint.clone(),
            },
            seen: true,
            header: Some(Header::of(letter)),
            folder: Folder::Sent,
        };
        self.messages.put(&meta, sealed)?;
        Ok(meta)
    }

    /// Records that a stored message was also found on `urls`.
    fn note_nodes<'a>(
        &self,
        id: &EnvelopeId,
        urls: impl Iterator<Item = &'a NodeUrl>,
    ) -> Result<()> {
        let mut meta = self.messages.get(id)?;
        let before = meta.nodes.len();
        for u in urls {
            if !meta.nodes.contains(u) {
                meta.nodes.push(u.clone());
            }
        }
        if meta.nodes.len() != before {
            self.messages.update(&meta)?;
        }
        Ok(())
    }

    /// Opens a stored message again (no network) and marks it seen.
    pub fn read(
        &self,
        me: &Profile,
        directory: &Directory,
        id: &EnvelopeId,
        keys: &Keyring,
    ) -> Result<ReadMessage> {
        let mut meta = self.messages.get(id)?;
        if meta.header.is_none() {
            return Ok(ReadMessage { meta, letter: None });
        }
        let sealed = self.messages.sealed(id)?;
        let judge_state = judge_state(me, directory)?;
        let opened = open(&sealed, keys, &|h| judge_state.certs.lookup(h))?;
        if !meta.seen {
            meta.seen = true;
            self.messages.update(&meta)?;
            // With several devices, the others learn it at the next fetch.
            if meta.folder == Folder::Inbox && me.dir().join(crate::devices::DEVICE_FILE).exists() {
                readstate::note_read(me.dir(), id)?;
            }
        }
        let mut letter = opened.letter;
        if letter.legacy.is_some() {
            // What `list` showed was made the same way at fetch: the two agree.
            letter = legacy_view(letter, keys, &|h| judge_state.certs.lookup(h));
            meta.header = Some(Header::of(&letter));
        }
        Ok(ReadMessage {
            meta,
            letter: Some(letter),
        })
    }
}

/// What opening the letters of one fetch needs: whose they are, the directory to look new
/// senders up in, the keys, and the signature context so far.
struct Opener<'a> {
    me: &'a Profile,
    directory: &'a Directory,
    keys: &'a Keyring,
    judge: Judge,
}

impl Opener<'_> {
    /// Opens a sealed letter and decides who sent it. A signer we have no certificate for
    /// makes us look up the From address's record once per run (TOFU for a new sender).
    async fn open_and_judge(
        &mut self,
        sealed: &[u8],
        report: &mut FetchReport,
    ) -> (Trust, Option<Header>) {
        let (me, directory, keys) = (self.me, self.directory, self.keys);
        let opened = match open(sealed, keys, &|h| self.judge.certs.lookup(h)) {
            Ok(o) => o,
            Err(e) => {
                return (
                    Trust::Unreadable {
                        reason: e.to_string(),
                    },
                    None,
                );
            }
        };
        let from = opened.letter.from.clone();
        let mut status = opened.signature.clone();
        if opened.letter.legacy.is_some() {
            // Legacy mail is sealed by the gateway that took it in, `gateway@` our domain;
            // the legacy From is never looked up (it has no Sealpost node, and asking
            // would tell the world whom we hear from).
            if let SignatureStatus::UnknownSigner { .. } = status
                && let Some(again) = self.learn_gateway(sealed, report).await
            {
                status = again;
            }
            let trust = judge_legacy(&status, opened.letter.legacy.as_deref(), &from);
            let shown = legacy_view(opened.letter, keys, &|h| self.judge.certs.lookup(h));
            return (trust, Some(Header::of(&shown)));
        }
        if matches!(status, SignatureStatus::UnknownSigner { .. })
            && !self.judge.nodes.contains_key(&from)
            && self.judge.looked_up.insert(from.clone())
        {
            match directory.resolve_recipient(me, &from).await {
                Ok(r) => {
                    if let Some(outcome) = &r.pin {
                        let c = outcome.contact();
                        if let Err(e) = directory.contacts().save(c) {
                            report.warnings.push(e.to_string());
                        } else {
                            if matches!(outcome, PinOutcome::New(_)) {
                                report.new_contacts.push(from.clone());
                            }
                            self.judge
                                .pinned
                                .insert(from.clone(), c.fingerprint.clone());
                            self.judge.certs.push(r.cert.clone());
                        }
                    }
                    if let Ok(again) = open(sealed, keys, &|h| self.judge.certs.lookup(h)) {
                        status = again.signature;
                    }
                }
                Err(e @ Error::KeyChanged { .. }) => report.warnings.push(e.to_string()),
                Err(e) => report
                    .warnings
                    .push(format!("could not look up the sender {from}: {e}")),
            }
        }
        let expected = self.judge.expected_signer(&from, &status);
        let trust = judge(&status, &from, expected.as_deref());
        (trust, Some(Header::of(&opened.letter)))
    }

    /// Looks up our domain's gateway (once per fetch), pins it like any contact, and
    /// opens `sealed` again: the signature status with the gateway's certificate known.
    async fn learn_gateway(
        &mut self,
        sealed: &[u8],
        report: &mut FetchReport,
    ) -> Option<SignatureStatus> {
        let (me, directory, keys) = (self.me, self.directory, self.keys);
        let gateway = default_gateway(me.address()).ok()?;
        if !self.judge.looked_up.insert(gateway.clone()) {
            return None;
        }
        let r = match directory.resolve_recipient(me, &gateway).await {
            Ok(r) => r,
            Err(e) => {
                report
                    .warnings
                    .push(format!("could not look up the gateway {gateway}: {e}"));
                return None;
            }
        };
        if let Some(outcome) = &r.pin {
            let c = outcome.contact();
            if let Err(e) = directory.contacts().save(c) {
                report.warnings.push(e.to_string());
                return None;
            }
            if matches!(outcome, PinOutcome::New(_)) {
                report.new_contacts.push(gateway.clone());
            }
            self.judge.pinned.insert(gateway, c.fingerprint.clone());
        }
        self.judge.certs.push(r.cert);
        open(sealed, keys, &|h| self.judge.certs.lookup(h))
            .ok()
            .map(|o| o.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, id: u8) -> ListItem {
        ListItem {
            seq,
            id: EnvelopeId([id; 16]),
            size: 4096,
        }
    }

    #[test]
    fn one_letter_on_two_homes_is_one_entry() {
        let groups = group_by_envelope(vec![
            (0, vec![item(1, 0xa), item(2, 0xb)]),
            (2, vec![item(7, 0xb), item(8, 0xc), item(9, 0xa)]),
        ]);
        let ids: Vec<u8> = groups.iter().map(|(id, _)| id.0[0]).collect();
        assert_eq!(ids, vec![0xa, 0xb, 0xc], "first-seen order");
        assert_eq!(groups[0].1, vec![(0, item(1, 0xa)), (2, item(9, 0xa))]);
        assert_eq!(groups[1].1, vec![(0, item(2, 0xb)), (2, item(7, 0xb))]);
        assert_eq!(groups[2].1, vec![(2, item(8, 0xc))]);
        assert!(group_by_envelope(vec![(0, vec![]), (1, vec![])]).is_empty());
    }

    #[test]
    fn only_our_own_verified_letter_to_others_is_a_sent_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let me = crate::profile::tests::sample(tmp.path(), "alice@alpha.test", None);
        let alice = me.address().clone();
        let bob = Address::parse("bob@beta.test").unwrap();
        let header = |from: &Address, to: &Address| {
            Header::of(&Letter::new(from.clone(), vec![to.clone()], "s", "b", 1))
        };
        let verified = Trust::Verified {
            signer: me.config.fingerprint.clone(),
        };
        let unverified = Trust::Unverified { reason: "x".into() };
        let sent = |t: &Trust, h: Header| folder_of(&me, t, Some(&h));
        assert_eq!(sent(&verified, header(&alice, &bob)), Folder::Sent);
        assert_eq!(sent(&verified, header(&alice, &alice)), Folder::Inbox);
        assert_eq!(sent(&unverified, header(&alice, &bob)), Folder::Inbox);
        assert_eq!(sent(&verified, header(&bob, &alice)), Folder::Inbox);
        assert_eq!(folder_of(&me, &verified, None), Folder::Inbox);
    }
}
