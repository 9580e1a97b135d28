//! Reading responses: a [`Parser`] fed the bytes of a connection as they arrive.
//!
//! # The buffer contract
//! The caller owns one buffer per connection and passes all of it that holds bytes of this
//! response, from its first byte (and possibly bytes after it), on every call: the same bytes as
//! last time up to the length the parser returned, then whatever arrived since. The parser keeps
//! offsets, not copies, so a call costs only the new bytes. [`crate::ReadBuf`] keeps the contract
//! for callers with a plain read loop.
//!
//! # No copies, no allocation
//! A completed response is a [`Done`]: offsets of its header fields and body in the buffer and
//! how many bytes of the buffer it took. [`Done::response`] joins them with the buffer into a
//! borrowed [`Response`]; [`Response::owned`] copies it out for callers that keep it. A chunked
//! body is decoded in place: chunk data moves down over the chunk framing, so the body is one
//! slice and the buffer holds at most the decoded body plus one read beyond it. That is why
//! [`Status::Incomplete`] carries a length: the buffer may have shrunk.
//!
//! # Framing (RFC 9112 §6.3)
//! Responses to HEAD, 204, 304 and 101 have no body; other 1xx are interim and skipped unless
//! [`Parser::report_interim`] asks for them. Otherwise `Transfer-Encoding` ending in `chunked`,
//! else `Content-Length` (every copy the same), else the body runs until the server closes.
//! `Transfer-Encoding` together with `Content-Length`, or in an HTTP/1.0 response, is refused:
//! two readers of those could disagree on where the response ends.
//!
//! # Bounds
//! [`Limits`] caps the head (interim heads included), the body, and chunk extensions with
//! trailers; [`MAX_HEADERS`] caps header fields. Every breach is an [`Error`], and errors are
//! final: the connection's framing is lost, so it must be closed.

use crate::chunked::{Dechunk, Progress};

/// Most header fields one response head may have.
pub const MAX_HEADERS: usize = 64;

/// How much a response may make the reader hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the head, interim heads included; chunk extensions and trailers get the same
    /// allowance again.
    pub head_bytes: usize,
    /// Bytes of the (decoded) body.
    pub body_bytes: usize,
}

impl Limits {
    /// 64 KiB of head, 256 MiB of body (a page of 1000 big messages fits).
    pub const DEFAULT: Limits = Limits { head_bytes: 64 * 1024, body_bytes: 256 * 1024 * 1024 };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Why bytes are not a valid response. All are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("status code {0:03} is not one of HTTP's (100 to 999)")]
    Status(u16),
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("response head larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("ambiguous framing: {0}")]
    Framing(&'static str),
    #[error("bad chunked body: {0}")]
    Chunked(&'static str),
    #[error("chunk extensions and trailers larger than {limit} bytes")]
    MetadataTooLarge { limit: usize },
    #[error("response body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the connection closed in the middle of the response")]
    Truncated,
    #[error("the connection closed before a response began")]
    Closed,
}

/// Bytes of the buffer, by offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn at(at: usize) -> Span {
        Span { start: at, end: at }
    }

    fn get(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start..self.end).unwrap_or_default()
    }
}

/// What the final head said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Head {
    status: u16,
    close: bool,
    /// The header lines, up to and including the empty line that ends the head.
    fields: Span,
}

/// A complete response, as offsets into the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    head: Head,
    body: Span,
    consumed: usize,
}

impl Done {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// Bytes at the start of the buffer (as the parser left it) that this response took; what
    /// follows them belongs to the next response.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// The response as a view of `buf`, the buffer it was parsed from.
    pub fn response<'b>(&self, buf: &'b [u8]) -> Response<'b> {
        Response {
            status: self.head.status,
            close: self.head.close,
            body: self.body.get(buf),
            consumed: self.consumed,
            fields: self.head.fields.get(buf),
        }
    }
}

/// What one [`Parser::parse`] call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// More bytes are needed. Keep the first `len` bytes of the buffer (a chunked body may
    /// have moved down) and append what arrives next after them.
    Incomplete {
        len: usize,
    },
    Complete(Done),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a head that starts at `start`; httparse has seen the bytes before `seen`.
    Head {
        start: usize,
        seen: usize,
    },
    Length {
        body_start: usize,
        len: usize,
    },
    UntilClose {
        body_start: usize,
    },
    Chunked {
        body_start: usize,
        dechunk: Dechunk,
    },
    Done(Done),
}

/// Parses one response; make a new one for each response.
#[derive(Debug, Clone)]
pub struct Parser {
    limits: Limits,
    head_request: bool,
    report_interim: bool,
    head: Head,
    state: State,
}

