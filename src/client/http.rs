//! A small blocking HTTP/1.1 client on `std::net`: one request per connection, enough for a
//! command-line tool that makes one or two calls per run. No TLS: put marconi (or Zaqar) behind a
//! TLS-terminating proxy and point the client at the proxy's plain side, or use curl.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response the client reads (a page of 1000 big messages fits).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
const MAX_HEADERS: usize = 64;

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
    #[error("the answer from {target} is not valid HTTP/1.1: {reason}")]
    Malformed { target: String, reason: String },
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

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
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
) -> Result<HttpResponse, TransportError> {
    let target = endpoint.target();
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

    let mut req = format!("{method} {}{path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n", endpoint.prefix);
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    match body {
        Some(b) => req.push_str(&format!("Content-Length: {}\r\n\r\n", b.len())),
        None => req.push_str("\r\n"),
    }
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&bytes).map_err(io_err)?;

    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).map_err(io_err)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if buf.len() > MAX_RESPONSE_BYTES {
            return Err(TransportError::Malformed { target, reason: "the answer is too large".into() });
        }
    }
    parse_response(&buf, method == "HEAD").map_err(|reason| TransportError::Malformed { target, reason })
}

/// Parses a whole response read until the server closed the connection.
fn parse_response(buf: &[u8], head_only: bool) -> Result<HttpResponse, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the connection closed in the middle of the answer".into()),
        Err(e) => return Err(e.to_string()),
    };
    let status = parsed.code.ok_or("no status code")?;
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).trim().to_owned()))
        .collect();
    let rest = buf.get(head_len..).unwrap_or_default();
    let find = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let body = if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if find("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad Content-Length {len:?}"))?;
        rest.get(..len).ok_or("the connection closed before the whole body arrived")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { status, headers, body })
}

/// Decodes a complete chunked body (trailers ignored).
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let line = std::str::from_utf8(data.get(..line_end).unwrap_or_default()).map_err(|e| e.to_string())?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = data.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("truncated chunk")?);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
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
    fn responses_with_length_chunks_or_eof_parse() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA", false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nall of it", false).unwrap();
        assert_eq!(r.body, b"all of it");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", false).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-", false).is_err());
        assert_eq!(parse_response(b"HTTP/1.1 204 No Content\r\n\r\n", false).unwrap().status, 204);
    }

    #[test]
    fn encoding_keeps_unreserved_characters() {
        assert_eq!(encode("a.b-c_d~9"), "a.b-c_d~9");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
