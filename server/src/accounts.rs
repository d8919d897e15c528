//! Registration: a certificate gets a mailbox; registering it again answers the same one.
//!
//! An address belongs to the first account whose certificate names it. A certificate that
//! names an address owned by another account is refused ([`RegisterError::AddressTaken`])
//! unless the owner's current key endorsed it (an OpenPGP certification of the new User ID
//! by the old primary key, [`sealpost_proto::record::endorse`]): that is a key rotation, and
//! the owner's account takes the new certificate and keeps its mailbox. The store decides
//! inside the write, so two racing registrations for one address cannot both win. A
//! rotation ends the account's sessions: tokens and challenges issued before it are refused.

use sealpost_proto::identity::{cert_addresses, cert_from_bytes, cert_to_bytes};
use sealpost_proto::openpgp::Cert;
use sealpost_proto::record::endorsed_by;
use sealpost_proto::{Address, MailboxId};

use crate::basics::clock::now_secs;
use crate::config::RegistrationPolicy;
use crate::node::Node;
use crate::store::{NewAccount, RegisterOutcome, Rotation, StoreError, invite_hash};

/// Most addresses one certificate may claim.
pub const MAX_CLAIMED_ADDRESSES: usize = 8;

/// A registration that holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// A new account.
    Created(MailboxId),
    /// The certificate's account existed; nothing changed.
    Existing(MailboxId),
    /// The account's key was replaced (rotation); its mailbox stays.
    Rotated(MailboxId),
}

/// Why a certificate was not registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Not an OpenPGP certificate.
    #[error("certificate: {0}")]
    BadCertificate(String),
    #[error("certificate names {named} addresses; at most {MAX_CLAIMED_ADDRESSES}")]
    TooManyAddresses { named: usize },
    /// Another account owns this address and did not endorse the new key.
    #[error("{address} belongs to another account on this node")]
    AddressTaken { address: String },
    /// `registration.policy = "closed"`.
    #[error("registration is closed on this node")]
    Closed,
    /// `registration.policy = "invite"` and no unused invite code came with it.
    #[error("invite code is unknown or used")]
    BadInvite,
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// The addresses `cert` names, as claims (lower-case, valid addresses only), bounded.
fn claimed_addresses(cert: &Cert) -> Result<Vec<String>, RegisterError> {
    let mut out: Vec<String> = Vec::new();
    for a in cert_addresses(cert) {
        if let Ok(a) = Address::parse(&a)
            && !out.iter().any(|o| o == a.as_str())
        {
            out.push(a.as_str().to_string());
        }
    }
    if out.len() > MAX_CLAIMED_ADDRESSES {
        return Err(RegisterError::TooManyAddresses { named: out.len() });
    }
    Ok(out)
}

impl Node {
    /// Registers `cert` (armored or binary), with an invite code when the policy asks one.
    pub async fn register(
        &self,
        cert: &[u8],
        invite: Option<String>,
    ) -> Result<Registered, RegisterError> {
        let cert =
            cert_from_bytes(cert).map_err(|e| RegisterError::BadCertificate(e.to_string()))?;
        let fingerprint = cert.fingerprint().as_bytes().to_vec();
        // An existing account answers whatever the policy: registering is idempotent.
        let outcome = match self.store.mailbox_of(fingerprint.clone()).await? {
            Some(m) => RegisterOutcome::Existing(m),
            None => {
                let addresses = claimed_addresses(&cert)?;
                let rotation = self.rotation_of(&cert, &addresses).await?;
                // A rotation is no new account: the policy does not apply.
                let invite = match (&rotation, self.config.registration.policy) {
                    (Some(_), _) | (None, RegistrationPolicy::Open) => None,
                    (None, RegistrationPolicy::Closed) => return Err(RegisterError::Closed),
                    (None, RegistrationPolicy::Invite) => match invite {
                        // A code of the config's list, or one made with `admin invites
                        // create` (whose uses, expiry and revocation the store checks in
                        // the registration's write).
                        Some(code)
                            if self.is_invite(&code)
                                || self.store.invite(invite_hash(&code)).await?.is_some() =>
                        {
                            Some(code)
                        }
                        _ => return Err(RegisterError::BadInvite),
                    },
                };
                let account = NewAccount {
                    fingerprint,
                    cert: cert_to_bytes(&cert),
                    created: now_secs(),
                    invite,
                    addresses,
                    rotation,
                };
                self.store.register(account).await?
            }
        };
        match outcome {
            RegisterOutcome::Created(m) => {
                tracing::info!("account registered");
                Ok(Registered::Created(m))
            }
            RegisterOutcome::Rotated(m) => {
                self.forget_account(m);
                // Sessions signed in with the old key end with it.
                self.sessions.revoke(m);
                tracing::info!("account key rotated");
                Ok(Registered::Rotated(m))
            }
            RegisterOutcome::Existing(m) => Ok(Registered::Existing(m)),
            RegisterOutcome::InviteUsed => Err(RegisterError::BadInvite),
            RegisterOutcome::AddressTaken { address } => {
                Err(RegisterError::AddressTaken { address })
            }
        }
    }

    /// Whether registering `cert` for `addresses` is a rotation of an existing account:
    /// every claimed address must belong to one account whose current key endorsed `cert`.
    async fn rotation_of(
        &self,
        cert: &Cert,
        addresses: &[String],
    ) -> Result<Option<Rotation>, RegisterError> {
        let mut rotation: Option<Rotation> = None;
        for address in addresses {
            let Some(owner) = self.store.owner_of(address.clone()).await? else {
                continue;
            };
            let account = self.account_fresh(owner).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("claim of {address} names no account"))
            })?;
            let same_owner = rotation.as_ref().is_none_or(|r| r.mailbox == owner);
            if !same_owner || !endorsed_by(cert, &account.cert, address) {
                return Err(RegisterError::AddressTaken {
                    address: address.clone(),
                });
            }
            rotation = Some(Rotation {
                mailbox: owner,
                old_fingerprint: account.fingerprint.as_bytes().to_vec(),
            });
        }
        Ok(rotation)
    }
}
