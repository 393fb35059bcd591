//! TLS for the gRPC port and the cloud API's, with rustls: the server's certificate and key,
//! and optionally a CA whose client certificates name callers. Everything
//! is reloaded from the files on demand (SIGHUP) without dropping the
//! connections already open; a reload that fails keeps what was in use.

mod client;
mod incoming;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use thiserror::Error;

pub use client::{ClientCert, PeerInfo};
pub use incoming::{incoming, TlsConn};

/// The `[tls]` table of the config file (or `IMAGE_LEDGER_TLS_*`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The CA, PEM, whose client certificates may name callers; without
    /// it clients are not asked for certificates.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS files cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the certificates or key (a key that does not match
    /// the certificate, for one).
    #[error("the TLS settings are refused: {0}")]
    Refused(String),
}

/// What a connection is accepted with now.
struct Loaded {
    /// When the leaf certificate stops being valid, Unix seconds.
    not_after: i64,
    config: Arc<ServerConfig>,
    /// The same, offering HTTP/1.1 rather than h2 (the cloud API door).
    http1: Arc<ServerConfig>,
    /// The client-certificate check run after each handshake.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// The server's TLS state, swapped whole by [`Tls::reload`].
pub struct Tls {
    settings: TlsConfig,
    current: ArcSwap<Loaded>,
    /// Where the certificate's expiry is reported, once asked.
    expiry: std::sync::OnceLock<prometheus_client::metrics::gauge::Gauge>,
}

impl Tls {
    /// Loads the files `settings` names.
    pub fn load(settings: TlsConfig) -> Result<Arc<Self>, TlsError> {
        let loaded = build(&settings)?;
        Ok(Arc::new(Self {
            settings,
            current: ArcSwap::from_pointee(loaded),
            expiry: std::sync::OnceLock::new(),
        }))
    }

    /// The certificate file served.
    pub fn cert_path(&self) -> &Path {
        &self.settings.cert
    }

    /// Sets `gauge` to the served certificate's expiry (Unix seconds) now
    /// and at each reload.
    pub fn report_expiry(&self, gauge: prometheus_client::metrics::gauge::Gauge) {
        gauge.set(self.current.load().not_after);
        let _ = self.expiry.set(gauge);
    }

    /// Reads the files again; new connections use what they hold from now
    /// on. On an error the old ones stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = build(&self.settings)?;
        if let Some(gauge) = self.expiry.get() {
            gauge.set(loaded.not_after);
        }
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// The handshake of a connection to the HTTP/1.1 port (the cloud API
    /// door), with the certificate and key in use now, under the same
    /// timeout as the gRPC port's.
    pub async fn accept_http1(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.current.load().http1));
        tokio::time::timeout(incoming::HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the TLS handshake timed out")
            })?
    }

    fn acceptor(
        &self,
    ) -> (
        tokio_rustls::TlsAcceptor,
        Option<Arc<dyn ClientCertVerifier>>,
    ) {
        let loaded = self.current.load();
        (
            tokio_rustls::TlsAcceptor::from(Arc::clone(&loaded.config)),
            loaded.verifier.clone(),
        )
    }
}

fn file_error(path: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        what: what.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn build(settings: &TlsConfig) -> Result<Loaded, TlsError> {
    let certs = certificates(&settings.cert)?;
    let not_after = not_after(&settings.cert, &certs[0])?;
    warn_if_readable_by_others(&settings.key);
    let key =
        PrivateKeyDer::from_pem_file(&settings.key).map_err(|e| file_error(&settings.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Refused(e.to_string()))?;
    let (builder, verifier) = match &settings.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| file_error(path, e))?;
            }
            let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Refused(e.to_string()))?;
            let deferred = Arc::new(client::Deferred::new(Arc::clone(&inner)));
            (builder.with_client_cert_verifier(deferred), Some(inner))
        }
        None => (builder.with_no_client_auth(), None),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Refused(e.to_string()))?;
    let mut http1 = config.clone();
    http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        not_after,
        config: Arc::new(config),
        http1: Arc::new(http1),
        verifier,
    })
}

/// When `leaf`, the first certificate of `path`, stops being valid.
fn not_after(path: &Path, leaf: &CertificateDer<'_>) -> Result<i64, TlsError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| file_error(path, e))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// A key file that group or others may read gets a warning.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the TLS key file is readable by group or others; chmod 600 it");
            }
        }
    }
}
