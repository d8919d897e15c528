//! [`Client`]: an open profile composed of parts, each owning its state in its own module:
//!
//! | part | type | owns |
//! |---|---|---|
//! | `profile` | [`Profile`] | the secret key, config.json (homes, resolve table, legacy list, gateway, consents), the published record |
//! | `net` | [`Net`] | the node API: HTTP client, DNS, the run's tokens (each part that talks to nodes holds a handle) |
//! | `directory` | [`Directory`] | the run's resolve table, the pinned contacts, the node cache: records, trust on first use, home descriptors; routing ([`crate::route`]) and the gateway ([`crate::gateway`]) are built on it |
//! | `mailbox` | [`Mailbox`] | the letter store and fetching it full |
//! | `outbox` | [`Outbox`] | hops not yet accepted, the sent log, flushing |
//!
//! The user's own account (`init`, publishing, key rotation, home nodes) is
//! [`crate::account`], over the profile and the node API; sending is [`crate::send`]. The
//! methods here delegate to the parts, or, where one operation spans several (sending,
//! fetching), call them in turn.

use std::path::Path;

use sealpost_proto::identity::Keyring;
use sealpost_proto::{Address, EnvelopeId, NodeUrl};

use crate::account::{self, PublishReport, RotateReport};
use crate::api::{Net, NetConfig, VerifiedNode};
use crate::compose::Draft;
use crate::contacts::ContactStore;
use crate::directory::{Directory, Recipient};
use crate::error::Result;
use crate::gateway::{self, GatewayLookup};
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
    /// Ask nodes other than the user's homes through those homes (oblivious lookups,
    /// `spec/protocol.md` §11) instead of directly. Off unless asked for (the `sealpost`
    /// command's `--oblivious-lookups`): see `spec/client.md` §3.
    pub oblivious_lookups: bool,
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
        let relays = if options.oblivious_lookups {
            profile
                .config
                .trusted_homes()
                .map(|h| h.url.clone())
                .collect()
        } else {
            Vec::new()
        };
        Ok(Client {
            directory: Directory::open(&dir, net.clone(), resolver, relays)?,
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

    /// Seals the letter of `plan` for each recipient (and once for the gateway), queues a
    /// hop per recipient home, and submits the whole outbox. `agreed`: legacy recipients
    /// the user has just agreed to; any other [`Client::unconfirmed`] one stops the send
    /// before anything is written. Agreed and forced addresses are remembered in the
    /// profile, so that later letters to them do not ask. `tracker` learns the queued hops.
    pub async fn send_plan(
        &mut self,
        plan: SendPlan,
        agreed: &[Address],
        keys: &Keyring,
        progress: &dyn Progress,
        tracker: &SendTracker,
    ) -> Result<SendReport> {
        plan.check_agreed(&self.profile, agreed)?;
        let consented: Vec<Address> = plan.consented().cloned().collect();
        let sealed = send::seal_plan(&self.directory, plan, keys).await?;
        let direct_lookups = self.directory.take_direct_fallbacks();
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
        tracker.set(&sealed.entries);
        sealed.commit(&self.directory)?;
        self.profile.confirm_legacy(&consented)?;
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
        let flush = self.flush_outbox(keys, progress).await?;
        Ok(SendReport {
            message_id: sealed.message_id,
            recipients: sealed.recipients,
            legacy: sealed.legacy,
            queued: sealed.entries.into_iter().map(|e| e.id).collect(),
            sent_copy,
            flush,
            direct_lookups,
        })
    }

    /// [`Client::plan_send`] and [`Client::send_plan`] in one, agreeing to no legacy
    /// address beyond `choice`'s.
    pub async fn send(
        &mut self,
        draft: &Draft,
        choice: &LegacyChoice,
        keys: &Keyring,
        progress: &dyn Progress,
    ) -> Result<SendReport> {
        let plan = self.plan_send(draft, choice).await?;
        self.send_plan(plan, &[], keys, progress, &SendTracker::default())
            .await
    }

    /// Submits every outbox entry through the first trusted home of ours that takes it
    /// ([`Outbox::flush`]).
    pub async fn flush_outbox(
        &self,
        keys: &Keyring,
        progress: &dyn Progress,
    ) -> Result<FlushReport> {
        let homes: Vec<_> = self.profile.config.trusted_homes().cloned().collect();
        self.outbox.flush(&homes, keys, progress).await
    }

    // Fetching and reading: [`Mailbox`].

    /// Flushes the outbox, then fetches from every trusted home that answers
    /// ([`Mailbox::fetch`]).
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
        let flush = self.outbox.flush(&homes, keys, progress).await?;
        let mut report = self
            .mailbox
            .fetch(&self.profile, &self.directory, &homes, keys, progress)
            .await?;
        report.flush = flush;
        report.warnings.extend(warnings);
        Ok(report)
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
