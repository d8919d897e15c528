//! [`Client`]: an open profile composed of parts, each owning its state in its own module:
//!
//! | part | type | owns |
//! |---|---|---|
//! | `profile` | [`Profile`] | the secret key, config.json (homes, resolve table, legacy list, gateway, consents), the published record |
//! | `net` | [`Net`] | the node API: HTTP client, DNS, the run's tokens (each part that talks to nodes holds a handle) |
//! | `directory` | [`Directory`] | the run's resolve table, the pinned contacts, the node cache: records, trust on first use, home descriptors; routing ([`crate::route`]) and the gateway ([`crate::gateway`]) are built on it |
//! | `mailbox` | [`Mailbox`] | the letter store and fetching it full |
//! | `outbox` | [`Outbox`] | letters waiting for lookups, hops not yet accepted, the sent log, flushing |
//!
//! The user's own account (`init`, publishing, key rotation, home nodes) is
//! [`crate::account`], over the profile and the node API; sending is [`crate::send`]. The
//! methods here delegate to the parts, or, where one operation spans several (sending,
//! fetching), call them in turn.

use std::path::Path;

use sealpost_proto::identity::Keyring;
use sealpost_proto::letter::Letter;
use sealpost_proto::{Address, EnvelopeId, NodeUrl};

use crate::account::{self, PublishReport, RotateReport};
use crate::api::{Net, NetConfig, VerifiedNode};
use crate::compose::Draft;
use crate::contacts::ContactStore;
use crate::directory::{Directory, Recipient};
use crate::error::{Error, Result};
use crate::gateway::{self, GatewayLookup};
use crate::letters::WaitingLetter;
use crate::mailbox::{self, FetchReport, Mailbox, ReadMessage};
use crate::outbox::{FlushReport, Outbox};
use crate::profile::Profile;
use crate::progress::Progress;
use crate::resolve::Resolver;
use crate::route::{self, LegacyReason, Route};
use crate::send::{self, LegacyChoice, SendPlan, SendReport, SendTracker};
use crate::store::MessageStore;

pub use crate::account::{InitOptions, RECORD_VALIDITY_SECS};
pub use crate::profile::ROTATING_FILE;

/// Settings of one run that do not live in the profile.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--resolve DOMAIN=URL` entries; they override the profile's table.
    pub resolve: Vec<(String, NodeUrl)>,
    pub net: NetConfig,
    /// Ask nodes other than the user's homes directly instead of through those homes.
    /// Off by default: lookups are oblivious (`spec/protocol.md` §11), and a letter waits
    /// in the outbox while no home answers (`spec/client.md` §3, §4); the `sealpost`
    /// command's `--direct-lookups` turns it on.
    pub direct_lookups: bool,
    /// Contacts' records fetched this many seconds ago are due to be fetched again by
    /// [`Client::fetch`], whatever their schedule ([`crate::refresh`]); the `sealpost`
    /// command's hidden `--refresh-after SECS` (tests use 0).
    pub refresh_after: Option<u64>,
}

/// An open profile and the means to talk to nodes: see the module documentation.
pub struct Client {
    pub profile: Profile,
    pub net: Net,
    pub directory: Directory,
    pub mailbox: Mailbox,
    pub outbox: Outbox,
    /// After [`Client::init`]: each `--node` URL whose node descriptor names another URL,
    /// with that URL (the home is registered and published under the descriptor's URL).
    pub init_followed: Vec<(NodeUrl, NodeUrl)>,
}

fn join(v: &[Address]) -> String {
    v.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
}

impl Client {
    /// Opens the profile in `dir` (and takes its lock).
    pub fn open(dir: &Path, options: &Options) -> Result<Client> {
        let profile = Profile::open(dir)?;
        Self::with_profile(profile, options)
    }

    pub(crate) fn from_profile(profile: Profile, options: &Options) -> Result<Client> {
        Self::with_profile(profile, options)
    }

