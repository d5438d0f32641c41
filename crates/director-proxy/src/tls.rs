//! rustls configuration: the server side for clients (`ssl_cert`/`ssl_key`, and for the
//! director's TCP admin listener client certificates signed by `ssl_ca`) and the client side
//! for backends (`ssl_client_ca_file`, host name verification).

use std::io::BufReader;
use std::net::IpAddr;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// No certificate in `ssl_cert` / `ssl_client_ca_file`.
    #[error("{0}: no certificate found in PEM data")]
    NoCertificate(&'static str),
    /// No private key in `ssl_key`.
    #[error("ssl_key: no private key found in PEM data")]
    NoKey,
    /// PEM could not be read.
    #[error("{0}: invalid PEM: {1}")]
    Pem(&'static str, std::io::Error),
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from `ssl_ca`.
    #[error("ssl_ca: {0}")]
    ClientCa(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(pem.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError::Pem(what, e))?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate(what));
    }
    Ok(certs)
}

/// The acceptor for client connections (implicit TLS listeners and STARTTLS).
pub fn server_acceptor(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor, TlsSetupError> {
    server_acceptor_with_client_ca(cert_pem, key_pem, None)
}

/// Like [`server_acceptor`]; with `client_ca_pem` (`ssl_ca` and `ssl_verify_client_cert =
/// yes`) every client must present a certificate signed by one of those CAs, or the
/// handshake fails.
pub fn server_acceptor_with_client_ca(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<TlsAcceptor, TlsSetupError> {
    let chain = certs("ssl_cert", cert_pem)?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_bytes()))
            .map_err(|e| TlsSetupError::Pem("ssl_key", e))?
            .ok_or(TlsSetupError::NoKey)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca_pem) => {
            let mut roots = RootCertStore::empty();
            for c in certs("ssl_ca", ca_pem)? {
                roots.add(c)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsSetupError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    }
    .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The connector for backends, trusting only the CAs in `ca_pem`.
pub fn backend_connector(ca_pem: &str) -> Result<TlsConnector, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for c in certs("ssl_client_ca_file", ca_pem)? {
        roots.add(c)?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name a backend certificate must carry: the host name from `director_mail_servers`
/// when the config named the host, else its IP address.
pub fn backend_server_name(hostname: Option<&str>, ip: IpAddr) -> ServerName<'static> {
    if let Some(h) = hostname {
        if let Ok(n) = ServerName::try_from(h.to_string()) {
            return n;
        }
    }
    ServerName::IpAddress(ip.into())
}
