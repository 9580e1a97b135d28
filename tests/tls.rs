//! TLS built in: handshakes with TLS 1.2 and 1.3 and ALPN `http/1.1`; plain HTTP and TLS side by
//! side; the certificate reloaded on SIGHUP while a connection stays open on the old one; client
//! certificates required, optional, accepted and refused. A test CA is made for each test.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A certificate authority for one test, and the PEM files it made.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).unwrap();
        Ca { cert, key, dir: dir.to_owned() }
    }

    fn ca_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-ca.pem"))
    }

    /// Issues a certificate for `cn` (valid for localhost and 127.0.0.1) into `<file>.pem` and
    /// `<file>.key`; returns the two paths.
    fn issue(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting `ca_file`, speaking the given versions, optionally with a certificate.
fn client_config(
    ca_file: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<(&Path, &Path)>,
) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap()).unwrap()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake, or says why it failed.
fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<Tls, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

/// One request over an established TLS stream (with the usual Zaqar headers).
fn request(tls: &mut Tls, method: &str, path: &str) -> Result<wire::OwnedResponse, String> {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nClient-ID: {CLIENT_ID}\r\nX-Project-ID: tls\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut rb = wire::ReadBuf::new();
    wire::read_response(tls, &mut rb, wire::Parser::new(wire::Limits::DEFAULT)).map_err(|e| e.to_string())
}

/// The leaf certificate the server presented on `tls`.
fn presented(tls: &Tls) -> Vec<u8> {
    tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

#[test]
fn handshakes_with_tls12_and_tls13_and_alpn_http11() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let (cert, key) = ca.issue("server", "localhost");
    let server = Server::start_with(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut tls = connect(server.addr, client_config(&ca.ca_file("server"), &[version], None)).unwrap();
        assert_eq!(tls.conn.protocol_version(), Some(version.version));
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(request(&mut tls, "GET", "/v2/ping").unwrap().status, 204);
        assert_eq!(request(&mut tls, "PUT", "/v2/queues/secure").unwrap().status / 100, 2, "keep-alive over TLS");
    }
    // Plain HTTP on a TLS port is not answered as HTTP.
    let mut plain = Client::connect(server.addr);
    assert!(plain.try_request("GET", "/v2/ping", None).is_none());
    let m = metrics_tls(&server, &ca);
    assert!(m >= 2.0, "handshakes counted: {m}");
}

