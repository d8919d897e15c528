//! The gateway: the Sealpost account of an SMTP gateway (`gateway@DOMAIN`) that the copy of
//! a letter for its legacy e-mail recipients is sealed to (naming them in
//! `X-Sealpost-Legacy-To`). A gateway takes letters only from users of its own node (it is
//! no open relay), so it must live on one of the user's homes. It is the one set with
//! `gateway set`, else `gateway@` the user's own domain when that domain's node publishes
//! such a record.

use sealpost_proto::Address;

use crate::client::Client;
use crate::directory::Recipient;
use crate::error::{Error, ErrorKind, Result};

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

impl Client {
    /// The gateway set with `gateway set`, else the default `gateway@` our own domain; and
    /// whether it was set.
    pub fn gateway_address(&self) -> Result<(Address, bool)> {
        match &self.profile.config.gateway {
            Some(a) => Ok((a.clone(), true)),
            None => Ok((
                Address::parse(&format!(
                    "{DEFAULT_GATEWAY_LOCAL_PART}@{}",
                    self.profile.address().domain()
                ))?,
                false,
            )),
        }
    }

    /// Looks the gateway up. A gateway that was set must work; the default is a guess, so
    /// its absence (or its node not answering) is [`GatewayLookup::Missing`], while a
    /// changed key or a bad record are errors all the same.
    pub async fn gateway(&self) -> Result<GatewayLookup> {
        let (address, set) = self.gateway_address()?;
        match self.check_gateway(&address).await {
            Ok(r) => Ok(GatewayLookup::Found(Box::new(r))),
            Err(e) if set || matches!(e.kind(), ErrorKind::Crypto | ErrorKind::Profile) => Err(e),
            Err(e) => Ok(GatewayLookup::Missing(format!(
                "the default, {address}, does not serve: {e}"
            ))),
        }
    }

    /// Looks `address` up as a gateway: trust on first use like any contact, and one of its
    /// homes must be one of ours (the same node key).
    async fn check_gateway(&self, address: &Address) -> Result<Recipient> {
        if address == self.profile.address() {
            return Err(Error::input("gateway", "that is your own address"));
        }
        let r = self.resolve_recipient(address).await?;
        let ours: Vec<[u8; 32]> = self
            .profile
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

    /// `gateway set`: looks `address` up, pins it and makes it the gateway.
    pub async fn set_gateway(&mut self, address: &Address) -> Result<Recipient> {
        let r = self.check_gateway(address).await?;
        self.commit_pin(&r)?;
        self.profile.config.gateway = Some(address.clone());
        self.profile.save_config()?;
        Ok(r)
    }

    /// `gateway clear`: back to the default. Whether one was set.
    pub fn clear_gateway(&mut self) -> Result<bool> {
        let had = self.profile.config.gateway.take().is_some();
        if had {
            self.profile.save_config()?;
        }
        Ok(had)
    }
}
