//! A certificate authority made by each test that needs TLS (rcgen), so no
//! key is ever committed: the CA, certificates it signs for the names a
//! test wants, and client configurations that trust it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A test CA whose certificate is written to `ca.crt` in its directory.
pub struct TestCa {
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
    dir: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf then the CA.
    pub certificate: PathBuf,
    /// The leaf's key (PKCS#8).
    pub private_key: PathBuf,
}

impl TestCa {
    /// A new CA in `dir`.
    pub fn new(dir: &Path) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Tollbridge test CA");
        let key = rcgen::KeyPair::generate().expect("ca key");
        let certificate = params.self_signed(&key).expect("ca certificate");
        std::fs::write(dir.join("ca.crt"), certificate.pem()).expect("write ca.crt");
        TestCa {
            certificate,
            key,
            dir: dir.to_owned(),
        }
    }

    /// The CA's certificate (PEM), what a peer is told to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A certificate for `names` (DNS names or IP addresses), written as
    /// `<stem>.crt` (with the CA after the leaf) and `<stem>.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Issued {
        self.issue_valid(stem, names, None)
    }

    /// [`TestCa::issue`] valid only from 2020 to 2021: long expired.
    pub fn issue_expired(&self, stem: &str, names: &[&str]) -> Issued {
        self.issue_valid(stem, names, Some((2020, 2021)))
    }

    fn issue_valid(&self, stem: &str, names: &[&str], years: Option<(i32, i32)>) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("leaf params");
        if let Some((from, to)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("leaf certificate");
        let issued = Issued {
            certificate: self.dir.join(format!("{stem}.crt")),
            private_key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(
            &issued.certificate,
            format!("{}{}", leaf.pem(), self.certificate.pem()),
        )
        .expect("write certificate");
        std::fs::write(&issued.private_key, key.serialize_pem()).expect("write key");
        issued
    }

    /// A client configuration trusting this CA only.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let der =
            CertificateDer::from_pem_slice(self.certificate.pem().as_bytes()).expect("ca der");
        roots.add(der).expect("ca root");
        client_with(roots)
    }

    /// A server configuration serving `issued`.
    pub fn server(&self, issued: &Issued) -> Arc<rustls::ServerConfig> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&issued.certificate)
                .expect("chain file")
                .collect::<Result<_, _>>()
                .expect("chain");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&issued.private_key).expect("key");
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server config"),
        )
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_with(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A client configuration that trusts no one: for an edge that never
/// dials TLS.
pub fn trusting_nothing() -> Arc<rustls::ClientConfig> {
    client_with(rustls::RootCertStore::empty())
}
