//! TLS on the listener (`--tls-cert-file`, `--tls-key-file`): rustls with its safe defaults —
//! TLS 1.2 and 1.3 only, ring's AEAD suites with forward secrecy (docs/gateway.md, "TLS") —
//! and the certificate pair re-read when its files change, as kubelet updates a mounted
//! `kubernetes.io/tls` Secret (cert-manager renewing it). A handshake takes whatever pair is
//! current; connections already open keep theirs, so a rotation drops nothing in flight. A
//! pair that does not load (half-written, mismatched) is refused and the one in use stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tracing::{info, warn};

/// Why a certificate pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM object of its kind.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key is not one rustls can sign with, or it does not belong to the certificate.
    #[error("{key} does not match the certificate in {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls said.
        reason: String,
    },
}

/// The certificate and key files of the listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (`tls.crt`).
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 or SEC1 (`tls.key`).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Loads the pair: every certificate of the chain and a key that signs for the leaf.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let file_error = |path: &Path, reason: String| TlsError::File { path: path.display().to_string(), reason };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| file_error(&self.cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(&self.cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(file_error(&self.cert, "holds no PEM certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| file_error(&self.key, e.to_string()))?;
        let mismatch = |reason: rustls::Error| TlsError::Mismatch {
            cert: self.cert.display().to_string(),
            key: self.key.display().to_string(),
            reason: reason.to_string(),
        };
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(mismatch)?;
        let pair = CertifiedKey::new(certs, signing);
        pair.keys_match().map_err(mismatch)?;
        Ok(pair)
    }

    /// What the files hold now, to tell a change (small files: read whole).
    fn fingerprint(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        Some((std::fs::read(&self.cert).ok()?, std::fs::read(&self.key).ok()?))
    }
}

/// The pair handshakes use now; swapped whole when the files change.
#[derive(Debug)]
pub struct CurrentPair(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentPair {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|pair| pair.clone())
    }
}

/// The listener's TLS: the acceptor and the pair it serves.
pub struct Tls {
    /// Accepts TLS connections with the current pair.
    pub acceptor: tokio_rustls::TlsAcceptor,
    current: Arc<CurrentPair>,
    files: TlsFiles,
}

impl Tls {
    /// TLS from `files` (a clear error now if they do not load), offering `alpn` protocols in
    /// order of preference.
    pub fn new(files: TlsFiles, alpn: &[&[u8]]) -> Result<Tls, TlsError> {
        let pair = files.load()?;
        let current = Arc::new(CurrentPair(RwLock::new(Arc::new(pair))));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Mismatch {
                cert: files.cert.display().to_string(),
                key: files.key.display().to_string(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Ok(Tls { acceptor, current, files })
    }

    /// Re-reads the pair every `interval` until `stop`; a changed pair that loads is used for
    /// every handshake from then on, one that does not is logged and the current one kept.
    /// Calls `rotated(ok)` on each attempt (for the metrics).
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
        rotated: impl Fn(bool) + Send + 'static,
    ) {
        let mut seen = self.files.fingerprint();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            let now = self.files.fingerprint();
            if now.is_none() || now == seen {
                continue;
            }
            match self.files.load() {
                Ok(pair) => {
                    if let Ok(mut current) = self.current.0.write() {
                        *current = Arc::new(pair);
                    }
                    seen = now;
                    info!(cert = %self.files.cert.display(), "TLS certificate reloaded; new connections use it");
                    rotated(true);
                }
                Err(error) => {
                    // Kubelet swaps both files at once, but a hand edit may be half done:
                    // tried again at the next change.
                    seen = now;
                    warn!(%error, "TLS certificate not reloaded; the one in use stays");
                    rotated(false);
                }
            }
        }
    }
}
