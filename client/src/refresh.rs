//! When contacts' records are fetched again. `send` to a known contact uses the record kept
//! with its pin and looks nothing up (so no node learns of a letter from a lookup just
//! before it); `fetch` refreshes, through the same lookups as a first contact, the records
//! that are due: each about [`REFRESH_INTERVAL`] after it was last fetched, give or take
//! [`REFRESH_JITTER_PERCENT`] % at random (so refreshes do not line up with sends or with
//! each other), at most [`MAX_REFRESH_PER_RUN`] per run, the longest due first. A delivery
//! that reports a change (a bounce naming a recipient) makes that contact due at once.
//! A refresh applies trust on first use as any lookup does: a changed key is held pending.
//!
//! The schedule is pure (times in, addresses out); [`crate::directory::Directory`] does the
//! lookups.

use rand::Rng;

use sealpost_proto::Address;

use crate::contacts::Contact;

/// How long a contact's record is used before it is due to be fetched again (6 h).
pub const REFRESH_INTERVAL: u64 = 6 * 3600;
/// Each refresh is scheduled [`REFRESH_INTERVAL`] ± this many percent, at random.
pub const REFRESH_JITTER_PERCENT: u64 = 25;
/// At most this many records are fetched again by one run of `fetch`.
pub const MAX_REFRESH_PER_RUN: usize = 16;

/// When a record fetched at `now` is due again: `interval` ± [`REFRESH_JITTER_PERCENT`] %,
/// uniformly at random.
pub fn next_refresh(now: u64, interval: u64, rng: &mut impl Rng) -> u64 {
    let spread =
        interval / 100 * REFRESH_JITTER_PERCENT + interval % 100 * REFRESH_JITTER_PERCENT / 100;
    now.saturating_add(interval - spread)
        .saturating_add(rng.random_range(0..=2 * spread))
}

/// When `c`'s record is due: its scheduled time, or, with `refresh_after` (the hidden
/// `--refresh-after SECS`), that long after it was last fetched, whichever is first. A
/// record never fetched by this schedule (pinned before it existed) is due at once.
pub fn due_at(c: &Contact, refresh_after: Option<u64>) -> u64 {
    let Some(fetched) = c.fetched_at else {
        return 0;
    };
    let scheduled = c.refresh_at.unwrap_or(0);
    match refresh_after {
        Some(after) => scheduled.min(fetched.saturating_add(after)),
        None => scheduled,
    }
}

