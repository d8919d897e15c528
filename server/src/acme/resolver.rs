//! The certificate the node's TLS listeners present when `[tls.acme]` is on: a rustls
//! [`ResolvesServerCert`] that hands out the current certificate (swapped in place on
//! renewal, so running connections and new ones never see a gap) and, to a client that
//! offers ALPN `acme-tls/1` (RFC 8737), the challenge certificate for the name it asks for.
//! Also the files that keep the certificate and its key (mode 0600).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// RFC 8737's ALPN protocol id.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Largest certificate or key file read back (a chain is a few KiB).
const MAX_PEM: u64 = 1 << 20;

/// Why a stored or issued certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is larger than {MAX_PEM} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM certificate in the chain")]
    NoCert,
    #[error("no PEM private key")]
    NoKey,
    #[error("unreadable PEM")]
    Pem(#[source] std::io::Error),
    #[error("the leaf certificate does not parse as X.509")]
    X509,
    #[error("the key does not fit rustls")]
    Key(#[source] rustls::Error),
}

/// A certificate in use: what rustls presents, and when it should be renewed.
pub struct Issued {
    pub key: Arc<CertifiedKey>,
    /// Unix seconds: two thirds into the leaf's validity.
    pub renew_at: i64,
    /// Unix seconds: the leaf's notAfter.
    pub not_after: i64,
    /// The DNS names the leaf covers (lowercase).
    pub names: Vec<String>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("renew_at", &self.renew_at)
            .field("not_after", &self.not_after)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Parses a PEM chain (leaf first) and its PEM private key.
    pub fn from_pem(
        chain: &[u8],
        key: &[u8],
        provider: &CryptoProvider,
    ) -> Result<Issued, CertError> {
        let certs = rustls_pemfile::certs(&mut &chain[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(CertError::Pem)?;
        let key = rustls_pemfile::private_key(&mut &key[..])
            .map_err(CertError::Pem)?
            .ok_or(CertError::NoKey)?;
        Issued::from_der(certs, key, provider)
    }

    pub fn from_der(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        provider: &CryptoProvider,
    ) -> Result<Issued, CertError> {
        let leaf = certs.first().ok_or(CertError::NoCert)?;
        let facts = super::der::leaf_facts(leaf).ok_or(CertError::X509)?;
        let (not_before, not_after, names) = (facts.not_before, facts.not_after, facts.dns_names);
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(CertError::Key)?;
        let key = Arc::new(CertifiedKey::new(certs, signer));
        key.keys_match().map_err(CertError::Key)?;
        Ok(Issued {
            key,
            renew_at: not_before + (not_after - not_before).max(0) * 2 / 3,
            not_after,
            names,
        })
    }

    /// Whether the leaf covers every name in `want`.
    pub fn covers(&self, want: &[String]) -> bool {
        want.iter().all(|w| self.names.contains(w))
    }
}

/// The files of one ACME directory (`tls.acme.dir`).
#[derive(Clone, Debug)]
pub struct Files {
    pub dir: PathBuf,
}

impl Files {
    pub fn account(&self) -> PathBuf {
        self.dir.join("account.json")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// The stored certificate, if both files exist.
    pub fn load(&self, provider: &CryptoProvider) -> Result<Option<Issued>, CertError> {
        let (Some(chain), Some(key)) = (read_small(&self.cert())?, read_small(&self.key())?) else {
            return Ok(None);
        };
        Issued::from_pem(&chain, &key, provider).map(Some)
    }

    /// Stores a new certificate: key first, then the chain, each written whole and renamed
    /// into place, so a crash leaves either the old pair or a key that the next start
    /// finds not matching (and replaces) — never a half-written file.
    pub fn store(&self, chain: &str, key: &str) -> Result<(), CertError> {
        write_private(&self.key(), key.as_bytes())?;
        write_private(&self.cert(), chain.as_bytes())
    }
}

/// Reads a file of at most [`MAX_PEM`] bytes; `None` when it does not exist.
pub fn read_small(path: &Path) -> Result<Option<Vec<u8>>, CertError> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CertError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut buf = Vec::new();
    f.take(MAX_PEM + 1)
        .read_to_end(&mut buf)
        .map_err(|source| CertError::Read {
            path: path.to_owned(),
            source,
        })?;
    if buf.len() as u64 > MAX_PEM {
        return Err(CertError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(Some(buf))
}

/// Writes `bytes` to `path` with mode 0600, durably ([`write_private`](crate::basics::private_file::write_private)).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    crate::basics::private_file::write_private(path, bytes).map_err(|source| CertError::Write {
        path: path.to_owned(),
        source,
    })
}

/// What the TLS listeners present: the current certificate and pending challenges.
#[derive(Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Presents `key` from the next handshake on.
    pub fn set_current(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(key);
    }

    pub fn has_current(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Answers TLS-ALPN-01 validation of `name` with `key` until [`CertResolver::clear_challenges`].
    pub fn add_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        self.challenges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase(), key);
    }

    pub fn clear_challenges(&self) {
        self.challenges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A TLS acceptor (HTTP/1.1, and `acme-tls/1` for validation) presenting this resolver's
    /// certificates.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut sc = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        sc.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        Ok(TlsAcceptor::from(Arc::new(sc)))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // RFC 8737 §3: only the challenge certificate for the requested name, and only
            // to a client that offers acme-tls/1 alone; never the real certificate.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
        }
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
