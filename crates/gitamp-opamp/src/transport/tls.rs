//! Optional TLS for the OpAMP listener (rustls with the ring provider).
//!
//! Serving TLS needs our own accept loop (axum::serve is plain TCP only): each
//! connection is handshaken, then served by hyper's HTTP/1.1 server with upgrades
//! enabled, which WebSocket needs. HTTP/1.1 only: OpAMP clients use HTTP/1.1 for
//! both transports, and WebSocket over HTTP/2 is not something agents do.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use super::ServeOptions;

/// A slow or silent client may hold a connection this long before the handshake
/// completes (the request headers then have [`ServeOptions::header_read_timeout`]).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading a PEM file failed or the PEM held nothing usable.
    #[error("reading {what}: {source}")]
    Pem {
        /// Which input (certificate chain or private key).
        what: &'static str,
        /// The underlying error.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate chain was empty.
    #[error("no certificate found in the certificate PEM")]
    NoCertificate,
    /// rustls rejected the certificate/key pair.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// TLS settings for [`super::serve`].
#[derive(Clone, Debug)]
pub struct TlsConfig {
    server: Arc<rustls::ServerConfig>,
}

impl TlsConfig {
    /// Uses a ready rustls server configuration (e.g. with client-certificate auth).
    pub fn from_server_config(server: Arc<rustls::ServerConfig>) -> Self {
        Self { server }
    }

    /// Builds a configuration from a PEM certificate chain and a PEM private key.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                what: "certificate chain",
                source,
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
            what: "private key",
            source,
        })?;
        Self::from_der(certs, key)
    }

    /// Builds a configuration from PEM files.
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> Result<Self, TlsError> {
        let certs = CertificateDer::pem_file_iter(cert_chain)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::Pem {
                what: "certificate chain",
                source,
            })?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
            what: "private key",
            source,
        })?;
        Self::from_der(certs, key)
    }

    fn from_der(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            server: Arc::new(cfg),
        })
    }
}

/// Accept loop: TLS handshake then HTTP/1.1 (with upgrades) per connection.
pub(super) async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: TlsConfig,
    opts: ServeOptions,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls.server);
    loop {
        let (tcp, peer) = super::accept(&listener).await;
        let acceptor = acceptor.clone();
        let router = router.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            super::serve_connection(TokioIo::new(tls), peer, router, &opts).await;
        });
    }
}
