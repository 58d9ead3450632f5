//! HTTPS on the API listener (`[http.tls]`), so Stripe's webhooks reach
//! the daemon without a proxy in front.
//!
//! rustls (no OpenSSL) with the ring provider, TLS 1.2 and 1.3 only,
//! HTTP/1.1 by ALPN. The certificate is served from a [`Certificates`]
//! store that a reload fills again from the files, so a renewed
//! certificate (certbot, an ACME client) takes effect on SIGHUP without
//! dropping a connection; a reload whose files are bad keeps the running
//! certificate. Handshakes run in tasks of their own with a time limit,
//! so a client that stalls mid-handshake holds nothing but its task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tollbridge_config::HttpTls;

/// The longest a client may take over its handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the backlog.
const HANDSHAKES_AT_ONCE: usize = 256;

/// Why a certificate and key could not be used; names the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("http.tls.{key} = {path:?}: {reason}")]
    File {
        /// `certificate` or `private_key`.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error(
        "http.tls.private_key = {key_path:?} does not belong to http.tls.certificate = {certificate_path:?}: {reason}"
    )]
    Mismatch {
        /// The key file.
        key_path: String,
        /// The certificate file.
        certificate_path: String,
        /// What rustls said.
        reason: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the chain and key `tls` names and checks that they belong
/// together.
pub fn load(tls: &HttpTls) -> Result<CertifiedKey, TlsError> {
    let certificate_path = tls.certificate.display().to_string();
    let key_path = tls.private_key.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.certificate)
        .and_then(|certificates| certificates.collect::<Result<_, _>>())
        .map_err(|e| TlsError::File {
            key: "certificate",
            path: certificate_path.clone(),
            reason: format!("not a PEM certificate chain: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::File {
            key: "certificate",
            path: certificate_path,
            reason: "no CERTIFICATE block in the file".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&tls.private_key).map_err(|e| TlsError::File {
        key: "private_key",
        path: key_path.clone(),
        reason: format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
            key_path,
            certificate_path,
            reason: e.to_string(),
        })?;
    Ok(certified)
}

/// The certificate the listener serves, replaced on reload.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<CertifiedKey>,
}

impl Certificates {
    /// A store serving `tls`'s files.
    pub fn open(tls: &HttpTls) -> Result<Arc<Certificates>, TlsError> {
        Ok(Arc::new(Certificates {
            current: ArcSwap::from_pointee(load(tls)?),
        }))
    }

    /// Reads `tls`'s files again; new handshakes use them from now on.
    /// On error the running certificate stays.
    pub fn reload(&self, tls: &HttpTls) -> Result<(), TlsError> {
        self.current.store(Arc::new(load(tls)?));
        Ok(())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls server configuration over `certificates`.
fn server_config(certificates: Arc<Certificates>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An HTTPS listener for `axum::serve`: connections come out of it with
/// their handshake done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `listener` with the certificate from `certificates`.
    pub fn new(
        listener: TcpListener,
        certificates: Arc<Certificates>,
    ) -> Result<TlsListener, rustls::Error> {
        let local = listener
            .local_addr()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let acceptor = TlsAcceptor::from(server_config(certificates)?);
        let (sender, ready) = mpsc::channel(64);
        tokio::spawn(handshakes(listener, acceptor, sender));
        Ok(TlsListener { ready, local })
    }
}

/// Accepts TCP connections and runs each handshake in a task of its own.
async fn handshakes(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "https: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if ready.is_closed() {
            return;
        }
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "https: handshake failed"),
                Err(_) => tracing::debug!(%peer, "https: handshake took over 10 s; closed"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The handshake task only stops with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str) -> HttpTls {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let certificate = dir.join(format!("{name}.crt"));
        let private_key = dir.join(format!("{name}.key"));
        std::fs::write(&certificate, certified.cert.pem()).unwrap();
        std::fs::write(&private_key, certified.key_pair.serialize_pem()).unwrap();
        HttpTls {
            certificate,
            private_key,
        }
    }

    #[test]
    fn a_pair_loads_and_bad_files_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_pair(dir.path(), "a");
        assert!(load(&good).is_ok());

        let other = write_pair(dir.path(), "b");
        let mismatched = HttpTls {
            certificate: good.certificate.clone(),
            private_key: other.private_key.clone(),
        };
        let error = load(&mismatched).unwrap_err().to_string();
        assert!(
            error.contains("does not belong to http.tls.certificate"),
            "{error}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem at all").unwrap();
        let error = load(&HttpTls {
            certificate: garbage.clone(),
            private_key: good.private_key.clone(),
        })
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("http.tls.certificate"), "{error}");
        let error = load(&HttpTls {
            certificate: good.certificate.clone(),
            private_key: garbage,
        })
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("http.tls.private_key"), "{error}");
        // The key in the certificate's place is no certificate.
        let error = load(&HttpTls {
            certificate: good.private_key.clone(),
            private_key: good.private_key.clone(),
        })
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("http.tls.certificate"), "{error}");
    }

    #[test]
    fn a_reload_with_bad_files_keeps_the_running_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "a");
        let store = Certificates::open(&first).unwrap();
        let serving = store.current.load_full();
        std::fs::write(&first.certificate, "truncated").unwrap();
        assert!(store.reload(&first).is_err());
        assert!(Arc::ptr_eq(&serving, &store.current.load_full()));
        let second = write_pair(dir.path(), "b");
        store.reload(&second).unwrap();
        assert!(!Arc::ptr_eq(&serving, &store.current.load_full()));
    }
}
