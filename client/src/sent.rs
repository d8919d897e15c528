//! The sent log: for every hop one of our nodes accepted, the queue id it answered and
//! which letter it carried. A node's bounce names only the queue id (it never saw the
//! letter), so this is how `read` tells the user which of their letters bounced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use sealpost_proto::{Address, EnvelopeId, NodeUrl};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::profile::to_json;

pub const SENT_DIR: &str = "sent";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentEntry {
    /// What the node answered to `submit` (32 hex digits).
    pub queue_id: String,
    /// Our node that took the hop.
    pub node: NodeUrl,
    pub submitted: u64,
    pub recipient: Address,
    pub destination: NodeUrl,
    pub envelope_id: EnvelopeId,
    pub message_id: String,
    pub subject: String,
}

fn is_queue_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub struct SentLog {
    dir: PathBuf,
}

impl SentLog {
    pub fn new(profile_dir: &Path) -> Self {
        SentLog {
            dir: profile_dir.join(SENT_DIR),
        }
    }

    /// Records an accepted hop. A queue id that is not 32 hex digits is not recorded (it
    /// names the file).
    pub fn put(&self, e: &SentEntry) -> Result<()> {
        if !is_queue_id(&e.queue_id) {
            return Ok(());
        }
        fsutil::create_private_dir(&self.dir)?;
        fsutil::write_atomic(
            &self
                .dir
                .join(format!("{}.json", e.queue_id.to_ascii_lowercase())),
            &to_json(e),
        )
    }

    pub fn get(&self, queue_id: &str) -> Result<Option<SentEntry>> {
        if !is_queue_id(queue_id) {
            return Ok(None);
        }
        let path = self
            .dir
            .join(format!("{}.json", queue_id.to_ascii_lowercase()));
        match fsutil::read_optional(&path)? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e))?,
            )),
            None => Ok(None),
        }
    }
}

/// The queue id a node's bounce names (its `Queue id:` line), if any.
pub fn bounce_queue_id(body: &str) -> Option<&str> {
    body.lines()
        .find_map(|l| l.trim().strip_prefix("Queue id:"))
        .map(str::trim)
        .filter(|q| is_queue_id(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(q: &str) -> SentEntry {
        SentEntry {
            queue_id: q.into(),
            node: NodeUrl::parse("http://127.0.0.1:1").unwrap(),
            submitted: 5,
            recipient: Address::parse("bob@beta.test").unwrap(),
            destination: NodeUrl::parse("http://127.0.0.1:2").unwrap(),
            envelope_id: EnvelopeId([1; 16]),
            message_id: "m@alpha.test".into(),
            subject: "Plans".into(),
        }
    }

    #[test]
    fn accepted_hops_are_found_by_queue_id() {
        let tmp = tempfile::tempdir().unwrap();
        let log = SentLog::new(tmp.path());
        let q = "ab".repeat(16);
        log.put(&entry(&q)).unwrap();
        assert_eq!(log.get(&q).unwrap(), Some(entry(&q)));
        assert_eq!(log.get(&"cd".repeat(16)).unwrap(), None);
        assert_eq!(log.get("../../config").unwrap(), None);
        log.put(&entry("../evil")).unwrap();
        assert!(!tmp.path().join("evil.json").exists());
    }

    #[test]
    fn queue_id_is_read_from_a_bounce() {
        let q = "0123456789abcdef0123456789abcdef";
        let body = format!(
            "Your message could not be delivered.\r\n\r\nQueue id:         {q}\r\nAttempts: 3\r\n"
        );
        assert_eq!(bounce_queue_id(&body), Some(q));
        assert_eq!(bounce_queue_id("Queue id: nope"), None);
        assert_eq!(bounce_queue_id("hello"), None);
    }
}