    fn with_profile(profile: Profile, options: &Options) -> Result<Client> {
        let resolver = Resolver::new(&profile.config.resolve, &options.resolve);
        let dir = profile.dir().to_path_buf();
        // The profile's settings, plus this run's (whose DNS server wins).
        let mut config = options.net.clone();
        for ca in &profile.config.tls.ca_certs {
            if !config.ca_certs.contains(ca) {
                config.ca_certs.push(ca.clone());
            }
        }
        config.dns_server = config.dns_server.or(profile.config.dns.server);
        let net = Net::new(config)?;
        // A profile with a device key signs in as that device (`crate::devices`).
        if let Some(key) = crate::devices::load_key(&dir)? {
            net.set_device(key);
        }
        let relays = if options.direct_lookups {
            Vec::new()
        } else {
            profile
                .config
                .trusted_homes()
                .map(|h| h.url.clone())
                .collect()
        };
        let mut directory = Directory::open(&dir, net.clone(), resolver, relays)?;
        directory.set_refresh_after(options.refresh_after);
        Ok(Client {
            directory,
            mailbox: Mailbox::new(&dir, net.clone()),
            outbox: Outbox::new(&dir, net.clone()),
            net,
            init_followed: Vec::new(),
            profile,
        })
    }

    /// Creates a profile ([`account::create`]) and opens it.
    pub async fn init(dir: &Path, init: InitOptions, options: &Options) -> Result<Client> {
        let created = account::create(dir, init, &options.resolve, &options.net).await?;
        let mut client = Self::with_profile(created.profile, options)?;
        client.init_followed = created.followed;
        for n in &created.nodes {
            client.directory.remember_node(n);
        }
        client.directory.save_nodes()?;
        Ok(client)
    }

    pub fn unlock(&self, passphrase: Option<&str>) -> Result<Keyring> {
        self.profile.unlock(passphrase)
    }

    // The parts' stores.

    /// The pinned contacts (of the directory).
    pub fn contacts(&self) -> &ContactStore {
        self.directory.contacts()
    }

    /// The letters stored (of the mailbox).
    pub fn messages(&self) -> &MessageStore {
        self.mailbox.messages()
    }

    // The account: [`crate::account`].

    /// [`account::publish`].
    pub async fn publish(&mut self, keys: &Keyring) -> Result<PublishReport> {
        account::publish(&mut self.profile, &self.net, keys).await
    }

    /// [`account::rotate_key`].
    pub async fn rotate_key(
        &mut self,
        old: &Keyring,
        passphrase: Option<&str>,
    ) -> Result<RotateReport> {
        account::rotate_key(&mut self.profile, &self.net, old, passphrase).await
    }

    /// [`account::trust_node`].
    pub async fn trust_node(
        &mut self,
        url: &NodeUrl,
        keys: &Keyring,
        invite: Option<&str>,
    ) -> Result<Option<PublishReport>> {
        account::trust_node(
            &mut self.profile,
            &self.net,
            &self.directory,
            url,
            keys,
            invite,
        )
        .await
    }

    /// [`account::untrust_node`].
    pub async fn untrust_node(
        &mut self,
        url: &NodeUrl,
        drop: bool,
        keys: &Keyring,
    ) -> Result<Option<PublishReport>> {
        account::untrust_node(&mut self.profile, &self.net, url, drop, keys).await
    }

    // Settings: [`Profile`].

    /// [`Profile::set_resolve`].
    pub fn set_resolve(&mut self, domain: String, url: NodeUrl) -> Result<bool> {
        self.profile.set_resolve(domain, url)
    }

    /// [`Profile::unset_resolve`].
    pub fn unset_resolve(&mut self, domain: &str) -> Result<bool> {
        self.profile.unset_resolve(domain)
    }

    /// [`Profile::add_legacy_domain`].
    pub fn add_legacy_domain(&mut self, domain: &str) -> Result<(String, bool)> {
        self.profile.add_legacy_domain(domain)
    }

    /// [`Profile::remove_legacy_domain`].
    pub fn remove_legacy_domain(&mut self, domain: &str) -> Result<bool> {
        self.profile.remove_legacy_domain(domain)
    }

    // The directory: [`Directory`], [`crate::route`], [`crate::gateway`].

    /// [`Directory::resolve_recipient`] for this profile.
    pub async fn resolve_recipient(&self, address: &Address) -> Result<Recipient> {
        self.directory
            .resolve_recipient(&self.profile, address)
            .await
    }

    /// [`Directory::add_contact`] for this profile.
    pub async fn add_contact(
        &self,
        address: &Address,
    ) -> Result<(Recipient, Vec<(NodeUrl, String)>)> {
        self.directory.add_contact(&self.profile, address).await
    }

