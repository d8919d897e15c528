//! Mailbox authentication: the node hands out a single-use nonce; the user signs a
//! statement binding node, mailbox and nonce with their OpenPGP key; the node checks it
//! against the account's certificate and answers with a short-lived bearer token.

use crate::types::{MailboxId, NodeUrl};

/// Length of a challenge nonce and of a bearer token, in bytes.
pub const NONCE_BYTES: usize = 32;

/// The exact bytes a user signs to answer a challenge. Binding the node URL stops a
/// signature made for one node from being replayed at another.
pub fn challenge_statement(
    node: &NodeUrl,
    mailbox: &MailboxId,
    nonce: &[u8; NONCE_BYTES],
) -> Vec<u8> {
    format!(
        "sealpost-auth-v1\nnode={}\nmailbox={}\nnonce={}\n",
        node,
        mailbox,
        hex::encode(nonce)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_binds_every_input() {
        let n1 = NodeUrl::parse("http://a.test").unwrap();
        let n2 = NodeUrl::parse("http://b.test").unwrap();
        let m = MailboxId([1; 16]);
        let s = challenge_statement(&n1, &m, &[7; 32]);
        assert_eq!(
            String::from_utf8(s.clone()).unwrap(),
            format!(
                "sealpost-auth-v1\nnode=http://a.test\nmailbox={}\nnonce={}\n",
                "01".repeat(16),
                "07".repeat(32)
            )
        );
        assert_ne!(s, challenge_statement(&n2, &m, &[7; 32]));
        assert_ne!(s, challenge_statement(&n1, &MailboxId([2; 16]), &[7; 32]));
        assert_ne!(s, challenge_statement(&n1, &m, &[8; 32]));
    }
}
