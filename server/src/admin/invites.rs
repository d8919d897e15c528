//! `admin invites …`: invites kept in the store (under sha256 of the code: the code is
//! printed once, at creation) with a use count and an optional expiry, for
//! `registration.policy = "invite"` beside the config's `registration.invites`.

use std::fmt::Write as _;

use super::proto::{MAX_LISTED, Reply};
use crate::basics::clock::now_secs;
use crate::node::Node;
use crate::store::{StoredInvite, invite_hash};

/// Most registrations one invite may allow.
pub const MAX_USES: u32 = 1_000_000;
/// Longest validity of an invite: ten years.
pub const MAX_EXPIRY_SECS: u64 = 10 * 366 * 86_400;
/// Hex digits of an invite's hash that name it in `invites list`.
const ID_DIGITS: usize = 16;

/// `N` followed by `s`, `m`, `h`, `d` or `w`, at least 1 s and at most ten years.
fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration: give N followed by s, m, h, d or w (e.g. 7d)");
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) => (&s[..i], c.to_ascii_lowercase()),
        None => return Err(bad()),
    };
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 12 {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(mult) {
        Some(0) => Err(format!("{s:?}: an invite must last at least 1 s")),
        Some(secs) if secs <= MAX_EXPIRY_SECS => Ok(secs),
        _ => Err(format!("{s:?}: an invite may last at most ten years")),
    }
}

pub async fn create(node: &Node, uses: Option<u32>, expires: Option<&str>) -> Reply {
    let uses = uses.unwrap_or(1);
    if !(1..=MAX_USES).contains(&uses) {
        return Reply::err(format!("--uses must be 1 to {MAX_USES}, not {uses}"));
    }
    let lifetime = match expires.map(parse_duration).transpose() {
        Ok(l) => l,
        Err(e) => return Reply::err(e),
    };
    let now = now_secs();
    let code = hex::encode(rand::random::<[u8; 16]>());
    let invite = StoredInvite {
        created: now,
        expires: lifetime.map(|l| now + l),
        uses,
        used: 0,
        revoked: false,
    };
    let hash = invite_hash(&code);
    match node.store.put_invite(hash, invite).await {
        Ok(true) => {
            tracing::info!(uses, "invite created by the operator");
            let mut text = format!("{code}\n");
            let _ = writeln!(
                text,
                "id {}, {uses} use(s), {}",
                &hex::encode(hash)[..ID_DIGITS],
                match invite.expires {
                    Some(e) => format!("expires at {e}"),
                    None => "never expires".into(),
                }
            );
            if node.config.registration.policy != crate::config::RegistrationPolicy::Invite {
                text.push_str(
                    "note: registration.policy is not \"invite\": the code is not asked for\n",
                );
            }
            Reply::ok(text)
        }
        Ok(false) => Reply::err("a fresh code collided with a stored one; run it again".into()),
        Err(e) => Reply::err(format!("not created: {e}")),
    }
}

fn state(i: &StoredInvite, now: u64) -> &'static str {
    if i.revoked {
        "revoked"
    } else if i.used >= i.uses {
        "used up"
    } else if i.expires.is_some_and(|e| now >= e) {
        "expired"
    } else {
        "usable"
    }
}

pub async fn list(node: &Node) -> Reply {
    let all = match node.store.invites().await {
        Ok(v) => v,
        Err(e) => return Reply::err(format!("reading the invites: {e}")),
    };
    let now = now_secs();
    let mut out = format!("{} invite(s) stored\n", all.len());
    for (hash, i) in all.iter().take(MAX_LISTED) {
        let _ = writeln!(
            out,
            "{} created {} {} used {}/{} {}",
            &hex::encode(hash)[..ID_DIGITS],
            i.created,
            match i.expires {
                Some(e) => format!("expires {e}"),
                None => "never expires".into(),
            },
            i.used,
            i.uses,
            state(i, now)
        );
    }
    if all.len() > MAX_LISTED {
        let _ = writeln!(out, "… and {} more", all.len() - MAX_LISTED);
    }
    Reply::ok(out)
}

/// Revokes the invite with this code, or with this id (as `invites list` shows it).
pub async fn revoke(node: &Node, code: &str) -> Reply {
    let code = code.trim();
    if code.is_empty() || code.len() > 256 {
        return Reply::err(format!("{code:?} is not an invite code or id"));
    }
    let mut hash = invite_hash(code);
    if code.len() == ID_DIGITS {
        let all = match node.store.invites().await {
            Ok(v) => v,
            Err(e) => return Reply::err(format!("reading the invites: {e}")),
        };
        if let Some((h, _)) = all
            .iter()
            .find(|(h, _)| hex::encode(h)[..ID_DIGITS].eq_ignore_ascii_case(code))
        {
            hash = *h;
        }
    }
    let id = &hex::encode(hash)[..ID_DIGITS];
    match node.store.revoke_invite(hash).await {
        Ok(true) => {
            tracing::info!("invite revoked by the operator");
            Reply::ok(format!("revoked invite {id}\n"))
        }
        Ok(false) => Reply::err(
            "no stored invite has this code or id, or it was revoked before (codes of \
             registration.invites in node.toml are removed there)"
                .into(),
        ),
        Err(e) => Reply::err(format!("not revoked: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_within_bounds() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400));
        assert_eq!(parse_duration("2W"), Ok(14 * 86_400));
        for bad in [
            "",
            "d",
            "7",
            "1.5h",
            "-3h",
            "3y",
            "0s",
            "11000d",
            "999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
