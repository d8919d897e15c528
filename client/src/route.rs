//! Sealpost or legacy: whether a recipient is reached end to end through their Sealpost
//! node, or is a legacy e-mail address whose copy leaves Sealpost at the user's SMTP gateway
//! ([`crate::gateway`]); and the persistent list of legacy domains.
//!
//! A recipient is looked up as usual first. Only when that fails, and nothing says that the
//! domain has a Sealpost node, is the failure judged: a domain whose name does not exist,
//! whose host refuses the connection, or whose server answers anything but a node
//! descriptor at `/.well-known/sealpost/node` has none. A timeout, a TLS failure or a `5xx`
//! proves nothing either way and stops the send. Sending through the gateway is a
//! downgrade, so evidence of Sealpost always wins: a resolve entry for the domain, a record
//! seen for the address or for anyone at its domain, a verified descriptor of the domain's
//! node.
//!
//! "No Sealpost node" is not enough for legacy e-mail: the domain must take e-mail, which
//! DNS tells ([`crate::dns`]). A domain that does not exist (a typo) is an error naming the
//! nearest domains the user knows ("did you mean beta.test?"), one without mail servers
//! too, and a DNS failure decides nothing. The first letter to each such address also
//! needs the user's consent ([`crate::send`]).
//!
//! The functions here decide over a [`Directory`] (records, pins, node cache) for the user
//! of a [`Profile`] (their resolve table, legacy list and consents).

use std::fmt;

use sealpost_proto::{Address, NodeUrl};

use crate::api::VerifiedNode;
use crate::directory::{Directory, Recipient};
use crate::dns::{MailDomain, suggest};
use crate::error::{Error, NetFailure, Result};
use crate::profile::Profile;

/// Why a recipient is sent legacy e-mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LegacyReason {
    /// The user said so for this letter (`--legacy ADDR`).
    Forced,
    /// The domain is in the profile's legacy list (`legacy add`).
    Listed(String),
    /// The domain has no Sealpost node (what showed it) and takes e-mail.
    NoNode(String),
    /// A reply to a letter that came from this address as legacy e-mail.
    Reply,
}

impl fmt::Display for LegacyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LegacyReason::Forced => f.write_str("--legacy"),
            LegacyReason::Listed(d) => write!(f, "{d} is in your legacy list"),
            LegacyReason::NoNode(why) => write!(f, "no Sealpost node: {why}"),
            LegacyReason::Reply => f.write_str("a reply to legacy e-mail"),
        }
    }
}

/// How a recipient is reached.
#[derive(Debug)]
pub enum Route {
    /// End to end: sealed to their pinned certificate, a hop per home.
    Sealpost(Box<Recipient>),
    /// Through the gateway, as ordinary e-mail from there on.
    Legacy {
        address: Address,
        reason: LegacyReason,
    },
}

/// What a failed lookup, or the descriptor of the domain's node asked for after it, says
/// about a domain nothing else is known of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// There is a Sealpost node (or this failure says nothing about it): the lookup's
    /// error stands.
    Sealpost,
    /// No Sealpost node there; what showed it.
    Legacy(String),
    /// Something answered; its descriptor (or the lack of one) tells.
    AskDescriptor,
    /// Cannot tell; why.
    Unsure(String),
}

/// A connection that failed: a name that does not exist or a host that refuses says
/// nobody is there; anything else could be a Sealpost node having a bad moment.
fn judge_connection(url: &str, failure: NetFailure, reason: &str) -> Judgement {
    match failure {
        NetFailure::NoSuchHost => Judgement::Legacy(format!("{url}: no such host")),
        NetFailure::Refused => Judgement::Legacy(format!("{url}: connection refused")),
        NetFailure::TimedOut | NetFailure::Other => Judgement::Unsure(format!("{url}: {reason}")),
    }
}

