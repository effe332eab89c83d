//! Certificates made at test time (rcgen) and written to a fresh
//! directory, and a TLS client for the socket tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A CA that signs certificates.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate and its key, PEM.
    pub fn issue(&self, leaf: Leaf) -> (String, String) {
        let mut params = CertificateParams::new(leaf.dns.clone()).expect("params");
        // rcgen's default subject has a CN of its own.
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = &leaf.cn {
            params
                .distinguished_name
                .push(DnType::CommonName, cn.as_str());
        }
        for uri in &leaf.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into().expect("uri")));
        }
        for ip in &leaf.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.extended_key_usages = leaf.purposes.clone();
        if let Some((from, to)) = leaf.validity {
            params.not_before = date_time_ymd(from, 1, 1);
            params.not_after = date_time_ymd(to, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// What a leaf certificate says.
#[derive(Clone)]
pub struct Leaf {
    pub cn: Option<String>,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub purposes: Vec<ExtendedKeyUsagePurpose>,
    /// Valid from 1 January of the first year to 1 January of the second.
    pub validity: Option<(i32, i32)>,
}

impl Leaf {
    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server() -> Leaf {
        Leaf {
            cn: Some("framehub".into()),
            dns: vec!["localhost".into()],
            uris: Vec::new(),
            ips: vec!["127.0.0.1".parse().expect("ip")],
            purposes: vec![ExtendedKeyUsagePurpose::ServerAuth],
            validity: None,
        }
    }

    /// A client certificate whose subject CN is `cn`.
    pub fn client(cn: &str) -> Leaf {
        Leaf {
            cn: Some(cn.into()),
            dns: Vec::new(),
            uris: Vec::new(),
            ips: Vec::new(),
            purposes: vec![ExtendedKeyUsagePurpose::ClientAuth],
            validity: None,
        }
    }
}

/// A directory of PEM files for one test.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Ca,
}

impl Pki {
    /// A CA and a server certificate (`ca.pem`, `server.pem`,
    /// `server.key`) in a new directory.
    pub fn new() -> Pki {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "framehub-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = Ca::new("framehub test CA");
        let pki = Pki { dir, ca };
        pki.write("ca.pem", &pki.ca.pem());
        let (cert, key) = pki.ca.issue(Leaf::server());
        pki.write("server.pem", &cert);
        pki.write("server.key", &key);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    }

    /// Writes `name.pem` and `name.key` for `leaf`, signed by `ca`.
    pub fn client(&self, name: &str, ca: &Ca, leaf: Leaf) -> (PathBuf, PathBuf) {
        let (cert, key) = ca.issue(leaf);
        (
            self.write(&format!("{name}.pem"), &cert),
            self.write(&format!("{name}.key"), &key),
        )
    }

    /// The listener's `[tls]` table: this server certificate, and
    /// `client_ca` when client certificates are required.
    pub fn server_tls(&self, client_ca: bool) -> framehub::TlsConfig {
        framehub::TlsConfig {
            cert: Some(self.path("server.pem")),
            key: Some(self.path("server.key")),
            client_ca: client_ca.then(|| self.path("ca.pem")),
            ..framehub::TlsConfig::default()
        }
    }

    /// A TLS client trusting this CA, with a client certificate if given.
    pub fn connector(&self, client: Option<(&Path, &Path)>) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(self.path("ca.pem")).expect("ca") {
            roots.add(ca.expect("ca cert")).expect("root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .expect("cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("chain");
                let key = PrivateKeyDer::from_pem_file(key).expect("key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client cert")
            }
        };
        TlsConnector::from(Arc::new(config))
    }

    /// Connects to `addr` and makes the handshake for `localhost`.
    pub async fn connect(
        &self,
        addr: std::net::SocketAddr,
        client: Option<(&Path, &Path)>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("name");
        self.connector(client).connect(name, tcp).await
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
