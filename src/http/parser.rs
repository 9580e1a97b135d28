//! Request heads: find one in the read buffer, tokenize it with httparse, and remember where each
//! part lies.
//!
//! # Incomplete is normal
//! As in mini-redis, a head that has not fully arrived is not an error: [`HeadParser::parse`]
//! answers `Ok(None)` and the connection reads more. To keep a head trickling in one byte per read
//! from costing quadratic time, the parser first scans only the new bytes for the blank line that
//! ends a head, and hands the buffer to httparse only once that line is there. httparse also runs
//! on the first bytes of each head, so a client speaking something else entirely (TLS, binary
//! junk) is refused at once instead of after `max_head_bytes`.
//!
//! # No allocation per head
//! The parse result is a set of offsets into the caller's buffer (`Span`s), stored in a
//! [`HeadParser`] that the connection reuses for every request; [`RequestHead`] is a borrowed view
//! joining those offsets with the buffer. Only the header index grows, once, to the largest header
//! count the connection has seen.
//!
//! # What a head decides
//! Beyond tokenizing, the parser settles the request's framing (RFC 9112 §6): `Content-Length`
//! (all copies equal, digits only), `Transfer-Encoding: chunked` (the only coding supported), or no
//! body. Both at once, anything else in `Transfer-Encoding`, or `Transfer-Encoding` in HTTP/1.0 is
//! refused with 400, because a proxy in front of us might frame the same bytes differently (request
//! smuggling). It also settles keep-alive and `Expect: 100-continue`, and checks `Host` as RFC 9112
//! §3.2 demands: an HTTP/1.1 request without one, any request with two, or one whose value is not
//! `host[:port]` is refused with 400 (a proxy and this server could otherwise disagree on which
//! site a request is for).

use crate::config::HttpLimits;
use crate::error::ApiError;