/// What a head turned out to be.
enum Parsed {
    Partial,
    Interim { end: usize },
    Final { end: usize, framing: Framing },
}

impl Parser {
    pub fn new(limits: Limits) -> Self {
        Parser {
            limits,
            head_request: false,
            report_interim: false,
            head: Head::default(),
            state: State::Head { start: 0, seen: 0 },
        }
    }

    /// The response answers a HEAD request: no body, whatever the head says.
    pub fn head_request(mut self, yes: bool) -> Self {
        self.head_request = yes;
        self
    }

    /// Report interim (1xx) responses as responses of their own instead of skipping them.
    pub fn report_interim(mut self, yes: bool) -> Self {
        self.report_interim = yes;
        self
    }

    /// Parses what `buf` holds of the response (see the module docs for what it must hold).
    pub fn parse(&mut self, buf: &mut [u8]) -> Result<Status, Error> {
        loop {
            match self.state {
                State::Head { start, seen } => {
                    // A head ends with a line feed: without a new one, httparse would only repeat
                    // itself. It always sees a head's first bytes, so junk fails at once.
                    let fresh = buf.get(seen..).unwrap_or_default();
                    let parsed = if seen > start && memchr::memchr(b'\n', fresh).is_none() {
                        Parsed::Partial
                    } else {
                        self.parse_head(buf, start)?
                    };
                    match parsed {
                        Parsed::Partial => {
                            if buf.len() > self.limits.head_bytes {
                                return Err(Error::HeadTooLarge { limit: self.limits.head_bytes });
                            }
                            self.state = State::Head { start, seen: buf.len() };
                            return Ok(Status::Incomplete { len: buf.len() });
                        }
                        Parsed::Interim { end } if !self.report_interim => {
                            self.state = State::Head { start: end, seen: end };
                        }
                        Parsed::Interim { end } => return Ok(Status::Complete(self.finish_at(Span::at(end), end))),
                        Parsed::Final { end, framing } => self.start_body(end, framing)?,
                    }
                }
                State::Length { body_start, len } => {
                    if buf.len().saturating_sub(body_start) < len {
                        return Ok(Status::Incomplete { len: buf.len() });
                    }
                    let end = body_start + len;
                    return Ok(Status::Complete(self.finish_at(Span { start: body_start, end }, end)));
                }
                State::UntilClose { body_start } => {
                    if buf.len().saturating_sub(body_start) > self.limits.body_bytes {
                        return Err(Error::BodyTooLarge { limit: self.limits.body_bytes });
                    }
                    return Ok(Status::Incomplete { len: buf.len() });
                }
                State::Chunked { body_start, mut dechunk } => {
                    let progress = dechunk.run(buf, body_start, &self.limits);
                    self.state = State::Chunked { body_start, dechunk };
                    match progress? {
                        Progress::More { len } => return Ok(Status::Incomplete { len }),
                        Progress::Done { body_end, consumed } => {
                            let body = Span { start: body_start, end: body_end };
                            return Ok(Status::Complete(self.finish_at(body, consumed)));
                        }
                    }
                }
                State::Done(done) => return Ok(Status::Complete(done)),
            }
        }
    }

    /// The server closed the connection after `buf`: completes a body that runs until the
    /// close, and turns anything else unfinished into [`Error::Truncated`] (or [`Error::Closed`]
    /// when not a byte came).
    pub fn finish(&mut self, buf: &mut [u8]) -> Result<Done, Error> {
        let len = match self.parse(buf)? {
            Status::Complete(done) => return Ok(done),
            Status::Incomplete { len } => len,
        };
        match self.state {
            State::Head { start: 0, .. } if len == 0 => Err(Error::Closed),
            State::UntilClose { body_start } => Ok(self.finish_at(Span { start: body_start, end: len }, len)),
            _ => Err(Error::Truncated),
        }
    }

    fn finish_at(&mut self, body: Span, consumed: usize) -> Done {
        let done = Done { head: self.head, body, consumed };
        self.state = State::Done(done);
        done
    }

    fn start_body(&mut self, end: usize, framing: Framing) -> Result<(), Error> {
        self.state = match framing {
            Framing::Empty => State::Done(Done { head: self.head, body: Span::at(end), consumed: end }),
            Framing::Length(len) => match usize::try_from(len) {
                Ok(len) if len <= self.limits.body_bytes => State::Length { body_start: end, len },
                _ => return Err(Error::BodyTooLarge { limit: self.limits.body_bytes }),
            },
            Framing::Chunked => State::Chunked { body_start: end, dechunk: Dechunk::new(end) },
            Framing::UntilClose => State::UntilClose { body_start: end },
        };
        Ok(())
    }

