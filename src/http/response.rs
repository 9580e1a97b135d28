//! Responses: what a handler fills in, and the bytes that go on the wire.
//!
//! A connection owns one [`Response`] and one output buffer for its whole life; [`Response::reset`]
//! keeps their capacity, so a steady stream of requests allocates nothing here except the values
//! of custom headers.
//!
//! # Wire rules (RFC 9110 §8.6, RFC 9112 §6.3)
//! - 1xx, 204 and 304 responses carry neither `Content-Length` nor a body, whatever the handler
//!   left in [`Response::body`].
//! - A response to HEAD carries the `Content-Length` the GET would have had, and no body.
//! - Every other response carries `Content-Length`, `0` included: the client must never have to
//!   wait for the connection to close to find the end.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::ApiError;

/// What Zaqar sends for JSON bodies (reference §0); some clients compare it verbatim.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The largest response head the server may write. Clients refuse bigger ones: Python's
/// `http.client` (and so `requests`) a header line over 64 KiB, curl a head over 100 KiB, nginx
/// as a proxy anything over its `proxy_buffer_size` (4–8 KiB by default). Every header a handler
/// sets is bounded by a limit that keeps the head under this (the longest is a post's
/// `Location`, bounded by `api.max_messages_per_post`); debug builds assert it.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 32 * 1024;

/// A response being built. Reused across the requests of a connection.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<&'static str>,
    /// Extra headers, written in order. Never `Content-Length`, `Date` or `Connection`: the
    /// serializer owns those. CR and LF in values are written as spaces, so echoing client input
    /// into a header cannot split the response.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Default for Response {
    fn default() -> Self {
        Self::new()
    }
}

/// Which `Connection` header the serializer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// Nothing: the HTTP/1.1 default (keep the connection) applies.
    Default,
    /// `Connection: close`: this is the last response on the connection.
    Close,
    /// `Connection: keep-alive`: an HTTP/1.0 client asked to keep the connection and needs to
    /// hear that we agree.
    KeepAlive,
}

impl Response {
    /// An empty `200 OK`.
    pub fn new() -> Self {
        Self { status: 200, content_type: None, headers: Vec::new(), body: Vec::new() }
    }

    /// Back to an empty `200 OK`, keeping the buffers' capacity.
    pub fn reset(&mut self) {
        self.status = 200;
        self.content_type = None;
        self.headers.clear();
        self.body.clear();
    }

    /// Marks this as a JSON response with `status`; the body is whatever was written into
    /// [`Response::body`], before or after this call.
    pub fn json(&mut self, status: u16) {
        self.status = status;
        self.content_type = Some(JSON_CONTENT_TYPE);
    }

    /// Makes this a response without a body (`204 No Content`, `201` with a `Location`, …).
    pub fn empty(&mut self, status: u16) {
        self.status = status;
        self.content_type = None;
        self.body.clear();
    }

    /// Adds a header (see [`Response::headers`] for the rules).
    pub fn header(&mut self, name: &'static str, value: impl Into<String>) {
        self.headers.push((name, value.into()));
    }

    /// Replaces the whole response with the Zaqar error body of `err`:
    /// `{"title": …, "description": …, "code": …}`, plus `Retry-After` on 503 and 429, `Allow` on
    /// 405 and `WWW-Authenticate` on 401.
    pub fn error(&mut self, err: &ApiError) {
        let (status, title, code) = err.parts();
        self.problem(status, title, format_args!("{err}"), code);
        match err {
            ApiError::MethodNotAllowed { allow, .. } => {
                self.headers.push(("Allow", (*allow).to_owned()));
            }
            ApiError::Unauthorized { challenge, .. } => {
                self.headers.push(("WWW-Authenticate", challenge.to_string()));
            }
            _ => {
                if let Some(s) = err.retry_after_s() {
                    self.headers.push(("Retry-After", s.to_string()));
                }
            }
        }
    }

    /// An error body for a status that has no [`ApiError`] (the connection loop's 408).
    pub(crate) fn problem(&mut self, status: u16, title: &str, description: fmt::Arguments<'_>, code: &str) {
        self.reset();
        self.json(status);
        let body = &mut self.body;
        body.extend_from_slice(b"{\"title\": ");
        push_json_str(body, format_args!("{title}"));
        body.extend_from_slice(b", \"description\": ");
        push_json_str(body, description);
        body.extend_from_slice(b", \"code\": ");
        push_json_str(body, format_args!("{code}"));
        body.push(b'}');
    }

