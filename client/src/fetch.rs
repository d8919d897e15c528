//! Fetching: list every trusted home in parallel (each with a timeout), download each new
//! envelope id once, open it and decide who sent it, store it durably, and only then ack
//! (delete) it on every home that holds it. A node that does not answer is reported and
//! asked again next time; what it holds is still there.

use std::collections::{BTreeMap, HashMap, HashSet};

use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::Envelope;
use sealpost_proto::identity::{Keyring, cert_addresses};
use sealpost_proto::letter::Letter;
use sealpost_proto::limits::MAX_ENVELOPE_BYTES;
use sealpost_proto::seal::{SignatureStatus, open};
use sealpost_proto::{Address, EnvelopeId, NodeUrl};

use crate::api::ListItem;
use crate::client::Client;
use crate::contacts::PinOutcome;
use crate::error::{Error, NetFailure, Result};
use crate::gateway::DEFAULT_GATEWAY_LOCAL_PART;
use crate::progress::Progress;
use crate::send::FlushReport;
use crate::store::{Header, StoredMessage, Trust};
use crate::verify::{Certs, judge, judge_legacy, legacy_view};
use crate::{join_all, now};

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
    /// Messages stored by this fetch.
    pub new: Vec<StoredMessage>,
    /// Envelopes already stored (fetched before or from another home): acked, not stored.
    pub duplicates: usize,
    pub nodes: Vec<NodeReport>,
    /// Contacts pinned on first use while opening letters.
    pub new_contacts: Vec<Address>,
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

impl Client {
    fn judge_state(&self) -> Result<Judge> {
        let mut certs = Certs::new(vec![self.profile.cert()]);
        let mut pinned = BTreeMap::new();
        pinned.insert(
            self.profile.address().clone(),
            self.profile.config.fingerprint.clone(),
        );
        for c in self.contacts.all()? {
            certs.push(c.parsed_cert()?);
            pinned.insert(c.address.clone(), c.fingerprint.clone());
        }
        let mut nodes: BTreeMap<Address, Vec<String>> = BTreeMap::new();
        {
            let cache = self
                .nodes
                .lock()
                .expect("invariant: node cache lock not poisoned");
            for h in &self.profile.config.homes {
                let Some(node) = cache.get(&h.url) else {
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

    /// Flushes the outbox, then fetches from every trusted home that answers.
    pub async fn fetch(&self, keys: &Keyring, progress: &dyn Progress) -> Result<FetchReport> {
        let homes: Vec<_> = self.profile.config.trusted_homes().cloned().collect();
        if homes.is_empty() {
            return Err(Error::input(
                "homes",
                "no trusted home node; trust one with `sealpost node trust URL`",
            ));
        }
        let mut report = FetchReport {
            flush: self.flush_outbox(keys, progress).await?,
            ..FetchReport::default()
        };

        let timeout = self.net_timeout();
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

        let mut judge = self.judge_state()?;
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
                    let (trust, header) = self
                        .open_and_judge(&env.sealed, keys, &mut judge, &mut report)
                        .await;
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
            let meta = StoredMessage {
                id,
                received_at: now(),
                nodes,
                size: sealed.len() as u64,
                trust,
                seen: false,
                header,
            };
            // Durable (fsync) before any ack.
            self.messages.put(&meta, &sealed)?;
            report.new.push(meta);
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
        self.save_nodes()?;
        Ok(report)
    }

    fn net_timeout(&self) -> std::time::Duration {
        self.net.config().timeout
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

    /// Opens a sealed letter and decides who sent it. A signer we have no certificate for
    /// makes us look up the From address's record once per run (TOFU for a new sender).
    async fn open_and_judge(
        &self,
        sealed: &[u8],
        keys: &Keyring,
        judge_state: &mut Judge,
        report: &mut FetchReport,
    ) -> (Trust, Option<Header>) {
        let opened = match open(sealed, keys, &|h| judge_state.certs.lookup(h)) {
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
                && let Some(again) = self.learn_gateway(sealed, keys, judge_state, report).await
            {
                status = again;
            }
            let trust = judge_legacy(&status, opened.letter.legacy.as_deref(), &from);
            let shown = legacy_view(opened.letter, keys, &|h| judge_state.certs.lookup(h));
            return (trust, Some(Header::of(&shown)));
        }
        if matches!(status, SignatureStatus::UnknownSigner { .. })
            && !judge_state.nodes.contains_key(&from)
            && judge_state.looked_up.insert(from.clone())
        {
            match self.resolve_recipient(&from).await {
                Ok(r) => {
                    if let Some(outcome) = &r.pin {
                        let c = outcome.contact();
                        if let Err(e) = self.contacts.save(c) {
                            report.warnings.push(e.to_string());
                        } else {
                            if matches!(outcome, PinOutcome::New(_)) {
                                report.new_contacts.push(from.clone());
                            }
                            judge_state
                                .pinned
                                .insert(from.clone(), c.fingerprint.clone());
                            judge_state.certs.push(r.cert.clone());
                        }
                    }
                    if let Ok(again) = open(sealed, keys, &|h| judge_state.certs.lookup(h)) {
                        status = again.signature;
                    }
                }
                Err(e @ Error::KeyChanged { .. }) => report.warnings.push(e.to_string()),
                Err(e) => report
                    .warnings
                    .push(format!("could not look up the sender {from}: {e}")),
            }
        }
        let expected = judge_state.expected_signer(&from, &status);
        let trust = judge(&status, &from, expected.as_deref());
        (trust, Some(Header::of(&opened.letter)))
    }

    /// Looks up our domain's gateway (once per fetch), pins it like any contact, and
    /// opens `sealed` again: the signature status with the gateway's certificate known.
    async fn learn_gateway(
        &self,
        sealed: &[u8],
        keys: &Keyring,
        judge_state: &mut Judge,
        report: &mut FetchReport,
    ) -> Option<SignatureStatus> {
        let gateway = Address::parse(&format!(
            "{DEFAULT_GATEWAY_LOCAL_PART}@{}",
            self.profile.address().domain()
        ))
        .ok()?;
        if !judge_state.looked_up.insert(gateway.clone()) {
            return None;
        }
        let r = match self.resolve_recipient(&gateway).await {
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
            if let Err(e) = self.contacts.save(c) {
                report.warnings.push(e.to_string());
                return None;
            }
            if matches!(outcome, PinOutcome::New(_)) {
                report.new_contacts.push(gateway.clone());
            }
            judge_state.pinned.insert(gateway, c.fingerprint.clone());
        }
        judge_state.certs.push(r.cert);
        open(sealed, keys, &|h| judge_state.certs.lookup(h))
            .ok()
            .map(|o| o.signature)
    }

    /// Opens a stored message again (no network) and marks it seen.
    pub fn read(&self, id: &EnvelopeId, keys: &Keyring) -> Result<ReadMessage> {
        let mut meta = self.messages.get(id)?;
        if meta.header.is_none() {
            return Ok(ReadMessage { meta, letter: None });
        }
        let sealed = self.messages.sealed(id)?;
        let judge_state = self.judge_state()?;
        let opened = open(&sealed, keys, &|h| judge_state.certs.lookup(h))?;
        if !meta.seen {
            meta.seen = true;
            self.messages.update(&meta)?;
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
}