    /// Keeps a verified node descriptor in the directory's cache, and saves it.
    pub fn remember_node(&self, node: &VerifiedNode) -> Result<()> {
        self.directory.remember_node(node);
        self.directory.save_nodes()
    }

    /// [`route::route`] for this profile.
    pub async fn route(&self, address: &Address, chosen: Option<LegacyReason>) -> Result<Route> {
        route::route(&self.directory, &self.profile, address, chosen).await
    }

    #[cfg(test)]
    pub(crate) async fn judge_failure(
        &self,
        address: &Address,
        url: &NodeUrl,
        err: crate::error::Error,
    ) -> Result<Route> {
        route::judge_failure(&self.directory, &self.profile, address, url, err).await
    }

    /// [`gateway::gateway_address`] of this profile.
    pub fn gateway_address(&self) -> Result<(Address, bool)> {
        gateway::gateway_address(&self.profile)
    }

    /// [`gateway::lookup`] for this profile.
    pub async fn gateway(&self) -> Result<GatewayLookup> {
        gateway::lookup(&self.directory, &self.profile).await
    }

    /// `gateway set`: looks `address` up ([`gateway::check`]), pins it and makes it the
    /// gateway.
    pub async fn set_gateway(&mut self, address: &Address) -> Result<Recipient> {
        let r = gateway::check(&self.directory, &self.profile, address).await?;
        self.directory.commit_pin(&r)?;
        self.profile.set_gateway(address)?;
        Ok(r)
    }

    /// [`Profile::clear_gateway`].
    pub fn clear_gateway(&mut self) -> Result<bool> {
        self.profile.clear_gateway()
    }

    // Sending: [`crate::send`], then the outbox.

    /// [`send::plan`] for this profile.
    pub async fn plan_send(&self, draft: &Draft, choice: &LegacyChoice) -> Result<SendPlan> {
        send::plan(&self.directory, &self.profile, draft, choice).await
    }

    /// [`SendPlan::unconfirmed`] for this profile.
    pub fn unconfirmed(&self, plan: &SendPlan) -> Vec<Address> {
        plan.unconfirmed(&self.profile)
    }

    /// Keeps the letter of `draft` in the outbox, sealed to the user's own key, before
    /// any lookup ([`crate::letters`]); returns it with the letter. Nothing else is
    /// written, nothing is sent.
    pub fn hold_letter(
        &self,
        draft: &Draft,
        choice: &LegacyChoice,
        keys: &Keyring,
    ) -> Result<(WaitingLetter, Letter)> {
        let now = crate::now();
        let letter = draft.to_letter(self.profile.address(), now as i64)?;
        let held = WaitingLetter::new(&letter, choice, keys, &self.profile.cert(), now)?;
        self.outbox.letters().put(&held)?;
        Ok((held, letter))
    }

    /// [`send::plan_letter`] for a letter kept by [`Client::hold_letter`]. When the
    /// lookups cannot be done now ([`Error::is_transient`]) the letter stays in the outbox
    /// and the answer is [`Error::LetterWaiting`]; any other failure gives it up (it is
    /// removed) and is returned as it is.
    pub async fn plan_held(&self, held: &WaitingLetter, letter: Letter) -> Result<SendPlan> {
        let planned = self.plan_letter(held, letter).await;
        self.settle_held(held, planned, false)
    }

    async fn plan_letter(&self, held: &WaitingLetter, letter: Letter) -> Result<SendPlan> {
        send::plan_letter(&self.directory, &self.profile, letter, &held.choice())
            .await
            .map(|p| p.with_held(&held.id))
    }

