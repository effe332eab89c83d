//! A listener's TLS: the server certificate, key and client CA loaded from
//! their PEM files (at start and again on [`Tls::reload`], swapped without
//! touching open connections), the handshake under `handshake_timeout`,
//! its failures told apart for the counters, and the node a client
//! certificate names (`identity = "certificate"`).
//!
//! rustls with the `ring` crypto provider: it builds from Rust and a little
//! C/assembly with the system C compiler, where `aws-lc-rs` wants cmake and
//! compiles a much larger C library (no cmake on the build machines here).
//! TLS 1.2 and 1.3 only.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{ConfigError, IdentityFrom, TlsConfig};
use crate::reason::TlsFailure;

/// The TLS versions every listener offers.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The one crypto provider, `ring`.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's TLS: the current server settings (swapped whole on
/// reload) and where they came from.
pub(crate) struct Tls {
    current: ArcSwap<ServerConfig>,
    config: TlsConfig,
    /// The config path of the listener's `tls` table, for errors
    /// (`listener[0].tls`).
    key_prefix: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files of `config`; `None` when TLS is off. `key_prefix`
    /// names the table in errors (`listener[0].tls`).
    pub(crate) fn load(config: &TlsConfig, key_prefix: &str) -> Result<Option<Tls>, ConfigError> {
        if !config.is_enabled() {
            return Ok(None);
        }
        let server = server_config(config, key_prefix)?;
        Ok(Some(Tls {
            current: ArcSwap::from_pointee(server),
            config: config.clone(),
            key_prefix: key_prefix.to_owned(),
        }))
    }

    /// Reads the files again; on success, new handshakes use them (open
    /// connections keep theirs). On failure the old settings stay.
    pub(crate) fn reload(&self) -> Result<(), ConfigError> {
        let server = server_config(&self.config, &self.key_prefix)?;
        self.current.store(Arc::new(server));
        Ok(())
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.config.handshake_timeout
    }

    /// Runs the server side of the handshake, bounded by
    /// `handshake_timeout`.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> Result<Box<TlsStream<TcpStream>>, TlsFailure> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        match tokio::time::timeout(self.handshake_timeout(), acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Ok(Box::new(stream)),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(TlsFailure::Timeout),
        }
    }
}

/// The node a client certificate names in the field `from`.
pub(crate) fn identity(stream: &TlsStream<TcpStream>, from: IdentityFrom) -> Option<String> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    node_in_certificate(leaf, from)
}

/// The node named in `der` (a leaf certificate) by the field `from`; `None`
/// when it has no such field, or an empty one.
pub(crate) fn node_in_certificate(der: &[u8], from: IdentityFrom) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let name = match from {
        IdentityFrom::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        IdentityFrom::DnsSan | IdentityFrom::UriSan => {
            let san = cert.subject_alternative_name().ok()??;
            san.value
                .general_names
                .iter()
                .find_map(|n| match (n, from) {
                    (GeneralName::DNSName(d), IdentityFrom::DnsSan) => Some((*d).to_owned()),
                    (GeneralName::URI(u), IdentityFrom::UriSan) => Some((*u).to_owned()),
                    _ => None,
                })
        }
    };
    name.filter(|n| !n.is_empty())
}

/// Why a handshake failed, from the error tokio-rustls returns (a rustls
/// error inside an `io::Error`, or the socket's own error).
fn classify(e: &io::Error) -> TlsFailure {
    let Some(rustls_error) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return TlsFailure::Handshake;
    };
    match rustls_error {
        // The first bytes are not a TLS record: a plaintext client.
        rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
            | rustls::InvalidMessage::UnknownProtocolVersion
            | rustls::InvalidMessage::MessageTooLarge,
        ) => TlsFailure::NotTls,
        rustls::Error::NoCertificatesPresented => TlsFailure::NoCertificate,
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => TlsFailure::UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsFailure::NotYetValid
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                TlsFailure::WrongPurpose
            }
            _ => TlsFailure::BadCertificate,
        },
        _ => TlsFailure::Handshake,
    }
}

/// The server settings of `config`, its files read now.
fn server_config(config: &TlsConfig, prefix: &str) -> Result<ServerConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let err = |k: &str, message: String| ConfigError {
        key: key(k),
        message,
    };
    let (Some(cert_path), Some(key_path)) = (&config.cert, &config.key) else {
        return Err(err("cert", "tls.cert and tls.key are both needed".into()));
    };
    let certs = read_certs(cert_path).map_err(|m| err("cert", m))?;
    let private = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        err(
            "key",
            format!("{}: no PEM private key: {e}", key_path.display()),
        )
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| err("cert", e.to_string()))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(ca_path).map_err(|m| err("client_ca", m))? {
                roots.add(ca).map_err(|e| {
                    err(
                        "client_ca",
                        format!("{}: not a usable CA certificate: {e}", ca_path.display()),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| err("client_ca", format!("{}: {e}", ca_path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_single_cert(certs, private).map_err(|e| {
        err(
            "key",
            format!(
                "{} does not fit {}: {e}",
                key_path.display(),
                cert_path.display()
            ),
        )
    })?;
    // No TLS 1.3 session tickets: they are data the server sends unasked,
    // and a device that only writes never reads them; closing a socket
    // with unread data sends a reset, and a reset makes the kernel discard
    // what the hub had not read yet: the device's last frames.
    server.send_tls13_tickets = 0;
    Ok(server)
}

/// Every certificate of a PEM file; at least one.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn the_node_is_read_from_the_field_asked_for() {
        let mut params =
            rcgen::CertificateParams::new(vec!["radar3.fleet".to_owned()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "radar3");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://fleet/radar3".try_into().expect("uri"),
        ));
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let der = cert.der();
        assert_eq!(
            node_in_certificate(der, IdentityFrom::Cn).as_deref(),
            Some("radar3")
        );
        assert_eq!(
            node_in_certificate(der, IdentityFrom::DnsSan).as_deref(),
            Some("radar3.fleet")
        );
        assert_eq!(
            node_in_certificate(der, IdentityFrom::UriSan).as_deref(),
            Some("spiffe://fleet/radar3")
        );
        // No SAN at all, no CN: nothing names a node.
        let mut bare = rcgen::CertificateParams::default();
        bare.distinguished_name = rcgen::DistinguishedName::new();
        let bare = bare.self_signed(&key).expect("cert");
        for from in [IdentityFrom::Cn, IdentityFrom::DnsSan, IdentityFrom::UriSan] {
            assert_eq!(node_in_certificate(bare.der(), from), None);
        }
        assert_eq!(node_in_certificate(b"not DER", IdentityFrom::Cn), None);
    }

    #[test]
    fn handshake_errors_are_told_apart() {
        let cert = |c| classify(&io_error(rustls::Error::InvalidCertificate(c)));
        assert_eq!(cert(CertificateError::UnknownIssuer), TlsFailure::UnknownCa);
        assert_eq!(cert(CertificateError::Expired), TlsFailure::Expired);
        assert_eq!(cert(CertificateError::NotValidYet), TlsFailure::NotYetValid);
        assert_eq!(
            cert(CertificateError::InvalidPurpose),
            TlsFailure::WrongPurpose
        );
        assert_eq!(
            cert(CertificateError::BadSignature),
            TlsFailure::BadCertificate
        );
        assert_eq!(
            classify(&io_error(rustls::Error::NoCertificatesPresented)),
            TlsFailure::NoCertificate
        );
        assert_eq!(
            classify(&io_error(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            ))),
            TlsFailure::NotTls
        );
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::UnexpectedEof)),
            TlsFailure::Handshake
        );
    }
}