pub use crate::metrics::Method;

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is an unknown method, not GET.
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// The two HTTP versions httparse accepts; the version decides keep-alive defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    Http10,
    #[default]
    Http11,
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFraming {
    /// Neither `Content-Length` nor `Transfer-Encoding`: a request without a body.
    #[default]
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`; the size is known only once decoded.
    Chunked,
}

/// A byte range of the head, relative to the head's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// Where `part` (a sub-slice handed out by httparse) lies inside `buf`.
    fn of(buf: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
        Span { start, end: start + part.len() }
    }

    fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Text the parser already checked is UTF-8 (httparse hands out `&str` for these parts).
    fn str<'a>(&self, buf: &'a [u8]) -> &'a str {
        std::str::from_utf8(self.get(buf)).unwrap_or_default()
    }

    /// This span without the spaces and tabs at its ends (optional whitespace, RFC 9110 §5.6.3).
    fn trim(self, buf: &[u8]) -> Span {
        let bytes = self.get(buf);
        let lead = bytes.iter().take_while(|b| is_ows(**b)).count();
        let trail = bytes.iter().rev().take_while(|b| is_ows(**b)).count();
        if lead == bytes.len() {
            return Span { start: self.start, end: self.start };
        }
        Span { start: self.start + lead, end: self.end - trail }
    }
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The headers this server reads, found once while the head is parsed: looking one up is an
/// index, and knowing whether one was repeated costs nothing more. Any other header is still
/// reachable by name through [`RequestHead::header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Known {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
    ContentType,
    Accept,
    ClientId,
    XProjectId,
    UrlSignature,
    UrlExpires,
    UrlMethods,
    UrlPaths,
    XAuthToken,
    Authorization,
}

impl Known {
    /// Every known header with its name as the docs and error messages spell it.
    pub const ALL: [(Known, &'static str); 15] = [
        (Known::Host, "Host"),
        (Known::ContentLength, "Content-Length"),
        (Known::TransferEncoding, "Transfer-Encoding"),
        (Known::Connection, "Connection"),
        (Known::Expect, "Expect"),
        (Known::ContentType, "Content-Type"),
        (Known::Accept, "Accept"),
        (Known::ClientId, "Client-ID"),
        (Known::XProjectId, "X-Project-ID"),
        (Known::UrlSignature, "URL-Signature"),
        (Known::UrlExpires, "URL-Expires"),
        (Known::UrlMethods, "URL-Methods"),
        (Known::UrlPaths, "URL-Paths"),
        (Known::XAuthToken, "X-Auth-Token"),
        (Known::Authorization, "Authorization"),
    ];

    pub fn name(self) -> &'static str {
        Known::ALL.get(self as usize).map_or("", |(_, name)| name)
    }

    /// The known header `name` is (any case), if it is one: a length check rules out most.
    fn of(name: &[u8]) -> Option<Known> {
        Known::ALL
            .iter()
            .find(|(_, n)| n.len() == name.len() && n.as_bytes().eq_ignore_ascii_case(name))
            .map(|(k, _)| *k)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Where the first of each known header is, and which of them came more than once.
#[derive(Debug, Default, Clone)]
struct KnownHeaders {
    first: [Option<Span>; Known::ALL.len()],
    repeated: u32,
}

/// The parse result: offsets and the decisions taken from the headers.
#[derive(Debug, Default, Clone)]
struct Parsed {
    len: usize,
    method: Method,
    method_span: Span,
    target: Span,
    /// Empty for an absolute-form target without a path, which means "/".
    path: Span,
    query: Span,
    version: Version,
    headers: Vec<(Span, Span)>,
    known: KnownHeaders,
    keep_alive: bool,
    framing: BodyFraming,
    expect_continue: bool,
}

/// Headers kept on the stack while httparse runs; configurations allowing more use the heap.
const STACK_HEADERS: usize = 64;

/// Finds and parses one request head at a time. Reuse one per connection: [`HeadParser::reset`]
/// before each new head keeps the header index's capacity.
#[derive(Debug, Default, Clone)]
pub struct HeadParser {
    /// How far the search for the end of the head got (resumes there on the next call).
    scanned: usize,
    /// Whether httparse already looked at this head's first bytes.
    probed: bool,
    complete: bool,
    parsed: Parsed,
}

impl HeadParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the previous head; call it before parsing the next one.
    pub fn reset(&mut self) {
        self.scanned = 0;
        self.probed = false;
        self.complete = false;
        self.parsed.headers.clear();
    }

    /// Looks for a complete head at the start of `buf`, which holds everything received of it so
    /// far (and possibly what follows it). Call again with the same start and more bytes after
    /// `Ok(None)`.
    ///
    /// Returns the head's length once complete. Errors: [`ApiError::HeadTooLarge`] when the head
    /// exceeds `max_head_bytes` or has more than `max_headers` headers (431), and
    /// [`ApiError::BadHttp`] for anything malformed or ambiguously framed (400).
    pub fn parse(&mut self, buf: &[u8], limits: &HttpLimits) -> Result<Option<usize>, ApiError> {
        if self.complete {
            return Ok(Some(self.parsed.len));
        }
        let max_head_bytes = limits.max_head_bytes;
        loop {
            let end = find_head_end(buf, self.scanned);
            let probe = !self.probed && !buf.is_empty();
            if end.is_none() && !probe {
                self.scanned = buf.len().saturating_sub(2);
                return too_large_if(buf.len() >= max_head_bytes, max_head_bytes);
            }
            self.probed = true;
            match self.run_httparse(buf, limits)? {
                Some(len) => {
                    self.complete = true;
                    return Ok(Some(len));
                }
                None => match end {
                    // Blank lines before a request line are skipped by httparse (RFC 9112 §2.2),
                    // so a blank line is not always the end of the head: keep looking after it.
                    Some(end) => {
                        self.scanned = end;
                        if end >= max_head_bytes {
                            return Err(ApiError::HeadTooLarge(max_head_bytes));
                        }
                    }
                    None => {
                        self.scanned = buf.len().saturating_sub(2);
                        return too_large_if(buf.len() >= max_head_bytes, max_head_bytes);
                    }
                },
            }
        }
    }

    /// The parsed head as a view over `buf`, which must start where the head starts (it may be a
    /// copy of just the head). Meaningful only after [`HeadParser::parse`] returned `Some`; before
    /// that it describes an empty `GET`.
    pub fn head<'a>(&'a self, buf: &'a [u8]) -> RequestHead<'a> {
        RequestHead { buf, parsed: &self.parsed }
    }

    fn run_httparse(&mut self, buf: &[u8], limits: &HttpLimits) -> Result<Option<usize>, ApiError> {
        let max_headers = limits.max_headers;
        if max_headers <= STACK_HEADERS {
            let mut slots = [httparse::EMPTY_HEADER; STACK_HEADERS];
            let slots = slots.get_mut(..max_headers).unwrap_or_default();
            self.tokenize(buf, slots, limits.max_head_bytes)
        } else {
            let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
            self.tokenize(buf, &mut slots, limits.max_head_bytes)
        }
    }

    fn tokenize<'b>(
        &mut self,
        buf: &'b [u8],
        slots: &mut [httparse::Header<'b>],
        max_head_bytes: usize,
    ) -> Result<Option<usize>, ApiError> {
        let mut req = httparse::Request::new(slots);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ApiError::HeadTooLarge(max_head_bytes));
            }
            Err(e) => return Err(bad(httparse_reason(e))),
        };
        if len > max_head_bytes {
            return Err(ApiError::HeadTooLarge(max_head_bytes));
        }
        let p = &mut self.parsed;
        p.len = len;
        let method = req.method.unwrap_or_default();
        p.method = Method::from_token(method);
        p.method_span = Span::of(buf, method.as_bytes());
        p.version = match req.version {
            Some(0) => Version::Http10,
            _ => Version::Http11,
        };
        let target = req.path.unwrap_or_default();
        p.target = Span::of(buf, target.as_bytes());
        (p.path, p.query) = split_target(target.as_bytes(), p.target.start)?;
        p.headers.clear();
        // One allocation of the right size for a new parser (an idle connection frees its own).
        p.headers.reserve(req.headers.len());
        p.known = KnownHeaders::default();
        for h in req.headers.iter() {
            let name = Span::of(buf, h.name.as_bytes());
            let value = Span::of(buf, h.value).trim(buf);
            p.headers.push((name, value));
            if let Some(known) = Known::of(h.name.as_bytes()) {
                match p.known.first.get_mut(known as usize) {
                    Some(slot @ None) => *slot = Some(value),
                    Some(Some(_)) => p.known.repeated |= known.bit(),
                    None => {}
                }
            }
        }
        decide(p, buf)?;
        Ok(Some(len))
    }
}

fn too_large_if(too_large: bool, max_head_bytes: usize) -> Result<Option<usize>, ApiError> {
    if too_large {
        Err(ApiError::HeadTooLarge(max_head_bytes))
    } else {
        Ok(None)
    }
}

fn bad(reason: &'static str) -> ApiError {
    ApiError::BadHttp(reason.into())
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "Invalid header name.",
        httparse::Error::HeaderValue => "Invalid header value.",
        httparse::Error::NewLine => "Invalid line ending in the request head.",
        httparse::Error::Status => "Invalid status.",
        httparse::Error::Token => "Invalid request line.",
        httparse::Error::TooManyHeaders => "Too many headers.",
        httparse::Error::Version => "Unsupported HTTP version.",
    }
}

