//! One keep-alive HTTP/1.1 connection on a glommio executor.
//!
//! A connection sends one request at a time (no pipelining: Zaqar clients don't pipeline, and a
//! latency sample must cover exactly one request). Any error or timeout drops the socket, since
//! its state is then unknown; the next request reconnects, and the reconnect time is part of
//! that request's latency, as it would be for a real client.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use thiserror::Error;

use crate::http::{parse_response, HttpError, Parsed, Response};

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("i/o: {0}")]
    Io(io::Error),
    #[error("timed out")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(#[from] HttpError),
    #[error("server closed the connection between responses")]
    Closed,
    #[error("unexpected bytes after the response")]
    Stray,
}

impl TransportError {
    /// Short stable name, used as the key of the error map (`transport_<kind>`).
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::Connect(_) => "connect",
            TransportError::Io(e) if e.kind() == io::ErrorKind::ConnectionReset => "reset",
            TransportError::Io(_) => "io",
            TransportError::Timeout => "timeout",
            TransportError::Protocol(_) => "protocol",
            TransportError::Closed => "closed",
            TransportError::Stray => "stray_bytes",
        }
    }
}

/// Initial read buffer; grown on demand, dropped while idle (`connections` holds 100k of these).
const READ_CHUNK: usize = 16 * 1024;

pub struct Conn {
    addr: SocketAddr,
    source: Option<IpAddr>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Connections made (the first one included), to report reconnect churn.
    pub connects: u64,
}

impl Conn {
    pub fn new(addr: SocketAddr, source: Option<IpAddr>) -> Self {
        Conn { addr, source, stream: None, buf: Vec::new(), connects: 0 }
    }

    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Opens the socket now (if not open), within `timeout`.
    pub async fn ensure_connected(&mut self, timeout: Duration) -> Result<(), TransportError> {
        if self.stream.is_none() {
            let s = connect(self.addr, self.source, timeout).await?;
            self.connects += 1;
            self.stream = Some(s);
        }
        Ok(())
    }

    /// Drops the socket (it will be reopened by the next request).
    pub fn disconnect(&mut self) {
        self.stream = None;
    }

    /// Releases the read buffer; for connections that will sit idle for a long time.
    pub fn shrink(&mut self) {
        self.buf = Vec::new();
    }

    /// Sends `req` and reads one response, all within `timeout`. On any error the socket is
    /// dropped.
    pub async fn request(
        &mut self,
        req: &[u8],
        head_request: bool,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let deadline = Instant::now() + timeout;
        let result = futures_lite::future::or(self.request_inner(req, head_request, deadline), {
            async move {
                glommio::timer::sleep(timeout).await;
                Err(TransportError::Timeout)
            }
        })
        .await;
        match &result {
            Ok(resp) if !resp.close => {}
            _ => self.stream = None,
        }
        result
    }

    async fn request_inner(
        &mut self,
        req: &[u8],
        head_request: bool,
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(TransportError::Timeout);
        }
        self.ensure_connected(remaining).await?;
        let Some(stream) = self.stream.as_mut() else {
            return Err(TransportError::Closed);
        };
        stream.write_all(req).await.map_err(TransportError::Io)?;
        let mut filled = 0;
        loop {
            if self.buf.len() - filled < READ_CHUNK / 2 {
                let new_len = (self.buf.len() * 2).max(READ_CHUNK);
                self.buf.resize(new_len, 0);
            }
            let n = stream.read(&mut self.buf[filled..]).await.map_err(TransportError::Io)?;
            if n == 0 && filled == 0 {
                // A keep-alive connection the server had already closed: nothing was answered.
                return Err(TransportError::Closed);
            }
            filled += n;
            match parse_response(&self.buf[..filled], n == 0, head_request)? {
                Parsed::Incomplete => continue,
                Parsed::Done(resp, used) => {
                    if used != filled {
                        return Err(TransportError::Stray);
                    }
                    return Ok(resp);
                }
            }
        }
    }
}

/// Connects to `addr`, from `source` if given.
///
/// glommio's `TcpStream::connect` creates its socket internally and offers no bind step, so a
/// bound connect is done by hand: a non-blocking socket2 socket is bound (with
/// `IP_BIND_ADDRESS_NO_PORT`, so the ephemeral port is picked at connect time per 4-tuple rather
/// than reserved at bind time), connected, polled for completion without blocking the executor,
/// and handed to glommio via `from_raw_fd` (glommio does its own I/O with MSG_DONTWAIT and
/// io_uring, so the socket's blocking flag does not matter to it).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> Result<TcpStream, TransportError> {
    let stream = match source {
        None => TcpStream::connect_timeout(addr, timeout).await.map_err(|e| TransportError::Connect(e.into()))?,
        Some(src) => bound_connect(addr, src, timeout).await?,
    };
    // Requests are written in one call; disabling Nagle keeps a partial write from waiting.
    stream.set_nodelay(true).map_err(|e| TransportError::Connect(e.into()))?;
    Ok(stream)
}

async fn bound_connect(addr: SocketAddr, src: IpAddr, timeout: Duration) -> Result<TcpStream, TransportError> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let err = TransportError::Connect;
    let domain = if addr.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    if addr.is_ipv4() {
        set_bind_no_port(&sock);
    }
    sock.bind(&SockAddr::from(SocketAddr::new(src, 0))).map_err(err)?;
    match sock.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            wait_writable(&sock, Instant::now() + timeout).await?;
            if let Some(e) = sock.take_error().map_err(err)? {
                return Err(TransportError::Connect(e));
            }
        }
        Err(e) => return Err(TransportError::Connect(e)),
    }
    // SAFETY: the fd is a connected TCP socket whose ownership moves into the TcpStream.
    Ok(unsafe { TcpStream::from_raw_fd(sock.into_raw_fd()) })
}

/// Best effort: without it, bind picks a port at once and each source address is limited to
/// the ephemeral range over all destinations; failure only lowers that ceiling.
fn set_bind_no_port(sock: &socket2::Socket) {
    let one: libc::c_int = 1;
    // SAFETY: plain setsockopt on a valid fd with a correctly sized int argument.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Waits for a non-blocking connect to finish. Loopback handshakes complete within
/// microseconds, so a zero-timeout poll with short executor sleeps in between is cheap and
/// never blocks the other connections of this thread.
async fn wait_writable(sock: &socket2::Socket, deadline: Instant) -> Result<(), TransportError> {
    let mut pause = Duration::from_micros(50);
    loop {
        let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        if r < 0 {
            return Err(TransportError::Connect(io::Error::last_os_error()));
        }
        if r > 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TransportError::Timeout);
        }
        glommio::timer::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}
