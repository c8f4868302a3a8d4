//! TLS for both listeners (rustls through tokio-rustls, ring as the crypto
//! provider, no OpenSSL): the TCP port speaks TLS and the HTTP port HTTPS
//! and WSS when `--tls-cert` and `--tls-key` are given. TLS 1.2 and 1.3.
//!
//! The loaded certificate lives in a [`Tls`] that hands each new handshake
//! the configuration in force; [`Tls::reload`] (on SIGHUP) reads the files
//! again and swaps it, so sessions already open keep theirs and nobody is
//! dropped. A certificate that cannot be read is an error at start and,
//! on reload, leaves the running one in place.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file could not be read or holds no private key.
    #[error("cannot read the TLS key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (the key does not match, an unsupported key type).
    #[error("the TLS certificate and key cannot be used: {0}")]
    Config(#[from] rustls::Error),
}

/// The two configurations a certificate makes.
#[derive(Debug)]
struct Loaded {
    /// For the TCP port (no ALPN: the chat protocol is all it speaks).
    chat: Arc<ServerConfig>,
    /// For the HTTP port (ALPN `http/1.1`).
    http: Arc<ServerConfig>,
}

/// The certificate in force, and where it is read from.
#[derive(Debug)]
pub struct Tls {
    /// The certificate chain file.
    cert: PathBuf,
    /// The private key file.
    key: PathBuf,
    /// What new handshakes use.
    current: ArcSwap<Loaded>,
}

impl Tls {
    /// Loads the pair, or says why it cannot be used.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, TlsError> {
        let loaded = load(cert, key)?;
        Ok(Arc::new(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Reads the files again; new handshakes use the new pair. On error
    /// the running pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load(&self.cert, &self.key)?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// An acceptor for the TCP port with the pair in force.
    pub fn chat_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.load().chat))
    }

    /// An acceptor for the HTTP port with the pair in force.
    pub fn http_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.load().http))
    }
}

fn load(cert_path: &Path, key_path: &Path) -> Result<Loaded, TlsError> {
    let cert_err = |reason: String| TlsError::Certificate {
        path: cert_path.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| cert_err(pem_reason(e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(pem_reason(e)))?;
    if certs.is_empty() {
        return Err(cert_err("no PEM certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.to_owned(),
        reason: pem_reason(e),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chat = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let mut http = chat.clone();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        chat: Arc::new(chat),
        http: Arc::new(http),
    })
}

/// A PEM error as a reason for a person.
fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) if e.kind() == io::ErrorKind::NotFound => {
            "no such file".into()
        }
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the right kind in it".into(),
        other => format!("{other:?}"),
    }
}