    /// Runs httparse over the head starting at `start` and settles what it means.
    fn parse_head(&mut self, buf: &[u8], start: usize) -> Result<Parsed, Error> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut slots);
        let len = match parsed.parse(buf.get(start..).unwrap_or_default()) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders),
            Err(e) => return Err(Error::Head(e)),
        };
        let end = start + len;
        if end > self.limits.head_bytes {
            return Err(Error::HeadTooLarge { limit: self.limits.head_bytes });
        }
        // `Complete` always has a code: three digits.
        let status = parsed.code.unwrap_or(0);
        if status < 100 {
            return Err(Error::Status(status));
        }
        let http10 = parsed.version == Some(0);
        let mut fields = Fields::default();
        for h in parsed.headers.iter() {
            fields.add(h.name, h.value)?;
        }
        let first = parsed
            .headers
            .first()
            .map_or(end, |h| (h.name.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize).clamp(start, end));
        let interim = (100..200).contains(&status) && status != 101;
        let no_body = interim || self.head_request || matches!(status, 101 | 204 | 304);
        let framing = match (fields.chunked_last, fields.content_length) {
            (Some(_), _) if http10 => return Err(Error::Framing("Transfer-Encoding in an HTTP/1.0 response")),
            (Some(_), Some(_)) => return Err(Error::Framing("both Transfer-Encoding and Content-Length")),
            _ if no_body => Framing::Empty,
            (Some(true), None) => Framing::Chunked,
            (Some(false), None) => Framing::UntilClose,
            (None, Some(len)) => Framing::Length(len),
            (None, None) => Framing::UntilClose,
        };
        let close = status == 101 || framing == Framing::UntilClose || fields.close || (http10 && !fields.keep_alive);
        self.head = Head { status, close, fields: Span { start: first, end } };
        Ok(if interim { Parsed::Interim { end } } else { Parsed::Final { end, framing } })
    }
}

/// The header fields that decide framing and connection reuse.
#[derive(Debug, Default)]
struct Fields {
    content_length: Option<u64>,
    /// Whether the last transfer coding is chunked, once `Transfer-Encoding` was seen.
    chunked_last: Option<bool>,
    close: bool,
    keep_alive: bool,
}

impl Fields {
    fn add(&mut self, name: &str, value: &[u8]) -> Result<(), Error> {
        if name.eq_ignore_ascii_case("content-length") {
            // A list of equal values is one value (RFC 9110 §8.6); different ones are ambiguous.
            let mut items = list(value).peekable();
            if items.peek().is_none() {
                return Err(Error::Framing("bad Content-Length"));
            }
            for item in items {
                let len = parse_length(item).ok_or(Error::Framing("bad Content-Length"))?;
                if self.content_length.is_some_and(|old| old != len) {
                    return Err(Error::Framing("Content-Length values differ"));
                }
                self.content_length = Some(len);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in list(value) {
                self.chunked_last = Some(coding.eq_ignore_ascii_case(b"chunked"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in list(value) {
                self.close |= option.eq_ignore_ascii_case(b"close");
                self.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }
}

/// The non-empty elements of a comma-separated field value, without their whitespace.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(trim_ows).filter(|item| !item.is_empty())
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Digits only: no sign, no spaces inside, at most 19 of them (always fits a u64).
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A complete response, borrowed from the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'b> {
    pub status: u16,
    /// The connection cannot carry another response: the server said `Connection: close` (or
    /// spoke HTTP/1.0 without keep-alive), framed the body by closing, or switched protocols.
    pub close: bool,
    pub body: &'b [u8],
    /// See [`Done::consumed`].
    pub consumed: usize,
    fields: &'b [u8],
}

impl<'b> Response<'b> {
    /// The header fields in order, values without surrounding whitespace.
    pub fn headers(&self) -> impl Iterator<Item = (&'b str, &'b [u8])> + 'b {
        // httparse checked every line: `token ":" value`, ending in CRLF or LF, no folding.
        self.fields
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .take_while(|line| !line.is_empty())
            .filter_map(|line| {
                let colon = memchr::memchr(b':', line)?;
                let name = std::str::from_utf8(line.get(..colon)?).ok()?;
                Some((name, trim_ows(line.get(colon + 1..)?)))
            })
    }

    /// The first field named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// A copy that outlives the buffer; values that are not UTF-8 are converted lossily.
    pub fn owned(&self) -> OwnedResponse {
        OwnedResponse {
            status: self.status,
            headers: self.headers().map(|(n, v)| (n.to_owned(), String::from_utf8_lossy(v).into_owned())).collect(),
            body: self.body.to_vec(),
            close: self.close,
        }
    }
}

/// A complete response, copied out of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// See [`Response::close`].
    pub close: bool,
}

impl OwnedResponse {
    /// The first field named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests;
