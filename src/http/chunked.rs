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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    /// Decodes `input` fed `fragment` bytes at a time: (body, consumed, done) or the error.
    fn decode_in(input: &[u8], fragment: usize, max: usize) -> Result<(Vec<u8>, usize, bool), ApiError> {
        let mut decoder = ChunkedDecoder::new(max);
        let mut body = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(fragment.max(1)) {
            let d = decoder.decode(piece, &mut body)?;
            consumed += d.consumed;
            if d.done {
                return Ok((body, consumed, true));
            }
            assert_eq!(d.consumed, piece.len(), "an unfinished body takes all input");
        }
        Ok((body, consumed, false))
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ApiError> {
        let whole = decode_in(input, input.len(), 1024);
        for fragment in [1000, 100, 10, 5, 2, 1] {
            assert_eq!(decode_in(input, fragment, 1024), whole, "fragment {fragment}");
        }
        whole
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let input = b"4\r\nWiki\r\n5;a=b;c\r\npedia\r\nE ; q=\"x;y\"\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX: y\r\n\r\nNEXT";
        let (body, consumed, done) = decode_all(input).unwrap();
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        assert!(done);
        assert_eq!(&input[consumed..], b"NEXT");
    }

    #[test]
    fn empty_body_and_hex_cases() {
        assert_eq!(decode_all(b"0\r\n\r\n").unwrap(), (vec![], 5, true));
        assert_eq!(decode_all(b"000\r\n\r\n").unwrap(), (vec![], 7, true));
        let (body, _, _) = decode_all(b"a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(body.len(), 20);
    }

    #[test]
    fn incomplete_is_not_an_error() {
        for cut in 0..20 {
            let input = &b"5\r\nhello\r\n0\r\nT: 1\r\n\r\n"[..cut];
            let (_, consumed, done) = decode_all(input).unwrap();
            assert!(!done);
            assert_eq!(consumed, input.len());
        }
    }

    #[test]
    fn malformed_codings_are_400() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r\r",
            b"5;ext\nhello",
            b"0\r\nTrailer: x\n\r\n",
            b"0\r\n\n",
            b"0\r\n\rx",
            b"5 x\r\n",
            b"-5\r\n",
            b"00000000000000001\r\n",
        ] {
            let err = decode_all(bad).unwrap_err();
            assert_eq!(err.status(), 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn total_size_is_capped_before_reading_data() {
        assert!(decode_in(b"400\r\n", 100, 1024).is_ok());
        let err = decode_in(b"401\r\n", 100, 1024).unwrap_err();
        assert_eq!(err, ApiError::BodyTooLarge(1024));
        let mut input = Vec::new();
        for _ in 0..4 {
            input.extend_from_slice(b"100\r\n");
            input.extend_from_slice(&[b'x'; 256]);
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b"1\r\n");
        assert_eq!(decode_in(&input, 7, 1024).unwrap_err(), ApiError::BodyTooLarge(1024));
        // The largest size a u64 holds is only a size; nothing is reserved for it.
        assert!(decode_in(b"ffffffffffffffff\r\nabc", 3, usize::MAX).is_ok());
    }

    #[test]
    fn metadata_is_capped() {
        let mut input = b"1;".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_METADATA_BYTES));
        assert!(decode_in(&input, 1000, 1024).is_ok());
        input.push(b'x');
        assert_eq!(decode_in(&input, 1000, 1024).unwrap_err().status(), 400);
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..MAX_METADATA_BYTES / 7 + 1 {
            trailers.extend_from_slice(b"X: yyyy\r\n");
        }
        assert_eq!(decode_in(&trailers, 1000, 1024).unwrap_err().status(), 400);
    }

    #[test]
    fn done_decoder_takes_nothing_more() {
        let mut decoder = ChunkedDecoder::new(10);
        let mut body = Vec::new();
        assert_eq!(decoder.decode(b"0\r\n\r\n", &mut body).unwrap(), Decoded { consumed: 5, done: true });
        assert!(decoder.is_done());
        assert_eq!(decoder.decode(b"GET", &mut body).unwrap(), Decoded { consumed: 0, done: true });
        decoder.reset();
        assert!(!decoder.is_done());
        assert_eq!(decoder.decode(b"2\r\nab\r\n", &mut body).unwrap(), Decoded { consumed: 7, done: false });
        assert_eq!(decoder.total(), 2);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..400), fragment in 1usize..30) {
            let _ = decode_in(&input, fragment, 64);
        }

        #[test]
        fn any_chunking_of_a_body_decodes_to_it(
            body in prop::collection::vec(any::<u8>(), 0..500),
            sizes in prop::collection::vec(1usize..80, 1..8),
            fragment in 1usize..50,
        ) {
            let mut input = Vec::new();
            let mut rest = body.as_slice();
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*size).min(rest.len()));
                input.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
                input.extend_from_slice(chunk);
                input.extend_from_slice(b"\r\n");
                rest = tail;
            }
            input.extend_from_slice(b"0\r\n\r\n");
            let (decoded, consumed, done) = decode_in(&input, fragment, 500).unwrap();
            prop_assert!(done);
            prop_assert_eq!(consumed, input.len());
            prop_assert_eq!(decoded, body);
        }
    }
}