/// The contacts whose records are due at `now`, the longest due first, at most
/// [`MAX_REFRESH_PER_RUN`]. Only contacts with a record are refreshed (a key imported
/// from a file has none to refresh).
pub fn due(contacts: &[Contact], now: u64, refresh_after: Option<u64>) -> Vec<Address> {
    let mut due: Vec<(u64, &Address)> = contacts
        .iter()
        .filter(|c| c.record.is_some())
        .map(|c| (due_at(c, refresh_after), &c.address))
        .filter(|(at, _)| *at <= now)
        .collect();
    due.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_str().cmp(b.1.as_str())));
    due.into_iter()
        .take(MAX_REFRESH_PER_RUN)
        .map(|(_, a)| a.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contacts::{PinSource, pin};
    use sealpost_proto::identity::SecretIdentity;

    fn contact(i: usize, fetched: Option<u64>, refresh: Option<u64>, record: bool) -> Contact {
        let a = Address::parse(&format!("c{i:02}@beta.test")).unwrap();
        let cert = SecretIdentity::generate(&a, None).unwrap().public_cert();
        let mut c = pin(None, &a, &cert, None, PinSource::Record, 1)
            .into_result()
            .unwrap();
        c.record = record.then(|| "AAAA".to_string());
        c.fetched_at = fetched;
        c.refresh_at = refresh;
        c
    }

    #[tokio::test]
    async fn a_known_contact_is_not_looked_up_until_its_record_is_due() {
        use crate::client::{Client, Options};
        use crate::contacts::PinOutcome;
        use crate::error::Error;
        use crate::testutil::{record, stub_logged};
        use sealpost_proto::codec::Codec;

        let tmp = tempfile::tempdir().unwrap();
        drop(crate::profile::tests::sample(
            tmp.path(),
            "alice@alpha.test",
            None,
        ));
        let (domain, routes, log) = stub_logged().await;
        let options = Options {
            resolve: vec![("beta.test".into(), domain.clone())],
            direct_lookups: true,
            ..Options::default()
        };
        let c = Client::open(tmp.path(), &options).unwrap();
        let lookups = || {
            log.lock()
                .unwrap()
                .iter()
                .filter(|(_, path, _)| path.starts_with("/v1/records/"))
                .count()
        };
        let bob = Address::parse("bob@beta.test").unwrap();
        let path = "/v1/records/bob@beta.test".to_string();
        let id = SecretIdentity::generate(&bob, None).unwrap();
        routes.lock().unwrap().insert(
            path.clone(),
            (200, record(&id, &bob, &[&domain], 1).encode()),
        );

        // The first letter looks bob up; the pin keeps the record and its schedule.
        let r = c.directory.recipient(&c.profile, &bob).await.unwrap();
        assert!(matches!(r.pin, Some(PinOutcome::New(_))));
        c.directory.commit_pin(&r).unwrap();
        assert_eq!(lookups(), 1);
        let pinned = c.contacts().get(&bob).unwrap().unwrap();
        let (fetched, at) = (pinned.fetched_at.unwrap(), pinned.refresh_at.unwrap());
        assert!(
            (fetched + REFRESH_INTERVAL * 3 / 4..=fetched + REFRESH_INTERVAL * 5 / 4).contains(&at)
        );

        // Later letters: the kept record, no request at all; nothing is due yet.
        let r = c.directory.recipient(&c.profile, &bob).await.unwrap();
        assert!(matches!(r.pin, Some(PinOutcome::Same(_))));
        assert_eq!(r.record.sequence, 1);
        let report = c.directory.refresh_due(fetched + 60).await.unwrap();
        assert!(report.refreshed.is_empty() && report.changed.is_empty());
        assert_eq!(lookups(), 1);

        // Bob's record now has another key; a bounce makes his record due at once, and the
        // refresh holds the new key pending, as a lookup at send time would.
        let other = SecretIdentity::generate(&bob, None).unwrap();
        routes
            .lock()
            .unwrap()
            .insert(path, (200, record(&other, &bob, &[&domain], 2).encode()));
        c.directory.refresh_soon(&bob).unwrap();
        let report = c.directory.refresh_due(fetched + 60).await.unwrap();
        assert_eq!(lookups(), 2);
        assert_eq!(report.changed.len(), 1, "{report:?}");
        assert!(
            report.changed[0].contains("NOT signed by the old key"),
            "{report:?}"
        );
        let saved = c.contacts().get(&bob).unwrap().unwrap();
        assert_eq!(saved.fingerprint, id.fingerprint().to_hex(), "pin kept");
        assert_eq!(
            saved.pending.unwrap().fingerprint,
            other.fingerprint().to_hex()
        );
        // Refused until accepted, still without a lookup.
        let e = c.directory.recipient(&c.profile, &bob).await.err().unwrap();
        assert!(matches!(e, Error::KeyChanged { .. }), "{e}");
        assert_eq!(lookups(), 2);
    }

    #[test]
    fn refreshes_are_six_hours_give_or_take_a_quarter_and_spread() {
        let mut rng = rand::rng();
        let (now, i) = (1_000_000, REFRESH_INTERVAL);
        let draws: Vec<u64> = (0..2000).map(|_| next_refresh(now, i, &mut rng)).collect();
        let (lo, hi) = (now + i * 3 / 4, now + i * 5 / 4);
        assert!(draws.iter().all(|t| (lo..=hi).contains(t)), "within ±25 %");
        // Spread over the whole window, not bunched: both outer eighths are hit.
        let eighth = (hi - lo) / 8;
        assert!(draws.iter().any(|t| *t < lo + eighth));
        assert!(draws.iter().any(|t| *t > hi - eighth));
        assert_eq!(next_refresh(now, 0, &mut rng), now, "--refresh-after 0");
        assert_eq!(
            next_refresh(u64::MAX - 5, i, &mut rng),
            u64::MAX,
            "no overflow"
        );
    }

    #[test]
    fn at_most_sixteen_are_due_per_run_the_longest_due_first() {
        let now = 100_000;
        // 40 contacts due at different times (c39 the longest), one not due yet, one
        // without a record, one never fetched by the schedule.
        let mut all: Vec<Contact> = (0..40)
            .map(|i| contact(i, Some(1), Some(now - i as u64), true))
            .collect();
        all.push(contact(40, Some(now), Some(now + 1), true));
        all.push(contact(41, Some(1), Some(1), false));
        all.push(contact(42, None, None, true));
        let due = due(&all, now, None);
        assert_eq!(due.len(), MAX_REFRESH_PER_RUN);
        assert_eq!(due[0].as_str(), "c42@beta.test", "never fetched: due first");
        assert_eq!(due[1].as_str(), "c39@beta.test");
        assert_eq!(due[15].as_str(), "c25@beta.test");
        assert!(
            !due.iter().any(|a| a.as_str() == "c40@beta.test"),
            "not due"
        );
        assert!(
            !due.iter().any(|a| a.as_str() == "c41@beta.test"),
            "no record"
        );

        // --refresh-after 0: every record fetched before now is due, still 16 at most.
        let only = vec![all[40].clone()];
        assert!(super::due(&only, now, None).is_empty());
        assert_eq!(super::due(&only, now, Some(0)).len(), 1);
        assert_eq!(super::due(&all, now, Some(0)).len(), MAX_REFRESH_PER_RUN);
        // A contact made due at once (refresh_at 0) is due whatever the schedule.
        let marked = vec![contact(43, Some(now), Some(0), true)];
        assert_eq!(super::due(&marked, now, None).len(), 1);
    }
}
