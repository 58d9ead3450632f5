//! Certificates for our TLS listeners (`[http.tls]`, `[sip.tls]`) and
//! the authorities we trust when we open TLS ourselves (`sip.tls.ca`, or
//! the system's roots).
//!
//! rustls (no OpenSSL) with the ring provider, TLS 1.2 and 1.3 only. A
//! listener serves its certificate from a [`Certificates`] store that a
//! reload fills again from the files, so a renewed certificate (certbot,
//! an ACME client) takes effect on SIGHUP without dropping a connection;
//! a reload whose files are bad keeps the running certificate. A
//! certificate outside its validity period is refused at start, by
//! `check-config` and on reload: peers would refuse it anyway, and the
//! operator learns it from us first.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tollbridge_config::TlsFiles;

/// Why a certificate, key or CA file could not be used; names the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("{table}.{key} = {path:?}: {reason}")]
    File {
        /// `http.tls` or `sip.tls`.
        table: &'static str,
        /// `certificate`, `private_key` or `ca`.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error(
        "{table}.private_key = {key_path:?} does not belong to {table}.certificate = {certificate_path:?}: {reason}"
    )]
    Mismatch {
        /// `http.tls` or `sip.tls`.
        table: &'static str,
        /// The key file.
        key_path: String,
        /// The certificate file.
        certificate_path: String,
        /// What rustls said.
        reason: String,
    },
}