    /// Appends the response to `out`: status line, headers, then the body unless `head_only` (the
    /// request was HEAD) or the status forbids one.
    pub fn write_to(&self, out: &mut Vec<u8>, head_only: bool, connection: ConnectionHeader) {
        let start = out.len();
        out.extend_from_slice(b"HTTP/1.1 ");
        push_u64(out, u64::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\nDate: ");
        push_date(out);
        let bodyless = matches!(self.status, 100..=199 | 204 | 304);
        if !bodyless {
            out.extend_from_slice(b"\r\nContent-Length: ");
            push_u64(out, self.body.len() as u64);
        }
        if let Some(content_type) = self.content_type {
            out.extend_from_slice(b"\r\nContent-Type: ");
            out.extend_from_slice(content_type.as_bytes());
        }
        match connection {
            ConnectionHeader::Default => {}
            ConnectionHeader::Close => out.extend_from_slice(b"\r\nConnection: close"),
            ConnectionHeader::KeepAlive => out.extend_from_slice(b"\r\nConnection: keep-alive"),
        }
        out.extend_from_slice(b"\r\nx-openstack-request-id: req-");
        push_uuid_v4(out);
        for (name, value) in &self.headers {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            push_header_value(out, value.as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        debug_assert!(
            out.len() - start <= MAX_RESPONSE_HEAD_BYTES,
            "a {}-byte response head: some header escaped its limit",
            out.len() - start
        );
        if !bodyless && !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The interim response sent before reading a body the client holds back.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        // The reason phrase is optional (RFC 9112 §4); clients go by the code.
        _ => "",
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(at..).unwrap_or_default());
}

fn push_header_value(out: &mut Vec<u8>, value: &[u8]) {
    let start = out.len();
    out.extend_from_slice(value);
    if let Some(written) = out.get_mut(start..) {
        for b in written.iter_mut().filter(|b| **b == b'\r' || **b == b'\n') {
            *b = b' ';
        }
    }
}

struct DateCache {
    second: u64,
    text: Vec<u8>,
}

thread_local! {
    /// Formatting a date costs more than the rest of a small response; a thread (one shard) needs
    /// a new one once per second. Thread-local, so no lock and no sharing between cores.
    static DATE: RefCell<DateCache> = const { RefCell::new(DateCache { second: u64::MAX, text: Vec::new() }) };
}

fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let cached = DATE.try_with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.second != second {
            cache.second = second;
            cache.text.clear();
            let _ = write!(Utf8Sink(&mut cache.text), "{}", httpdate::HttpDate::from(now));
        }
        out.extend_from_slice(&cache.text);
    });
    if cached.is_err() {
        // Only while the thread is being torn down.
        let _ = write!(Utf8Sink(out), "{}", httpdate::HttpDate::from(now));
    }
}

/// `fmt::Write` into a byte buffer (the formatter only ever produces UTF-8).
struct Utf8Sink<'a>(&'a mut Vec<u8>);

impl fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A random (version 4) UUID in its 36-character text form, without the cost of a
/// cryptographic generator: request ids only need to be unique enough to find a log line.
fn push_uuid_v4(out: &mut Vec<u8>) {
    let mut v = fastrand::u128(..);
    v = (v & !(0xF << 76)) | (0x4 << 76); // version 4
    v = (v & !(0x3 << 62)) | (0x2 << 62); // RFC 4122 variant
    for i in 0..32u32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push(b'-');
        }
        let nibble = ((v >> (124 - 4 * i)) & 0xF) as usize;
        out.push(HEX.get(nibble).copied().unwrap_or(b'0'));
    }
}

/// Writes `text` as a JSON string literal, quotes included (RFC 8259 §7).
fn push_json_str(out: &mut Vec<u8>, text: fmt::Arguments<'_>) {
    out.push(b'"');
    let _ = JsonEscaper(out).write_fmt(text);
    out.push(b'"');
}

/// Escapes everything JSON requires while the text is being formatted, so an error's description
/// goes into the body without a temporary `String`.
struct JsonEscaper<'a>(&'a mut Vec<u8>);

