//! Durable, atomic file operations for the profile: write to a temporary file in the same
//! directory, fsync it, rename it over the target, fsync the directory. A reader sees the
//! old or the new file, never half of one, and once a function returns the data survives a
//! crash. Also the profile lock (flock) and private (0700/0600) creation.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Creates `dir` (and missing parents) readable by the owner only.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::profile_io(dir, e))
}

/// Writes `data` to `path` atomically and durably, with mode 0600.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::corrupt(path, "has no parent directory"))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::profile_io(path, e));
    }
    sync_dir(dir)
}

/// Removes `path` durably; a missing file is fine.
pub fn remove_durable(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::profile_io(path, e)),
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsyncs a directory so that renames and removals inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::profile_io(dir, e))
}

/// Reads a profile file; a missing file is `Ok(None)`.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::profile_io(path, e)),
    }
}

/// Files in `dir` whose names end in `suffix`, sorted by name; a missing dir is empty.
pub fn list_files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::profile_io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::profile_io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(suffix) && !name.starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// An exclusive advisory lock on the profile, held until dropped. Two sealpost processes on
/// one profile would otherwise both fetch, store and ack the same envelopes.
pub struct ProfileLock {
    _file: File,
}

/// How long a command waits for another sealpost process on the same profile to finish.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl ProfileLock {
    /// Takes the lock, waiting up to `wait` for another process to release it.
    pub fn acquire_waiting(dir: &Path, wait: std::time::Duration) -> Result<Self> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::acquire(dir) {
                Err(Error::ProfileLocked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// Takes the lock or fails at once with [`Error::ProfileLocked`].
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::profile_io(&path, e))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared with the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::ProfileLocked {
                    dir: dir.to_path_buf(),
                });
            }
            return Err(Error::profile_io(&path, err));
        }
        Ok(ProfileLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let first = ProfileLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            ProfileLock::acquire(dir.path()),
            Err(Error::ProfileLocked { .. })
        ));
        let waited =
            ProfileLock::acquire_waiting(dir.path(), std::time::Duration::from_millis(100));
        assert!(matches!(waited, Err(Error::ProfileLocked { .. })));
        drop(first);
        drop(ProfileLock::acquire_waiting(dir.path(), std::time::Duration::from_secs(5)).unwrap());
    }

    #[test]
    fn listing_skips_hidden_and_other_suffixes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.json"), "").unwrap();
        fs::write(dir.path().join("a.json"), "").unwrap();
        fs::write(dir.path().join(".a.json.tmp-1"), "").unwrap();
        fs::write(dir.path().join("a.sealed"), "").unwrap();
        let names: Vec<_> = list_files(dir.path(), ".json")
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, vec!["a.json", "b.json"]);
        assert!(
            list_files(&dir.path().join("missing"), ".json")
                .unwrap()
                .is_empty()
        );
    }
}