/// Judges the failed record lookup at a domain's node.
pub(crate) fn judge_lookup_failure(e: &Error) -> Judgement {
    match e {
        Error::Unreachable {
            url,
            reason,
            failure,
        } => judge_connection(url, *failure, reason),
        // Something answered, but was it a node that does not know the address or a web
        // server that is no node at all?
        Error::UnknownAddress { .. }
        | Error::Node { .. }
        | Error::NodeProtocol { .. }
        | Error::BadRecord { .. } => Judgement::AskDescriptor,
        // A changed key, a profile problem: nothing to do with the domain.
        _ => Judgement::Sealpost,
    }
}

/// Judges what `url` answered when asked for its node descriptor.
pub(crate) fn judge_descriptor(url: &NodeUrl, answer: &Result<VerifiedNode>) -> Judgement {
    match answer {
        Ok(_) => Judgement::Sealpost,
        Err(Error::Unreachable {
            url,
            reason,
            failure,
        }) => judge_connection(url, *failure, reason),
        Err(e @ Error::Node { status, .. }) if *status >= 500 || matches!(*status, 408 | 429) => {
            Judgement::Unsure(e.to_string())
        }
        Err(Error::Node { status, .. }) => Judgement::Legacy(format!(
            "{url} answers {status} to /.well-known/sealpost/node"
        )),
        Err(Error::NodeProtocol { reason, .. }) => {
            Judgement::Legacy(format!("{url} serves no node descriptor ({reason})"))
        }
        Err(e) => Judgement::Unsure(e.to_string()),
    }
}

/// Decides how `address` is reached: as a Sealpost recipient (a known contact from its
/// kept record, anyone else looked up, trust on first use, nothing saved: see
/// [`Directory::recipient`]) or as a legacy address.
/// `chosen`: legacy e-mail without a lookup, for this reason (`--legacy`, a reply to
/// legacy mail).
pub async fn route(
    directory: &Directory,
    me: &Profile,
    address: &Address,
    chosen: Option<LegacyReason>,
) -> Result<Route> {
    let legacy = |reason| {
        Ok(Route::Legacy {
            address: address.clone(),
            reason,
        })
    };
    if let Some(reason) = chosen {
        return legacy(reason);
    }
    let domain = address.domain();
    let has_entry = directory.resolver().has_entry(domain);
    if !has_entry && me.config.legacy.contains(domain) {
        return legacy(LegacyReason::Listed(domain.to_string()));
    }
    match directory.recipient(me, address).await {
        Ok(r) => Ok(Route::Sealpost(Box::new(r))),
        // A resolve entry says that the domain has a node: its failure is an error.
        Err(e) if has_entry => Err(e),
        Err(e) => {
            let url = directory.resolver().node_for(domain)?;
            judge_failure(directory, me, address, &url, e).await
        }
    }
}

/// After the record lookup of `address` at its domain's node `url` failed with
/// `err`: a legacy route, `err` itself (a Sealpost domain), or a refusal to guess.
pub(crate) async fn judge_failure(
    directory: &Directory,
    me: &Profile,
    address: &Address,
    url: &NodeUrl,
    err: Error,
) -> Result<Route> {
    if seen_sealpost_at(directory, address, url)? {
        return Err(err);
    }
    let mut judgement = judge_lookup_failure(&err);
    if judgement == Judgement::AskDescriptor {
        judgement = judge_descriptor(url, &directory.fetch_descriptor(url).await);
    }
    match judgement {
        Judgement::Sealpost | Judgement::AskDescriptor => Err(err),
        Judgement::Legacy(why) => legacy_if_mail(directory, me, address, why).await,
        Judgement::Unsure(reason) => Err(Error::UndecidedDomain {
            address: address.to_string(),
            domain: address.domain().to_string(),
            reason,
        }),
    }
}

