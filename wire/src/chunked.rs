//! The chunked transfer coding of a response body (RFC 9112 §7.1), decoded in place.
//!
//! ```text
//! chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF      (repeated)
//! last-chunk = 1*"0" [ chunk-ext ] CRLF
//! trailers   = *( field-line CRLF ) CRLF
//! ```
//! Chunk data is moved down in the buffer over the framing before it (`raw` is where the next
//! undecoded byte is, `out` where the decoded body ends), so the body ends up in one piece. While
//! the body is incomplete, undecoded bytes move down to `out` too, and the buffer shrinks to the
//! decoded body plus what is left to decode.
//!
//! Every line must end in CRLF: a bare LF is read differently by different parsers. Extensions
//! and trailers are checked and skipped; together they may take [`Limits::head_bytes`].

use crate::request::{has_control, is_token};
use crate::response::{Error, Limits};

/// A chunk size never needs more hex digits than a `u64` holds.
const MAX_SIZE_DIGITS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// At a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// At the CRLF after chunk data.
    DataEnd,
    /// At a trailer line, or the empty line that ends the body.
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dechunk {
    out: usize,
    raw: usize,
    step: Step,
    /// Bytes of extensions and trailers so far.
    metadata: usize,
}

pub(crate) enum Progress {
    /// More bytes are needed; the buffer's meaningful length is now `len`.
    More { len: usize },
    /// The body is `body_start..body_end`, and the response took `consumed` bytes.
    Done { body_end: usize, consumed: usize },
}

impl Dechunk {
    pub(crate) fn new(body_start: usize) -> Self {
        Dechunk { out: body_start, raw: body_start, step: Step::Size, metadata: 0 }
    }

    /// Decodes what `buf` holds beyond what earlier calls decoded.
    pub(crate) fn run(&mut self, buf: &mut [u8], body_start: usize, limits: &Limits) -> Result<Progress, Error> {
        loop {
            match self.step {
                Step::Size => {
                    let Some(line) = line(buf, self.raw, MAX_SIZE_DIGITS + self.allowance(limits), limits)? else {
                        return Ok(self.more(buf));
                    };
                    let (size, metadata) = size_line(line)?;
                    self.count(metadata, limits)?;
                    self.raw += line.len() + 2;
                    if size == 0 {
                        self.step = Step::Trailer;
                        continue;
                    }
                    let decoded = (self.out - body_start) as u64;
                    if decoded.checked_add(size).is_none_or(|total| total > limits.body_bytes as u64) {
                        return Err(Error::BodyTooLarge { limit: limits.body_bytes });
                    }
                    self.step = Step::Data(size);
                }
                Step::Data(left) => {
                    let available = buf.len().saturating_sub(self.raw);
                    let take = usize::try_from(left).map_or(available, |left| left.min(available));
                    if take > 0 {
                        buf.copy_within(self.raw..self.raw + take, self.out);
                        self.raw += take;
                        self.out += take;
                    }
                    if (take as u64) < left {
                        self.step = Step::Data(left - take as u64);
                        return Ok(self.more(buf));
                    }
                    self.step = Step::DataEnd;
                }
                Step::DataEnd => match buf.get(self.raw..).unwrap_or_default() {
                    [b'\r', b'\n', ..] => {
                        self.raw += 2;
                        self.step = Step::Size;
                    }
                    [] | [b'\r'] => return Ok(self.more(buf)),
                    _ => return Err(Error::Chunked("chunk data must end in CRLF")),
                },
                Step::Trailer => {
                    let Some(line) = line(buf, self.raw, self.allowance(limits), limits)? else {
                        return Ok(self.more(buf));
                    };
                    self.raw += line.len() + 2;
                    if line.is_empty() {
                        return Ok(Progress::Done { body_end: self.out, consumed: self.raw });
                    }
                    check_trailer(line)?;
                    self.count(line.len(), limits)?;
                }
            }
        }
    }

    /// Extension and trailer bytes still allowed.
    fn allowance(&self, limits: &Limits) -> usize {
        limits.head_bytes.saturating_sub(self.metadata)
    }

    fn count(&mut self, bytes: usize, limits: &Limits) -> Result<(), Error> {
        self.metadata += bytes;
        if self.metadata > limits.head_bytes {
            return Err(Error::MetadataTooLarge { limit: limits.head_bytes });
        }
        Ok(())
    }

    /// Moves the undecoded bytes down to the end of the decoded body.
    fn more(&mut self, buf: &mut [u8]) -> Progress {
        let len = buf.len();
        debug_assert!(self.out <= self.raw, "decoding never writes ahead of reading");
        if self.out < self.raw && self.raw <= len {
            buf.copy_within(self.raw..len, self.out);
            let kept = self.out + (len - self.raw);
            self.raw = self.out;
            return Progress::More { len: kept };
        }
        Progress::More { len }
    }
}

/// The line at `from` without its CRLF, once its LF is there; longer than `max` is an error.
fn line<'b>(buf: &'b [u8], from: usize, max: usize, limits: &Limits) -> Result<Option<&'b [u8]>, Error> {
    let rest = buf.get(from..).unwrap_or_default();
    let window = rest.get(..max.saturating_add(2)).unwrap_or(rest);
    let Some(lf) = memchr::memchr(b'\n', window) else {
        if window.len() < max.saturating_add(2) {
            return Ok(None);
        }
        return Err(Error::MetadataTooLarge { limit: limits.head_bytes });
    };
    match window.get(..lf).unwrap_or_default().strip_suffix(b"\r") {
        Some(line) => Ok(Some(line)),
        None => Err(Error::Chunked("lines must end in CRLF")),
    }
}

/// A chunk-size line: the size, and how many bytes of extensions (and whitespace) follow it.
fn size_line(line: &[u8]) -> Result<(u64, usize), Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Error::Chunked("missing chunk size"));
    }
    if digits > MAX_SIZE_DIGITS {
        return Err(Error::Chunked("chunk size too long"));
    }
    let (hex, rest) = line.split_at(digits);
    let size = std::str::from_utf8(hex)
        .ok()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or(Error::Chunked("missing chunk size"))?;
    let space = rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    match rest.get(space) {
        None | Some(b';') if !has_control(rest) => Ok((size, rest.len())),
        _ => Err(Error::Chunked("invalid chunk size line")),
    }
}

fn check_trailer(line: &[u8]) -> Result<(), Error> {
    let colon = memchr::memchr(b':', line).ok_or(Error::Chunked("malformed trailer field"))?;
    let (name, value) = line.split_at(colon);
    if is_token(name) && !has_control(value) {
        Ok(())
    } else {
        Err(Error::Chunked("malformed trailer field"))
    }
}
