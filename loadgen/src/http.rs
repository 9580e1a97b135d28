//! Minimal HTTP/1.1 client codec: request encoding and incremental response parsing.
//!
//! Hand-written rather than a client crate because the generator must run on glommio's
//! thread-per-core executors (no tokio) and must cost less per request than the server it
//! measures: one buffer write per request, and a parser that can be re-run on a growing buffer
//! after every read (responses arrive split at arbitrary points).

use std::io::Write;

use thiserror::Error;

/// Largest response accepted; anything bigger is a protocol error, not a reason to eat memory.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("bad Content-Length")]
    ContentLength,
    #[error("bad chunked encoding")]
    Chunked,
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("connection closed before the response was complete")]
    Truncated,
}

/// A complete response. Only what the workloads look at is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server asked to close the connection (or framed the body by closing it).
    pub close: bool,
    /// `Location` header, if any (claim ids live there on Zaqar).
    pub location: Option<String>,
}

/// Result of trying to parse a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A full response, and how many bytes of the buffer it used.
    Done(Response, usize),
}

enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Parses one response from the start of `buf`. `eof` says the peer has closed, which completes
/// a body framed by connection close and turns any other incomplete response into an error.
/// `head_request` is set for HEAD requests, whose responses never carry a body.
pub fn parse_response(buf: &[u8], eof: bool, head_request: bool) -> Result<Parsed, HttpError> {
    let mut offset = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&buf[offset..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return incomplete(buf.len(), eof),
            Err(e) => return Err(HttpError::Head(e)),
        };
        // `Complete` guarantees a status code.
        let status = resp.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            // Interim response (100 Continue, 103 Early Hints): skip it, the real one follows.
            offset += head_len;
            continue;
        }
        let mut close = resp.version == Some(0);
        let mut location = None;
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .ok_or(HttpError::ContentLength)?;
                if content_length.is_some_and(|old| old != v) {
                    return Err(HttpError::ContentLength);
                }
                content_length = Some(v);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("location") {
                location = std::str::from_utf8(h.value).ok().map(str::to_owned);
            }
        }
        let framing = if head_request || status == 204 || status == 304 {
            Framing::None
        } else if chunked {
            Framing::Chunked
        } else if let Some(n) = content_length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        let body_start = offset + head_len;
        let rest = &buf[body_start..];
        let (body, used) = match framing {
            Framing::None => (Vec::new(), 0),
            Framing::Length(n) => {
                if n > MAX_RESPONSE_BYTES {
                    return Err(HttpError::TooLarge);
                }
                if rest.len() < n {
                    return incomplete(buf.len(), eof);
                }
                (rest[..n].to_vec(), n)
            }
            Framing::Chunked => match decode_chunked(rest)? {
                Some(x) => x,
                None => return incomplete(buf.len(), eof),
            },
            Framing::UntilClose => {
                if !eof {
                    return incomplete(buf.len(), eof);
                }
                close = true;
                (rest.to_vec(), rest.len())
            }
        };
        return Ok(Parsed::Done(Response { status, body, close, location }, body_start + used));
    }
}

fn incomplete(len: usize, eof: bool) -> Result<Parsed, HttpError> {
    if eof {
        Err(HttpError::Truncated)
    } else if len > MAX_RESPONSE_BYTES {
        Err(HttpError::TooLarge)
    } else {
        Ok(Parsed::Incomplete)
    }
}

/// Decodes a chunked body at the start of `buf`: `Some((body, bytes used))`, or `None` when
/// more bytes are needed. Trailers are skipped.
fn decode_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(HttpError::Chunked),
        };
        pos += size_len;
        if size == 0 {
            // Trailer section: header lines until an empty line.
            loop {
                let Some(eol) = find_crlf(&buf[pos..]) else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        let size = usize::try_from(size).map_err(|_| HttpError::TooLarge)?;
        if size > MAX_RESPONSE_BYTES || body.len() + size > MAX_RESPONSE_BYTES {
            return Err(HttpError::TooLarge);
        }
        if buf.len() - pos < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err(HttpError::Chunked);
        }
        pos += 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Headers sent on every request, rendered once per run.
#[derive(Debug, Clone)]
pub struct CommonHeaders(Vec<u8>);

impl CommonHeaders {
    pub fn new(host: &str, client_id: &str) -> Self {
        let mut v = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = write!(
            v,
            "Host: {host}\r\nClient-ID: {client_id}\r\nUser-Agent: marconi-loadgen\r\nAccept: application/json\r\n"
        );
        CommonHeaders(v)
    }
}

/// Appends one request to `out`. `project_header` is the whole `X-Project-ID: ...\r\n` line, so
/// that per-queue header lines are rendered once and copied. A body, when given, is JSON.
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    common: &CommonHeaders,
    project_header: &[u8],
    body: Option<&[u8]>,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    out.extend_from_slice(&common.0);
    out.extend_from_slice(project_header);
    match body {
        Some(b) => {
            let _ = write!(out, "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", b.len());
            out.extend_from_slice(b);
        }
        None if method == "POST" || method == "PUT" || method == "PATCH" => {
            out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        }
        None => out.extend_from_slice(b"\r\n"),
    }
}

