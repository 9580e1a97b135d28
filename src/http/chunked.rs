//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally.
//!
//! # Format
//! ```text
//! chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF      (repeated)
//! last-chunk = 1*"0" [ chunk-ext ] CRLF
//! trailers   = *( field-line CRLF ) CRLF
//! ```
//! Extensions and trailers carry nothing the API uses, so they are skipped, but counted: together
//! they may take at most [`MAX_METADATA_BYTES`] per body, or a client could stream them forever.
//!
//! # Resumable anywhere
//! The decoder is a byte-level state machine: any split of the input, down to one byte per call,
//! decodes to the same body. Control bytes go one at a time; chunk data is copied in bulk.
//!
//! # Strictness
//! Every line must end in CRLF. A bare LF is tolerated by some peers and not by others, and two
//! parsers that disagree on where a chunk ends are the root of request smuggling.

use crate::error::ApiError;

/// Most bytes of chunk extensions and trailer fields accepted in one body.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// A chunk size never needs more hex digits than a `u64` holds.
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// Whitespace after the size, before `;` or CRLF.
    SizeSpace,
    /// Inside chunk extensions, up to CR.
    Extension,
    /// After the CR of a size line.
    SizeLf,
    /// Copying chunk data.
    Data,
    /// After chunk data, expecting its CR.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line, up to CR.
    Trailer,
    /// After the CR of a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    EndLf,
    Done,
}

/// Decodes one chunked body; make a new one (or [`ChunkedDecoder::reset`]) per body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk whose size line is being read.
    size: u64,
    digits: u8,
    /// Data bytes left in the current chunk.
    remaining: u64,
    /// Decoded bytes so far.
    total: u64,
    max_total: u64,
    metadata_bytes: usize,
}

/// What one [`ChunkedDecoder::decode`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used; when `done`, the rest of the input belongs to the next request.
    pub consumed: usize,
    /// Whether the body (trailers included) is complete.
    pub done: bool,
}

impl ChunkedDecoder {
    /// A decoder refusing bodies whose decoded size exceeds `max_total_bytes`.
    pub fn new(max_total_bytes: usize) -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            remaining: 0,
            total: 0,
            max_total: u64::try_from(max_total_bytes).unwrap_or(u64::MAX),
            metadata_bytes: 0,
        }
    }

    /// Starts over for a new body with the same limit.
    pub fn reset(&mut self) {
        let max_total = self.max_total;
        *self = Self::new(0);
        self.max_total = max_total;
    }

    /// Decoded bytes so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible, appending chunk data to `out`.
    ///
    /// Consumes all of `input` unless the body ends inside it. Errors are final:
    /// [`ApiError::BodyTooLarge`] once the declared chunk sizes pass the limit (before their data
    /// is read), [`ApiError::BadHttp`] for a malformed coding.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, ApiError> {
        let mut at = 0;
        while self.state != State::Done {
            if self.state == State::Data {
                let available = input.len() - at;
                let take = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(available);
                let Some(data) = input.get(at..at + take) else { break };
                out.extend_from_slice(data);
                at += take;
                self.remaining -= take as u64;
                self.total += take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                if at == input.len() {
                    break;
                }
                continue;
            }
            let Some(&b) = input.get(at) else { break };
            at += 1;
            self.step(b)?;
        }
        Ok(Decoded { consumed: at, done: self.state == State::Done })
    }

    /// Advances over one control byte.
    fn step(&mut self, b: u8) -> Result<(), ApiError> {
        self.state = match self.state {
            State::Size => match hex_value(b) {
                Some(v) => {
                    self.digits += 1;
                    if self.digits > MAX_SIZE_DIGITS {
                        return Err(bad("Chunk size is too long."));
                    }
                    self.size = (self.size << 4) | u64::from(v);
                    State::Size
                }
                None if self.digits == 0 => return Err(bad("Missing chunk size.")),
                None => match b {
                    b' ' | b'\t' => State::SizeSpace,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(bad("Invalid chunk size.")),
                },
            },
            State::SizeSpace => match b {
                b' ' | b'\t' => State::SizeSpace,
                b';' => State::Extension,
                b'\r' => State::SizeLf,
                _ => return Err(bad("Invalid chunk size line.")),
            },
            State::Extension => match b {
                b'\r' => State::SizeLf,
                b'\n' => return Err(bad("Chunk size line must end in CRLF.")),
                _ => {
                    self.count_metadata()?;
                    State::Extension
                }
            },
            State::SizeLf => {
                expect_lf(b)?;
                self.start_chunk()?
            }
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(bad("Chunk data must end in CRLF.")),
            },
            State::DataLf => {
                expect_lf(b)?;
                State::Size
            }
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b'\n' => return Err(bad("Trailer section must end in CRLF.")),
                _ => {
                    self.count_metadata()?;
                    State::Trailer
                }
            },
            State::Trailer => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return Err(bad("Trailer lines must end in CRLF.")),
                _ => {
                    self.count_metadata()?;
                    State::Trailer
                }
            },
            State::TrailerLf => {
                expect_lf(b)?;
                State::TrailerStart
            }
            State::EndLf => {
                expect_lf(b)?;
                State::Done
            }
            // `decode` handles data in bulk and stops when done.
            State::Data | State::Done => self.state,
        };
        Ok(())
    }

    /// A size line just ended: the last chunk leads to trailers, any other to its data.
    fn start_chunk(&mut self) -> Result<State, ApiError> {
        let size = std::mem::take(&mut self.size);
        self.digits = 0;
        if size == 0 {
            return Ok(State::TrailerStart);
        }
        if size > self.max_total.saturating_sub(self.total) {
            return Err(ApiError::BodyTooLarge(usize::try_from(self.max_total).unwrap_or(usize::MAX)));
        }
        self.remaining = size;
        Ok(State::Data)
    }

    fn count_metadata(&mut self) -> Result<(), ApiError> {
        self.metadata_bytes += 1;
        if self.metadata_bytes > MAX_METADATA_BYTES {
            return Err(bad("Chunk extensions and trailers are too long."));
        }
        Ok(())
    }
}

fn expect_lf(b: u8) -> Result<(), ApiError> {
    if b == b'\n' {
        Ok(())
    } else {
        Err(bad("Expected LF after CR in chunked body."))
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn bad(reason: &'static str) -> ApiError {
    ApiError::BadHttp(reason.into())
}