/// The crypto every TLS connection of ours uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the chain and key `files` names (keys reported under `table`),
/// checks that they belong together and that the leaf is valid now.
pub fn load(table: &'static str, files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let certificate_path = files.certificate.display().to_string();
    let key_path = files.private_key.display().to_string();
    let certificate_error = |reason: String| TlsError::File {
        table,
        key: "certificate",
        path: certificate_path.clone(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .and_then(|certificates| certificates.collect::<Result<_, _>>())
        .map_err(|e| certificate_error(format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(certificate_error(
            "no CERTIFICATE block in the file".to_owned(),
        ));
    };
    check_validity(leaf, now_unix()).map_err(certificate_error)?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key).map_err(|e| TlsError::File {
        table,
        key: "private_key",
        path: key_path.clone(),
        reason: format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        table,
        key_path,
        certificate_path,
        reason: e.to_string(),
    })
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whether the certificate `der` is valid at `now` (Unix seconds); the
/// reason names its dates when not.
fn check_validity(der: &CertificateDer<'_>, now: i64) -> Result<(), String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the first certificate cannot be parsed: {e}"))?;
    let validity = certificate.validity();
    if now > validity.not_after.timestamp() {
        return Err(format!(
            "the certificate expired on {} (subject {})",
            validity.not_after,
            certificate.subject()
        ));
    }
    if now < validity.not_before.timestamp() {
        return Err(format!(
            "the certificate is not valid before {} (subject {})",
            validity.not_before,
            certificate.subject()
        ));
    }
    Ok(())
}

/// The authorities outbound TLS trusts: the certificates of `ca` (a PEM
/// file, `sip.tls.ca`), or the system's roots when it is `None`.
pub fn client_roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let file_error = |reason: String| TlsError::File {
                table: "sip.tls",
                key: "ca",
                path: path.display().to_string(),
                reason,
            };
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<_, _>>())
                .map_err(|e| file_error(format!("not PEM certificates: {e}")))?;
            if certificates.is_empty() {
                return Err(file_error("no CERTIFICATE block in the file".to_owned()));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|e| file_error(format!("not a usable authority: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(error = %error, "a system root certificate could not be read");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!(added, ignored, "system roots loaded");
            }
            if roots.is_empty() {
                tracing::warn!(
                    "no system root certificates found (install ca-certificates or set sip.tls.ca): outbound TLS will fail verification"
                );
            }
        }
    }
    Ok(roots)
}

/// The certificate a listener serves, replaced on reload.
#[derive(Debug)]
pub struct Certificates {
    table: &'static str,
    current: ArcSwap<CertifiedKey>,
}

impl Certificates {
    /// A store serving `files`'s certificate (keys named under `table`).
    pub fn open(table: &'static str, files: &TlsFiles) -> Result<Arc<Certificates>, TlsError> {
        Ok(Arc::new(Certificates {
            table,
            current: ArcSwap::from_pointee(load(table, files)?),
        }))
    }

    /// Reads `files` again; new handshakes use them from now on. On error
    /// the running certificate stays.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), TlsError> {
        self.current.store(Arc::new(load(self.table, files)?));
        Ok(())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls server configuration over `certificates`, offering
/// `alpn` (nothing for SIP, which has no ALPN name).
pub fn server_config(
    certificates: Arc<Certificates>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = alpn.iter().map(|name| name.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let certificate = dir.join(format!("{name}.crt"));
        let private_key = dir.join(format!("{name}.key"));
        std::fs::write(&certificate, certified.cert.pem()).unwrap();
        std::fs::write(&private_key, certified.key_pair.serialize_pem()).unwrap();
        TlsFiles {
            certificate,
            private_key,
        }
    }

    /// A self-signed pair valid from `not_before` to `not_after` (years).
    fn write_dated(dir: &Path, not_before: i32, not_after: i32) -> TlsFiles {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let files = TlsFiles {
            certificate: dir.join(format!("dated-{not_before}.crt")),
            private_key: dir.join(format!("dated-{not_before}.key")),
        };
        std::fs::write(&files.certificate, certificate.pem()).unwrap();
        std::fs::write(&files.private_key, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_pair_loads_and_bad_files_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_pair(dir.path(), "a");
        assert!(load("http.tls", &good).is_ok());

        let other = write_pair(dir.path(), "b");
        let mismatched = TlsFiles {
            certificate: good.certificate.clone(),
            private_key: other.private_key.clone(),
        };
        let error = load("sip.tls", &mismatched).unwrap_err().to_string();
        assert!(
            error.starts_with("sip.tls.private_key")
                && error.contains("does not belong to sip.tls.certificate"),
            "{error}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem at all").unwrap();
        let error = load(
            "http.tls",
            &TlsFiles {
                certificate: garbage.clone(),
                private_key: good.private_key.clone(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("http.tls.certificate"), "{error}");
        let error = load(
            "sip.tls",
            &TlsFiles {
                certificate: good.certificate.clone(),
                private_key: garbage,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("sip.tls.private_key"), "{error}");
        // The key in the certificate's place is no certificate.
        let error = load(
            "http.tls",
            &TlsFiles {
                certificate: good.private_key.clone(),
                private_key: good.private_key.clone(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("http.tls.certificate"), "{error}");
    }

    #[test]
    fn a_certificate_outside_its_dates_is_refused_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let expired = write_dated(dir.path(), 2020, 2021);
        let error = load("sip.tls", &expired).unwrap_err().to_string();
        assert!(
            error.starts_with("sip.tls.certificate")
                && error.contains("expired on")
                && error.contains("2021"),
            "{error}"
        );
        let future = write_dated(dir.path(), 2090, 2091);
        let error = load("sip.tls", &future).unwrap_err().to_string();
        assert!(error.contains("not valid before"), "{error}");
        let current = write_dated(dir.path(), 2000, 2090);
        assert!(load("sip.tls", &current).is_ok());
    }

    #[test]
    fn a_reload_with_bad_files_keeps_the_running_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "a");
        let store = Certificates::open("http.tls", &first).unwrap();
        let serving = store.current.load_full();
        std::fs::write(&first.certificate, "truncated").unwrap();
        assert!(store.reload(&first).is_err());
        assert!(Arc::ptr_eq(&serving, &store.current.load_full()));
        let second = write_pair(dir.path(), "b");
        store.reload(&second).unwrap();
        assert!(!Arc::ptr_eq(&serving, &store.current.load_full()));
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let pair = write_pair(dir.path(), "ca");
        assert_eq!(client_roots(Some(&pair.certificate)).unwrap().len(), 1);
        let error = client_roots(Some(&pair.private_key))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("sip.tls.ca"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = client_roots(Some(&empty)).unwrap_err().to_string();
        assert!(error.contains("no CERTIFICATE"), "{error}");
    }
}