/// Renders the `X-Project-ID` header line for a project.
pub fn project_header(project: &str) -> Vec<u8> {
    format!("X-Project-ID: {project}\r\n").into_bytes()
}

/// True if `s` can be sent as a request target: a path with no whitespace or control bytes.
/// Hrefs come from the server and must not be able to inject headers.
pub fn is_safe_path(s: &str) -> bool {
    s.starts_with('/') && s.bytes().all(|b| b > b' ' && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (Response, usize) {
        match parse_response(buf, false, false).unwrap() {
            Parsed::Done(r, n) => (r, n),
            Parsed::Incomplete => panic!("incomplete"),
        }
    }

    /// Feeds `raw` split at every possible point (and byte by byte) and checks that the parser
    /// reports Incomplete until the last byte, then the same response.
    fn check_all_splits(raw: &[u8], expect_status: u16, expect_body: &[u8]) {
        for cut in 0..raw.len() {
            match parse_response(&raw[..cut], false, false).unwrap() {
                Parsed::Incomplete => {}
                Parsed::Done(..) => panic!("done early at {cut} of {}", raw.len()),
            }
        }
        let (r, n) = done(raw);
        assert_eq!(n, raw.len());
        assert_eq!(r.status, expect_status);
        assert_eq!(r.body, expect_body);
    }

    #[test]
    fn content_length_split_reads() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nLocation: /v2/queues/q/claims/abc\r\nContent-Length: 15\r\n\r\n{\"resources\":1}";
        check_all_splits(raw, 201, b"{\"resources\":1}");
        let (r, _) = done(raw);
        assert_eq!(r.location.as_deref(), Some("/v2/queues/q/claims/abc"));
        assert!(!r.close);
    }

    #[test]
    fn chunked_split_reads() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        check_all_splits(raw, 200, b"hello world");
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
        check_all_splits(raw, 200, b"");
    }

    #[test]
    fn no_body_statuses_and_head() {
        check_all_splits(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 204, b"");
        // 204 never has a body even without Content-Length.
        let (r, n) = done(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n");
        assert_eq!((r.status, n), (204, 27));
        match parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", false, true) {
            Ok(Parsed::Done(r, _)) => assert!(r.body.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pipelined_leftover_is_reported() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 204 No Content\r\n\r\n";
        let (r, n) = done(raw);
        assert_eq!(r.body, b"ok");
        let (r2, n2) = done(&raw[n..]);
        assert_eq!(r2.status, 204);
        assert_eq!(n + n2, raw.len());
    }

    #[test]
    fn interim_responses_are_skipped() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        check_all_splits(raw, 201, b"");
    }

    #[test]
    fn close_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc";
        assert_eq!(parse_response(raw, false, false).unwrap(), Parsed::Incomplete);
        match parse_response(raw, true, false).unwrap() {
            Parsed::Done(r, n) => {
                assert_eq!((r.body.as_slice(), r.close, n), (&b"abc"[..], true, raw.len()))
            }
            Parsed::Incomplete => panic!(),
        }
        let (r, _) = done(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(r.close, "HTTP/1.0 without keep-alive closes");
        let (r, _) = done(b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n");
        assert!(r.close);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", true, false),
            Err(HttpError::Truncated)
        );
        assert_eq!(parse_response(b"", true, false), Err(HttpError::Truncated));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, false),
            Err(HttpError::ContentLength)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false, false),
            Err(HttpError::ContentLength)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, false),
            Err(HttpError::Chunked)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", false, false),
            Err(HttpError::Chunked)
        );
        assert!(matches!(parse_response(b"SMTP hello\r\n\r\n", false, false), Err(HttpError::Head(_))));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", false, false),
            Err(HttpError::TooLarge)
        );
    }

    #[test]
    fn encodes_requests() {
        let common = CommonHeaders::new("127.0.0.1:8888", "c1");
        let mut out = Vec::new();
        encode_request(&mut out, "POST", "/v2/queues/q/messages", &common, &project_header("p"), Some(b"{}"));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("POST /v2/queues/q/messages HTTP/1.1\r\nHost: 127.0.0.1:8888\r\n"));
        assert!(s.contains("Client-ID: c1\r\n"));
        assert!(s.contains("X-Project-ID: p\r\n"));
        assert!(s.ends_with("Content-Length: 2\r\n\r\n{}"));
        let mut out = Vec::new();
        encode_request(&mut out, "GET", "/v2/ping", &common, b"", None);
        assert!(out.ends_with(b"Accept: application/json\r\n\r\n"));
        let mut out = Vec::new();
        encode_request(&mut out, "PUT", "/v2/queues/q", &common, b"", None);
        assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn safe_paths() {
        assert!(is_safe_path("/v2/queues/q/messages?marker=3&limit=20"));
        assert!(!is_safe_path("/v2/x\r\nEvil: 1"));
        assert!(!is_safe_path("/v2/x y"));
        assert!(!is_safe_path("http://elsewhere/v2"));
    }
}
