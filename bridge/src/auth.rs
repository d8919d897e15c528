//! The bridge password: generated once per profile, kept in `STATE/password` (mode 0600),
//! shown by `sealpost-bridge info`, and compared in constant time. The user name a mail
//! app sends must be the profile's address.

use std::path::Path;
use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// How long a wrong password waits before its NO (or SMTP 535), against guessing.
pub const FAILURE_DELAY: Duration = Duration::from_secs(2);
/// Failed logins on one connection before it is closed.
pub const MAX_FAILURES: u32 = 3;
/// Longest user name or password considered.
pub const MAX_CREDENTIAL: usize = 1024;

const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(user: String, password: String) -> Credentials {
        Credentials { user, password }
    }

    /// Reads `dir/password`, creating it with a fresh 24-character password if absent.
    pub fn load_or_create(dir: &Path, user: String) -> Result<Credentials> {
        let path = dir.join("password");
        match std::fs::read_to_string(&path) {
            Ok(p) => Ok(Credentials {
                user,
                password: p.trim().to_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut rng = rand::rng();
                let password: String = (0..24)
                    .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                    .collect();
                std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
                let tmp = dir.join("password.tmp");
                {
                    use std::io::Write;
                    let mut opts = std::fs::OpenOptions::new();
                    opts.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                    let mut f = opts.open(&tmp).map_err(Error::io(&tmp))?;
                    f.write_all(format!("{password}\n").as_bytes())
                        .map_err(Error::io(&tmp))?;
                    f.sync_all().map_err(Error::io(&tmp))?;
                }
                std::fs::rename(&tmp, &path).map_err(Error::io(&path))?;
                Ok(Credentials { user, password })
            }
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// True when both match. The user name is compared case-insensitively (an address);
    /// the password through SHA-256 digests, so the time does not depend on where it differs.
    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
        if user.len() > MAX_CREDENTIAL || password.len() > MAX_CREDENTIAL {
            return false;
        }
        let user_ok = constant_eq(
            &user.to_ascii_lowercase(),
            self.user.to_ascii_lowercase().as_bytes(),
        );
        let pass_ok = constant_eq(password, self.password.as_bytes());
        user_ok & pass_ok
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Decodes a SASL PLAIN message (RFC 4616): authzid NUL authcid NUL passwd.
pub fn sasl_plain(msg: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut it = msg.splitn(3, |b| *b == 0);
    let authz = it.next()?;
    let user = it.next()?;
    let pass = it.next()?;
    // Acting for another user is not offered.
    if !authz.is_empty() && authz != user {
        return None;
    }
    Some((user, pass))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_generated_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = Credentials::load_or_create(dir.path(), "me@alpha.test".into()).unwrap();
        let b = Credentials::load_or_create(dir.path(), "me@alpha.test".into()).unwrap();
        assert_eq!(a.password(), b.password());
        assert_eq!(a.password().len(), 24);
        assert!(a.check(b"ME@alpha.test", a.password().as_bytes()));
        assert!(!a.check(b"me@alpha.test", b"wrong"));
        assert!(!a.check(b"other@alpha.test", a.password().as_bytes()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("password"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn sasl_plain_forms() {
        assert_eq!(sasl_plain(b"\0u\0p"), Some((&b"u"[..], &b"p"[..])));
        assert_eq!(sasl_plain(b"u\0u\0p"), Some((&b"u"[..], &b"p"[..])));
        assert_eq!(sasl_plain(b"x\0u\0p"), None);
        assert_eq!(sasl_plain(b"up"), None);
    }
}
