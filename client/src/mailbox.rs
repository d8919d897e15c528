//! [`Mailbox`], the part of a [`crate::Client`] that holds the user's letters: the local
//! letter store ([`MessageStore`]) and the fetching that fills it.
//!
//! Fetching: list every trusted home in parallel (each with a timeout), then, in batches of
//! letters, download each new envelope id once (one batched request per home), open them on
//! every core and decide who sent each, store the batch durably, and only then ack (delete)
//! its letters on every home that holds them (one batched request per home). A node that does not answer is reported and
//! asked again next time; what it holds is still there. Who sent a letter is judged against
//! the pins of the [`Directory`] (a new sender is looked up there) and the user's own
//! [`Profile`].

use std::collections::{BTreeMap, HashMap, HashSet};

use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::{Keyring, cert_addresses};
use sealpost_proto::letter::Letter;
use sealpost_proto::limits::{MAX_BATCH_SEQS, MAX_ENVELOPE_BYTES};
use sealpost_proto::openpgp::KeyHandle;
use sealpost_proto::seal::{Deferred, Opened, SignatureStatus, open, open_deferred};
use sealpost_proto::{Address, EnvelopeId, MailboxId, NodeUrl};

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
        let groups = group_by_envelope(answered);
        let mut run = Run {
            homes,
            keys,
            progress,
            batched: vec![true; homes.len()],
        };
        // Batch N is stored on the store thread and then acked while batch N+1 downloads.
        let store = StoreThread::start(self.messages.clone())?;
        let mut stored: Option<StoredBatch> = None;
        for batch in batches(&groups) {
            let previous = stored.take();
            let batched = run.batched.clone();
            let (prepared, acked) = tokio::join!(
                self.prepare_batch(batch, &mut run, &mut opener, &mut report),
                self.ack_stored(previous, homes, keys, batched),
            );
            let acked = acked?;
            apply_acks(acked, &mut run, &mut report);
            let mut prepared = prepared?;
            // After the previous batch is stored: a read state may name its letters.
            self.apply_read_state(&prepared.seen, &mut prepared.store, &mut report)?;
            stored = Some(StoredBatch {
                done: store.put(prepared.store),
                acks: prepared.acks,
            });
        }
        let batched = run.batched.clone();
        let acked = self.ack_stored(stored, homes, keys, batched).await?;
        apply_acks(acked, &mut run, &mut report);
        drop(store);
        directory.save_nodes()?;
        Ok(report)
    }

    /// Waits until `batch` is durably stored, then acknowledges its letters (none before:
    /// a letter acked but not stored would be lost in a crash). Answers what the homes
    /// said, per home; an error when the batch could not be stored.
    async fn ack_stored(
        &self,
        batch: Option<StoredBatch>,
        homes: &[HomeEntry],
        keys: &Keyring,
        batched: Vec<bool>,
    ) -> Result<Vec<AckOutcome>> {
        let Some(batch) = batch else {
            return Ok(Vec::new());
        };
        batch.done.await.unwrap_or_else(|_| {
            Err(Error::input(
                "message store",
                "the store thread ended before the batch was stored",
            ))
        })?;
        Ok(self.ack(batch.acks, homes, keys, batched).await)
    }

    /// Marks the letters `seen` names read (a read state from another device): those of
    /// `store` (this batch, not stored yet) and those stored before.
    fn apply_read_state(
        &self,
        seen: &[EnvelopeId],
        store: &mut [(StoredMessage, Vec<u8>)],
        report: &mut FetchReport,
    ) -> Result<()> {
        for id in seen {
            if let Some((m, _)) = store.iter_mut().find(|(m, _)| &m.id == id) {
                if !m.seen {
                    m.seen = true;
                    report.read_elsewhere += 1;
                }
            } else if self.messages.contains(id) {
                let mut m = self.messages.get(id)?;
                if !m.seen {
                    m.seen = true;
                    self.messages.update(&m)?;
                    report.read_elsewhere += 1;
                }
            }
        }
        Ok(())
    }

    /// Fetches and opens one batch of letters: downloaded in one request per home where the
    /// home can, opened on every core. Answers what to store and, once stored, to ack (in
    /// one request per home). A crash before the acknowledgement leaves the letters on the
    /// nodes: the next fetch finds them stored, counts them as duplicates and acks them.
    async fn prepare_batch(
        &self,
        batch: &[(EnvelopeId, Places)],
        run: &mut Run<'_>,
        opener: &mut Opener<'_>,
        report: &mut FetchReport,
    ) -> Result<Prepared> {
        let (me, homes) = (opener.me, run.homes);
        let mut acks: Vec<Vec<u64>> = vec![Vec::new(); homes.len()];
        let mut wanted: Vec<(EnvelopeId, &Places)> = Vec::new();
        for (id, places) in batch {
            if self.messages.contains(id) {
                report.duplicates += 1;
                self.note_nodes(id, places.iter().map(|(i, _)| &homes[*i].url))?;
                for (i, item) in places {
                    acks[*i].push(item.seq);
                }
            } else {
                wanted.push((*id, places));
            }
        }
        let got = self.download(&wanted, run, report).await;
        let certs_known = opener.judge.certs.len();
        let unsealed = open_all(
            got.iter()
                .zip(&wanted)
                .filter_map(|(g, (id, _))| {
                    g.as_ref()
                        .map(|(i, bytes)| (*id, homes[*i].mailbox, bytes.as_slice()))
                })
                .collect(),
            run.keys,
            &opener.judge.certs,
        );
        let mut unsealed = unsealed.into_iter();
        let (mut store, mut seen) = (Vec::new(), Vec::new());
        for ((id, places), got) in wanted.iter().zip(got) {
            // Not downloaded from anywhere: left on the nodes for the next fetch.
            if got.is_none() {
                continue;
            }
            let Some(u) = unsealed.next() else { break };
            let (sealed, trust, header) = match u {
                Unsealed::Opened {
                    sealed,
                    opened,
                    deferred,
                } => {
                    let (trust, header) = opener
                        .judge_opened(
                            &sealed,
                            opened.map(|o| *o),
                            deferred.as_ref(),
                            certs_known,
                            report,
                        )
                        .await;
                    (sealed, trust, header)
                }
                Unsealed::Unreadable { bytes, reason } => {
                    (bytes, Trust::Unreadable { reason }, None)
                }
            };
            let mut nodes: Vec<NodeUrl> = Vec::new();
            for (j, _) in *places {
                if !nodes.contains(&homes[*j].url) {
                    nodes.push(homes[*j].url.clone());
                }
            }
            for (i, item) in *places {
                acks[*i].push(item.seq);
            }
            if let Some(ids) = readstate::state_ids(me.address(), &trust, header.as_ref()) {
                // Another device (or this one) read these: a state letter is applied, not
                // stored, and acked like any letter.
                seen.extend(ids);
                continue;
            }
            let folder = folder_of(me, &trust, header.as_ref());
            let meta = StoredMessage {
                id: *id,
                received_at: now(),
                nodes,
                size: sealed.len() as u64,
                trust,
                // The user wrote it: nothing to read.
                seen: folder == Folder::Sent,
                header,
                folder,
                pack: None,
            };
            match folder {
                Folder::Inbox => report.new.push(meta.clone()),
                Folder::Sent => report.sent.push(meta.clone()),
            }
            store.push((meta, sealed));
        }
        Ok(Prepared { store, acks, seen })
    }

    /// Downloads each of `wanted` from the first of its places that gives it: per home, in
    /// batched requests, or one request per letter from a home without them. The answer
    /// has the home and the envelope's bytes, or `None`, for each of `wanted`.
    async fn download(
        &self,
        wanted: &[(EnvelopeId, &Places)],
        run: &mut Run<'_>,
        report: &mut FetchReport,
    ) -> Vec<Option<(usize, Vec<u8>)>> {
        let homes = run.homes;
        let mut got: Vec<Option<(usize, Vec<u8>)>> = wanted.iter().map(|_| None).collect();
        let mut places: Vec<Vec<(usize, ListItem)>> = Vec::with_capacity(wanted.len());
        for (id, p) in wanted {
            let mut usable = Vec::new();
            for (i, item) in p.iter() {
                if item.size > MAX_ENVELOPE_BYTES as u64 {
                    report.warnings.push(format!(
                        "{}: envelope {id} is {} bytes, over the limit; left there",
                        homes[*i].url, item.size
                    ));
                } else {
                    usable.push((*i, item.clone()));
                }
            }
            places.push(usable);
        }
        let rounds = places.iter().map(Vec::len).max().unwrap_or(0);
        // Round r asks each letter not downloaded yet from its r-th place.
        for round in 0..rounds {
            let mut ask: Vec<Vec<(usize, ListItem)>> = vec![Vec::new(); homes.len()];
            for (k, p) in places.iter().enumerate() {
                if got[k].is_none()
                    && let Some((i, item)) = p.get(round)
                {
                    ask[*i].push((k, item.clone()));
                }
            }
            let keys = run.keys;
            let progress = run.progress;
            let answers = join_all(
                ask.iter()
                    .zip(&run.batched)
                    .enumerate()
                    .filter(|(_, (list, _))| !list.is_empty())
                    .map(|(i, (list, batched))| async move {
                        let (batched, out) = self
                            .download_from(&homes[i], list, keys, progress, *batched)
                            .await;
                        (i, batched, out)
                    })
                    .collect(),
            )
            .await;
            for (i, batched, out) in answers {
                run.batched[i] = batched;
                for (k, r) in out {
                    match r {
                        Ok(bytes) => got[k] = Some((i, bytes)),
                        Err(e) => report
                            .warnings
                            .push(format!("download of {} failed: {e}", wanted[k].0)),
                    }
                }
            }
        }
        got
    }

    /// Downloads `list` (index in the batch, listing item) from `home`: batched while
    /// `batched`, one by one once the home says it has no batched fetch. Answers whether it
    /// still may be asked for batches, and each download's bytes or why it failed.
    async fn download_from(
        &self,
        home: &HomeEntry,
        list: &[(usize, ListItem)],
        keys: &Keyring,
        progress: &dyn Progress,
        mut batched: bool,
    ) -> (bool, Vec<(usize, std::result::Result<Vec<u8>, String>)>) {
        let label = format!("from {}", home.url.authority());
        let mut out = Vec::with_capacity(list.len());
        let mut rest = list;
        while batched && !rest.is_empty() {
            let ask = &rest[..rest.len().min(MAX_BATCH_SEQS)];
            let seqs: Vec<u64> = ask.iter().map(|(_, item)| item.seq).collect();
            let t = progress.transfer(&label, ask.iter().map(|(_, item)| item.size).sum());
            match self
                .net
                .fetch_batch(&home.url, home.mailbox, keys, &seqs, &*t)
                .await
            {
                Ok(Some(entries)) => {
                    let n = entries.len();
                    for (e, (k, _)) in entries.into_iter().zip(ask) {
                        out.push((
                            *k,
                            e.envelope
                                .ok_or_else(|| format!("{} no longer holds it", home.url)),
                        ));
                    }
                    rest = &rest[n..];
                }
                Ok(None) => batched = false,
                Err(e) => {
                    let e = e.to_string();
                    out.extend(rest.iter().map(|(k, _)| (*k, Err(e.clone()))));
                    rest = &[];
                }
            }
        }
        for (k, item) in rest {
            let t = progress.transfer(&label, item.size);
            let r = self
                .net
                .get_envelope(&home.url, home.mailbox, keys, item.seq, &*t)
                .await
                .map_err(|e| e.to_string());
            out.push((*k, r));
        }
        (batched, out)
    }

    /// Acknowledges `acks` (per home, the sequence numbers stored or applied) on every
    /// home: batched where the home can (`batched`), else one by one.
    async fn ack(
        &self,
        acks: Vec<Vec<u64>>,
        homes: &[HomeEntry],
        keys: &Keyring,
        batched: Vec<bool>,
    ) -> Vec<AckOutcome> {
        join_all(
            homes
                .iter()
                .zip(&acks)
                .zip(&batched)
                .map(|((h, seqs), batched)| async move {
                    let (mut ok, mut errors, mut batched) = (0, Vec::new(), *batched);
                    let mut rest = &seqs[..];
                    while batched && !rest.is_empty() {
                        let chunk = &rest[..rest.len().min(MAX_BATCH_SEQS)];
                        match self.net.ack_batch(&h.url, h.mailbox, keys, chunk).await {
                            Ok(Some(())) => ok += chunk.len(),
                            Ok(None) => {
                                batched = false;
                                break;
                            }
                            Err(e) => {
                                let unreachable = matches!(e, Error::Unreachable { .. });
                                errors.push(e.to_string());
                                if unreachable {
                                    return (ok, errors, batched);
                                }
                            }
                        }
                        rest = &rest[chunk.len()..];
                    }
                    for seq in rest {
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
                    (ok, errors, batched)
                })
                .collect(),
        )
        .await
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
            pack: None,
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
    /// Decides who sent a letter that [`open_all`] opened (or could not open) when
    /// `certs_known` certificates were known. A signer we have no certificate for makes us
    /// look up the From address's record once per run (TOFU for a new sender).
    ///
    /// A letter whose signer was unknown is not decrypted again once the signer is learned:
    /// its signature is checked with what [`open_deferred`] kept (`deferred`).
    async fn judge_opened(
        &mut self,
        sealed: &[u8],
        opened: std::result::Result<Opened, String>,
        deferred: Option<&Deferred>,
        certs_known: usize,
        report: &mut FetchReport,
    ) -> (Trust, Option<Header>) {
        let (me, directory, keys) = (self.me, self.directory, self.keys);
        let mut opened = match opened {
            Ok(o) => o,
            Err(reason) => return (Trust::Unreadable { reason }, None),
        };
        // A sender learned since (for an earlier letter of the batch): check again with
        // every certificate known now.
        if matches!(opened.signature, SignatureStatus::UnknownSigner { .. })
            && self.judge.certs.len() > certs_known
        {
            opened.signature = self.recheck(sealed, &opened.letter.from, deferred);
        }
        let from = opened.letter.from.clone();
        let mut status = opened.signature.clone();
        if opened.letter.legacy.is_some() {
            // Legacy mail is sealed by the gateway that took it in, `gateway@` our domain;
            // the legacy From is never looked up (it has no Sealpost node, and asking
            // would tell the world whom we hear from).
            if let SignatureStatus::UnknownSigner { .. } = status
                && let Some(again) = self.learn_gateway(sealed, &from, deferred, report).await
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
                    status = self.recheck(sealed, &from, deferred);
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
        from: &Address,
        deferred: Option<&Deferred>,
        report: &mut FetchReport,
    ) -> Option<SignatureStatus> {
        let (me, directory) = (self.me, self.directory);
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
        Some(self.recheck(sealed, from, deferred))
    }

    /// The signature status of a letter from `from` whose signer was unknown, with every
    /// certificate known now: from what opening it kept, or (kept nothing) by opening it
    /// again.
    fn recheck(
        &self,
        sealed: &[u8],
        from: &Address,
        deferred: Option<&Deferred>,
    ) -> SignatureStatus {
        let lookup = |h: &KeyHandle| self.judge.certs.lookup(h);
        match deferred {
            Some(d) => d.verify(from, &lookup),
            None => match open(sealed, self.keys, &lookup) {
                Ok(o) => o.signature,
                Err(_) => SignatureStatus::Bad,
            },
        }
    }
}

/// Letters fetched, opened, stored and acknowledged together ([`Mailbox::fetch_batch`]).
const BATCH_LETTERS: usize = 500;
/// ... and at most this many bytes of them (as listed), so that a batch's envelopes, held
/// in memory, stay bounded.
const BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// The letters of a fetch in batches of at most [`BATCH_LETTERS`] and [`BATCH_BYTES`] (a
/// larger letter is a batch of its own).
fn batches(groups: &[(EnvelopeId, Places)]) -> Vec<&[(EnvelopeId, Places)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (k, (_, places)) in groups.iter().enumerate() {
        let size = places.first().map_or(0, |(_, item)| item.size);
        if k > start && (k - start >= BATCH_LETTERS || bytes.saturating_add(size) > BATCH_BYTES) {
            out.push(&groups[start..k]);
            (start, bytes) = (k, 0);
        }
        bytes = bytes.saturating_add(size);
    }
    if start < groups.len() {
        out.push(&groups[start..]);
    }
    out
}

/// What the batches of one fetch share: the homes, keys and progress, and which homes
/// still take batched requests (a home that answers that it has none is asked one letter
/// at a time for the rest of the fetch).
struct Run<'a> {
    homes: &'a [HomeEntry],
    keys: &'a Keyring,
    progress: &'a dyn Progress,
    batched: Vec<bool>,
}

/// A batch fetched and opened: its letters to store, then, per home, the sequence numbers to
/// ack (stored, duplicates and read states), and the letters read states mark read.
struct Prepared {
    store: Vec<(StoredMessage, Vec<u8>)>,
    acks: Vec<Vec<u64>>,
    seen: Vec<EnvelopeId>,
}

/// A batch handed to the [`StoreThread`]: `done` says when it is durable, then `acks` go.
struct StoredBatch {
    done: tokio::sync::oneshot::Receiver<Result<()>>,
    acks: Vec<Vec<u64>>,
}

/// What one home said to an ack: how many it took, the errors, and whether it still takes
/// batched requests.
type AckOutcome = (usize, Vec<String>, bool);

fn apply_acks(acked: Vec<AckOutcome>, run: &mut Run<'_>, report: &mut FetchReport) {
    for (i, (ok, errors, batched)) in acked.into_iter().enumerate() {
        run.batched[i] &= batched;
        if let Some(nr) = report.nodes.get_mut(i) {
            nr.acked += ok;
            nr.ack_errors.extend(errors);
        }
    }
}

/// A thread that stores fetched batches ([`MessageStore::put_batch`]), one at a time in
/// the order given, so that the disk's sync of one batch overlaps the download and
/// opening of the next. Dropping it waits for the batch being stored.
struct StoreThread {
    jobs: Option<std::sync::mpsc::Sender<StoreJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type StoreJob = (
    Vec<(StoredMessage, Vec<u8>)>,
    tokio::sync::oneshot::Sender<Result<()>>,
);

impl StoreThread {
    fn start(messages: MessageStore) -> Result<StoreThread> {
        let (jobs, rx) = std::sync::mpsc::channel::<StoreJob>();
        let dir = messages.dir().to_path_buf();
        let thread = std::thread::Builder::new()
            .name("letter-store".into())
            .spawn(move || {
                for (batch, done) in rx {
                    let _ = done.send(messages.put_batch(&batch));
                }
            })
            .map_err(|e| Error::profile_io(dir, e))?;
        Ok(StoreThread {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues `batch`; the answer comes when it is durably stored (or failed).
    fn put(
        &self,
        batch: Vec<(StoredMessage, Vec<u8>)>,
    ) -> tokio::sync::oneshot::Receiver<Result<()>> {
        let (done, rx) = tokio::sync::oneshot::channel();
        if let Some(jobs) = &self.jobs {
            // A send fails only when the thread is gone: `rx` then answers that.
            let _ = jobs.send((batch, done));
        }
        rx
    }
}

impl Drop for StoreThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A downloaded envelope, decoded and opened.
enum Unsealed {
    /// The envelope's sealed letter, and the letter opened or why it could not be.
    Opened {
        sealed: Vec<u8>,
        opened: std::result::Result<Box<Opened>, String>,
        /// What [`Deferred::verify`] needs when the signer was unknown.
        deferred: Option<Deferred>,
    },
    /// Not an envelope of ours: stored as it came, unreadable.
    Unreadable { bytes: Vec<u8>, reason: String },
}

/// Decodes and opens `items` (the envelope id and mailbox each was listed under, and its
/// bytes) on every core, in their order. Decryption and signature checks are most of a
/// fetch's work; this runs them on scoped threads, so that the caller's thread waits for
/// all of them as it used to wait for one.
fn open_all(
    items: Vec<(EnvelopeId, MailboxId, &[u8])>,
    keys: &Keyring,
    certs: &Certs,
) -> Vec<Unsealed> {
    let unseal =
        |(id, mailbox, bytes): (EnvelopeId, MailboxId, &[u8])| match Envelope::decode(bytes) {
            Ok(env) if env.id == id && env.mailbox == mailbox => {
                let (opened, deferred) =
                    match open_deferred(&env.sealed, keys, &|h| certs.lookup(h)) {
                        Ok((o, d)) => (Ok(Box::new(o)), d),
                        Err(e) => (Err(e.to_string()), None),
                    };
                Unsealed::Opened {
                    sealed: env.sealed,
                    opened,
                    deferred,
                }
            }
            Ok(_) => Unsealed::Unreadable {
                bytes: bytes.to_vec(),
                reason: "envelope does not match its listing (id or mailbox)".into(),
            },
            Err(e) => Unsealed::Unreadable {
                bytes: bytes.to_vec(),
                reason: format!("not an envelope: {e}"),
            },
        };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if workers <= 1 {
        return items.into_iter().map(unseal).collect();
    }
    let per = items.len().div_ceil(workers);
    let mut chunks: Vec<Vec<(EnvelopeId, MailboxId, &[u8])>> = Vec::with_capacity(workers);
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(per).collect());
    }
    std::thread::scope(|s| {
        let running: Vec<_> = chunks
            .into_iter()
            .map(|chunk| s.spawn(move || chunk.into_iter().map(unseal).collect::<Vec<_>>()))
            .collect();
        running
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
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
    fn batches_are_bounded_by_count_and_bytes() {
        let group = |id: u16, size: u64| {
            let mut b = [0u8; 16];
            b[..2].copy_from_slice(&id.to_be_bytes());
            let item = ListItem {
                seq: id as u64,
                id: EnvelopeId(b),
                size,
            };
            (item.id, vec![(0, item)])
        };
        let many: Vec<_> = (0..1201).map(|i| group(i, 4096)).collect();
        let lens: Vec<usize> = batches(&many).iter().map(|b| b.len()).collect();
        assert_eq!(lens, vec![BATCH_LETTERS, BATCH_LETTERS, 201]);
        let big = vec![
            group(1, BATCH_BYTES / 2),
            group(2, BATCH_BYTES / 2),
            group(3, 1),
            group(4, BATCH_BYTES * 3),
            group(5, 1),
        ];
        let lens: Vec<usize> = batches(&big).iter().map(|b| b.len()).collect();
        assert_eq!(
            lens,
            vec![2, 1, 1, 1],
            "a letter over the budget goes alone"
        );
        assert!(batches(&[]).is_empty());
    }

    mod over_the_wire {
        use super::*;
        use crate::client::{Client, Options};
        use crate::progress::NoProgress;
        use crate::testutil::{Log, Routes, stub_logged};
        use sealpost_proto::batch::{BatchEntry, EnvelopeBatch};
        use sealpost_proto::identity::SecretIdentity;
        use sealpost_proto::seal::seal;

        const MAILBOX: MailboxId = MailboxId([5; 16]);

        /// Bob's client with one trusted home, a stub node that holds `n` letters from
        /// Alice for him and answers their listing and the sign-in; the envelopes, by seq.
        async fn world(
            dir: &std::path::Path,
            n: usize,
        ) -> (Client, HomeEntry, Routes, Log, Vec<Vec<u8>>) {
            drop(crate::profile::tests::sample(dir, "bob@beta.test", None));
            let (url, routes, log) = stub_logged().await;
            let options = Options {
                resolve: vec![
                    ("alpha.test".into(), url.clone()),
                    ("beta.test".into(), url.clone()),
                ],
                direct_lookups: true,
                ..Options::default()
            };
            let c = Client::open(dir, &options).unwrap();
            let home = HomeEntry {
                url,
                node_key: hex::encode([7u8; 32]),
                mailbox: MAILBOX,
                trusted: true,
            };
            let alice =
                SecretIdentity::generate(&Address::parse("alice@alpha.test").unwrap(), None)
                    .unwrap()
                    .unlock(None)
                    .unwrap();
            let bob = c.profile.cert();
            let mut items = Vec::new();
            let mut envelopes = Vec::new();
            for i in 0..n {
                let letter = Letter::new(
                    Address::parse("alice@alpha.test").unwrap(),
                    vec![Address::parse("bob@beta.test").unwrap()],
                    format!("letter {i}"),
                    "body",
                    1_700_000_000 + i as i64,
                );
                let env = Envelope {
                    id: EnvelopeId::random(),
                    mailbox: MAILBOX,
                    sealed: seal(&letter, &alice, &bob).unwrap(),
                    token: vec![],
                };
                let bytes = env.encode();
                items.push(serde_json::json!({
                    "seq": i + 1, "id": env.id.to_hex(), "size": bytes.len()
                }));
                envelopes.push(bytes);
            }
            let mut r = routes.lock().unwrap();
            r.insert(
                "POST /v1/auth/challenge".into(),
                (
                    200,
                    serde_json::json!({"nonce": hex::encode([1u8; 32])})
                        .to_string()
                        .into_bytes(),
                ),
            );
            r.insert(
                "POST /v1/auth/token".into(),
                (
                    200,
                    serde_json::json!({"token": "t", "expires": now() + 3600})
                        .to_string()
                        .into_bytes(),
                ),
            );
            r.insert(
                format!("GET /v1/mailbox/{MAILBOX}?after=0&limit=1000"),
                (
                    200,
                    serde_json::json!({"items": items, "next": n})
                        .to_string()
                        .into_bytes(),
                ),
            );
            drop(r);
            (c, home, routes, log, envelopes)
        }

        fn batch_of(envelopes: &[Vec<u8>]) -> Vec<u8> {
            EnvelopeBatch {
                entries: envelopes
                    .iter()
                    .enumerate()
                    .map(|(i, e)| BatchEntry {
                        seq: i as u64 + 1,
                        envelope: Some(e.clone()),
                    })
                    .collect(),
            }
            .encode()
        }

        async fn fetch(c: &Client, homes: &[HomeEntry], keys: &Keyring) -> FetchReport {
            c.mailbox
                .fetch(&c.profile, &c.directory, homes, keys, &NoProgress)
                .await
                .unwrap()
        }

        /// Makes the stub answer `METHOD path`.
        fn answer(routes: &Routes, method: &str, path: String, status: u16, body: Vec<u8>) {
            routes
                .lock()
                .unwrap()
                .insert(format!("{method} {path}"), (status, body));
        }

        fn requests(log: &Log, method: &str, suffix: &str) -> Vec<Vec<u8>> {
            log.lock()
                .unwrap()
                .iter()
                .filter(|(m, p, _)| m == method && p.ends_with(suffix))
                .map(|(_, _, b)| b.clone())
                .collect()
        }

        #[tokio::test]
        async fn a_crash_between_storing_and_acking_loses_and_duplicates_nothing() {
            let tmp = tempfile::tempdir().unwrap();
            let n = 40;
            let (c, home, routes, log, envelopes) = world(tmp.path(), n).await;
            let keys = c.unlock(None).unwrap();
            let (fetch_path, ack_path) = (
                format!("/v1/mailbox/{MAILBOX}/fetch"),
                format!("/v1/mailbox/{MAILBOX}/ack"),
            );
            answer(&routes, "POST", fetch_path, 200, batch_of(&envelopes));
            // The ack never lands: as if the client died right after storing the batch.
            answer(&routes, "POST", ack_path.clone(), 500, b"{}".to_vec());
            let homes = vec![home];
            let r = fetch(&c, &homes, &keys).await;
            assert_eq!(r.new.len(), n);
            assert_eq!((r.nodes[0].acked, r.nodes[0].ack_errors.len()), (0, 1));
            assert_eq!(
                requests(&log, "POST", "/fetch").len(),
                1,
                "one batched fetch"
            );
            let stored = c.mailbox.messages().list().unwrap();
            assert_eq!(stored.len(), n, "stored before the ack was tried");
            drop(c);

            // The next run finds every letter stored, stores none again, and acks them all.
            let c = Client::open(
                tmp.path(),
                &Options {
                    resolve: vec![("alpha.test".into(), homes[0].url.clone())],
                    direct_lookups: true,
                    ..Options::default()
                },
            )
            .unwrap();
            let counts = b"{\"deleted\":40,\"recorded\":0,\"missing\":0}";
            answer(&routes, "POST", ack_path, 200, counts.to_vec());
            let r = fetch(&c, &homes, &keys).await;
            assert_eq!((r.new.len(), r.duplicates), (0, n));
            assert_eq!((r.nodes[0].acked, r.nodes[0].ack_errors.len()), (n, 0));
            assert_eq!(
                requests(&log, "POST", "/fetch").len(),
                1,
                "nothing downloaded again"
            );
            let acks = requests(&log, "POST", "/ack");
            let last: serde_json::Value = serde_json::from_slice(acks.last().unwrap()).unwrap();
            let want: Vec<u64> = (1..=n as u64).collect();
            assert_eq!(last, serde_json::json!({ "seqs": want }));
            let again = c.mailbox.messages().list().unwrap();
            assert_eq!(again.len(), n, "no letter stored twice, none lost");
            for (m, env) in again.iter().zip(&envelopes) {
                let env = Envelope::decode(env).unwrap();
                assert_eq!(c.mailbox.messages().sealed(&env.id).unwrap(), env.sealed);
                assert_eq!(
                    m.header.as_ref().unwrap().from.to_string(),
                    "alice@alpha.test"
                );
            }
        }

        #[tokio::test]
        async fn a_node_that_refuses_the_batched_ack_as_unknown_is_acked_one_by_one() {
            let tmp = tempfile::tempdir().unwrap();
            let n = 3;
            let (c, home, routes, log, envelopes) = world(tmp.path(), n).await;
            let keys = c.unlock(None).unwrap();
            let fetch_path = format!("/v1/mailbox/{MAILBOX}/fetch");
            answer(&routes, "POST", fetch_path, 200, batch_of(&envelopes));
            // No route for the batched ack: the stub's 404.
            for i in 1..=n {
                answer(
                    &routes,
                    "DELETE",
                    format!("/v1/mailbox/{MAILBOX}/{i}"),
                    204,
                    vec![],
                );
            }
            let r = fetch(&c, &[home], &keys).await;
            assert_eq!(r.new.len(), n);
            assert_eq!((r.nodes[0].acked, r.nodes[0].ack_errors.len()), (n, 0));
            assert_eq!(requests(&log, "POST", "/ack").len(), 1);
            let deleted: Vec<String> = log
                .lock()
                .unwrap()
                .iter()
                .filter(|(m, _, _)| m == "DELETE")
                .map(|(_, p, _)| p.rsplit('/').next().unwrap().to_string())
                .collect();
            assert_eq!(deleted, vec!["1", "2", "3"]);
        }

        #[tokio::test]
        async fn a_node_without_batches_is_fetched_and_acked_one_by_one() {
            let tmp = tempfile::tempdir().unwrap();
            let n = 5;
            let (c, home, routes, log, envelopes) = world(tmp.path(), n).await;
            let keys = c.unlock(None).unwrap();
            // An older node routes POST .../fetch as a sequence number: 405.
            let fetch_path = format!("/v1/mailbox/{MAILBOX}/fetch");
            answer(&routes, "POST", fetch_path, 405, b"{}".to_vec());
            for (i, e) in envelopes.iter().enumerate() {
                let path = format!("/v1/mailbox/{MAILBOX}/{}", i + 1);
                answer(&routes, "GET", path.clone(), 200, e.clone());
                answer(&routes, "DELETE", path, 204, vec![]);
            }
            let r = fetch(&c, &[home], &keys).await;
            assert_eq!(r.new.len(), n);
            assert_eq!((r.nodes[0].acked, r.nodes[0].ack_errors.len()), (n, 0));
            assert_eq!(requests(&log, "POST", "/fetch").len(), 1, "asked once");
            assert_eq!(
                requests(&log, "POST", "/ack").len(),
                0,
                "a node without batched fetch is not asked for a batched ack"
            );
            let gets = log
                .lock()
                .unwrap()
                .iter()
                .filter(|(m, p, _)| m == "GET" && p.contains("/v1/mailbox/") && !p.contains('?'))
                .count();
            assert_eq!(gets, n);
            assert_eq!(requests(&log, "DELETE", "").len(), n);
            assert_eq!(c.mailbox.messages().list().unwrap().len(), n);
        }
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