/// Index just past the first blank line at or after `from`: `\n\n` or `\n\r\n`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(rest) = buf.get(at..) {
        let nl = at + memchr::memchr(b'\n', rest)?;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => at = nl + 1,
        }
    }
    None
}

/// Splits a request target into path and query spans (`base` is the target's offset in the head).
///
/// Origin form (`/a?b`) is what clients send; absolute form (`http://host/a?b`) must be accepted
/// by servers too (RFC 9112 §3.2.2); `*` is OPTIONS' asterisk form. Percent-decoding is left to
/// the router, which knows which parts may be decoded.
fn split_target(target: &[u8], base: usize) -> Result<(Span, Span), ApiError> {
    let path_start = match target.first() {
        Some(b'/') => 0,
        Some(b'*') if target.len() == 1 => 0,
        _ => {
            let scheme = if starts_with_ignore_case(target, b"http://") {
                7
            } else if starts_with_ignore_case(target, b"https://") {
                8
            } else {
                return Err(bad("Invalid request target."));
            };
            let after = target.get(scheme..).unwrap_or_default();
            scheme + memchr::memchr2(b'/', b'?', after).unwrap_or(after.len())
        }
    };
    let rest = target.get(path_start..).unwrap_or_default();
    let (path_len, query) = match memchr::memchr(b'?', rest) {
        Some(q) => {
            let start = base + path_start + q + 1;
            (q, Span { start, end: base + target.len() })
        }
        None => {
            let end = base + target.len();
            (rest.len(), Span { start: end, end })
        }
    };
    let path = Span { start: base + path_start, end: base + path_start + path_len };
    Ok((path, query))
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Settles framing, keep-alive and expectations from the headers (RFC 9112 §6, §9.3; RFC 9110
/// §10.1.1).
fn decide(p: &mut Parsed, buf: &[u8]) -> Result<(), ApiError> {
    let known = |k: Known| p.known.first.get(k as usize).copied().flatten().map(|v| v.get(buf));
    let repeated = |k: Known| p.known.repeated & k.bit() != 0;
    let hosts = match known(Known::Host) {
        None => 0,
        Some(value) if !valid_host(value) => return Err(bad("Invalid Host header.")),
        Some(_) if repeated(Known::Host) => 2,
        Some(_) => 1,
    };
    let mut content_length: Option<u64> = None;
    if known(Known::ContentLength).is_some() {
        // Repeats must agree (RFC 9112 §6.3): the rare case walks the headers.
        for (name, value) in &p.headers {
            if name.get(buf).eq_ignore_ascii_case(b"content-length") {
                let n = parse_content_length(value.get(buf))?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(bad("Conflicting Content-Length headers."));
                }
                content_length = Some(n);
                if !repeated(Known::ContentLength) {
                    break;
                }
            }
        }
    }
    let transfer_encodings = match known(Known::TransferEncoding) {
        None => 0,
        Some(_) if repeated(Known::TransferEncoding) => 2,
        Some(_) => 1,
    };
    let chunked = known(Known::TransferEncoding).is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
    let (mut close, mut keep_alive) = (false, false);
    if known(Known::Connection).is_some() {
        for (name, value) in &p.headers {
            if name.get(buf).eq_ignore_ascii_case(b"connection") {
                for token in value.get(buf).split(|b| *b == b',') {
                    let token = trim_ows(token);
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
    }
    let expect_continue = known(Known::Expect).is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    match hosts {
        0 if p.version == Version::Http11 => return Err(bad("Missing Host header.")),
        0 | 1 => {}
        _ => return Err(bad("More than one Host header.")),
    }
    p.framing = match (content_length, transfer_encodings) {
        (None, 0) => BodyFraming::None,
        (Some(n), 0) => BodyFraming::Length(n),
        (Some(_), _) => return Err(bad("Both Content-Length and Transfer-Encoding are present.")),
        (None, 1) if chunked => BodyFraming::Chunked,
        (None, _) => return Err(bad("Only Transfer-Encoding: chunked is supported.")),
    };
    if p.framing == BodyFraming::Chunked && p.version == Version::Http10 {
        return Err(bad("Transfer-Encoding is not allowed in HTTP/1.0."));
    }
    p.keep_alive = match p.version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive && !close,
    };
    // HTTP/1.0 clients cannot expect a 100 (RFC 9110 §10.1.1).
    p.expect_continue = expect_continue && p.version == Version::Http11;
    Ok(())
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2–3): a bracketed IP literal, or a name or IPv4
/// address of unreserved, sub-delim and percent-encoded characters; then digits for the port.
/// Empty is allowed (a target without authority, RFC 9112 §3.2).
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match memchr::memchr(b']', value) {
            Some(close) => {
                let literal = value.get(1..close).unwrap_or_default();
                let ip_literal = !literal.is_empty()
                    && literal.iter().all(|b| b.is_ascii_alphanumeric() || b":.-_~!$&'()*+,;=".contains(b));
                if !ip_literal {
                    return false;
                }
                (&b""[..], value.get(close + 1..).unwrap_or_default())
            }
            None => return false,
        },
        _ => match memchr::memchr(b':', value) {
            Some(colon) => (value.get(..colon).unwrap_or_default(), value.get(colon..).unwrap_or_default()),
            None => (value, &b""[..]),
        },
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    reg_name(host) && port_ok
}

/// RFC 3986's `reg-name` (which covers IPv4 addresses too).
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = host.get(i) {
        if b == b'%' {
            if !host.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !is_ows(*first) {
            break;
        }
        bytes = rest;
    }
    while let [rest @ .., last] = bytes {
        if !is_ows(*last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

fn parse_content_length(value: &[u8]) -> Result<u64, ApiError> {
    if value.is_empty() {
        return Err(bad("Invalid Content-Length."));
    }
    value.iter().try_fold(0u64, |acc, b| {
        if !b.is_ascii_digit() {
            return Err(bad("Invalid Content-Length."));
        }
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| bad("Invalid Content-Length."))
    })
}

/// A parsed request head: borrowed offsets joined with the bytes they point into.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    buf: &'a [u8],
    parsed: &'a Parsed,
}

impl<'a> RequestHead<'a> {
    pub fn method(&self) -> Method {
        self.parsed.method
    }

    /// The method as sent; the way to name a [`Method::Other`].
    pub fn method_str(&self) -> &'a str {
        self.parsed.method_span.str(self.buf)
    }

    /// The request target as sent (path and query, or an absolute URI).
    pub fn target(&self) -> &'a str {
        self.parsed.target.str(self.buf)
    }

    /// The path, still percent-encoded: the router decides which segments to decode. `*` for
    /// `OPTIONS *`; `/` for an absolute-form target without a path.
    pub fn path(&self) -> &'a str {
        let path = self.parsed.path.str(self.buf);
        if path.is_empty() {
            "/"
        } else {
            path
        }
    }

    /// The raw query string after `?` (still percent-encoded), `""` if there is none.
    pub fn query(&self) -> &'a str {
        self.parsed.query.str(self.buf)
    }

    pub fn version(&self) -> Version {
        self.parsed.version
    }

    /// The first header named `name` (any case), with surrounding whitespace removed.
    ///
    /// `None` also when the value is not UTF-8 (httparse admits obs-text bytes): no header the API
    /// reads may carry them, so such a value counts as absent; [`RequestHead::header_bytes`] has
    /// the raw bytes for whoever wants to report it.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.header_bytes(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first header named `name` (any case), raw.
    pub fn header_bytes(&self, name: &str) -> Option<&'a [u8]> {
        let buf = self.buf;
        self.parsed
            .headers
            .iter()
            .find(|(n, _)| n.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.get(buf))
    }

    /// The first value of a known header (looked up by index, found while parsing).
    pub fn known(&self, header: Known) -> Option<&'a str> {
        self.known_bytes(header).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of a known header, raw.
    pub fn known_bytes(&self, header: Known) -> Option<&'a [u8]> {
        self.parsed.known.first.get(header as usize).copied().flatten().map(|v| v.get(self.buf))
    }

    /// The first of `headers` that the head carries more than once.
    pub fn repeated(&self, headers: &[Known]) -> Option<Known> {
        headers.iter().copied().find(|h| self.parsed.known.repeated & h.bit() != 0)
    }

    /// Every header in order of arrival, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let buf = self.buf;
        self.parsed.headers.iter().map(move |(n, v)| (n.str(buf), v.get(buf)))
    }

    /// Whether the client wants the connection kept open after this request.
    pub fn keep_alive(&self) -> bool {
        self.parsed.keep_alive
    }

    pub fn framing(&self) -> BodyFraming {
        self.parsed.framing
    }

    /// The declared body size (`Content-Length`), in the unit limits are kept in; a size beyond
    /// `usize` (only possible on 32-bit targets) saturates, which every limit refuses.
    pub fn content_length(&self) -> Option<usize> {
        match self.parsed.framing {
            BodyFraming::Length(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => None,
        }
    }

    /// Whether the client waits for `100 Continue` before sending its body.
    pub fn expects_continue(&self) -> bool {
        self.parsed.expect_continue
    }

    /// Size of the head in bytes, final blank line included.
    pub fn len(&self) -> usize {
        self.parsed.len
    }

    /// Whether the head is empty, which only a head not parsed yet is.
    pub fn is_empty(&self) -> bool {
        self.parsed.len == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;

    #[test]
    fn every_method_parses_from_its_name() {
        use Method as M;
        for m in [M::Get, M::Head, M::Post, M::Put, M::Patch, M::Delete, M::Options] {
            assert_eq!(Method::from_token(m.as_str()), m);
        }
        assert_eq!(Method::from_token("get"), M::Other, "methods are case-sensitive");
    }
    use crate::http::chunked::ChunkedDecoder;
    use proptest::prelude::*;

    /// Everything a parsed request exposes, owned, to compare parses of differently split input.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Snapshot {
        method: Method,
        method_str: String,
        target: String,
        path: String,
        query: String,
        version: Version,
        headers: Vec<(String, Vec<u8>)>,
        keep_alive: bool,
        framing: BodyFraming,
        expect_continue: bool,
        head_len: usize,
        body: Vec<u8>,
    }

    impl Snapshot {
        fn of(head: RequestHead<'_>) -> Self {
            Snapshot {
                method: head.method(),
                method_str: head.method_str().to_owned(),
                target: head.target().to_owned(),
                path: head.path().to_owned(),
                query: head.query().to_owned(),
                version: head.version(),
                headers: head.headers().map(|(n, v)| (n.to_owned(), v.to_vec())).collect(),
                keep_alive: head.keep_alive(),
                framing: head.framing(),
                expect_continue: head.expects_continue(),
                head_len: head.len(),
                body: Vec::new(),
            }
        }
    }

    /// What a stream of bytes parsed into, fed `fragment` bytes at a time.
    #[derive(Debug, PartialEq, Eq)]
    struct Replay {
        requests: Vec<Snapshot>,
        error: Option<ApiError>,
        /// Bytes received but not part of a complete request.
        pending: usize,
    }

    enum Phase {
        Head,
        Length(Snapshot, u64),
        Chunked(Snapshot, ChunkedDecoder),
    }

    fn limits() -> HttpLimits {
        HttpLimits { max_head_bytes: 2048, max_headers: 16, max_body_bytes: 4096, ..HttpLimits::default() }
    }

    fn replay_with(input: &[u8], fragment: usize, limits: &HttpLimits) -> Replay {
        replay_pieces(input.chunks(fragment.max(1)), limits)
    }

    /// Plays the connection loop's part without I/O: buffer, parse heads, take bodies.
    fn replay_pieces<'a>(pieces: impl Iterator<Item = &'a [u8]>, limits: &HttpLimits) -> Replay {
        let mut parser = HeadParser::new();
        let mut buf = Vec::new();
        let mut requests = Vec::new();
        let mut phase = Phase::Head;
        // Raw bytes of the request being taken, to report what is pending.
        let mut in_progress = 0;
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                match &mut phase {
                    Phase::Head => match parser.parse(&buf, limits) {
                        Ok(None) => break,
                        Err(error) => return Replay { requests, error: Some(error), pending: buf.len() },
                        Ok(Some(n)) => {
                            let snap = Snapshot::of(parser.head(&buf));
                            assert_eq!(snap.head_len, n);
                            buf.drain(..n);
                            in_progress = n;
                            parser.reset();
                            phase = match snap.framing {
                                BodyFraming::None => {
                                    in_progress = 0;
                                    requests.push(snap);
                                    Phase::Head
                                }
                                BodyFraming::Length(len) => Phase::Length(snap, len),
                                BodyFraming::Chunked => {
                                    Phase::Chunked(snap, ChunkedDecoder::new(limits.max_body_bytes))
                                }
                            };
                        }
                    },
                    Phase::Length(snap, left) => {
                        let take = (*left as usize).min(buf.len());
                        snap.body.extend(buf.drain(..take));
                        in_progress += take;
                        *left -= take as u64;
                        if *left > 0 {
                            break;
                        }
                        in_progress = 0;
                        requests.push(snap.clone());
                        phase = Phase::Head;
                    }
                    Phase::Chunked(snap, decoder) => match decoder.decode(&buf, &mut snap.body) {
                        Err(error) => return Replay { requests, error: Some(error), pending: buf.len() },
                        Ok(decoded) => {
                            buf.drain(..decoded.consumed);
                            in_progress += decoded.consumed;
                            if !decoded.done {
                                break;
                            }
                            in_progress = 0;
                            requests.push(snap.clone());
                            phase = Phase::Head;
                        }
                    },
                }
            }
        }
        Replay { requests, error: None, pending: buf.len() + in_progress }
    }

    fn replay(input: &[u8], fragment: usize) -> Replay {
        replay_with(input, fragment, &limits())
    }

    const FRAGMENTS: [usize; 7] = [100_000, 1000, 100, 10, 5, 2, 1];

    /// Seastar's matrix: every fragment size must parse exactly like the whole input.
    fn assert_split_invariant(input: &[u8]) -> Replay {
        let whole = replay(input, input.len().max(1));
        for fragment in FRAGMENTS {
            assert_eq!(replay(input, fragment), whole, "fragment size {fragment}");
        }
        whole
    }

    fn header<'a>(snap: &'a Snapshot, name: &str) -> Option<&'a [u8]> {
        snap.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    const GET_WITH_QUERY: &[u8] = b"GET /v2/queues/fizbit/messages?echo=true&limit=5 HTTP/1.1\r\n\
Host: localhost:8888\r\nClient-ID: 3381af92-2b9e-11e3-b191-71861300734c\r\nX-Project-ID: p1\r\n\
Accept: application/json\r\n\r\n";
    const POST_WITH_LENGTH: &[u8] = b"POST /v2/queues/fizbit/messages HTTP/1.1\r\nHost: x\r\n\
Content-Type: application/json\r\nContent-Length: 38\r\n\r\n{\"messages\": [{\"ttl\": 60, \"body\": 1}]}";
    const CHUNKED: &[u8] = b"PUT /v2/queues/q HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
