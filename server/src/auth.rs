//! Sign-in of a mailbox's owner: the node hands out a challenge for the mailbox, the owner
//! signs it with the account's key ([`sealpost_proto::auth::challenge_statement`]) and gets
//! a bearer token. `sessions` holds the challenges and tokens; a key rotation revokes them.

use sealpost_proto::auth::{NONCE_BYTES, challenge_statement};
use sealpost_proto::device::{device_statement, verify};
use sealpost_proto::record::verify_detached;
use sealpost_proto::{DeviceId, MailboxId};

use crate::basics::clock::now_secs;
use crate::devices::{DeviceError, check_session_device};
use crate::node::Node;
use crate::sessions::TokenError;
use crate::store::StoreError;

/// How long a client waits when the session tables are full.
const FULL_RETRY_SECS: u64 = 60;

/// Why a challenge or a token was not given.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A challenge for a mailbox that has no account here.
    #[error("no such mailbox on this node")]
    UnknownMailbox,
    /// Too many challenges or tokens outstanding; try again after `retry_after` seconds.
    #[error("too many sign-ins under way; retry after {retry_after} s")]
    Busy { retry_after: u64 },
    #[error("unknown, expired or already used challenge")]
    BadChallenge,
    #[error("no such account")]
    NoAccount,
    #[error("challenge signature does not verify with the account's key")]
    BadSignature,
    /// The key rotated between the challenge and its answer.
    #[error("the account's key changed during sign-in; ask for a new challenge")]
    KeyChanged,
    /// The device is not the account's, or the account key signed in once devices exist.
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("challenge signature does not verify with the device key")]
    BadDeviceSignature,
    /// The node's operator suspended the account (`sealpost-node admin users suspend`).
    #[error("this account is suspended by the node's operator")]
    Suspended,
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl Node {
    /// A fresh challenge for `mailbox` and when it expires (Unix seconds).
    pub async fn challenge(
        &self,
        mailbox: MailboxId,
    ) -> Result<([u8; NONCE_BYTES], u64), AuthError> {
        if self.account(mailbox).await?.is_none() {
            return Err(AuthError::UnknownMailbox);
        }
        self.sessions
            .challenge_any(mailbox, now_secs())
            .await?
            .ok_or(AuthError::Busy {
                retry_after: FULL_RETRY_SECS,
            })
    }

    /// A bearer token for `mailbox` and when it expires, for a challenge `nonce` signed
    /// (`signature`, detached) by the account's current key, or with `device` by that
    /// device's key (`spec/api.md` §Devices). The account key signs in only while the
    /// account has no registered device. The challenge is spent either way.
    pub async fn sign_in(
        &self,
        mailbox: MailboxId,
        nonce: &[u8; NONCE_BYTES],
        signature: &[u8],
        device: Option<DeviceId>,
    ) -> Result<([u8; 32], u64), AuthError> {
        let now = now_secs();
        self.sessions
            .take_nonce_any(nonce, mailbox, now)
            .await?
            .map_err(|_| AuthError::BadChallenge)?;
        // Read before the key is: a rotation committing after this point revokes the token.
        let epoch = self.sessions.epoch_any(mailbox).await?;
        // After the epoch: a suspension committing later revokes the token it would get.
        if self
            .store
            .account_settings(mailbox)
            .await?
            .is_some_and(|s| s.suspended)
        {
            return Err(AuthError::Suspended);
        }
        let account = (self.account_fresh(mailbox).await?).ok_or(AuthError::NoAccount)?;
        let devices = self.store.devices(mailbox).await?;
        let device = match device {
            None => {
                let statement = challenge_statement(&self.url, &mailbox, nonce);
                verify_detached(&statement, signature, &account.cert)
                    .map_err(|_| AuthError::BadSignature)?;
                DeviceId::ACCOUNT
            }
            Some(id) => {
                let d = devices
                    .iter()
                    .find(|d| d.id == id)
                    .ok_or(DeviceError::UnknownDevice)?;
                let statement = device_statement(&self.url, &mailbox, &id, nonce);
                verify(&d.key, &statement, signature).map_err(|_| AuthError::BadDeviceSignature)?;
                id
            }
        };
        let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
        check_session_device(&ids, device)?;
        self.sessions
            .issue_device_token_any(mailbox, device, epoch, now)
            .await?
            .map_err(|e| match e {
                TokenError::Full => AuthError::Busy {
                    retry_after: FULL_RETRY_SECS,
                },
                TokenError::Revoked => AuthError::KeyChanged,
            })
    }
}
