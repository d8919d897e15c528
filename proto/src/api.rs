//! Paths of the node's HTTP API (`spec/api.md`), relative to a node URL: join them with
//! [`NodeUrl::join`](crate::NodeUrl::join). The node routes on them, the client and the
//! test harness call them, so that one constant names each endpoint.
//!
//! What each one carries: [`DESCRIPTOR`] a
//! [`SignedDescriptor`](crate::descriptor::SignedDescriptor); [`record`] a
//! [`SignedRecord`](crate::record::SignedRecord); [`SUBMIT`] a
//! [`HopWrapper`](crate::envelope::HopWrapper); [`DELIVER`] a hop payload (an
//! [`Envelope`](crate::envelope::Envelope) sealed to the node); [`envelope`] an
//! [`Envelope`](crate::envelope::Envelope); the rest JSON (`spec/api.md`).

use std::fmt::Display;

/// `GET`: the node's signed descriptor.
pub const DESCRIPTOR: &str = "/.well-known/sealpost/node";
/// `GET`: `ok` while the node serves.
pub const HEALTH: &str = "/healthz";
/// `GET`: Prometheus text exposition.
pub const METRICS: &str = "/metrics";
/// `POST`: register a certificate, get a mailbox.
pub const ACCOUNTS: &str = "/v1/accounts";
/// `PUT`/`GET` `{RECORDS}/{address}`: mailbox records ([`record`]).
pub const RECORDS: &str = "/v1/records";
/// `POST`: ask for a sign-in challenge.
pub const CHALLENGE: &str = "/v1/auth/challenge";
/// `POST`: answer a challenge, get a bearer token.
pub const TOKEN: &str = "/v1/auth/token";
/// `POST`: hand the node a hop wrapper to forward.
pub const SUBMIT: &str = "/v1/submit";
/// `POST`: a peer node delivers a hop payload, signed per RFC 9421 over this path (after
/// the destination URL's path prefix).
pub const DELIVER: &str = "/v1/deliver";
/// `POST`: another home of a mailbox forwards an encoded
/// [`Envelope`](crate::envelope::Envelope) for it, signed like [`DELIVER`] over this path.
pub const FORWARD: &str = "/v1/forward";
/// `GET {MAILBOX}/{mailbox}` lists, `GET`/`DELETE {MAILBOX}/{mailbox}/{seq}` fetches and
/// acknowledges ([`mailbox`], [`envelope`]); `POST` to [`mailbox_fetch`] and
/// [`mailbox_ack`] does either for up to [`MAX_BATCH_SEQS`](crate::limits::MAX_BATCH_SEQS)
/// sequence numbers at once.
pub const MAILBOX: &str = "/v1/mailbox";
/// `POST`: the node's Oblivious HTTP gateway (RFC 9458): an encapsulated record or
/// descriptor lookup in, the encapsulated answer out ([`crate::oblivious`]).
pub const OHTTP_GATEWAY: &str = "/v1/ohttp";
/// `POST`: a device asks its home to carry an encapsulated lookup to the gateway of the
/// node named in [`TARGET_HEADER`].
pub const RELAY_OHTTP: &str = "/v1/relay/ohttp";
/// `GET`: a device asks its home for the signed descriptor of the node named in
/// [`TARGET_HEADER`] (public; the device verifies it).
pub const RELAY_DESCRIPTOR: &str = "/v1/relay/descriptor";
/// The header naming the node (its URL) a relayed request is for.
pub const TARGET_HEADER: &str = "sealpost-target";
/// The last segment of [`mailbox_fetch`].
pub const FETCH_STEP: &str = "fetch";
/// The last segment of [`mailbox_ack`].
pub const ACK_STEP: &str = "ack";

/// `GET` lists the account's devices, `POST` registers one, `DELETE {DEVICES}/{id}` removes
/// one ([`device`]).
pub const DEVICES: &str = "/v1/devices";
/// `POST` opens a link drop; `{LINKS}/{nameplate}` and its steps ([`link`], [`link_step`]).
pub const LINKS: &str = "/v1/links";
/// The header with which a new device collects a link payload (the secret its join got).
pub const LINK_SECRET_HEADER: &str = "x-sealpost-link-secret";

/// `{DEVICES}/{id}`.
pub fn device(id: impl Display) -> String {
    format!("{DEVICES}/{id}")
}

/// `{LINKS}/{nameplate}`: `GET` the first message, `DELETE` abort.
pub fn link(nameplate: impl Display) -> String {
    format!("{LINKS}/{nameplate}")
}

/// `{LINKS}/{nameplate}/{step}`: `join`, `reply`, `payload`.
pub fn link_step(nameplate: impl Display, step: &str) -> String {
    format!("{LINKS}/{nameplate}/{step}")
}

/// `{RECORDS}/{address}`.
pub fn record(address: impl Display) -> String {
    format!("{RECORDS}/{address}")
}

/// `{MAILBOX}/{mailbox}`.
pub fn mailbox(mailbox: impl Display) -> String {
    format!("{MAILBOX}/{mailbox}")
}

/// `{MAILBOX}/{mailbox}/fetch`: `POST` a JSON `{"seqs": [...]}`, get an
/// [`EnvelopeBatch`](crate::batch::EnvelopeBatch).
pub fn mailbox_fetch(mailbox: impl Display) -> String {
    format!("{MAILBOX}/{mailbox}/{FETCH_STEP}")
}

/// `{MAILBOX}/{mailbox}/ack`: `POST` a JSON `{"seqs": [...]}` to acknowledge them at once.
pub fn mailbox_ack(mailbox: impl Display) -> String {
    format!("{MAILBOX}/{mailbox}/{ACK_STEP}")
}

/// `{MAILBOX}/{mailbox}/{seq}`.
pub fn envelope(mailbox: impl Display, seq: u64) -> String {
    format!("{MAILBOX}/{mailbox}/{seq}")
}

/// The path segments after `prefix` and a `/` (`["alice@a.test"]` for
/// `/v1/records/alice@a.test` under [`RECORDS`]); `None` when `path` is not below `prefix`.
pub fn segments_under<'a>(path: &'a str, prefix: &str) -> Option<Vec<&'a str>> {
    let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
    Some(rest.split('/').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameterised_paths_and_their_segments() {
        assert_eq!(record("a@b.test"), "/v1/records/a@b.test");
        assert_eq!(envelope("ab", 7), "/v1/mailbox/ab/7");
        assert_eq!(mailbox_fetch("ab"), "/v1/mailbox/ab/fetch");
        assert_eq!(mailbox_ack("ab"), "/v1/mailbox/ab/ack");
        assert_eq!(segments_under(&mailbox("ab"), MAILBOX), Some(vec!["ab"]));
        assert_eq!(
            segments_under(&envelope("ab", 7), MAILBOX),
            Some(vec!["ab", "7"])
        );
        assert_eq!(segments_under("/v1/mailbox", MAILBOX), None);
        assert_eq!(segments_under("/v1/mailboxes/x", MAILBOX), None);
        assert_eq!(segments_under("/v1/records/", RECORDS), Some(vec![""]));
    }
}