/// `address` has no Sealpost node (`why`): legacy if its domain takes e-mail; an error
/// if it does not exist (with the known domains it may be a typo of) or takes no mail;
/// a temporary error if DNS does not answer.
async fn legacy_if_mail(
    directory: &Directory,
    me: &Profile,
    address: &Address,
    why: String,
) -> Result<Route> {
    let domain = address.domain();
    let no_mail = |reason: &str| Error::NoMailDomain {
        address: address.to_string(),
        domain: domain.to_string(),
        reason: reason.to_string(),
    };
    match directory.net().dns().mail_domain(domain).await? {
        MailDomain::Accepts(_) => Ok(Route::Legacy {
            address: address.clone(),
            reason: LegacyReason::NoNode(why),
        }),
        MailDomain::NoSuchDomain => Err(Error::NoSuchDomain {
            address: address.to_string(),
            domain: domain.to_string(),
            hint: did_you_mean(&suggest(
                domain,
                known_domains(directory, me)?.iter().map(String::as_str),
            )),
        }),
        MailDomain::NoMx => Err(no_mail("it publishes no MX record")),
        MailDomain::NullMx => Err(no_mail("its null MX record says so")),
    }
}

/// The domains the user has dealt with: their own, their contacts', the resolve table's,
/// the legacy list's and those of legacy addresses they agreed to.
fn known_domains(directory: &Directory, me: &Profile) -> Result<Vec<String>> {
    let config = &me.config;
    let mut out = vec![config.address.domain().to_string()];
    out.extend(
        directory
            .contacts()
            .all()?
            .iter()
            .map(|c| c.address.domain().to_string()),
    );
    out.extend(config.resolve.keys().cloned());
    out.extend(config.legacy.iter().cloned());
    out.extend(
        config
            .legacy_confirmed
            .iter()
            .map(|a| a.domain().to_string()),
    );
    Ok(out)
}

/// Whether we have seen Sealpost at `address`'s domain: a verified descriptor of its
/// node (`url`), or a record of the address or of anyone else at the domain.
fn seen_sealpost_at(directory: &Directory, address: &Address, url: &NodeUrl) -> Result<bool> {
    if directory.cached_node(url).is_some() {
        return Ok(true);
    }
    Ok(directory
        .contacts()
        .all()?
        .iter()
        .any(|c| c.address.domain() == address.domain() && c.record.is_some()))
}

