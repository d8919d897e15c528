//! The gateway: the Sealpost account of an SMTP gateway (`gateway@DOMAIN`) that the copy of
//! a letter for its legacy e-mail recipients is sealed to (naming them in
//! `X-Sealpost-Legacy-To`). A gateway takes letters only from users of its own node (it is
//! no open relay), so it must live on one of the user's homes. It is the one set with
//! `gateway set`, else `gateway@` the user's own domain when that domain's node publishes
//! such a record. The functions here look it up in a [`Directory`] for the user of a
//! [`Profile`]; `gateway set` and `gateway clear` are [`Profile`] settings.

use sealpost_proto::Address;

use crate::directory::{Directory, Recipient};
use crate::error::{Error, ErrorKind, Result};
use crate::profile::Profile;

/// The local part of the default gateway's address.
pub const DEFAULT_GATEWAY_LOCAL_PART: &str = "gateway";

/// The gateway that legacy e-mail goes through, or why there is none.
#[derive(Debug)]
pub enum GatewayLookup {
    /// Looked up, pinned (not yet saved) and on one of our homes.
    Found(Box<Recipient>),
    /// None is set and the default does not serve; why.
    Missing(String),
}

/// The gateway set with `gateway set`, else the default `gateway@` our own domain; and
/// whether it was set.
pub fn gateway_address(me: &Profile) -> Result<(Address, bool)> {
    match &me.config.gateway {
        Some(a) => Ok((a.clone(), true)),
        None => Ok((default_gateway(me.address())?, false)),
    }
}

/// `gateway@` the domain of `address`.
pub fn default_gateway(address: &Address) -> Result<Address> {
    Ok(Address::parse(&format!(
        "{DEFAULT_GATEWAY_LOCAL_PART}@{}",
        address.domain()
    ))?)
}

/// Looks the gateway up. A gateway that was set must work; the default is a guess, so
/// its absence (or its node not answering) is [`GatewayLookup::Missing`], while a
/// changed key or a bad record are errors all the same.
pub async fn lookup(directory: &Directory, me: &Profile) -> Result<GatewayLookup> {
    let (address, set) = gateway_address(me)?;
    match check(directory, me, &address).await {
        Ok(r) => Ok(GatewayLookup::Found(Box::new(r))),
        Err(e) if set || matches!(e.kind(), ErrorKind::Crypto | ErrorKind::Profile) => Err(e),
        Err(e) => Ok(GatewayLookup::Missing(format!(
            "the default, {address}, does not serve: {e}"
        ))),
    }
}

