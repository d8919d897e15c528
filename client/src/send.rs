//! Sending: one sealed letter per recipient, one random envelope id per recipient letter
//! (kept by the homes that forward it to each other, so they can be deduped), one hop, for
//! one of the recipient's homes ([`choose_home`]): that home forwards the envelope to the
//! others, so our node sees one destination. Legacy e-mail recipients share one copy, sealed to the
//! gateway ([`crate::gateway`], [`crate::route`]). Every hop goes to the outbox first, then
//! is submitted through the first of our own trusted nodes that takes it.
//!
//! The steps are functions over the parts of a [`crate::Client`]: [`plan`] (routes, over
//! the [`Directory`] for the user's [`Profile`]), [`seal_plan`] (seals and wraps, nothing
//! written), then [`crate::Client::send_plan`] queues the hops in the
//! [`crate::outbox::Outbox`], saves the pins and consents, and flushes.

use sealpost_proto::codec::Codec;
use sealpost_proto::envelope::{Envelope, HopWrapper};
use sealpost_proto::identity::Keyring;
use sealpost_proto::letter::Letter;
use sealpost_proto::record::Home;
use sealpost_proto::seal::seal;
use sealpost_proto::{Address, EnvelopeId, NodeUrl};

use crate::api::VerifiedNode;
use crate::compose::Draft;
use crate::contacts::PinOutcome;
use crate::directory::{Directory, Recipient};
use crate::error::{Error, Result};
use crate::gateway::{self, GatewayLookup};
use crate::now;
use crate::outbox::{FlushReport, OutboxEntry};
use crate::profile::Profile;
use crate::route::{self, LegacyReason, Route};

#[derive(Clone, Debug)]
pub struct RecipientReport {
    pub address: Address,
    pub envelope_id: EnvelopeId,
    /// The home the hop was made for (one: it forwards to the others).
    pub homes: Vec<NodeUrl>,
    /// Homes passed over before it, and why (node key mismatch, too large, unreachable).
    pub skipped: Vec<(NodeUrl, String)>,
    /// The contact was pinned by this send (trust on first use).
    pub newly_pinned: bool,
    /// The record came from the local cache: the node publishing it did not answer.
    pub record_from_cache: bool,
}

/// The copy of a letter for its legacy e-mail recipients, sealed to the gateway.
#[derive(Clone, Debug)]
pub struct LegacyReport {
    /// The copy: the gateway's address, the envelope id, its homes.
    pub gateway: RecipientReport,
    /// The recipients it names in `legacy_to`, each with the reason it is legacy.
    pub recipients: Vec<(Address, LegacyReason)>,
    /// Legacy recipients whose OpenPGP key is pinned (e.g. imported): the gateway still
    /// sends them plain e-mail, PGP/MIME is not implemented.
    pub with_keys: Vec<Address>,
}

#[derive(Clone, Debug)]
pub struct SendReport {
    pub message_id: String,
    /// The end-to-end copies.
    pub recipients: Vec<RecipientReport>,
    /// The copy for legacy e-mail recipients, when there are any.
    pub legacy: Option<LegacyReport>,
    /// Outbox ids of this letter's hops.
    pub queued: Vec<String>,
    /// The sent copy, sealed to the user's own key for their own mailbox (every device of
    /// theirs fetches it): its envelope id (also the id it is stored under here), or why
    /// none was made. `None` when the user is a recipient (that copy serves).
    pub sent_copy: Option<std::result::Result<EnvelopeId, String>>,
    pub flush: FlushReport,
}

impl SendReport {
    /// Hops of this letter that no node of ours has taken yet.
    pub fn unsubmitted(&self) -> usize {
        self.queued
            .iter()
            .filter(|id| self.flush.pending.contains(id))
            .count()
    }
}

fn join_addresses(v: &[Address]) -> String {
    v.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
}

/// What the user chose about legacy e-mail for one letter.
#[derive(Clone, Debug, Default)]
pub struct LegacyChoice {
    /// `--legacy ADDR`: legacy e-mail without a lookup, and agreed to.
    pub forced: Vec<Address>,
    /// The sender of a legacy letter being replied to: back through the gateway, where it
    /// came from, without a lookup.
    pub replies: Vec<Address>,
}