5;name=value;flag\r\nhello\r\nA \r\n, chunked!\r\n0;last\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n";
    const HTTP10: &[u8] = b"GET /v2/health HTTP/1.0\r\nUser-Agent: ab\r\n\r\n";
    const EXPECT: &[u8] = b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
Content-Length: 2\r\n\r\n{}";
    const HEAD: &[u8] = b"HEAD /v2/queues/q/stats HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn get_with_query() {
        let r = assert_split_invariant(GET_WITH_QUERY);
        assert_eq!(r.error, None);
        assert_eq!(r.pending, 0);
        let [get] = r.requests.as_slice() else { panic!("{r:?}") };
        assert_eq!(get.method, Method::Get);
        assert_eq!(get.path, "/v2/queues/fizbit/messages");
        assert_eq!(get.query, "echo=true&limit=5");
        assert_eq!(get.version, Version::Http11);
        assert!(get.keep_alive);
        assert_eq!(get.framing, BodyFraming::None);
        assert_eq!(header(get, "client-id"), Some(&b"3381af92-2b9e-11e3-b191-71861300734c"[..]));
        assert_eq!(get.head_len, GET_WITH_QUERY.len());
    }

    #[test]
    fn post_with_content_length() {
        let r = assert_split_invariant(POST_WITH_LENGTH);
        let [post] = r.requests.as_slice() else { panic!("{r:?}") };
        assert_eq!(post.method, Method::Post);
        assert_eq!(post.query, "");
        assert_eq!(post.framing, BodyFraming::Length(38));
        let mut parser = HeadParser::new();
        parser.parse(POST_WITH_LENGTH, &limits()).unwrap();
        assert_eq!(parser.head(POST_WITH_LENGTH).content_length(), Some(38));
        assert_eq!(post.body, b"{\"messages\": [{\"ttl\": 60, \"body\": 1}]}");
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let r = assert_split_invariant(CHUNKED);
        assert_eq!(r.pending, 0);
        let [put] = r.requests.as_slice() else { panic!("{r:?}") };
        assert_eq!(put.framing, BodyFraming::Chunked);
        assert_eq!(put.body, b"hello, chunked!");
    }

    #[test]
    fn pipelined_trio_in_one_read_and_split() {
        let trio = [GET_WITH_QUERY, POST_WITH_LENGTH, CHUNKED].concat();
        let r = assert_split_invariant(&trio);
        assert_eq!(r.error, None);
        assert_eq!(r.pending, 0);
        let methods: Vec<Method> = r.requests.iter().map(|s| s.method).collect();
        assert_eq!(methods, [Method::Get, Method::Post, Method::Put]);
        assert_eq!(r.requests[2].body, b"hello, chunked!");
    }

    #[test]
    fn http10_defaults_to_close() {
        let r = assert_split_invariant(HTTP10);
        let [get] = r.requests.as_slice() else { panic!("{r:?}") };
        assert_eq!(get.version, Version::Http10);
        assert!(!get.keep_alive);
        let ka = replay(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 1000);
        assert!(ka.requests[0].keep_alive);
    }

    #[test]
    fn expect_continue_is_detected() {
        let r = assert_split_invariant(EXPECT);
        let [post] = r.requests.as_slice() else { panic!("{r:?}") };
        assert!(post.expect_continue);
        assert_eq!(post.body, b"{}");
        // HTTP/1.0 clients cannot expect a 100.
        let old = replay(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", 1000);
        assert!(!old.requests[0].expect_continue);
    }

    #[test]
    fn head_request() {
        let r = assert_split_invariant(HEAD);
        assert_eq!(r.requests[0].method, Method::Head);
        assert_eq!(r.requests[0].path, "/v2/queues/q/stats");
    }

    #[test]
    fn extra_data_waits_for_the_next_request() {
        let mut input = POST_WITH_LENGTH.to_vec();
        input.extend_from_slice(&GET_WITH_QUERY[..20]);
        let r = assert_split_invariant(&input);
        assert_eq!(r.requests.len(), 1);
        assert_eq!(r.pending, 20);
        assert_eq!(r.error, None);
    }

    #[test]
    fn missing_data_is_not_an_error() {
        for input in [
            &GET_WITH_QUERY[..GET_WITH_QUERY.len() - 1],
            &POST_WITH_LENGTH[..POST_WITH_LENGTH.len() - 3],
            &CHUNKED[..CHUNKED.len() - 2],
        ] {
            let r = assert_split_invariant(input);
            assert_eq!(r.requests, []);
            assert_eq!(r.error, None);
            assert_eq!(r.pending, input.len());
        }
    }

    #[test]
    fn several_requests_in_one_read() {
        let many = [HEAD, HTTP10, EXPECT, HEAD, GET_WITH_QUERY].concat();
        let r = replay(&many, many.len());
        assert_eq!(r.requests.len(), 5);
        assert_eq!(r.pending, 0);
    }

    fn parse_one(input: &[u8]) -> Result<Snapshot, ApiError> {
        let mut r = replay(input, input.len());
        match r.error.take() {
            Some(error) => Err(error),
            None => Ok(r.requests.into_iter().next().expect("a complete request")),
        }
    }

    fn status(input: &[u8]) -> u16 {
        match parse_one(input) {
            Ok(_) => 200,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 400);
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"), 400);
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"), 200);
        for bad in ["-1", "+1", "1.0", "0x10", "", "1 2", "99999999999999999999"] {
            let input = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(status(input.as_bytes()), 400, "Content-Length: {bad}");
        }
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n0\r\n\r\n"), 200);
    }

    #[test]
    fn malformed_heads_are_400() {
        for bad in [
            &b"this is not http\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n",
            b"GET  HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET relative HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn garbage_is_refused_on_its_first_bytes() {
        let mut parser = HeadParser::new();
        let err = parser.parse(b"\x16\x03\x01", &limits()).unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn head_size_limit_is_exact() {
        let limits = limits();
        let base = b"GET / HTTP/1.1\r\nHost: x\r\nX: \r\n\r\n".len();
        let fits = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(limits.max_head_bytes - base));
        assert_eq!(fits.len(), limits.max_head_bytes);
        assert_eq!(status(fits.as_bytes()), 200);
        let over = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(limits.max_head_bytes - base + 1));
        for fragment in FRAGMENTS {
            let r = replay(over.as_bytes(), fragment);
            assert_eq!(r.error.map(|e| e.status()), Some(431), "fragment {fragment}");
        }
        // A head that never ends is refused once it reaches the limit.
        let endless = "GET / HTTP/1.1\r\nHost: x\r\nX: ".to_owned() + &"a".repeat(5000);
        let r = replay(endless.as_bytes(), 100);
        assert_eq!(r.error, Some(ApiError::HeadTooLarge(limits.max_head_bytes)));
    }

    #[test]
    fn header_count_limit() {
        let limits = limits();
        let head = |n: usize| {
            // `n` headers, Host the first of them.
            let mut s = "GET / HTTP/1.1\r\nHost: x\r\n".to_owned();
            for i in 1..n {
                s += &format!("X-{i}: v\r\n");
            }
            s + "\r\n"
        };
        assert_eq!(status(head(limits.max_headers).as_bytes()), 200);
        assert_eq!(status(head(limits.max_headers + 1).as_bytes()), 431);
        // Above the stack array's size the index lives on the heap, same semantics.
        let many = HttpLimits { max_headers: 100, max_head_bytes: 8192, ..limits };
        let r = replay_with(head(100).as_bytes(), 7, &many);
        assert_eq!(r.requests[0].headers.len(), 100);
        assert_eq!(replay_with(head(101).as_bytes(), 7, &many).error.map(|e| e.status()), Some(431));
    }

    #[test]
    fn methods_and_targets() {
        let snap = parse_one(b"get / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((snap.method, snap.method_str.as_str()), (Method::Other, "get"));
        for (line, method) in [
            ("PATCH", Method::Patch),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("PUT", Method::Put),
            ("BREW", Method::Other),
        ] {
            let input = format!("{line} /x HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(parse_one(input.as_bytes()).unwrap().method, method);
            if method != Method::Other {
                assert_eq!(method.as_str(), line);
            }
        }
        let star = parse_one(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((star.path.as_str(), star.query.as_str()), ("*", ""));
        let abs = parse_one(b"GET http://example.com:8888/v2/queues?limit=2 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((abs.path.as_str(), abs.query.as_str()), ("/v2/queues", "limit=2"));
        assert_eq!(abs.target, "http://example.com:8888/v2/queues?limit=2");
        let bare = parse_one(b"GET HTTPS://example.com HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((bare.path.as_str(), bare.query.as_str()), ("/", ""));
        let bare_query = parse_one(b"GET http://example.com?a=b HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((bare_query.path.as_str(), bare_query.query.as_str()), ("/", "a=b"));
        let encoded = parse_one(b"GET /v2/queues/a%20b?x=%41&y HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((encoded.path.as_str(), encoded.query.as_str()), ("/v2/queues/a%20b", "x=%41&y"));
        let empty_query = parse_one(b"GET /a? HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((empty_query.path.as_str(), empty_query.query.as_str()), ("/a", ""));
    }

    #[test]
    fn header_lookup() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\nX-Project-ID:   p1  \r\nx-project-id: p2\r\nX-Bin: \xff\xfe\r\nEmpty:\r\n\r\n";
        let mut parser = HeadParser::new();
        assert!(parser.parse(input, &limits()).unwrap().is_some());
        let head = parser.head(input);
        assert_eq!(head.header("X-PROJECT-ID"), Some("p1"), "first one, trimmed");
        assert_eq!(head.header("x-bin"), None, "not UTF-8");
        assert_eq!(head.header_bytes("x-bin"), Some(&b"\xff\xfe"[..]));
        assert_eq!(head.header("empty"), Some(""));
        assert_eq!(head.header("absent"), None);
        assert_eq!(head.headers().count(), 5);
    }

    #[test]
    fn host_is_required_once_and_well_formed() {
        let with = |host: &str| status(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        for good in [
            "x",
            "localhost:8888",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8888",
            "[v1.fe80::a+en1]",
            "a-b.example.com",
            "%41bc",
            "host:",
            "",
        ] {
            assert_eq!(with(good), 200, "Host: {good}");
        }
        for bad in ["a b", "a/b", "user@host", "host:80a", "host:80:90", "[::1", "[]", "[::1]x", "%4", "%zz", "é"] {
            assert_eq!(with(bad), 400, "Host: {bad}");
        }
        let missing = parse_one(b"GET / HTTP/1.1\r\nX: y\r\n\r\n").unwrap_err();
        assert_eq!(missing, ApiError::BadHttp("Missing Host header.".into()));
        let twice = parse_one(b"GET / HTTP/1.1\r\nHost: x\r\nhost: x\r\n\r\n").unwrap_err();
        assert_eq!(twice, ApiError::BadHttp("More than one Host header.".into()));
        // HTTP/1.0 may leave it out, but not repeat it or garble it.
        assert_eq!(status(b"GET / HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.0\r\nHost: a b\r\n\r\n"), 400);
    }

    #[test]
    fn repeated_headers_are_found_in_any_case() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\nClient-ID: a\r\nX-Project-ID: p\r\nclient-id: a\r\n\r\n";
        let mut parser = HeadParser::new();
        assert!(parser.parse(input, &limits()).unwrap().is_some());
        let head = parser.head(input);
        assert_eq!(head.repeated(&[Known::XProjectId, Known::ClientId]), Some(Known::ClientId));
        assert_eq!(head.repeated(&[Known::XProjectId, Known::Host]), None);
        assert_eq!(head.repeated(&[]), None);
        // Known headers are found by index, in any case, first value first.
        assert_eq!(head.known(Known::ClientId), Some("a"));
        assert_eq!(head.known(Known::XProjectId), head.header("x-project-id"));
        assert_eq!(head.known(Known::Accept), None);
        for (k, name) in Known::ALL {
            assert_eq!(Known::of(name.to_ascii_lowercase().as_bytes()), Some(k));
            assert_eq!(k.name(), name);
        }
    }

    #[test]
    fn connection_and_expect_tokens() {
        let close = parse_one(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, CLOSE\r\n\r\n").unwrap();
        assert!(!close.keep_alive);
        let keep = parse_one(b"GET / HTTP/1.0\r\nConnection: x\r\nConnection: te , keep-alive\r\n\r\n").unwrap();
        assert!(keep.keep_alive);
        let both = parse_one(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").unwrap();
        assert!(!both.keep_alive);
        let other =
            parse_one(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(!other.expect_continue);
        let upper =
            parse_one(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(upper.expect_continue);
    }

    #[test]
    fn blank_lines_and_bare_lf() {
        // Blank lines before a request are skipped (RFC 9112 §2.2), whatever the fragmentation.
        let r = assert_split_invariant(b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.requests[0].path, "/a");
        let r = assert_split_invariant(b"GET /b HTTP/1.1\nHost: x\n\n");
        assert_eq!(r.requests[0].path, "/b");
        assert_eq!(r.requests[0].head_len, 25);
    }

    #[test]
    fn reset_between_heads() {
        let limits = limits();
        let mut parser = HeadParser::new();
        assert_eq!(parser.parse(POST_WITH_LENGTH, &limits).unwrap(), Some(POST_WITH_LENGTH.len() - 38));
        // Until reset the parser keeps answering for the head it found.
        assert_eq!(parser.parse(POST_WITH_LENGTH, &limits).unwrap(), Some(POST_WITH_LENGTH.len() - 38));
        parser.reset();
        assert_eq!(parser.parse(HEAD, &limits).unwrap(), Some(HEAD.len()));
        assert_eq!(parser.head(HEAD).method(), Method::Head);
        assert_eq!(parser.head(HEAD).content_length(), None);
    }

    #[test]
    fn a_short_buffer_does_not_panic_the_view() {
        let mut parser = HeadParser::new();
        parser.parse(GET_WITH_QUERY, &limits()).unwrap();
        let head = parser.head(b"GET");
        assert_eq!(head.path(), "/");
        assert_eq!(head.header("host"), None);
    }

    /// A random valid request, and the parts it was built from.
    fn arb_request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "MKCOL"]);
        let path = prop::collection::vec("[a-zA-Z0-9_.%-]{0,12}", 1..5).prop_map(|s| format!("/{}", s.join("/")));
        let query = prop::option::of("[a-z0-9=&%]{0,20}");
        let headers = prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}"), 0..8);
        let body = prop::collection::vec(any::<u8>(), 0..300);
        let chunking = prop::option::of(prop::collection::vec(1usize..50, 1..10));
        let version = prop::bool::ANY;
        (method, path, query, headers, body, chunking, version).prop_map(
            |(method, path, query, headers, body, chunking, http11)| {
                let mut out = format!("{method} {path}");
                if let Some(q) = query {
                    out += &format!("?{q}");
                }
                out += if http11 { " HTTP/1.1\r\nHost: x\r\n" } else { " HTTP/1.0\r\n" };
                for (name, value) in headers {
                    let lower = name.to_ascii_lowercase();
                    if ["content-length", "transfer-encoding", "host"].contains(&lower.as_str()) {
                        continue;
                    }
                    out += &format!("{name}: {}\r\n", value.trim());
                }
                let mut out = out.into_bytes();
                match chunking {
                    Some(sizes) if http11 => {
                        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                        let mut rest = body.as_slice();
                        for size in sizes.into_iter().cycle() {
                            if rest.is_empty() {
                                break;
                            }
                            let (chunk, tail) = rest.split_at(size.min(rest.len()));
                            out.extend_from_slice(format!("{:x};e=1\r\n", chunk.len()).as_bytes());
                            out.extend_from_slice(chunk);
                            out.extend_from_slice(b"\r\n");
                            rest = tail;
                        }
                        out.extend_from_slice(b"0\r\nT: v\r\n\r\n");
                    }
                    _ => {
                        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                        out.extend_from_slice(&body);
                    }
                }
                out
            },
        )
    }

    /// Feeds `input` cut at the given points.
    fn replay_cuts(input: &[u8], cuts: &[usize]) -> Replay {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.extend([0, input.len()]);
        points.sort_unstable();
        points.dedup();
        let limits =
            HttpLimits { max_head_bytes: 4096, max_headers: 16, max_body_bytes: 4096, ..HttpLimits::default() };
        replay_pieces(points.windows(2).map(|pair| &input[pair[0]..pair[1]]), &limits)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..600), fragment in 1usize..40) {
            let limits = HttpLimits { max_head_bytes: 256, max_headers: 4, max_body_bytes: 128, ..HttpLimits::default() };
            let _ = replay_with(&input, fragment, &limits);
            let mut parser = HeadParser::new();
            if let Ok(Some(_)) = parser.parse(&input, &limits) {
                let head = parser.head(&input);
                let _ = (head.path(), head.query(), head.header("host"), head.headers().count());
            }
            let mut decoder = ChunkedDecoder::new(128);
            let mut out = Vec::new();
            let _ = decoder.decode(&input, &mut out);
        }

        #[test]
        fn http_like_bytes_never_panic(
            parts in prop::collection::vec(prop::sample::select(vec![
                "GET ", "POST ", "/", "?", "a", " HTTP/1.1", " HTTP/1.0", "\r\n", "\n", "\r", ":", " ",
                "Content-Length: ", "Transfer-Encoding: chunked", "Connection: close", "Expect: 100-continue",
                "0", "5", "ff", ";x", "http://", "\u{ff}",
            ]), 0..60),
            fragment in 1usize..20,
        ) {
            let input = parts.concat();
            let limits = HttpLimits { max_head_bytes: 256, max_headers: 4, max_body_bytes: 128, ..HttpLimits::default() };
            let _ = replay_with(input.as_bytes(), fragment, &limits);
        }

        #[test]
        fn valid_requests_parse_identically_however_split(
            requests in prop::collection::vec(arb_request(), 1..4),
            cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let input = requests.concat();
            let whole = replay_cuts(&input, &[]);
            prop_assert_eq!(whole.error.as_ref(), None);
            prop_assert_eq!(whole.requests.len(), requests.len());
            prop_assert_eq!(whole.pending, 0);
            prop_assert_eq!(replay_cuts(&input, &cuts), whole);
        }
    }
}
