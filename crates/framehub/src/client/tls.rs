//! The client's TLS: its CA, certificate and key read once at start, the
//! name the server must prove, and the handshake on a connected socket.

use std::io;
use std::sync::Arc;

use rustls::{ClientConfig as RustlsConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ClientError, ClientTlsConfig};
use crate::tls::{provider, read_certs};

/// A prepared TLS client: settings and the server name to check.
pub(super) struct Connector {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Reads the files of `config`; the server name defaults to the host
    /// part of `addr`.
    pub(super) fn new(config: &ClientTlsConfig, addr: &str) -> Result<Connector, ClientError> {
        let bad = |key: &'static str, message: String| ClientError::Config { key, message };
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&config.ca).map_err(|m| bad("tls.ca", m))? {
            roots.add(ca).map_err(|e| {
                bad(
                    "tls.ca",
                    format!("{}: not a usable CA certificate: {e}", config.ca.display()),
                )
            })?;
        }
        let builder = RustlsConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| bad("tls", e.to_string()))?
            .with_root_certificates(roots);
        let settings = match (&config.cert, &config.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert).map_err(|m| bad("tls.cert", m))?;
                let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    bad(
                        "tls.key",
                        format!("{}: no PEM private key: {e}", key.display()),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| bad("tls.key", format!("{}: {e}", key.display())))?
            }
            (Some(_), None) => return Err(bad("tls.key", "tls.cert needs tls.key".into())),
            (None, Some(_)) => return Err(bad("tls.cert", "tls.key needs tls.cert".into())),
        };
        let name = match &config.server_name {
            Some(name) => name.clone(),
            None => host_of(addr).to_owned(),
        };
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| bad("tls.server_name", format!("{name:?}: {e}")))?;
        Ok(Connector {
            connector: TlsConnector::from(Arc::new(settings)),
            server_name,
        })
    }

    /// The client side of the handshake on a connected socket.
    pub(super) async fn connect(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        self.connector
            .connect(self.server_name.clone(), stream)
            .await
    }
}

/// The host of `host:port`, `[v6]:port` without its brackets.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        assert_eq!(host_of("hub.example:30050"), "hub.example");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:30050"), "::1");
        assert_eq!(host_of("hub"), "hub");
    }
}
