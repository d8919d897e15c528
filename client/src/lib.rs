//! The Sealpost client library: a profile (keys, contacts, messages, outbox) and the
//! operations on it (init, contacts, send, fetch, read), speaking the node API of
//! `spec/api.md`. The `sealpost` CLI is a thin layer on top (the default feature `cli`, with
//! clap, indicatif and anyhow, none of which the library uses); a GUI or an IMAP/SMTP bridge
//! can use the same [`Client`] with `default-features = false`.
//!
//! [`Client`] is a composition of parts, each a type owning its state ([`client`] has the
//! table): the profile ([`profile::Profile`]: secret key, config, record), the node API
//! ([`api::Net`]), the directory ([`directory::Directory`]: resolve table, contacts and
//! their pins, node cache), the mailbox ([`mailbox::Mailbox`]: the letter store and
//! fetching) and the outbox ([`outbox::Outbox`]: letters waiting for lookups
//! ([`letters`]), hops waiting, the sent log, flushing).
//! Operations that span parts are functions over them: [`account`] (init, publish,
//! rotate-key, home nodes), [`route`] (Sealpost or legacy e-mail), [`gateway`] (where legacy
//! e-mail leaves Sealpost), [`send`] (plan, seal, queue).
//!
//! [`backup`] makes and restores passphrase-encrypted backups of a profile.
//!
//! Beneath them: [`contacts`] (TOFU pins), [`store`] (stored letters), [`sent`] (queue ids
//! of accepted hops, to explain bounces), [`resolve`] (domain → node), [`dns`] (does a
//! domain take e-mail; a named DNS server), [`verify`] (who sent a letter), [`compose`]
//! (drafts, attachments), [`progress`] (transfer reporting), [`fsutil`] (durable files).

pub mod account;
pub mod api;
pub mod backup;
pub mod client;
pub mod compose;
pub mod contacts;
pub mod devices;
pub mod directory;
pub mod dns;
pub mod error;
pub mod fsutil;
pub mod gateway;
pub mod letters;
pub mod mailbox;
pub mod ohttp;
pub mod outbox;
pub mod profile;
pub mod progress;
pub mod readstate;
pub mod refresh;
pub mod resolve;
pub mod route;
pub mod send;
pub mod sent;
pub mod store;
pub mod verify;

#[cfg(test)]
pub(crate) mod testutil;

pub use client::{Client, InitOptions, Options};
pub use error::{Error, ErrorKind, Result};

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (record sequence numbers).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs futures concurrently on the current task and returns their outputs in order.
/// (Nodes are asked in parallel without spawning, so the futures may borrow.)
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("invariant: every future completed before poll_fn returned"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn join_all_runs_concurrently_and_keeps_order() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        // The first future waits for the second: only concurrent polling finishes both.
        let first =
            Box::pin(async move { rx.await.unwrap() + 1 }) as Pin<Box<dyn Future<Output = u32>>>;
        let second = Box::pin(async move {
            tx.send(41).unwrap();
            7u32
        }) as Pin<Box<dyn Future<Output = u32>>>;
        assert_eq!(join_all(vec![first, second]).await, vec![42, 7]);
    }
}
