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
//! The parse result is a set of offsets into the caller's buffer ([`Span`]s), stored in a
//! [`HeadParser`] that the connection reuses for every request; [`RequestHead`] is a borrowed view
//! joining those offsets with the buffer. Only the header index grows, once, to the largest header
//! count the connection has seen.
//!
//! # What a head decides
//! Beyond tokenizing, the parser settles the request's framing (RFC 9112 §6): `Content-Length`
//! (all copies equal, digits only), `Transfer-Encoding: chunked` (the only coding supported), or no
//! body. Both at once, anything else in `Transfer-Encoding`, or `Transfer-Encoding` in HTTP/1.0 is
//! refused with 400, because a proxy in front of us might frame the same bytes differently (request
//! smuggling). It also settles keep-alive and `Expect: 100-continue`.

use crate::config::HttpLimits;
use crate::error::ApiError;

/// Request methods the API routes on; anything else is [`Method::Other`] (see
/// [`RequestHead::method_str`] for its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

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
        for h in req.headers.iter() {
            let name = Span::of(buf, h.name.as_bytes());
            let value = Span::of(buf, h.value).trim(buf);
            p.headers.push((name, value));
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
    let mut content_length: Option<u64> = None;
    let mut transfer_encodings = 0usize;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    for (name, value) in &p.headers {
        let name = name.get(buf);
        let value = value.get(buf);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value)?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(bad("Conflicting Content-Length headers."));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encodings += 1;
            chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',') {
                let token = trim_ows(token);
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
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

    /// The declared body size, when the body has one (`Content-Length`).
    pub fn content_length(&self) -> Option<u64> {
        match self.parsed.framing {
            BodyFraming::Length(n) => Some(n),
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
