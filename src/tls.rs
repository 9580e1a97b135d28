//! TLS built in (rustls): the server's certificate and key, optional client certificates, and
//! reloading both on SIGHUP without dropping the connections already open.
//!
//! # Shape
//! [`Certificates`] holds the current rustls configuration and a generation number. The files
//! are read off the shards, at start and by the SIGHUP watcher thread ([`watch_sighup`]): a
//! reload that fails (a half-written key, a certificate that does not match it) keeps the old
//! configuration and says why in the log. Each shard's accept loop keeps its own acceptor and
//! looks at the generation (one atomic load per accepted connection, never per request) to
//! pick up a new one; connections made before a reload keep theirs until they close.
//!
//! The handshake runs in the connection's own task on the accepting shard, under the same
//! deadline as a request head, so a client that opens a connection and never speaks costs one
//! idle task and is cut off like a slow head.
//!
//! Offered: TLS 1.2 and 1.3, ALPN `http/1.1` (a client asking for `h2` only is refused by the
//! handshake, as it should be: this server speaks HTTP/1.1).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_rustls::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ClientAuth, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {reason}", path.display())]
    Read { what: &'static str, path: PathBuf, reason: String },
    #[error("{} holds no {what}", path.display())]
    Empty { what: &'static str, path: PathBuf },
    #[error("the TLS configuration is not usable: {0}")]
    Config(String),
    #[error("tls.cert_file and tls.key_file go together: set both, or neither")]
    Incomplete,
}

/// The files of a TLS configuration (from `[tls]`), loaded into a rustls configuration.
#[derive(Debug, Clone)]
pub struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_auth: ClientAuth,
}

impl Files {
    /// The files named by the configuration; `None` when TLS is off.
    pub fn of(config: &TlsConfig) -> Result<Option<Self>, TlsError> {
        match (&config.cert_file, &config.key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(Files {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.client_ca_file.clone(),
                client_auth: config.client_auth,
            })),
            _ => Err(TlsError::Incomplete),
        }
    }

    /// Reads the files (blocking: at start, or on the watcher thread) into a configuration.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = read_certs(&self.cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError::Read {
            what: "private key",
            path: self.key.clone(),
            reason: e.to_string(),
        })?;
        // The provider is named rather than left to the process default, which another crate's
        // features could make ambiguous.
        let builder = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match (&self.client_ca, self.client_auth) {
            (None, ClientAuth::Off) => builder.with_no_client_auth(),
            (None, _) => {
                return Err(TlsError::Config(
                    "tls.client_auth needs tls.client_ca_file, the CA clients are checked against".into(),
                ))
            }
            (Some(_), ClientAuth::Off) => {
                return Err(TlsError::Config(
                    "tls.client_ca_file is set but tls.client_auth is off: set it to optional or required".into(),
                ))
            }
            (Some(ca), auth) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca, "CA certificate")? {
                    roots.add(cert).map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
                }
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
                let verifier = if auth == ClientAuth::Optional { verifier.allow_unauthenticated() } else { verifier };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Config(e.to_string()))?)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read { what, path: path.to_owned(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what, path: path.to_owned() });
    }
    Ok(certs)
}

/// The configuration in force and how many times it was replaced.
pub struct Certificates {
    files: Files,
    current: Mutex<Arc<ServerConfig>>,
    generation: AtomicU64,
}

impl Certificates {
    /// Loads the files once; start-up fails if they do not make a configuration.
    pub fn load(files: Files) -> Result<Arc<Self>, TlsError> {
        let config = files.load()?;
        Ok(Arc::new(Certificates { files, current: Mutex::new(config), generation: AtomicU64::new(1) }))
    }

    /// Reads the files again; on success new handshakes use them, on failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.load()?;
        *self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn acceptor(&self) -> (u64, TlsAcceptor) {
        let config = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        (self.generation(), TlsAcceptor::from(config))
    }
}

/// A shard's acceptor, refreshed when the configuration was reloaded.
pub struct Acceptor {
    certificates: Arc<Certificates>,
    generation: u64,
    acceptor: TlsAcceptor,
}

impl Acceptor {
    pub fn new(certificates: Arc<Certificates>) -> Self {
        let (generation, acceptor) = certificates.acceptor();
        Acceptor { certificates, generation, acceptor }
    }

    /// The acceptor for the next connection: the newest configuration.
    pub fn current(&mut self) -> TlsAcceptor {
        if self.certificates.generation() != self.generation {
            (self.generation, self.acceptor) = self.certificates.acceptor();
        }
        self.acceptor.clone()
    }
}

/// The subject of the client certificate an established connection verified, if it showed
/// one, as RFC 4514 writes it (`CN=agent-42, O=fleet`).
pub fn peer_subject(conn: &rustls::ServerConnection) -> Option<Box<str>> {
    subject_of(conn.peer_certificates()?.first()?.as_ref())
}

fn subject_of(der: &[u8]) -> Option<Box<str>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string().into_boxed_str())
}

/// Reloads `certificates` on every SIGHUP, on a thread of its own (file reads block).
pub fn watch_sighup(certificates: Arc<Certificates>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new().name("tls-reload".into()).spawn(move || {
        for _ in signals.forever() {
            match certificates.reload() {
                Ok(()) => tracing::info!(generation = certificates.generation(), "TLS certificate and key reloaded"),
                Err(err) => tracing::error!(%err, "TLS reload failed; the previous certificate stays in use"),
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_subject_of_a_certificate_reads_as_rfc4514() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "agent-42");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "fleet");
        let cert = params.self_signed(&key).unwrap();
        let subject = subject_of(cert.der()).unwrap();
        assert!(subject.contains("CN=agent-42") && subject.contains("O=fleet"), "{subject}");
        assert_eq!(subject_of(b"not a certificate"), None);
    }
}