    /// After a step of the letter `held` before its hops were queued: when it failed,
    /// keeps the letter waiting (with the error) when the failure is transient or `keep`
    /// says so, and answers [`Error::LetterWaiting`]; else removes it and answers the
    /// failure.
    fn settle_held<T>(&self, held: &WaitingLetter, result: Result<T>, keep: bool) -> Result<T> {
        let e = match result {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !(keep || e.is_transient()) {
            self.drop_held(held)?;
            return Err(e);
        }
        let reason = match e {
            Error::LetterWaiting { reason, .. } => reason,
            e => e.to_string(),
        };
        let mut w = held.clone();
        w.attempts += 1;
        w.last_error = Some(reason.clone());
        self.outbox.letters().put(&w)?;
        Err(Error::LetterWaiting {
            id: w.id[..12].to_string(),
            reason,
        })
    }

    /// Gives up the letter `held` (the user said no, or a recipient cannot be reached).
    pub fn drop_held(&self, held: &WaitingLetter) -> Result<()> {
        self.outbox.letters().remove(&held.id)
    }

    /// The waiting letter a plan is for, if any.
    fn held_of(&self, plan: &SendPlan) -> Result<Option<WaitingLetter>> {
        let Some(id) = plan.held() else {
            return Ok(None);
        };
        Ok(self
            .outbox
            .letters()
            .all()?
            .into_iter()
            .find(|w| w.id == id))
    }

    /// Seals the letter of `plan` for each recipient (and once for the gateway), queues a
    /// hop per recipient home, and submits the whole outbox. `agreed`: legacy recipients
    /// the user has just agreed to; any other [`Client::unconfirmed`] one stops the send
    /// before anything is written. Agreed and forced addresses are remembered in the
    /// profile, so that later letters to them do not ask. `tracker` learns the queued hops.
    /// A plan for a letter kept by [`Client::hold_letter`] removes it once its hops are
    /// queued, and keeps it waiting when the recipients' homes cannot be looked up now
    /// (as [`Client::plan_held`]).
    pub async fn send_plan(
        &mut self,
        plan: SendPlan,
        agreed: &[Address],
        keys: &Keyring,
        progress: &dyn Progress,
        tracker: &SendTracker,
    ) -> Result<SendReport> {
        let held = self.held_of(&plan)?;
        let sealed = self.seal_for_outbox(plan, agreed, keys).await;
        let sealed = match &held {
            Some(h) => self.settle_held(h, sealed, false)?,
            None => sealed?,
        };
        let (sealed, consented) = sealed;
        let (sealed, sent_copy) = self.queue_sealed(sealed, held.as_ref(), tracker)?;
        self.profile.confirm_legacy(&consented)?;
        let flush = self.flush_outbox(keys, progress).await?;
        Ok(SendReport {
            message_id: sealed.message_id,
            recipients: sealed.recipients,
            legacy: sealed.legacy,
            queued: sealed.entries.into_iter().map(|e| e.id).collect(),
            sent_copy,
            flush,
        })
    }

    /// The first half of [`Client::send_plan`]: checks consent and seals (looking the
    /// recipients' homes up); nothing is written.
    async fn seal_for_outbox(
        &self,
        plan: SendPlan,
        agreed: &[Address],
        keys: &Keyring,
    ) -> Result<(send::Sealed, Vec<Address>)> {
        plan.check_agreed(&self.profile, agreed)?;
        let consented: Vec<Address> = plan.consented().cloned().collect();
        let sealed = send::seal_plan(&self.directory, plan, keys).await?;
        Ok((sealed, consented))
    }

    /// The second half: queues the hops, removes the waiting letter `held`, saves pins,
    /// stores the sent copy (the caller saves the consents). No await: a Ctrl-C cannot
    /// stop it half way.
    fn queue_sealed(
        &self,
        sealed: send::Sealed,
        held: Option<&WaitingLetter>,
        tracker: &SendTracker,
    ) -> Result<(
        send::Sealed,
        Option<std::result::Result<EnvelopeId, String>>,
    )> {
        // Durable first: once queued, the letter survives whatever happens next (a crash,
        // Ctrl-C); everything after this point only submits what the outbox holds.
        for e in &sealed.entries {
            self.outbox.put(e)?;
        }
        if let Some(Ok(copy)) = &sealed.sent_copy {
            for e in &copy.entries {
                self.outbox.put_copy(e)?;
            }
        }
        // Nothing was submitted yet: a crash before this line leaves the letter waiting,
        // and hops that its next try drops before it seals the letter again.
        if let Some(h) = held {
            self.drop_held(h)?;
        }
        tracker.set(&sealed.entries);
        sealed.commit(&self.directory)?;
        // The sent copy shows here at once (fetching its envelope later finds it stored).
        let sent_copy = match &sealed.sent_copy {
            Some(Ok(copy)) => {
                self.mailbox.store_sent(
                    &self.profile,
                    copy.envelope_id,
                    &copy.sealed,
                    &copy.letter,
                )?;
                Some(Ok(copy.envelope_id))
            }
            Some(Err(why)) => Some(Err(why.clone())),
            None => None,
        };
        Ok((sealed, sent_copy))
    }

    /// Sends `draft` as `sealpost send` does: kept in the outbox first
    /// ([`Client::hold_letter`]), then looked up ([`Client::plan_held`]), sealed, queued
    /// and submitted ([`Client::send_plan`]), agreeing to no legacy address beyond
    /// `choice`'s.
    pub async fn send(
        &mut self,
        draft: &Draft,
        choice: &LegacyChoice,
        keys: &Keyring,
        progress: &dyn Progress,
    ) -> Result<SendReport> {
        let (held, letter) = self.hold_letter(draft, choice, keys)?;
        let plan = self.plan_held(&held, letter).await?;
        self.send_plan(plan, &[], keys, progress, &SendTracker::default())
            .await
    }

    /// Tries again every letter waiting for its lookups ([`crate::letters`]): looked up,
    /// sealed and queued as hops (not submitted). A letter that fails again stays waiting,
    /// whatever the failure (a changed key to accept, say), until it goes or the user drops
    /// it. Adds to `report` how many were queued and which still wait, and why.
    pub async fn send_waiting(&self, keys: &Keyring, report: &mut FlushReport) -> Result<()> {
        for held in self.outbox.letters().all()? {
            // Hops of a run that stopped before it removed the letter: never submitted.
            self.outbox.drop_letter_hops(&held.message_id)?;
            let sealed = match held.letter(keys, &self.profile.cert()) {
                Ok(letter) => match self.plan_letter(&held, letter).await {
                    Ok(plan) => self.seal_for_outbox(plan, &[], keys).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match self.settle_held(&held, sealed, true) {
                // Its `--legacy` addresses are not remembered as agreed to: a later letter
                // to them asks again (this runs without `&mut`, by fetch as well).
                Ok((sealed, _consented)) => {
                    self.queue_sealed(sealed, Some(&held), &SendTracker::default())?;
                    report.letters_queued += 1;
                }
                Err(e) => {
                    let reason = match e {
                        Error::LetterWaiting { reason, .. } => reason,
                        e => e.to_string(),
                    };
                    report.letters_waiting.push(held.id.clone());
                    report.letter_errors.push(format!(
                        "the letter {:?} to {} waits in the outbox ({}): {reason}",
                        held.subject,
                        join(&held.recipients),
                        &held.id[..12]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Submits every outbox entry through the first trusted home of ours that takes it
    /// ([`Outbox::flush`]), after queuing the letters that wait for lookups
    /// ([`Client::send_waiting`]).
    pub async fn flush_outbox(
        &self,
        keys: &Keyring,
        progress: &dyn Progress,
    ) -> Result<FlushReport> {
        let homes: Vec<_> = self.profile.config.trusted_homes().cloned().collect();
        let mut letters = FlushReport::default();
        self.send_waiting(keys, &mut letters).await?;
        let mut report = self.outbox.flush(&homes, keys, progress).await?;
        report.letters_queued = letters.letters_queued;
        report.letters_waiting = letters.letters_waiting;
        report.letter_errors = letters.letter_errors;
        Ok(report)
    }

    // Fetching and reading: [`Mailbox`].

    /// Fetches again the contacts' records that are due ([`Directory::refresh_due`]),
    /// flushes the outbox, then fetches from every trusted home that answers
    /// ([`Mailbox::fetch`]). A bounce of one of our letters makes its recipient's record
    /// due at once.
    pub async fn fetch(&self, keys: &Keyring, progress: &dyn Progress) -> Result<FetchReport> {
        let homes = mailbox::trusted_homes(&self.profile)?;
        // Letters read here since the last fetch: one state letter to our own mailbox.
        let pending = crate::readstate::pending(self.profile.dir())?;
        let mut warnings = Vec::new();
        if !pending.is_empty() {
            match self.announce_read(keys, &pending).await {
                Ok(n) => crate::readstate::announced(self.profile.dir(), n)?,
                Err(e) => warnings.push(format!(
                    "the read state is not shared with your other devices yet: {e}"
                )),
            }
        }
        // Before the flush: a waiting letter then meets a key change seen now.
        let refresh = self.directory.refresh_due(crate::now()).await?;
        warnings.extend(refresh.changed);
        for (a, e) in refresh.failed {
            warnings.push(format!("could not refresh the record of {a}: {e}"));
        }
        let flush = self.flush_outbox(keys, progress).await?;
        let mut report = self
            .mailbox
            .fetch(&self.profile, &self.directory, &homes, keys, progress)
            .await?;
        report.flush = flush;
        report.warnings.extend(warnings);
        for m in &report.new {
            if let Err(e) = self.refresh_after_bounce(m, keys) {
                report.warnings.push(e.to_string());
            }
        }
        Ok(report)
    }

    /// A verified bounce names the queue id of a hop of ours a node gave up on (its
    /// recipient's node refused it, or never answered): that recipient's record is due at
    /// once, so that the next fetch learns of a new home or key.
    fn refresh_after_bounce(&self, m: &crate::store::StoredMessage, keys: &Keyring) -> Result<()> {
        let is_bounce = m.trust.is_verified()
            && m.header.as_ref().is_some_and(|h| {
                h.from.as_str().starts_with("postmaster@")
                    && h.subject.starts_with("Undeliverable: ")
            });
        if !is_bounce {
            return Ok(());
        }
        // Verified when it was fetched: opened here only for its body.
        let sealed = self.messages().sealed(&m.id)?;
        let Ok(opened) = sealpost_proto::seal::open(&sealed, keys, &|_| None) else {
            return Ok(());
        };
        if let Some(q) = crate::sent::bounce_queue_id(&opened.letter.body)
            && let Some(hop) = self.outbox.sent().get(q)?
        {
            self.directory.refresh_soon(&hop.recipient)?;
        }
        Ok(())
    }

    /// Queues one state letter for the user's own mailbox naming (up to
    /// [`crate::readstate::MAX_IDS`] of) `ids`; answers how many it names.
    async fn announce_read(&self, keys: &Keyring, ids: &[EnvelopeId]) -> Result<usize> {
        let me = self
            .directory
            .resolve_recipient(&self.profile, self.profile.address())
            .await?;
        let now = crate::now();
        let letter = crate::readstate::state_letter(self.profile.address(), ids, now as i64);
        let mut entries = Vec::new();
        send::queue_copy(&self.directory, &letter, &me, keys, now, &mut entries).await?;
        for e in &entries {
            self.outbox.put_copy(e)?;
        }
        Ok(ids.len().min(crate::readstate::MAX_IDS))
    }

    /// Opens a stored message again (no network) and marks it seen ([`Mailbox::read`]).
    pub fn read(&self, id: &EnvelopeId, keys: &Keyring) -> Result<ReadMessage> {
        self.mailbox.read(&self.profile, &self.directory, id, keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutboxEntry;
    use crate::progress::NoProgress;
    use crate::testutil::{Routes, record_with_homes, stub, vector_node};
    use sealpost_proto::MailboxId;
    use sealpost_proto::codec::Codec;
    use sealpost_proto::envelope::HopWrapper;
    use sealpost_proto::identity::SecretIdentity;
    use sealpost_proto::record::Home;
    use sealpost_proto::seal::open;

    const BOB: &str = "/v1/records/bob@beta.test";

    /// Alice's profile in `dir`, looking beta.test up at `domain` (directly).
    fn open_alice(dir: &Path, domain: &NodeUrl) -> Client {
        let options = Options {
            resolve: vec![("beta.test".into(), domain.clone())],
            direct_lookups: true,
            ..Options::default()
        };
        Client::open(dir, &options).unwrap()
    }

    /// Alice, whose lookups of beta.test go to a stub serving `Routes`; Bob's one home is
    /// the spec vectors' node (unreachable, its descriptor cached). Alice's own home does
    /// not answer, so hops stay in the outbox.
    async fn alice(dir: &Path) -> (Client, Routes, NodeUrl) {
        drop(crate::profile::tests::sample(dir, "alice@alpha.test", None));
        let (domain, routes) = stub().await;
        let c = open_alice(dir, &domain);
        c.remember_node(&vector_node().0).unwrap();
        (c, routes, domain)
    }

    fn publish_bob(routes: &Routes) -> SecretIdentity {
        let bob = Address::parse("bob@beta.test").unwrap();
        let id = SecretIdentity::generate(&bob, None).unwrap();
        let node = vector_node().0.descriptor;
        let home = Home {
            url: node.url,
            node_key: node.node_key,
            mailbox: MailboxId([7; 16]),
        };
        let signed = record_with_homes(&id, &bob, vec![home], 1);
        routes
            .lock()
            .unwrap()
            .insert(BOB.into(), (200, signed.encode()));
        id
    }

    fn draft() -> Draft {
        Draft {
            to: vec![Address::parse("bob@beta.test").unwrap()],
            subject: "Plans".into(),
            body: "Hello Bob".into(),
            ..Draft::default()
        }
    }

    #[tokio::test]
    async fn a_letter_waits_for_its_lookups_survives_reopen_and_is_sent_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut c, routes, domain) = alice(tmp.path()).await;
        let keys = c.unlock(None).unwrap();
        // Bob's node is busy: the letter waits, sealed, with nothing else queued.
        routes
            .lock()
            .unwrap()
            .insert(BOB.into(), (503, b"busy".to_vec()));
        let e = c
            .send(&draft(), &LegacyChoice::default(), &keys, &NoProgress)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, Error::LetterWaiting { .. }), "{e}");
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().starts_with("letter saved, will be sent when"),
            "{e}"
        );
        assert!(c.outbox.all().unwrap().is_empty());
        let waiting = c.outbox.letters().all().unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].attempts, 1);
        assert!(waiting[0].last_error.as_deref().unwrap().contains("503"));

        // Reopened (a later command), after a run that queued a hop of the letter and
        // stopped before it removed the letter: that hop was never submitted, and goes.
        drop(c);
        let c = open_alice(tmp.path(), &domain);
        let held = c.outbox.letters().all().unwrap();
        assert_eq!(held, waiting, "the letter survives reopen");
        let bob = Address::parse("bob@beta.test").unwrap();
        let stale = HopWrapper {
            destination: vector_node().0.descriptor.url,
            payload: vec![0x85, 1, 2],
        };
        let stale = OutboxEntry::new(
            &bob,
            EnvelopeId([9; 16]),
            &held[0].message_id,
            "",
            &stale,
            1,
        );
        c.outbox.put(&stale).unwrap();

        // Bob's node answers again: the next flush looks him up, seals and queues the
        // letter once, and removes it.
        let bob_id = publish_bob(&routes);
        let report = c.flush_outbox(&keys, &NoProgress).await.unwrap();
        assert_eq!(report.letters_queued, 1, "{report:?}");
        assert!(report.letters_waiting.is_empty(), "{report:?}");
        assert!(c.outbox.letters().all().unwrap().is_empty());
        let hops = c.outbox.all().unwrap();
        assert_eq!(hops.len(), 1, "one hop, for bob's one home: {hops:?}");
        assert_ne!(hops[0].id, stale.id, "the stale hop was dropped");
        assert_eq!(hops[0].message_id, held[0].message_id);
        let hop = HopWrapper::decode(&hops[0].hop_bytes().unwrap()).unwrap();
        let envelope = HopWrapper::unwrap_payload(&hop.payload, &vector_node().1).unwrap();
        let alice_cert = c.profile.cert();
        let opened = open(&envelope.sealed, &bob_id.unlock(None).unwrap(), &|_| {
            Some(alice_cert.clone())
        })
        .unwrap();
        assert_eq!(
            opened.letter.message_id, held[0].message_id,
            "the same letter"
        );
        assert_eq!(opened.letter.body.trim_end(), "Hello Bob");

        // Nothing waits any more: another flush queues nothing new.
        let report = c.flush_outbox(&keys, &NoProgress).await.unwrap();
        assert_eq!(report.letters_queued, 0);
        assert_eq!(c.outbox.all().unwrap().len(), 1, "sent once");
    }

    #[tokio::test]
    async fn a_letter_whose_recipient_does_not_exist_is_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut c, _routes, _) = alice(tmp.path()).await;
        let keys = c.unlock(None).unwrap();
        // The stub answers 404 unknown_address for bob.
        let e = c
            .send(&draft(), &LegacyChoice::default(), &keys, &NoProgress)
            .await
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 1, "{e}");
        assert!(c.outbox.letters().all().unwrap().is_empty(), "given up");
        assert!(c.outbox.all().unwrap().is_empty());
    }
}
