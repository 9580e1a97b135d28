//! A connection's receive buffer ([`ReadBuf`]) that keeps the parser's buffer contract, so that
//! every read loop, blocking or async, is the same four lines:
//!
//! ```text
//! loop {
//!     if let Some(done) = rb.poll(&mut parser)? { break done }
//!     let n = stream.read(rb.spare())?;   // or .await
//!     rb.filled(n);
//! }
//! ```
//! and [`read_response`], that loop on [`std::io::Read`] for blocking callers.

use std::io::{self, Read};

use crate::response::{Done, Error, OwnedResponse, Parser, Response, Status};

/// Least room offered to one read; the buffer doubles when less is left.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes received on one connection and not yet consumed by a response.
#[derive(Debug, Clone, Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    /// Meaningful bytes; the rest of `buf` is room for the next read.
    len: usize,
    /// The peer closed its side.
    eof: bool,
}

impl ReadBuf {
    /// An empty buffer; it allocates on the first [`ReadBuf::spare`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses what has arrived: `Some` once the response is complete (or, after EOF, the
    /// response a close completes; unfinished ones are errors then).
    pub fn poll(&mut self, parser: &mut Parser) -> Result<Option<Done>, Error> {
        let data = self.buf.get_mut(..self.len).unwrap_or_default();
        if self.eof {
            return parser.finish(data).map(Some);
        }
        match parser.parse(data)? {
            Status::Complete(done) => Ok(Some(done)),
            Status::Incomplete { len } => {
                self.len = len;
                Ok(None)
            }
        }
    }

    /// Room to read into (at least half of [`READ_CHUNK`]); report what was read with
    /// [`ReadBuf::filled`].
    pub fn spare(&mut self) -> &mut [u8] {
        if self.buf.len() - self.len < READ_CHUNK / 2 {
            let grown = (self.buf.len() * 2).max(READ_CHUNK);
            self.buf.resize(grown, 0);
        }
        self.buf.get_mut(self.len..).unwrap_or_default()
    }

    /// `n` bytes were read into [`ReadBuf::spare`]; 0 means the peer closed.
    pub fn filled(&mut self, n: usize) {
        if n == 0 {
            self.eof = true;
        }
        self.len = (self.len + n).min(self.buf.len());
    }

    /// The completed response, borrowed.
    pub fn response(&self, done: &Done) -> Response<'_> {
        done.response(self.data())
    }

    /// Drops a completed response's bytes; what arrived after it stays for the next one.
    pub fn consume(&mut self, done: &Done) {
        let used = done.consumed().min(self.len);
        self.buf.copy_within(used..self.len, 0);
        self.len -= used;
    }

    /// What has arrived and is not consumed.
    pub fn data(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Forgets everything, for a new connection (the memory stays).
    pub fn clear(&mut self) {
        self.len = 0;
        self.eof = false;
    }

    /// Gives back the memory beyond what is buffered, for a connection about to idle.
    pub fn shrink(&mut self) {
        self.buf.truncate(self.len);
        self.buf.shrink_to_fit();
    }
}

/// Why [`read_response`] returned no response.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Http(#[from] Error),
}

/// Reads one response from `reader`, starting with what `rb` kept from the last one. What
/// arrives after the response stays in `rb`.
pub fn read_response<R: Read + ?Sized>(
    reader: &mut R,
    rb: &mut ReadBuf,
    mut parser: Parser,
) -> Result<OwnedResponse, ReadError> {
    loop {
        if let Some(done) = rb.poll(&mut parser)? {
            let response = rb.response(&done).owned();
            rb.consume(&done);
            return Ok(response);
        }
        let n = loop {
            match reader.read(rb.spare()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                read => break read?,
            }
        };
        rb.filled(n);
    }
}
