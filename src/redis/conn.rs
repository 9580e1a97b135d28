//! One TCP connection to one node: a write buffer, a read buffer and the incremental parser.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::resp::{self, Parsed, ProtocolError, Value};

/// Read buffer size to start with and to shrink back to once a large reply is consumed.
const READ_BUF: usize = 16 << 10;
/// Above this an empty read buffer gives its memory back.
const KEEP_READ_BUF: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the node closed the connection")]
    Closed,
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

pub(crate) struct Conn {
    stream: TcpStream,
    /// Commands of the next round, written at once.
    pub out: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// No reply can be parsed until `end - start` reaches this (the parser's hint).
    need: usize,
}

/// `host:port` to a socket address without blocking: IP literals only. Host names are resolved
/// once, at connect time, by [`resolve_blocking`].
pub(crate) fn parse_addr(addr: &str) -> Option<SocketAddr> {
    addr.parse().ok()
}

/// Resolves a seed's host name (blocking: only while the client starts, before serving).
pub(crate) fn resolve_blocking(addr: &str) -> Option<SocketAddr> {
    parse_addr(addr).or_else(|| addr.to_socket_addrs().ok()?.next())
}

impl Conn {
    pub async fn open(addr: SocketAddr, limit: Duration) -> Result<Conn, ConnError> {
        let stream =
            futures_lite::future::or(async { TcpStream::connect(addr).await.map_err(std::io::Error::from) }, async {
                glommio::timer::sleep(limit).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {} ms", limit.as_millis()),
                ))
            })
            .await?;
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        Ok(Conn { stream, out: Vec::new(), buf: vec![0; READ_BUF], start: 0, end: 0, need: 0 })
    }

    /// Writes `out` and clears it.
    pub async fn flush_out(&mut self) -> Result<(), ConnError> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Writes one command now.
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), ConnError> {
        resp::encode_command(&mut self.out, args);
        self.flush_out().await
    }

    /// A reply already buffered, if whole.
    pub fn buffered(&mut self) -> Result<Option<Value>, ConnError> {
        let have = self.end - self.start;
        if have == 0 || have < self.need {
            return Ok(None);
        }
        match resp::parse(&self.buf[self.start..self.end])? {
            Parsed::Reply(value, used) => {
                self.start += used;
                self.need = 0;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                    if self.buf.len() > KEEP_READ_BUF {
                        self.buf = vec![0; READ_BUF];
                    }
                }
                Ok(Some(value))
            }
            Parsed::Incomplete(n) => {
                self.need = n;
                Ok(None)
            }
        }
    }

    /// The next reply. Cancel-safe: bytes read are kept in the buffer before any await.
    pub async fn read_value(&mut self) -> Result<Value, ConnError> {
        loop {
            if let Some(value) = self.buffered()? {
                return Ok(value);
            }
            let want = self.need.max(self.end - self.start + 1);
            if self.buf.len() - self.start < want || self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() < want || self.end == self.buf.len() {
                // The parser bounds `need` (MAX_REPLY_BYTES), so this growth is bounded too.
                let size = want.max(self.buf.len() * 2).min(resp::MAX_REPLY_BYTES.max(want));
                self.buf.resize(size, 0);
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
            self.end += n;
        }
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Value, ConnError> {
        self.send(args).await?;
        self.read_value().await
    }
}