/// "; did you mean a.test?", "; did you mean a.test or b.test?", or "".
fn did_you_mean(domains: &[String]) -> String {
    match domains {
        [] => String::new(),
        [one] => format!("; did you mean {one}?"),
        [init @ .., last] => format!("; did you mean {} or {last}?", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, Options};
    use crate::testutil::{DnsAnswer, dead, dns_stub, record, stub, vector_node};
    use sealpost_proto::codec::Codec;
    use sealpost_proto::identity::SecretIdentity;
    use std::path::Path;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn unreachable(failure: NetFailure) -> Error {
        Error::Unreachable {
            url: "https://legacy.test".into(),
            reason: "why".into(),
            failure,
        }
    }

    fn node_error(status: u16) -> Error {
        Error::Node {
            url: "https://legacy.test".into(),
            status,
            code: format!("http_{status}"),
            message: String::new(),
        }
    }

    #[test]
    fn lookup_failures_that_show_nobody_is_there_are_legacy_the_rest_ask_or_stand() {
        use Judgement::*;
        assert!(matches!(
            judge_lookup_failure(&unreachable(NetFailure::NoSuchHost)),
            Legacy(w) if w.contains("no such host")
        ));
        assert!(matches!(
            judge_lookup_failure(&unreachable(NetFailure::Refused)),
            Legacy(w) if w.contains("connection refused")
        ));
        for f in [NetFailure::TimedOut, NetFailure::Other] {
            assert!(matches!(judge_lookup_failure(&unreachable(f)), Unsure(_)));
        }
        for e in [
            Error::UnknownAddress {
                address: "carol@legacy.test".into(),
                node: "https://legacy.test".into(),
            },
            node_error(403),
            node_error(502),
            Error::protocol("https://legacy.test", "unexpected JSON"),
            Error::BadRecord {
                what: "mailbox record",
                address: "carol@legacy.test".into(),
                reason: "truncated".into(),
            },
        ] {
            assert_eq!(judge_lookup_failure(&e), AskDescriptor, "{e}");
        }
        for e in [
            Error::KeyChanged {
                address: "a".into(),
                old: "o".into(),
                new: "n".into(),
            },
            Error::NoProfileDir,
            Error::input("x", "y"),
        ] {
            assert_eq!(judge_lookup_failure(&e), Sealpost, "{e}");
        }
    }

    #[test]
    fn a_descriptor_means_sealpost_a_definite_other_answer_legacy_and_an_outage_unsure() {
        use Judgement::*;
        let url = NodeUrl::parse("https://legacy.test").unwrap();
        assert_eq!(judge_descriptor(&url, &Ok(vector_node().0)), Sealpost);
        for status in [400, 403, 404, 405, 410] {
            assert!(matches!(
                judge_descriptor(&url, &Err(node_error(status))),
                Legacy(w) if w.contains(&status.to_string())
            ));
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(
                judge_descriptor(&url, &Err(node_error(status))),
                Unsure(_)
            ));
        }
        assert!(matches!(
            judge_descriptor(&url, &Err(Error::protocol(&url, "descriptor: truncated"))),
            Legacy(_)
        ));
        assert!(matches!(
            judge_descriptor(&url, &Err(unreachable(NetFailure::Refused))),
            Legacy(_)
        ));
        assert!(matches!(
            judge_descriptor(&url, &Err(unreachable(NetFailure::TimedOut))),
            Unsure(_)
        ));
    }

    fn client(dir: &Path, resolve: &[(&str, &NodeUrl)]) -> Client {
        client_with_dns(dir, resolve, None)
    }

    fn client_with_dns(
        dir: &Path,
        resolve: &[(&str, &NodeUrl)],
        dns: Option<std::net::SocketAddr>,
    ) -> Client {
        drop(crate::profile::tests::sample(dir, "alice@alpha.test", None));
        let mut options = Options {
            resolve: resolve
                .iter()
                .map(|(d, u)| (d.to_string(), (*u).clone()))
                .collect(),
            direct_lookups: true,
            ..Options::default()
        };
        options.net.dns_server = dns;
        Client::open(dir, &options).unwrap()
    }

    /// A DNS server where legacy.test takes mail and every other name does not exist.
    async fn legacy_dns() -> std::net::SocketAddr {
        dns_stub(vec![(
            "legacy.test",
            DnsAnswer::Mx(vec![(10, "mail.legacy.test".into())]),
        )])
        .await
    }

    /// Looks `address` up at `url` as if `url` were its domain's node, then judges.
    async fn judge_at(c: &Client, address: &Address, url: &NodeUrl) -> Result<Route> {
        let err = c.net.get_record(url, address).await.err().unwrap();
        c.judge_failure(address, url, err).await
    }

    fn is_legacy(r: &Result<Route>) -> bool {
        matches!(r, Ok(Route::Legacy { .. }))
    }

    #[tokio::test]
    async fn a_web_server_without_descriptor_or_nothing_listening_is_legacy() {
        let tmp = tempfile::tempdir().unwrap();
        let c = client_with_dns(tmp.path(), &[], Some(legacy_dns().await));
        let carol = addr("carol@legacy.test");

        // A web server: 404 for everything.
        let (web, routes) = stub().await;
        let r = judge_at(&c, &carol, &web).await;
        assert!(
            matches!(&r, Ok(Route::Legacy { reason: LegacyReason::NoNode(w), .. }) if w.contains("404")),
            "{r:?}"
        );
        // One that answers 200 with a page.
        for path in [
            "/v1/records/carol@legacy.test",
            "/.well-known/sealpost/node",
        ] {
            routes
                .lock()
                .unwrap()
                .insert(path.into(), (200, b"<html>hello</html>".to_vec()));
        }
        assert!(is_legacy(&judge_at(&c, &carol, &web).await));

        // Nobody listens.
        let r = judge_at(&c, &carol, &dead()).await;
        assert!(
            matches!(&r, Ok(Route::Legacy { reason: LegacyReason::NoNode(w), .. }) if w.contains("refused")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn no_node_is_legacy_only_for_a_domain_that_takes_mail() {
        let tmp = tempfile::tempdir().unwrap();
        let dns = dns_stub(vec![
            (
                "legacy.test",
                DnsAnswer::Mx(vec![
                    (20, "b.legacy.test".into()),
                    (10, "a.legacy.test".into()),
                ]),
            ),
            ("web-only.test", DnsAnswer::Empty),
            ("null.test", DnsAnswer::Mx(vec![(0, ".".into())])),
            ("broken.test", DnsAnswer::ServFail),
        ])
        .await;
        let c = client_with_dns(tmp.path(), &[], Some(dns));
        assert_eq!(
            c.net.dns().mail_domain("legacy.test").await.unwrap(),
            MailDomain::Accepts(vec!["a.legacy.test.".into(), "b.legacy.test.".into()])
        );
        // Nothing listens at any of them: without DNS, each would be legacy.
        let gone = dead();
        assert!(is_legacy(
            &judge_at(&c, &addr("carol@legacy.test"), &gone).await
        ));

        // A typo of our own domain: an error that names it, never mail.
        let e = judge_at(&c, &addr("bob@alpha.tset"), &gone)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, Error::NoSuchDomain { .. }), "{e}");
        assert_eq!(e.exit_code(), 1);
        let s = e.to_string();
        assert!(
            s.contains("alpha.tset does not exist") && s.contains("did you mean alpha.test?"),
            "{s}"
        );
        // A name nothing resembles: no guess.
        let e = judge_at(&c, &addr("x@zzzzzz.example"), &gone)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&e, Error::NoSuchDomain { hint, .. } if hint.is_empty()),
            "{e}"
        );

        for (who, why) in [
            ("dan@web-only.test", "no MX record"),
            ("dan@null.test", "null MX"),
        ] {
            let e = judge_at(&c, &addr(who), &gone).await.err().unwrap();
            assert!(matches!(e, Error::NoMailDomain { .. }), "{who}: {e}");
            assert!(e.to_string().contains(why), "{e}");
            assert_eq!(e.exit_code(), 1);
        }
        // DNS that does not answer decides nothing: a temporary error.
        let e = judge_at(&c, &addr("dan@broken.test"), &gone)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, Error::DnsFailure { .. }), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn hints_read_naturally() {
        assert_eq!(did_you_mean(&[]), "");
        assert_eq!(did_you_mean(&["a.test".into()]), "; did you mean a.test?");
        assert_eq!(
            did_you_mean(&["a.test".into(), "b.test".into(), "c.test".into()]),
            "; did you mean a.test, b.test or c.test?"
        );
    }

    #[tokio::test]
    async fn a_node_that_does_not_know_the_address_stays_an_error_and_an_outage_is_no_guess() {
        let tmp = tempfile::tempdir().unwrap();
        let c = client(tmp.path(), &[]);
        let carol = addr("carol@legacy.test");
        let (node, routes) = stub().await;
        routes.lock().unwrap().insert(
            "/.well-known/sealpost/node".into(),
            (200, vector_node().0.signed.encode()),
        );
        let e = judge_at(&c, &carol, &node).await.err().unwrap();
        assert!(matches!(e, Error::UnknownAddress { .. }), "{e}");
        assert_eq!(e.exit_code(), 1);

        routes.lock().unwrap().insert(
            "/.well-known/sealpost/node".into(),
            (
                503,
                b"{\"error\":{\"code\":\"unavailable\",\"message\":\"x\"}}".to_vec(),
            ),
        );
        let e = judge_at(&c, &carol, &node).await.err().unwrap();
        assert!(matches!(e, Error::UndecidedDomain { .. }), "{e}");
        assert_eq!(e.exit_code(), 2);
        let s = e.to_string();
        assert!(
            s.contains("--legacy carol@legacy.test")
                && s.contains("sealpost legacy add legacy.test"),
            "{s}"
        );
    }

    #[tokio::test]
    async fn a_domain_seen_with_sealpost_is_never_taken_for_legacy() {
        let tmp = tempfile::tempdir().unwrap();
        let (beta, routes) = stub().await;
        let c = client(tmp.path(), &[("beta.test", &beta)]);
        // Bob at beta.test is a contact with a record...
        let bob = addr("bob@beta.test");
        let id = SecretIdentity::generate(&bob, None).unwrap();
        routes.lock().unwrap().insert(
            "/v1/records/bob@beta.test".into(),
            (200, record(&id, &bob, &[&beta], 1).encode()),
        );
        c.add_contact(&bob).await.unwrap();
        // ...so when beta.test's node is gone, Dave there is not sent legacy e-mail, and
        // neither is Bob.
        let gone = dead();
        for who in [addr("dave@beta.test"), bob] {
            let e = judge_at(&c, &who, &gone).await.err().unwrap();
            assert!(matches!(e, Error::Unreachable { .. }), "{e}");
        }
        // Nor is anyone at a domain whose node descriptor we verified.
        let (node, _) = vector_node();
        c.directory.remember_node(&node);
        let e = c
            .judge_failure(
                &addr("erin@beta.test"),
                &node.descriptor.url,
                Error::Unreachable {
                    url: node.descriptor.url.to_string(),
                    reason: "refused".into(),
                    failure: NetFailure::Refused,
                },
            )
            .await
            .err()
            .unwrap();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    }

    #[tokio::test]
    async fn forced_and_listed_addresses_are_legacy_without_a_lookup_but_a_resolve_entry_wins() {
        let tmp = tempfile::tempdir().unwrap();
        // beta.test's node: a web server without descriptor (it would look legacy).
        let (beta, _) = stub().await;
        let mut c = client(tmp.path(), &[("beta.test", &beta)]);
        let bob = addr("bob@beta.test");
        let carol = addr("carol@legacy.test");

        assert!(matches!(
            c.route(&bob, Some(LegacyReason::Forced)).await,
            Ok(Route::Legacy {
                reason: LegacyReason::Forced,
                ..
            })
        ));
        let e = c.route(&bob, None).await.err().unwrap();
        assert!(
            matches!(e, Error::UnknownAddress { .. }),
            "a resolve entry is a Sealpost node: {e}"
        );

        assert_eq!(
            c.add_legacy_domain(" Legacy.Test ").unwrap(),
            ("legacy.test".to_string(), true)
        );
        assert!(!c.add_legacy_domain("legacy.test").unwrap().1);
        assert!(matches!(
            c.route(&carol, None).await,
            Ok(Route::Legacy {
                reason: LegacyReason::Listed(d),
                ..
            }) if d == "legacy.test"
        ));
        // Listed and in this run's resolve table: the table wins.
        c.profile.config.legacy.insert("beta.test".into());
        assert!(c.route(&bob, None).await.is_err());

        // The persistent table refuses a legacy entry for the same domain.
        c.set_resolve("gamma.test".into(), beta.clone()).unwrap();
        assert_eq!(
            c.add_legacy_domain("gamma.test").err().unwrap().exit_code(),
            1
        );
        assert!(c.remove_legacy_domain("legacy.test").unwrap());
        assert!(!c.remove_legacy_domain("legacy.test").unwrap());
        assert_eq!(
            c.add_legacy_domain("not a domain")
                .err()
                .unwrap()
                .exit_code(),
            1
        );
    }
}
