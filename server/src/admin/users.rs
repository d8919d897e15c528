//! `admin users …` and `admin quota …`: accounts named by an address they own or by their
//! mailbox id (32 hex digits). Suspending ends the account's sessions and refuses new
//! ones (mail to it is still accepted: held); deleting removes the account and all its
//! data in one store write.

use std::fmt::Write as _;

use sealpost_proto::MailboxId;

use super::proto::{MAX_LISTED, Reply};
use crate::node::Node;
use crate::store::{AccountSettings, AccountUsage};

/// Longest address or id accepted as a user name.
const MAX_USER: usize = 320;

/// The account `user` names, or the reply saying why there is none.
async fn resolve(node: &Node, user: &str) -> Result<AccountUsage, Reply> {
    let user = user.trim();
    if user.is_empty() || user.len() > MAX_USER {
        return Err(Reply::err(format!(
            "{user:?} is neither an address nor a mailbox id"
        )));
    }
    let mailbox = if user.contains('@') {
        match node.store.owner_of(user.to_lowercase()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(Reply::err(format!("no account owns {user}"))),
            Err(e) => return Err(Reply::err(format!("reading the accounts: {e}"))),
        }
    } else {
        MailboxId::from_hex(user).map_err(|_| {
            Reply::err(format!(
                "{user:?} is neither an address nor a mailbox id (32 hex digits)"
            ))
        })?
    };
    match node.store.account_usage(mailbox).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(Reply::err(format!(
            "no account has mailbox {}",
            mailbox.to_hex()
        ))),
        Err(e) => Err(Reply::err(format!("reading the accounts: {e}"))),
    }
}

fn quota_text(node: &Node, s: &AccountSettings) -> String {
    match s.quota_bytes {
        Some(b) => format!("{b} bytes (own)"),
        None => format!("{} bytes (default)", node.quota.max_bytes),
    }
}

fn line(node: &Node, u: &AccountUsage) -> String {
    format!(
        "{} created {} {} bytes in {} letter(s), quota {}{} {}\n",
        u.mailbox.to_hex(),
        u.created,
        u.bytes,
        u.envelopes,
        quota_text(node, &u.settings),
        if u.settings.suspended {
            " SUSPENDED"
        } else {
            ""
        },
        if u.addresses.is_empty() {
            "(no address)".to_string()
        } else {
            u.addresses.join(" ")
        }
    )
}

pub async fn list(node: &Node) -> Reply {
    let all = match node.store.accounts(MAX_LISTED + 1).await {
        Ok(v) => v,
        Err(e) => return Reply::err(format!("reading the accounts: {e}")),
    };
    let mut out = String::new();
    if all.is_empty() {
        out.push_str("no accounts\n");
    }
    for u in all.iter().take(MAX_LISTED) {
        out.push_str(&line(node, u));
    }
    if all.len() > MAX_LISTED {
        let _ = writeln!(out, "… and more (only the first {MAX_LISTED} are listed)");
    }
    Reply::ok(out)
}

/// Writes `settings` for the account and ends its sessions when it is suspended.
async fn apply(node: &Node, u: &AccountUsage, settings: AccountSettings) -> Result<(), Reply> {
    match node.store.set_account_settings(u.mailbox, settings).await {
        Ok(true) => {
            if settings.suspended {
                // After the write: a sign-in that read the epoch before it gets no token,
                // one after it finds the account suspended.
                node.sessions.revoke(u.mailbox);
            }
            Ok(())
        }
        Ok(false) => Err(Reply::err(format!(
            "no account has mailbox {} (deleted meanwhile)",
            u.mailbox.to_hex()
        ))),
        Err(e) => Err(Reply::err(format!("not changed: {e}"))),
    }
}

pub async fn suspend(node: &Node, user: &str, suspended: bool) -> Reply {
    let u = match resolve(node, user).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let id = u.mailbox.to_hex();
    if u.settings.suspended == suspended {
        return Reply::ok(format!(
            "{id} was {} already\n",
            if suspended {
                "suspended"
            } else {
                "not suspended"
            }
        ));
    }
    let settings = AccountSettings {
        suspended,
        ..u.settings
    };
    match apply(node, &u, settings).await {
        Ok(()) if suspended => {
            tracing::info!("account suspended by the operator");
            Reply::ok(format!(
                "suspended {id}: its sessions ended; mail to it is held\n"
            ))
        }
        Ok(()) => {
            tracing::info!("account unsuspended by the operator");
            Reply::ok(format!("unsuspended {id}\n"))
        }
        Err(r) => r,
    }
}

pub async fn delete(node: &Node, user: &str) -> Reply {
    let u = match resolve(node, user).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let id = u.mailbox.to_hex();
    match node.store.delete_account(u.mailbox).await {
        Ok(Some(d)) => {
            node.sessions.revoke(u.mailbox);
            node.forget_account(u.mailbox);
            if let Some(relay) = node.queue_control.get() {
                // Its hops left the queue in the deletion's write; the relay forgets them.
                let _ = relay.send(crate::node::QueueControl::ForgetSender { sender: u.mailbox });
            }
            tracing::info!("account deleted by the operator");
            Reply::ok(format!(
                "deleted {id}: {} letter(s), {} address(es), {} device(s), {} queued hop(s) dropped\n",
                d.envelopes, d.addresses, d.devices, d.queued
            ))
        }
        Ok(None) => Reply::err(format!("no account has mailbox {id} (deleted meanwhile)")),
        Err(e) => Reply::err(format!("not deleted: {e}")),
    }
}

/// `BYTES` with an optional K, M, G or T suffix (powers of 1024); `default`: none.
fn parse_bytes(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("default") {
        return Ok(None);
    }
    let bad = || format!("{s:?} is not a size: give BYTES (e.g. 500000000 or 500M) or default");
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift)
        .filter(|n| *n < u64::MAX)
        .map(Some)
        .ok_or_else(bad)
}

pub async fn quota_set(node: &Node, user: &str, bytes: &str) -> Reply {
    let quota_bytes = match parse_bytes(bytes) {
        Ok(q) => q,
        Err(e) => return Reply::err(e),
    };
    let u = match resolve(node, user).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let settings = AccountSettings {
        quota_bytes,
        ..u.settings
    };
    match apply(node, &u, settings).await {
        Ok(()) => {
            let mut text = format!(
                "{}: quota {}\n",
                u.mailbox.to_hex(),
                quota_text(node, &settings)
            );
            let limit = quota_bytes.unwrap_or(node.quota.max_bytes);
            if u.bytes > limit {
                let _ = writeln!(
                    text,
                    "it holds {} bytes already: new mail is refused until its owner fetches some",
                    u.bytes
                );
            }
            Reply::ok(text)
        }
        Err(r) => r,
    }
}

pub async fn quota_show(node: &Node, user: &str) -> Reply {
    match resolve(node, user).await {
        Ok(u) => Reply::ok(line(node, &u)),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_refuse_the_rest() {
        assert_eq!(parse_bytes("1000"), Ok(Some(1000)));
        assert_eq!(parse_bytes("5M"), Ok(Some(5 << 20)));
        assert_eq!(parse_bytes("2g"), Ok(Some(2 << 30)));
        assert_eq!(parse_bytes("default"), Ok(None));
        for bad in [
            "",
            "M",
            "-5",
            "1.5G",
            "5X",
            "ten",
            "99999999999999999999",
            "20000000T",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
