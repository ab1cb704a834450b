//! The viewer port's certificate: PEM files read into a rustls server config that offers
//! HTTP/2 and HTTP/1.1 (ALPN). Read at start and again on every reload, so a renewed
//! certificate (certbot swapping the files or its `live/` symlinks) is served after a SIGHUP.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Why a certificate was refused, and which setting it concerns (`tls_cert` or `tls_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub field: &'static str,
    pub problem: String,
}

/// A server config for the certificate chain and key in these PEM files. A key that does not
/// belong to the certificate is refused here, not at the first handshake.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let refuse = |field, problem: String| TlsError { field, problem };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| refuse("tls_cert", format!("cannot read {}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refuse("tls_cert", format!("{}: not a PEM certificate: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(refuse("tls_cert", format!("{}: no certificate in it", cert.display())));
    }
    // The error never quotes the file: it is a private key.
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        refuse("tls_key", format!("{}: no usable private key ({})", key.display(), key_error(&e)))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refuse("tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => refuse(
                "tls_key",
                format!("{} does not belong to the certificate in {}", key.display(), cert.display()),
            ),
            e => refuse("tls_cert", format!("{}: {e}", cert.display())),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn key_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => e.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block".into(),
        _ => "not PEM".into(),
    }
}