impl fmt::Write for JsonEscaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let out = &mut *self.0;
        for &b in s.as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x00..=0x1F => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
                    out.push(HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0'));
                }
                _ => out.push(b),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn wire(resp: &Response, head_only: bool, connection: ConnectionHeader) -> String {
        let mut out = Vec::new();
        resp.write_to(&mut out, head_only, connection);
        String::from_utf8(out).unwrap()
    }

    fn split(wire: &str) -> (Vec<&str>, &str) {
        let (head, body) = wire.split_once("\r\n\r\n").unwrap();
        (head.split("\r\n").collect(), body)
    }

    #[test]
    fn json_response_on_the_wire() {
        let mut resp = Response::new();
        resp.body.extend_from_slice(b"{\"a\": 1}");
        resp.json(201);
        resp.header("Location", "/v2/queues/q");
        let text = wire(&resp, false, ConnectionHeader::Default);
        let (lines, body) = split(&text);
        assert_eq!(lines[0], "HTTP/1.1 201 Created");
        assert!(lines[1].starts_with("Date: ") && lines[1].ends_with(" GMT"), "{}", lines[1]);
        assert_eq!(lines[2], "Content-Length: 8");
        assert_eq!(lines[3], "Content-Type: application/json");
        assert!(lines[4].starts_with("x-openstack-request-id: req-"));
        assert_eq!(lines[5], "Location: /v2/queues/q");
        assert_eq!(lines.len(), 6);
        assert_eq!(body, "{\"a\": 1}");
    }

    #[test]
    fn date_is_an_http_date() {
        let text = wire(&Response::new(), false, ConnectionHeader::Default);
        let date = text.lines().find_map(|l| l.strip_prefix("Date: ")).unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        // Cached within the second, so two responses usually agree; both must parse anyway.
        let again = wire(&Response::new(), false, ConnectionHeader::Default);
        let date = again.lines().find_map(|l| l.strip_prefix("Date: ")).unwrap();
        assert!(httpdate::parse_http_date(date).is_ok());
    }

    #[test]
    fn request_ids_are_v4_uuids() {
        let id =
            |text: &str| text.lines().find_map(|l| l.strip_prefix("x-openstack-request-id: req-")).unwrap().to_owned();
        let a = id(&wire(&Response::new(), false, ConnectionHeader::Default));
        let b = id(&wire(&Response::new(), false, ConnectionHeader::Default));
        assert_ne!(a, b);
        let uuid = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(a, uuid.hyphenated().to_string());
    }

    #[test]
    fn bodyless_statuses_have_no_length_and_no_body() {
        for status in [100, 204, 304] {
            let mut resp = Response::new();
            resp.body.extend_from_slice(b"ignored");
            resp.status = status;
            let text = wire(&resp, false, ConnectionHeader::Default);
            assert!(!text.contains("Content-Length"), "{text}");
            assert!(text.ends_with("\r\n\r\n"), "{text}");
        }
        let mut resp = Response::new();
        resp.empty(204);
        assert!(resp.body.is_empty());
    }

    #[test]
    fn head_keeps_the_length_and_drops_the_body() {
        let mut resp = Response::new();
        resp.body.extend_from_slice(b"0123456789");
        resp.json(200);
        let text = wire(&resp, true, ConnectionHeader::Default);
        assert!(text.contains("\r\nContent-Length: 10\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        let empty = wire(&Response::new(), false, ConnectionHeader::Default);
        assert!(empty.contains("\r\nContent-Length: 0\r\n"), "0 is said out loud");
    }

    #[test]
    fn connection_headers() {
        let resp = Response::new();
        assert!(wire(&resp, false, ConnectionHeader::Close).contains("\r\nConnection: close\r\n"));
        assert!(wire(&resp, false, ConnectionHeader::KeepAlive).contains("\r\nConnection: keep-alive\r\n"));
        assert!(!wire(&resp, false, ConnectionHeader::Default).contains("Connection"));
    }

    #[test]
    fn errors_render_as_zaqar_bodies() {
        let mut resp = Response::new();
        resp.header("Location", "stale");
        let err = ApiError::invalid_body("Bad \"quote\" \\ and\nnewline\u{1} and ünïcode");
        resp.error(&err);
        assert_eq!(resp.status, 400);
        assert!(resp.headers.is_empty(), "an error replaces the response");
        let json: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(json["title"], "Invalid request body");
        assert_eq!(json["description"], "Bad \"quote\" \\ and\nnewline\u{1} and ünïcode");
        assert_eq!(json["code"], "invalid_body");
        assert_eq!(resp.content_type, Some(JSON_CONTENT_TYPE));
        // Title first, as Falcon writes it.
        assert!(resp.body.starts_with(b"{\"title\": "));
    }

    #[test]
    fn unavailable_carries_retry_after_and_405_carries_allow() {
        let mut resp = Response::new();
        resp.error(&ApiError::Unavailable("Storage is down.".into()));
        assert_eq!(resp.status, 503);
        assert_eq!(resp.headers, vec![("Retry-After", "1".to_owned())]);
        let text = wire(&resp, false, ConnectionHeader::Default);
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        let json: serde_json::Value = serde_json::from_str(split(&text).1).unwrap();
        assert_eq!(json["description"], "Storage is down. Please try again in a few seconds.");

        resp.error(&ApiError::MethodNotAllowed { method: "PATCH".into(), allow: "GET, PUT" });
        assert_eq!(resp.status, 405);
        assert_eq!(resp.headers, vec![("Allow", "GET, PUT".to_owned())]);
    }

    #[test]
    fn header_values_cannot_split_the_response() {
        let mut resp = Response::new();
        resp.header("Location", "/a\r\nSet-Cookie: evil=1");
        let text = wire(&resp, false, ConnectionHeader::Default);
        assert!(text.contains("\r\nLocation: /a  Set-Cookie: evil=1\r\n"), "{text}");
    }

    #[test]
    fn reset_keeps_capacity() {
        let mut resp = Response::new();
        resp.body.extend_from_slice(&[0; 1000]);
        resp.header("X", "y");
        resp.json(201);
        resp.reset();
        assert_eq!((resp.status, resp.content_type, resp.body.len()), (200, None, 0));
        assert!(resp.body.capacity() >= 1000);
        assert!(resp.headers.is_empty());
    }

    #[test]
    fn numbers_and_unknown_statuses() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 12345, u64::MAX] {
            out.clear();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let mut resp = Response::new();
        resp.status = 299;
        assert!(wire(&resp, false, ConnectionHeader::Default).starts_with("HTTP/1.1 299 \r\n"));
    }
}
