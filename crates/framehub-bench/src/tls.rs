//! TLS for the load generator and the idle connections: a client trusting
//! `--tls-ca`, checking the server's name, on the same rustls and `ring`
//! provider the hub uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// TLS settings of a bench run.
#[derive(Debug, Clone)]
pub struct BenchTls {
    /// CA certificates (PEM) the server's certificate must chain to.
    pub ca: PathBuf,
    /// The in-process hub's certificate chain and key (`--inproc`).
    pub server: Option<(PathBuf, PathBuf)>,
    /// The name to check (default: the server's IP address).
    pub server_name: Option<String>,
}

/// Something the generator writes to: a TCP stream or a TLS one.
pub type Conn = Box<dyn AsyncWrite + Unpin + Send>;

/// A prepared TLS client.
#[derive(Clone)]
pub struct Connector {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Connector {
    /// Reads the CA file; the name defaults to `addr`'s IP.
    pub fn new(tls: &BenchTls, addr: SocketAddr) -> anyhow::Result<Connector> {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&tls.ca)
            .with_context(|| format!("--tls-ca {}", tls.ca.display()))?
        {
            roots.add(ca.context("--tls-ca")?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = match &tls.server_name {
            Some(n) => ServerName::try_from(n.clone()).context("--tls-server-name")?,
            None => ServerName::from(addr.ip()),
        };
        Ok(Connector {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The handshake on a connected socket.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// Connects to `addr`, with a TLS handshake when `tls` is given.
pub async fn connect(addr: SocketAddr, tls: Option<&Connector>) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    Ok(match tls {
        None => Box::new(tcp),
        Some(c) => Box::new(c.handshake(tcp).await.context("TLS handshake")?),
    })
}