/// A letter whose recipients are looked up and routed, ready to be sealed and queued
/// ([`plan`], then [`crate::Client::send_plan`]). Nothing is written yet.
pub struct SendPlan {
    letter: Letter,
    now: u64,
    recipients: Vec<Recipient>,
    legacy_to: Vec<(Address, LegacyReason)>,
    gateway: Option<Recipient>,
    /// The user, for the sent copy; `None` when they are a recipient.
    me: Option<Recipient>,
    /// The id of the letter waiting in the outbox for this plan ([`crate::letters`]),
    /// removed once the plan's hops are queued.
    held: Option<String>,
}

impl SendPlan {
    /// The legacy recipients and why each is one.
    pub fn legacy(&self) -> &[(Address, LegacyReason)] {
        &self.legacy_to
    }

    /// The gateway the legacy copy goes through.
    pub fn gateway(&self) -> Option<&Address> {
        self.gateway.as_ref().map(|g| &g.address)
    }

    /// The waiting letter this plan is for ([`SendPlan::held`]).
    pub fn held(&self) -> Option<&str> {
        self.held.as_deref()
    }

    /// This plan is for the letter `id` waiting in the outbox.
    pub(crate) fn with_held(mut self, id: &str) -> SendPlan {
        self.held = Some(id.to_string());
        self
    }
}

/// Which hops of a letter were queued, for telling the user where the letter is when the
/// send is cut short (Ctrl-C): a hop still in the outbox waits, a hop gone from it was
/// taken by one of our nodes.
#[derive(Debug, Default)]
pub struct SendTracker {
    queued: std::sync::Mutex<Vec<(String, Address)>>,
}

impl SendTracker {
    /// Outbox ids and recipients of the hops queued so far (none before the letter is in
    /// the outbox).
    pub fn queued(&self) -> Vec<(String, Address)> {
        self.queued
            .lock()
            .expect("invariant: tracker lock not poisoned")
            .clone()
    }

    /// Learns the hops of `entries`, just queued.
    pub(crate) fn set(&self, entries: &[OutboxEntry]) {
        *self
            .queued
            .lock()
            .expect("invariant: tracker lock not poisoned") = entries
            .iter()
            .map(|e| (e.id.clone(), e.recipient.clone()))
            .collect();
    }
}

/// Looks up and routes every recipient of `draft` for the user of `me`. Recipients the
/// user forced, those being replied to, those whose domain is in the legacy list, and those
/// whose domain has no Sealpost node but takes e-mail ([`route::route`]) are legacy: they
/// get one copy together, sealed to the gateway, which is looked up here. An unknown
/// address, a changed key, a domain that does not exist or takes no mail, or legacy
/// recipients without a gateway stop the send before anything is written.
pub async fn plan(
    directory: &Directory,
    me: &Profile,
    draft: &Draft,
    choice: &LegacyChoice,
) -> Result<SendPlan> {
    let letter = draft.to_letter(me.address(), now() as i64)?;
    plan_letter(directory, me, letter, choice).await
}

