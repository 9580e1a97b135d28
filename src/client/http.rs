//! A small blocking HTTP/1.1 client: `std::net` for the socket, the `wire` crate for the bytes;
//! one request per connection, enough for a command-line tool that makes one or two calls per
//! run. No TLS: put marconi (or Zaqar) behind a
//! TLS-terminating proxy and point the client at the proxy's plain side, or use curl.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use wire::{OwnedResponse, ReadBuf, ReadError};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("`{0}` is not a URL this client can use: expected http://HOST[:PORT][/PREFIX] (no TLS)")]
    BadUrl(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("talking to {target}: {source}")]
    Io { target: String, source: io::Error },
    #[error("the answer from {target} is not valid HTTP/1.1: {source}")]
    Malformed { target: String, source: wire::Error },
    #[error("cannot send the request: {0}")]
    Request(#[from] wire::RequestError),
}

/// Where the API lives: `http://host:port/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`""` for the root).
    pub prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, TransportError> {
        let bad = || TransportError::BadUrl(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]:8888` or `host:8888`, but not the colons inside a bare IPv6 literal.
            Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, 80),
        };
        let prefix = path.trim_end_matches('/');
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            prefix: if prefix.is_empty() { String::new() } else { format!("/{prefix}") },
        })
    }

    fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Sends one request and reads its whole answer. `path` starts with `/` and may carry a query.
pub fn send(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<OwnedResponse, TransportError> {
    let target = endpoint.target();
    // Flags and URLs are the world's: refuse what would break the request before connecting.
    let path = format!("{}{path}", endpoint.prefix);
    wire::check_method(method)?;
    wire::check_target(&path)?;
    let mut fields = vec![("Host", target.as_str()), ("Connection", "close")];
    fields.extend_from_slice(headers);
    for (k, v) in &fields {
        wire::check_header(k, v)?;
    }
    let io_err = |source| TransportError::Io { target: target.clone(), source };
    let addrs: Vec<_> = (endpoint.host.trim_matches(|c| c == '[' || c == ']'), endpoint.port)
        .to_socket_addrs()
        .map_err(|source| TransportError::Resolve { host: endpoint.host.clone(), source })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| TransportError::Connect { target: target.clone(), source: last })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;

    let mut bytes = Vec::new();
    let mut req = wire::Request::new(&mut bytes, method, &path);
    for (k, v) in &fields {
        req.header(k, v);
    }
    match body {
        Some(b) => req.body(b),
        None => req.end(),
    }
    stream.write_all(&bytes).map_err(io_err)?;
    let parser = wire::Parser::new(wire::Limits::DEFAULT).head_request(method == "HEAD");
    wire::read_response(&mut stream, &mut ReadBuf::new(), parser).map_err(|e| match e {
        ReadError::Io(source) => TransportError::Io { target, source },
        ReadError::Http(source) => TransportError::Malformed { target, source },
    })
}

/// Percent-encodes one path segment or query value (everything but RFC 3986's unreserved set).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_and_prefix() {
        let e = Endpoint::parse("http://localhost:8888").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.prefix.as_str()), ("localhost", 8888, ""));
        let e = Endpoint::parse("http://[::1]:9000/zaqar/").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.prefix.as_str()), ("[::1]", 9000, "/zaqar"));
        assert_eq!(Endpoint::parse("http://example.org").unwrap().port, 80);
        assert!(Endpoint::parse("https://example.org").is_err());
        assert!(Endpoint::parse("localhost:8888").is_err());
        assert!(Endpoint::parse("http://h:99999").is_err());
    }

    #[test]
    fn what_would_break_the_request_is_refused_before_connecting() {
        // A documentation address: connecting would time out, so an answer means it never tried.
        let refused = |host: &str, path: &str, headers: &[(&str, &str)]| {
            let e = Endpoint { host: host.into(), port: 9, prefix: String::new() };
            matches!(send(&e, "GET", path, headers, None, Duration::from_secs(60)), Err(TransportError::Request(_)))
        };
        assert!(refused("192.0.2.1", "/v2/queues", &[("X-Project-ID", "p\r\nEvil: 1")]));
        assert!(refused("192.0.2.1", "/v2/queues", &[("Client-ID", "a\nb")]));
        assert!(refused("192.0.2.1", "/v2/a b", &[]));
        assert!(refused("h\r\nX: 1", "/", &[]), "the Host header is checked too");
    }

    #[test]
    fn encoding_keeps_unreserved_characters() {
        assert_eq!(encode("a.b-c_d~9"), "a.b-c_d~9");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