/// Looks `address` up as a gateway: trust on first use like any contact (nothing saved),
/// and one of its homes must be one of ours (the same node key).
pub async fn check(directory: &Directory, me: &Profile, address: &Address) -> Result<Recipient> {
    if address == me.address() {
        return Err(Error::input("gateway", "that is your own address"));
    }
    let r = directory.resolve_recipient(me, address).await?;
    let ours: Vec<[u8; 32]> = me
        .config
        .homes
        .iter()
        .filter_map(|h| h.node_key_bytes().ok())
        .collect();
    if !r.record.homes.iter().any(|h| ours.contains(&h.node_key)) {
        return Err(Error::GatewayElsewhere {
            gateway: address.to_string(),
            nodes: r
                .record
                .homes
                .iter()
                .map(|h| h.url.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, Options};
    use crate::testutil::{Routes, dead, record_with_homes, stub};
    use sealpost_proto::codec::Codec;
    use sealpost_proto::identity::SecretIdentity;
    use sealpost_proto::record::Home;
    use sealpost_proto::{MailboxId, NodeUrl};
    use std::path::Path;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn client(dir: &Path, resolve: &[(&str, &NodeUrl)]) -> Client {
        if !dir.join(crate::profile::CONFIG_FILE).exists() {
            drop(crate::profile::tests::sample(dir, "alice@alpha.test", None));
        }
        let options = Options {
            resolve: resolve
                .iter()
                .map(|(d, u)| (d.to_string(), (*u).clone()))
                .collect(),
            direct_lookups: true,
            ..Options::default()
        };
        Client::open(dir, &options).unwrap()
    }

    /// Publishes a record of `address` on the stub, homed on the node with `node_key`
    /// (`[0x11; 32]` is the sample profile's own home).
    fn publish(routes: &Routes, address: &Address, node_key: [u8; 32]) -> SecretIdentity {
        let id = SecretIdentity::generate(address, None).unwrap();
        let home = Home {
            url: NodeUrl::parse("http://127.0.0.1:9").unwrap(),
            node_key,
            mailbox: MailboxId([6; 16]),
        };
        routes.lock().unwrap().insert(
            format!("/v1/records/{address}"),
            (200, record_with_homes(&id, address, vec![home], 1).encode()),
        );
        id
    }

    #[tokio::test]
    async fn set_checks_that_it_lives_on_one_of_our_homes_pins_and_persists() {
        let tmp = tempfile::tempdir().unwrap();
        let (gw_node, routes) = stub().await;
        let mut c = client(tmp.path(), &[("gw.test", &gw_node)]);
        let gw = addr("gateway@gw.test");
        let elsewhere = addr("relay@gw.test");
        let id = publish(&routes, &gw, [0x11; 32]);
        publish(&routes, &elsewhere, [1; 32]);

        let e = c.set_gateway(&elsewhere).await.err().unwrap();
        assert!(matches!(e, Error::GatewayElsewhere { .. }), "{e}");
        assert_eq!(e.exit_code(), 1);
        assert!(c.contacts().get(&elsewhere).unwrap().is_none());
        let e = c
            .set_gateway(&addr("alice@alpha.test"))
            .await
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 1, "{e}");
        assert_eq!(c.profile.config.gateway, None);

        let r = c.set_gateway(&gw).await.unwrap();
        assert_eq!(r.cert.fingerprint(), id.fingerprint());
        assert_eq!(
            c.contacts().get(&gw).unwrap().unwrap().fingerprint,
            id.fingerprint().to_hex(),
            "pinned"
        );
        drop(c);
        let mut c = client(tmp.path(), &[("gw.test", &gw_node)]);
        assert_eq!(c.gateway_address().unwrap(), (gw.clone(), true));
        assert!(matches!(c.gateway().await.unwrap(), GatewayLookup::Found(r) if r.address == gw));

        assert!(c.clear_gateway().unwrap());
        assert!(!c.clear_gateway().unwrap());
        drop(c);
        let c = client(tmp.path(), &[("gw.test", &gw_node)]);
        assert_eq!(
            c.gateway_address().unwrap(),
            (addr("gateway@alpha.test"), false)
        );
    }

    #[tokio::test]
    async fn the_default_is_a_guess_but_its_changed_key_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        // alpha.test's node publishes no gateway, or does not answer: none.
        let (alpha, routes) = stub().await;
        let c = client(tmp.path(), &[("alpha.test", &alpha)]);
        let GatewayLookup::Missing(why) = c.gateway().await.unwrap() else {
            panic!("no default gateway expected");
        };
        assert!(why.contains("gateway@alpha.test"), "{why}");
        drop(c);
        let c = client(tmp.path(), &[("alpha.test", &dead())]);
        assert!(matches!(
            c.gateway().await.unwrap(),
            GatewayLookup::Missing(_)
        ));
        drop(c);

        // It publishes one on our home: that is the gateway.
        let c = client(tmp.path(), &[("alpha.test", &alpha)]);
        let gw = addr("gateway@alpha.test");
        publish(&routes, &gw, [0x11; 32]);
        assert!(matches!(
            c.gateway().await.unwrap(),
            GatewayLookup::Found(_)
        ));
        c.add_contact(&gw).await.unwrap();
        // Its key changes: refused like any contact's, not quietly skipped.
        publish(&routes, &gw, [0x11; 32]);
        let e = c.gateway().await.err().unwrap();
        assert!(matches!(e, Error::KeyChanged { .. }), "{e}");
        assert_eq!(e.exit_code(), 3);
    }
}