/// [`plan`] for a letter already made (e.g. one that waited for its lookups,
/// [`crate::letters`]).
pub async fn plan_letter(
    directory: &Directory,
    me: &Profile,
    letter: Letter,
    choice: &LegacyChoice,
) -> Result<SendPlan> {
    let now = now();
    let mut all: Vec<Address> = Vec::new();
    for a in letter.to.iter().chain(&letter.cc) {
        if !all.contains(a) {
            all.push(a.clone());
        }
    }
    if let Some(a) = choice.forced.iter().find(|a| !all.contains(a)) {
        return Err(Error::input(
            "--legacy",
            format!("{a} is not a recipient of this letter"),
        ));
    }
    let mut recipients = Vec::new();
    let mut legacy_to = Vec::new();
    for address in all {
        let chosen = if choice.forced.contains(&address) {
            Some(LegacyReason::Forced)
        } else if choice.replies.contains(&address) {
            Some(LegacyReason::Reply)
        } else {
            None
        };
        match route::route(directory, me, &address, chosen).await? {
            Route::Sealpost(r) => recipients.push(*r),
            Route::Legacy { address, reason } => legacy_to.push((address, reason)),
        }
    }
    let gateway = if legacy_to.is_empty() {
        None
    } else {
        match gateway::lookup(directory, me).await? {
            GatewayLookup::Found(g) => Some(*g),
            GatewayLookup::Missing(why) => {
                return Err(Error::NoGateway {
                    recipients: legacy_to
                        .iter()
                        .map(|(a, reason)| format!("{a} ({reason})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    detail: format!("; {why}"),
                });
            }
        }
    };
    let own = if recipients.iter().any(|r| &r.address == me.address()) {
        None
    } else {
        Some(directory.resolve_recipient(me, me.address()).await?)
    };
    Ok(SendPlan {
        letter,
        now,
        recipients,
        legacy_to,
        gateway,
        me: own,
        held: None,
    })
}

impl SendPlan {
    /// The legacy recipients of the plan that were found by lookup (no Sealpost node) and
    /// that the user of `me` has not agreed to write to without end-to-end encryption yet.
    pub fn unconfirmed(&self, me: &Profile) -> Vec<Address> {
        self.legacy_to
            .iter()
            .filter(|(a, r)| {
                matches!(r, LegacyReason::NoNode(_)) && !me.config.legacy_confirmed.contains(a)
            })
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// An error naming the [`SendPlan::unconfirmed`] recipients not in `agreed`, if any.
    pub fn check_agreed(&self, me: &Profile, agreed: &[Address]) -> Result<()> {
        let missing: Vec<Address> = self
            .unconfirmed(me)
            .into_iter()
            .filter(|a| !agreed.contains(a))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::LegacyUnconfirmed {
            addresses: join_addresses(&missing),
            flags: missing
                .iter()
                .map(|a| format!("--legacy {a}"))
                .collect::<Vec<_>>()
                .join(" "),
        })
    }

    /// The legacy addresses that sending this plan agrees to for later letters: those
    /// forced with `--legacy` and those found to have no Sealpost node.
    pub fn consented(&self) -> impl Iterator<Item = &Address> {
        self.legacy_to
            .iter()
            .filter(|(_, r)| matches!(r, LegacyReason::Forced | LegacyReason::NoNode(_)))
            .map(|(a, _)| a)
    }
}

/// A letter sealed for each recipient (and once for the gateway), with its hops ready for
/// the outbox. Nothing is written yet.
pub struct Sealed {
    pub message_id: String,
    pub entries: Vec<OutboxEntry>,
    pub recipients: Vec<RecipientReport>,
    pub legacy: Option<LegacyReport>,
    /// The sent copy, or why there is none (`None`: the user is a recipient).
    pub sent_copy: Option<std::result::Result<SentCopy, String>>,
    /// Whose pins to save once the hops are queued.
    pins: Vec<Recipient>,
}

/// The copy of a letter for the user's own mailbox: its hop (for one home of theirs, which
/// forwards it to the others), and the letter sealed to their key, to store here at once.
pub struct SentCopy {
    pub envelope_id: EnvelopeId,
    pub entries: Vec<OutboxEntry>,
    pub sealed: Vec<u8>,
    pub letter: Letter,
}

impl Sealed {
    /// Saves the pins of the recipients (trust on first use) and the node descriptors
    /// seen: called once the hops are in the outbox.
    pub fn commit(&self, directory: &Directory) -> Result<()> {
        for r in &self.pins {
            directory.commit_pin(r)?;
        }
        directory.save_nodes()
    }
}

/// Seals the letter of `plan` for each recipient (and once for the gateway) with `keys`,
/// and makes one hop per copy, for one home of its recipient ([`choose_home`]).
pub async fn seal_plan(directory: &Directory, plan: SendPlan, keys: &Keyring) -> Result<Sealed> {
    let SendPlan {
        letter,
        now,
        recipients,
        legacy_to,
        gateway,
        me,
        held: _,
    } = plan;
    let mut entries = Vec::new();
    let mut reports = Vec::new();
    for r in &recipients {
        reports.push(
            queue_copy(directory, &letter, r, keys, now, &mut entries)
                .await?
                .0,
        );
    }
    let legacy_report = match &gateway {
        Some(g) => {
            let mut copy = letter.clone();
            copy.legacy_to = legacy_to.iter().map(|(a, _)| a.clone()).collect();
            let (report, _) = queue_copy(directory, &copy, g, keys, now, &mut entries).await?;
            let mut with_keys = Vec::new();
            for (a, _) in &legacy_to {
                if directory.contacts().get(a)?.is_some() {
                    with_keys.push(a.clone());
                }
            }
            Some(LegacyReport {
                gateway: report,
                recipients: legacy_to,
                with_keys,
            })
        }
        None => None,
    };
    // The sent copy is a convenience: a letter that the user's own homes cannot take
    // (too large for them, their descriptors unknown) is still sent, without one.
    let sent_copy = match &me {
        Some(r) => {
            let mut own = Vec::new();
            Some(
                match queue_copy(directory, &letter, r, keys, now, &mut own).await {
                    Ok((report, sealed)) => Ok(SentCopy {
                        envelope_id: report.envelope_id,
                        entries: own,
                        sealed,
                        letter: letter.clone(),
                    }),
                    Err(e) => Err(e.to_string()),
                },
            )
        }
        None => None,
    };
    Ok(Sealed {
        message_id: letter.message_id,
        entries,
        recipients: reports,
        legacy: legacy_report,
        sent_copy,
        pins: recipients.into_iter().chain(gateway).collect(),
    })
}

/// Seals `letter` to `r` and adds one hop, for one home of theirs ([`choose_home`]), to
/// `entries`; returns the report and the sealed letter. That home forwards the envelope to
/// the others (`spec/node.md` §Forwarding). The user's own homes are wrapped for from the
/// node cache (verified when they became homes) without asking them: nothing reaches our
/// own nodes before the letter is in the outbox.
pub(crate) async fn queue_copy(
    directory: &Directory,
    letter: &Letter,
    r: &Recipient,
    keys: &Keyring,
    now: u64,
    entries: &mut Vec<OutboxEntry>,
) -> Result<(RecipientReport, Vec<u8>)> {
    let first = r
        .record
        .homes
        .first()
        .expect("invariant: a verified record has at least one home");
    let mut envelope = Envelope {
        id: EnvelopeId::random(),
        mailbox: first.mailbox,
        sealed: seal(letter, keys, &r.cert)?,
        token: Vec::new(),
    };
    // Every home's mailbox id has the same length: the size does not depend on the home.
    let size = envelope.encode().len();
    let (home, node, skipped) = choose_home(directory, r, size).await?;
    envelope.mailbox = home.mailbox;
    let hop = HopWrapper::wrap(&envelope, home.url.clone(), &node.cert)?;
    entries.push(OutboxEntry::new(
        &r.address,
        envelope.id,
        &letter.message_id,
        &letter.subject,
        &hop,
        now,
    ));
    Ok((
        RecipientReport {
            address: r.address.clone(),
            envelope_id: envelope.id,
            homes: vec![home.url.clone()],
            skipped,
            newly_pinned: matches!(r.pin, Some(PinOutcome::New(_))),
            record_from_cache: r.from_cache,
        },
        envelope.sealed,
    ))
}

/// The home of `r` that a copy of `size` bytes (the encoded envelope) is wrapped for, with
/// its verified descriptor: the first home the record names whose descriptor can be had
/// and verified now ([`Directory::reachable_home_node`]) and that takes envelopes of that
/// size, so the sender's node sees one destination. When none of them answers, the first
/// whose cached descriptor serves (the hop then waits in our node's queue until that node
/// is back). The user's own homes come from the node cache, without asking them
/// ([`Directory::own_home_node`]). For a known contact too the descriptors are fetched
/// (through a home of ours with oblivious lookups): a descriptor is public and names no
/// user, and the node it is fetched from, and the home that relays it, learn nothing the
/// delivery does not tell them; no record is looked up. Also returns the homes passed
/// over, and why.
pub(crate) async fn choose_home<'r>(
    directory: &Directory,
    r: &'r Recipient,
    size: usize,
) -> Result<(&'r Home, VerifiedNode, Vec<(NodeUrl, String)>)> {
    let takes = |node: &VerifiedNode| {
        let max = u64::from(node.descriptor.max_envelope);
        (size as u64 <= max).then_some(()).ok_or_else(|| {
            format!("envelope of {size} bytes is larger than the {max} the node accepts")
        })
    };
    let mut skipped = Vec::new();
    let mut first_err = None;
    let mut too_large = false;
    let mut down = Vec::new();
    for home in &r.record.homes {
        let node = match r.pin {
            None => directory.own_home_node(home).await,
            Some(_) => directory.reachable_home_node(home).await,
        };
        match node {
            Ok(n) => match takes(&n) {
                Ok(()) => return Ok((home, n, skipped)),
                Err(why) => {
                    too_large = true;
                    skipped.push((home.url.clone(), why));
                }
            },
            Err(e) => {
                if matches!(e, Error::Unreachable { .. } | Error::Node { .. }) {
                    down.push(home);
                }
                skipped.push((home.url.clone(), e.to_string()));
                first_err.get_or_insert(e);
            }
        }
    }
    // No home answers now: the first one down whose descriptor we verified before.
    for home in down {
        if let Some(n) = directory.cached_node(&home.url)
            && n.descriptor.node_key == home.node_key
        {
            match takes(&n) {
                Ok(()) => {
                    skipped.retain(|(url, _)| url != &home.url);
                    return Ok((home, n, skipped));
                }
                Err(_) => too_large = true,
            }
        }
    }
    match first_err {
        Some(e) if !too_large => Err(e),
        _ => Err(Error::input(
            "letter",
            format!("too large for every home of {}", r.address),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, Options};
    use crate::profile::HomeEntry;
    use crate::progress::NoProgress;
    use crate::testutil::{Routes, record_with_homes, stub, vector_node};
    use sealpost_proto::MailboxId;
    use sealpost_proto::identity::SecretIdentity;
    use sealpost_proto::record::Home;
    use sealpost_proto::seal::{SignatureStatus, open};
    use std::path::Path;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    /// Alice at alpha.test, whose domain's node (and beta.test's) is a stub serving
    /// `routes`, and who also has a home on the spec vectors' node: the node of Bob and of
    /// whichever gateway the test publishes. That node is not reachable, but its descriptor
    /// is cached, so hops for it are made and wait in the outbox.
    async fn world(dir: &Path) -> (Client, Routes, NodeUrl, [u8; 32]) {
        drop(crate::profile::tests::sample(dir, "alice@alpha.test", None));
        let (domains, routes) = stub().await;
        let options = Options {
            resolve: vec![
                ("alpha.test".into(), domains.clone()),
                ("beta.test".into(), domains),
            ],
            direct_lookups: true,
            ..Options::default()
        };
        let mut c = Client::open(dir, &options).unwrap();
        let (node, _) = vector_node();
        c.directory.remember_node(&node);
        c.profile.config.homes.push(HomeEntry {
            url: node.descriptor.url.clone(),
            node_key: hex::encode(node.descriptor.node_key),
            mailbox: MailboxId([5; 16]),
            trusted: false,
        });
        (c, routes, node.descriptor.url, node.descriptor.node_key)
    }

    fn publish(
        routes: &Routes,
        address: &Address,
        url: &NodeUrl,
        node_key: [u8; 32],
        mailbox: u8,
    ) -> SecretIdentity {
        let id = SecretIdentity::generate(address, None).unwrap();
        let home = Home {
            url: url.clone(),
            node_key,
            mailbox: MailboxId([mailbox; 16]),
        };
        routes.lock().unwrap().insert(
            format!("/v1/records/{address}"),
            (200, record_with_homes(&id, address, vec![home], 1).encode()),
        );
        id
    }

    #[tokio::test]
    async fn a_sent_copy_sealed_to_ourselves_goes_to_our_own_mailbox_and_shows_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut c, routes, node_url, node_key) = world(tmp.path()).await;
        // Alice's record lists the vectors' node as her home (mailbox 5), as in her config.
        let me = c.profile.address().clone();
        let own = record_with_homes(
            c.profile.identity(),
            &me,
            vec![Home {
                url: node_url.clone(),
                node_key,
                mailbox: MailboxId([5; 16]),
            }],
            2,
        );
        c.profile.save_record(own).unwrap();
        let bob = addr("bob@beta.test");
        publish(&routes, &bob, &node_url, node_key, 7);
        let keys = c.unlock(None).unwrap();
        let file = tmp.path().join("plans.bin");
        std::fs::write(&file, b"attached numbers").unwrap();
        let draft = Draft {
            to: vec![bob.clone()],
            subject: "Plans".into(),
            body: "Hello Bob".into(),
            attachments: vec![crate::compose::read_attachment(&file).unwrap()],
            ..Draft::default()
        };
        let report = c
            .send(&draft, &LegacyChoice::default(), &keys, &NoProgress)
            .await
            .unwrap();
        let id = report.sent_copy.clone().expect("a sent copy").unwrap();
        assert_eq!(c.outbox.all().unwrap().len(), 1, "one delivery, to bob");
        assert_ne!(report.recipients[0].envelope_id, id, "its own envelope");
        assert_eq!(report.flush.copies_pending.len(), 1, "our node is down");

        // The copy's hop: for our own mailbox on our home, sealed to our key, attachments
        // and all.
        let copies = c.outbox.copies().unwrap();
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].recipient, me);
        let hop = HopWrapper::decode(&copies[0].hop_bytes().unwrap()).unwrap();
        assert_eq!(hop.destination, node_url);
        let (_, node_keys) = vector_node();
        let envelope = HopWrapper::unwrap_payload(&hop.payload, &node_keys).unwrap();
        assert_eq!((envelope.id, envelope.mailbox), (id, MailboxId([5; 16])));
        let cert = c.profile.cert();
        let opened = open(&envelope.sealed, &keys, &|_| Some(cert.clone())).unwrap();
        assert!(matches!(opened.signature, SignatureStatus::Good { .. }));
        assert_eq!(opened.letter.to, vec![bob.clone()]);
        assert_eq!(opened.letter.attachments[0].data, b"attached numbers");

        // Stored here at once, in the sent folder, under the copy's envelope id.
        let stored = c.messages().get(&id).unwrap();
        assert_eq!(stored.folder, crate::store::Folder::Sent);
        assert!(stored.seen && stored.trust.is_verified());
        assert_eq!(
            crate::mailbox::folder_of(&c.profile, &stored.trust, stored.header.as_ref()),
            crate::store::Folder::Sent,
            "a fetch files it the same way"
        );
        let read = c.read(&id, &keys).unwrap();
        assert_eq!(read.letter.unwrap().attachments.len(), 1);

        // A letter the user is a recipient of needs no sent copy: that copy serves.
        let to_self = Draft {
            to: vec![me.clone()],
            subject: "Note".into(),
            body: "to self".into(),
            ..Draft::default()
        };
        let report = c
            .send(&to_self, &LegacyChoice::default(), &keys, &NoProgress)
            .await
            .unwrap();
        assert!(report.sent_copy.is_none());
        assert_eq!(c.outbox.copies().unwrap().len(), 1, "no second copy");
    }

    /// One home per copy: the first that answers; when none does, the first whose
    /// descriptor is cached; too large for it, or never seen and down, an error.
    #[tokio::test]
    async fn one_home_is_chosen_the_first_that_answers_else_the_first_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let (c, _routes, node_url, node_key) = world(tmp.path()).await;
        let bob = addr("bob@beta.test");
        let id = SecretIdentity::generate(&bob, None).unwrap();
        let gone = Home {
            url: crate::testutil::dead(),
            node_key: [3; 32],
            mailbox: MailboxId([1; 16]),
        };
        let cached = Home {
            url: node_url.clone(),
            node_key,
            mailbox: MailboxId([7; 16]),
        };
        let signed = record_with_homes(&id, &bob, vec![gone.clone(), cached.clone()], 1);
        let (record, cert) = signed.verify(now()).unwrap();
        let pin = crate::contacts::pin(
            None,
            &bob,
            &cert,
            None,
            crate::contacts::PinSource::Record,
            now(),
        );
        let mut r = Recipient {
            address: bob.clone(),
            cert,
            record,
            pin: Some(pin),
            from_cache: false,
        };
        let (home, node, skipped) = choose_home(&c.directory, &r, 1000).await.unwrap();
        assert_eq!(home, &cached);
        assert_eq!(node.descriptor.url, node_url);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].0, gone.url);

        let big = node.descriptor.max_envelope as usize + 1;
        let e = choose_home(&c.directory, &r, big).await.err().unwrap();
        assert!(e.to_string().contains("too large"), "{e}");

        r.record.homes = vec![gone];
        let e = choose_home(&c.directory, &r, 1000).await.err().unwrap();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    }

    #[tokio::test]
    async fn legacy_recipients_share_one_copy_sealed_to_the_gateway_that_names_them() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut c, routes, node_url, node_key) = world(tmp.path()).await;
        let (bob, carol, dave) = (
            addr("bob@beta.test"),
            addr("carol@legacy.test"),
            addr("dave@old.test"),
        );
        let gateway = addr("gateway@alpha.test");
        let bob_id = publish(&routes, &bob, &node_url, node_key, 7);
        let gw_id = publish(&routes, &gateway, &node_url, node_key, 6);
        c.profile.config.legacy.insert("old.test".into());
        let keys = c.unlock(None).unwrap();
        let draft = Draft {
            to: vec![bob.clone(), carol.clone()],
            cc: vec![dave.clone()],
            subject: "Plans".into(),
            body: "Hello all".into(),
            ..Draft::default()
        };

        let choice = LegacyChoice {
            forced: vec![carol.clone()],
            ..LegacyChoice::default()
        };
        let report = c.send(&draft, &choice, &keys, &NoProgress).await.unwrap();
        assert_eq!(report.recipients.len(), 1);
        assert_eq!(report.recipients[0].address, bob);
        let legacy = report.legacy.as_ref().expect("a gateway copy");
        assert_eq!(legacy.gateway.address, gateway, "the default gateway");
        assert!(legacy.gateway.newly_pinned);
        assert_eq!(
            legacy.recipients,
            vec![
                (carol.clone(), LegacyReason::Forced),
                (dave.clone(), LegacyReason::Listed("old.test".into()))
            ]
        );
        assert!(legacy.with_keys.is_empty());
        assert_eq!(report.unsubmitted(), 2, "our only trusted home is down");
        assert!(
            c.contacts().get(&gateway).unwrap().is_some(),
            "gateway pinned"
        );

        // Unwrap each hop as the node would and open the letter as its recipient would.
        let (_, node_keys) = vector_node();
        let alice = c.profile.cert();
        let mut seen = Vec::new();
        for e in c.outbox.all().unwrap() {
            let hop = HopWrapper::decode(&e.hop_bytes().unwrap()).unwrap();
            assert_eq!(hop.destination, node_url);
            let envelope = HopWrapper::unwrap_payload(&hop.payload, &node_keys).unwrap();
            let (id, mailbox) = if e.recipient == gateway {
                (&gw_id, 6)
            } else {
                (&bob_id, 7)
            };
            assert_eq!(envelope.mailbox, MailboxId([mailbox; 16]));
            let opened = open(&envelope.sealed, &id.unlock(None).unwrap(), &|_| {
                Some(alice.clone())
            })
            .unwrap();
            assert!(matches!(opened.signature, SignatureStatus::Good { .. }));
            let l = opened.letter;
            assert_eq!(
                (l.to.clone(), l.cc.clone()),
                (draft.to.clone(), draft.cc.clone())
            );
            assert_eq!(l.message_id, report.message_id);
            seen.push((e.recipient.clone(), l.legacy_to));
        }
        seen.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        assert_eq!(
            seen,
            vec![
                (bob.clone(), vec![]),
                (gateway.clone(), vec![carol.clone(), dave.clone()])
            ]
        );
    }

    #[tokio::test]
    async fn legacy_recipients_without_a_gateway_stop_the_send_before_anything_is_queued() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut c, routes, node_url, node_key) = world(tmp.path()).await;
        let (bob, carol) = (addr("bob@beta.test"), addr("carol@legacy.test"));
        publish(&routes, &bob, &node_url, node_key, 7);
        let keys = c.unlock(None).unwrap();
        let draft = Draft {
            to: vec![bob.clone(), carol.clone()],
            ..Draft::default()
        };

        // alpha.test's node publishes no gateway@alpha.test.
        let choice = LegacyChoice {
            forced: vec![carol.clone()],
            ..LegacyChoice::default()
        };
        let e = c
            .send(&draft, &choice, &keys, &NoProgress)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, Error::NoGateway { .. }), "{e}");
        assert_eq!(e.exit_code(), 1);
        let s = e.to_string();
        assert!(
            s.contains("carol@legacy.test (--legacy)")
                && s.contains("gateway@alpha.test")
                && s.contains("sealpost gateway set"),
            "{s}"
        );
        assert!(!s.contains('\n'));
        assert!(c.outbox.all().unwrap().is_empty(), "nothing queued");
        assert!(c.contacts().all().unwrap().is_empty(), "nothing pinned");

        // --legacy must name a recipient.
        let choice = LegacyChoice {
            forced: vec![addr("eve@legacy.test")],
            ..LegacyChoice::default()
        };
        let e = c
            .send(&draft, &choice, &keys, &NoProgress)
            .await
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 1, "{e}");
        assert!(c.outbox.all().unwrap().is_empty());
    }
}