/// `marconi_tls_handshakes_total{shard="all"}` read over TLS (the only port there is).
fn metrics_tls(server: &Server, ca: &Ca) -> f64 {
    let mut tls = connect(server.addr, client_config(&ca.ca_file("server"), &[&rustls::version::TLS13], None)).unwrap();
    let text = String::from_utf8(request(&mut tls, "GET", "/metrics").unwrap().body).unwrap();
    let line = text.lines().find(|l| l.starts_with("marconi_tls_handshakes_total{shard=\"all\"}")).unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn plain_and_tls_listen_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let (cert, key) = ca.issue("server", "localhost");
    let server = Server::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-listen",
        "127.0.0.1:0",
    ]);
    let tls_addr = server.tls_addr.expect("the ready line names the TLS address");
    assert_ne!(tls_addr, server.addr);
    assert_eq!(server.client().get("/v2/ping").status, 204, "plain HTTP on listen");
    let mut tls = connect(tls_addr, client_config(&ca.ca_file("server"), &[&rustls::version::TLS13], None)).unwrap();
    assert_eq!(request(&mut tls, "GET", "/v2/ping").unwrap().status, 204);
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let (cert, key) = ca.issue("server", "first");
    let server = Server::start_with(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let config = client_config(&ca.ca_file("server"), &[&rustls::version::TLS13], None);
    let mut open = connect(server.addr, config.clone()).unwrap();
    assert_eq!(request(&mut open, "GET", "/v2/ping").unwrap().status, 204);
    let first = presented(&open);

    // A broken pair is refused and the old certificate stays in force.
    std::fs::write(&key, "not a key").unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    // Then the new pair: handshakes made after the signal present it.
    ca.issue("server", "second");
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    let mut renewed = None;
    for _ in 0..500 {
        let mut fresh = connect(server.addr, config.clone()).unwrap();
        if presented(&fresh) != first {
            assert_eq!(request(&mut fresh, "GET", "/v2/ping").unwrap().status, 204);
            renewed = Some(fresh);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(renewed.is_some(), "new handshakes never presented the reloaded certificate");
    // The connection made before the reload was not dropped and still serves.
    assert_eq!(request(&mut open, "GET", "/v2/ping").unwrap().status, 204);
    assert_eq!(presented(&open), first);
}

#[test]
fn client_certificates_required_accepted_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new(dir.path(), "server");
    let (cert, key) = server_ca.issue("server", "localhost");
    let clients = Ca::new(dir.path(), "clients");
    let (agent_cert, agent_key) = clients.issue("agent", "agent-42");
    let stranger = Ca::new(dir.path(), "stranger");
    let (bad_cert, bad_key) = stranger.issue("stranger", "agent-42");
    let args = |auth: &str| {
        vec![
            "--tls-cert".to_owned(),
            cert.to_str().unwrap().to_owned(),
            "--tls-key".into(),
            key.to_str().unwrap().into(),
            "--tls-client-ca".into(),
            clients.ca_file("clients").to_str().unwrap().into(),
            "--tls-client-auth".into(),
            auth.into(),
        ]
    };
    let v13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let ca_file = server_ca.ca_file("server");

    let required = args("required");
    let server = Server::start_with(&required.iter().map(String::as_str).collect::<Vec<_>>());
    let mut ok = connect(server.addr, client_config(&ca_file, v13, Some((&agent_cert, &agent_key)))).unwrap();
    assert_eq!(request(&mut ok, "GET", "/v2/ping").unwrap().status, 204, "a certificate from the client CA");
    // With TLS 1.3 the server judges the client's certificate after the client thinks the
    // handshake is done: the refusal shows on the first exchange.
    for refused in [None, Some((bad_cert.as_path(), bad_key.as_path()))] {
        let outcome = connect(server.addr, client_config(&ca_file, v13, refused))
            .and_then(|mut tls| request(&mut tls, "GET", "/v2/ping"));
        assert!(outcome.is_err(), "refused: {refused:?} got {:?}", outcome.map(|r| r.status));
    }
    drop(server);

    let optional = args("optional");
    let server = Server::start_with(&optional.iter().map(String::as_str).collect::<Vec<_>>());
    let mut anonymous = connect(server.addr, client_config(&ca_file, v13, None)).unwrap();
    assert_eq!(request(&mut anonymous, "GET", "/v2/ping").unwrap().status, 204, "optional: none is fine");
    let outcome = connect(server.addr, client_config(&ca_file, v13, Some((&bad_cert, &bad_key))))
        .and_then(|mut tls| request(&mut tls, "GET", "/v2/ping"));
    assert!(outcome.is_err(), "optional still refuses a certificate from another CA");
}

#[test]
fn a_certificate_without_its_key_or_a_ca_without_client_auth_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let (cert, _) = ca.issue("server", "localhost");
    let err = start_fails(dir.path(), &["--tls-cert", cert.to_str().unwrap()]);
    assert!(err.contains("tls.cert_file and tls.key_file go together"), "{err}");
    let (cert, key) = ca.issue("server", "localhost");
    let err = start_fails(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-client-ca",
            ca.ca_file("server").to_str().unwrap(),
        ],
    );
    assert!(err.contains("tls.client_auth is off"), "{err}");
    let (other_cert, _) = ca.issue("other", "localhost");
    let err =
        start_fails(dir.path(), &["--tls-cert", other_cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    assert!(err.contains("TLS configuration is not usable"), "{err}");
}
