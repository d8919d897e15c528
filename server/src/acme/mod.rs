//! Automatic certificates (RFC 8555, `[tls.acme]`): a worker that obtains the node's
//! certificate from an ACME CA when none is stored (or the stored one does not cover the
//! configured names), validates each name with TLS-ALPN-01 (RFC 8737) on the node's own
//! HTTPS listener, keeps the account, certificate and key in `tls.acme.dir` (mode 0600), and
//! renews two thirds into the certificate's lifetime, swapping it into the running
//! listeners (HTTPS and the gateway's STARTTLS share the resolver) without a restart.
//! A failed attempt is retried with a doubling delay (1 s to 10 min) while the old
//! certificate, if any, keeps serving.

mod der;
pub mod resolver;

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::basics::clock::now_secs;
use crate::basics::shutdown::stopped;
use crate::config::{AcmeConfig, Config};
pub use resolver::{CertError, CertResolver, Files, Issued};

/// One attempt (account, order, validation, issuance) may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Retry delays after a failed attempt: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// Why one attempt to obtain a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME {step}")]
    Protocol {
        step: &'static str,
        #[source]
        source: instant_acme::Error,
    },
    #[error("ACME account file {} is unreadable", path.display())]
    Account {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the ACME CA offers no tls-alpn-01 challenge for {0}")]
    NoChallenge(String),
    #[error("the ACME CA did not validate {name}: authorization is {status:?}")]
    NotAuthorized {
        name: String,
        status: AuthorizationStatus,
    },
    #[error("the ACME order ended {0:?}, not ready")]
    OrderNotReady(OrderStatus),
    #[error("making the TLS-ALPN-01 challenge certificate")]
    ChallengeCert(#[source] rcgen::Error),
    #[error("the issued certificate")]
    Cert(#[from] CertError),
    #[error("took longer than {0:?}")]
    Timeout(Duration),
}

fn step(step: &'static str) -> impl FnOnce(instant_acme::Error) -> AcmeError {
    move |source| AcmeError::Protocol { step, source }
}

/// The ACME set-up of a node: its resolver (for the TLS acceptor) and what the worker needs.
pub struct Acme {
    pub resolver: Arc<CertResolver>,
    config: AcmeConfig,
    names: Vec<String>,
    files: Files,
    provider: Arc<CryptoProvider>,
}

impl Acme {
    /// Reads the stored certificate (when present and covering the names) into a new
    /// resolver. A stored certificate that is unusable is logged and replaced.
    pub fn new(config: &Config, acme: &AcmeConfig) -> Acme {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // instant-acme builds its HTTPS client from the process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let files = Files {
            dir: config.resolve(&acme.dir),
        };
        let names = config.acme_names();
        let resolver = Arc::new(CertResolver::default());
        match files.load(&provider) {
            Ok(Some(issued)) if issued.covers(&names) => {
                tracing::info!(names = ?issued.names, not_after = issued.not_after,
                    "ACME: using the stored certificate");
                resolver.set_current(issued.key);
            }
            Ok(Some(issued)) => tracing::info!(have = ?issued.names, want = ?names,
                "ACME: the stored certificate does not cover every name; obtaining a new one"),
            Ok(None) => tracing::info!(?names, "ACME: no certificate yet; obtaining one"),
            Err(e) => tracing::warn!(error = %chain(&e),
                "ACME: the stored certificate is unusable; obtaining a new one"),
        }
        Acme {
            resolver,
            config: acme.clone(),
            names,
            files,
            provider,
        }
    }

    /// Runs the obtain-and-renew loop until `stop` turns true.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut failures = 0u32;
            let mut renew_at = self.stored_renew_at();
            loop {
                let wait = renew_at.map_or(0, |t| t.saturating_sub(now_secs() as i64).max(0));
                if wait > 0 && !sleep_or_stop(Duration::from_secs(wait as u64), &mut stop).await {
                    return;
                }
                let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.obtain());
                let result = tokio::select! {
                    r = attempt => r.unwrap_or(Err(AcmeError::Timeout(ATTEMPT_TIMEOUT))),
                    _ = stopped(&mut stop) => return,
                };
                self.resolver.clear_challenges();
                match result {
                    Ok(issued) => {
                        tracing::info!(names = ?issued.names, not_after = issued.not_after,
                            renew_at = issued.renew_at, "ACME: new certificate in use");
                        renew_at = Some(issued.renew_at);
                        self.resolver.set_current(issued.key);
                        failures = 0;
                    }
                    Err(e) => {
                        let delay = RETRY_FIRST
                            .saturating_mul(1u32 << failures.min(16))
                            .min(RETRY_MAX);
                        failures += 1;
                        tracing::warn!(error = %chain(&e), retry_in = ?delay,
                            serving = self.resolver.has_current(), "ACME: obtaining a certificate failed");
                        if !sleep_or_stop(delay, &mut stop).await {
                            return;
                        }
                        renew_at = None;
                    }
                }
            }
        })
    }

    fn stored_renew_at(&self) -> Option<i64> {
        match self.files.load(&self.provider) {
            Ok(Some(i)) if i.covers(&self.names) => Some(i.renew_at),
            _ => None,
        }
    }

    /// One whole attempt: account, order, TLS-ALPN-01 for each name, finalize, store.
    async fn obtain(&self) -> Result<Issued, AcmeError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .names
            .iter()
            .map(|n| Identifier::Dns(n.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(step("new order"))?;
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(step("authorization"))?;
                let name = authz.identifier().to_string();
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    status => return Err(AcmeError::NotAuthorized { name, status }),
                }
                let mut challenge = authz
                    .challenge(ChallengeType::TlsAlpn01)
                    .ok_or_else(|| AcmeError::NoChallenge(name.clone()))?;
                let digest = challenge.key_authorization().digest();
                let cert = challenge_cert(&name, digest.as_ref(), &self.provider)?;
                self.resolver.add_challenge(&name, cert);
                challenge
                    .set_ready()
                    .await
                    .map_err(step("challenge ready"))?;
            }
        }
        let retries = RetryPolicy::new().timeout(Duration::from_secs(120));
        match order
            .poll_ready(&retries)
            .await
            .map_err(step("validation"))?
        {
            OrderStatus::Ready => {}
            other => return Err(AcmeError::OrderNotReady(other)),
        }
        let key_pem = order.finalize().await.map_err(step("finalize"))?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(step("certificate"))?;
        let issued = Issued::from_pem(chain_pem.as_bytes(), key_pem.as_bytes(), &self.provider)?;
        self.files.store(&chain_pem, &key_pem)?;
        Ok(issued)
    }

    /// The stored ACME account, or a new one (stored before use).
    async fn account(&self) -> Result<Account, AcmeError> {
        let builder = || match &self.config.directory_ca {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        let path = self.files.account();
        if let Some(bytes) = resolver::read_small(&path)? {
            let creds: AccountCredentials =
                serde_json::from_slice(&bytes).map_err(|source| AcmeError::Account {
                    path: path.clone(),
                    source,
                })?;
            return builder()
                .map_err(step("client"))?
                .from_credentials(creds)
                .await
                .map_err(step("account"));
        }
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let (account, creds) = builder()
            .map_err(step("client"))?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await
            .map_err(step("new account"))?;
        let json = serde_json::to_vec(&creds).map_err(|source| AcmeError::Account {
            path: path.clone(),
            source,
        })?;
        resolver::write_private(&path, &json)?;
        tracing::info!(id = account.id(), "ACME: account created");
        Ok(account)
    }
}

/// RFC 8737 §3: a self-signed certificate for `name` carrying the critical acmeIdentifier
/// extension with the SHA-256 digest of the key authorization.
fn challenge_cert(
    name: &str,
    digest: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, AcmeError> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(AcmeError::ChallengeCert)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(AcmeError::ChallengeCert)?;
    let cert = params.self_signed(&key).map_err(AcmeError::ChallengeCert)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| AcmeError::Cert(CertError::Key(e)))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// Sleeps `d`; false when `stop` turned true first.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stopped(stop) => false,
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
