//! The access record: a test hook, off unless `testing.access_record` names a file. Each
//! request is one line: the address of the TCP peer, the method and path, and the node a
//! relayed request is for; an oblivious lookup this node opened adds a line with what was
//! looked up. The privacy audit (`tests/tests/privacy_audit.rs`) reads it to check who
//! connects to whom. It is no production log: a node in service keeps no client addresses.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

pub struct AccessRecord {
    file: Mutex<std::fs::File>,
}

impl AccessRecord {
    /// Opens (creates, appends to) the record at `path`.
    pub fn open(path: &Path) -> std::io::Result<AccessRecord> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AccessRecord {
            file: Mutex::new(file),
        })
    }

    /// Appends `peer what` as one line (line breaks in `what` become spaces).
    pub fn record(&self, peer: Option<IpAddr>, what: &str) {
        let peer = peer.map_or_else(|| "-".to_string(), |p| p.to_string());
        let line = format!("{peer} {}\n", what.replace(['\r', '\n'], " "));
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A test hook: a failed write shows up as a missing line in the test.
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_one_per_access() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access");
        let r = AccessRecord::open(&p).unwrap();
        r.record(Some("127.0.0.5".parse().unwrap()), "GET /x");
        r.record(None, "lookup /a\nb");
        let r2 = AccessRecord::open(&p).unwrap();
        r2.record(Some("127.0.0.6".parse().unwrap()), "POST /y");
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "127.0.0.5 GET /x\n- lookup /a b\n127.0.0.6 POST /y\n"
        );
    }
}
