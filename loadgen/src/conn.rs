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

use wire::{Limits, Parser, ReadBuf, Response};

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("i/o: {0}")]
    Io(io::Error),
    #[error("timed out")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(wire::Error),
    #[error("server closed the connection between responses")]
    Closed,
    #[error("unexpected bytes after the response")]
    Stray,
}

impl From<wire::Error> for TransportError {
    fn from(e: wire::Error) -> Self {
        match e {
            // A keep-alive connection the server had already closed: nothing was answered.
            wire::Error::Closed => TransportError::Closed,
            e => TransportError::Protocol(e),
        }
    }
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

/// Largest response accepted; anything bigger is a protocol error, not a reason to eat memory.
const LIMITS: Limits = Limits { head_bytes: 64 * 1024, body_bytes: 64 * 1024 * 1024 };

pub struct Conn {
    link: Link,
    /// Grown on demand, dropped while idle (`connections` holds 100k of these).
    buf: ReadBuf,
}

/// The socket side of a connection, apart from its buffer so that a response can borrow the
/// buffer while the socket is dropped.
struct Link {
    addr: SocketAddr,
    source: Option<IpAddr>,
    stream: Option<TcpStream>,
    /// Connections made (the first one included), to report reconnect churn.
    connects: u64,
}

impl Link {
    /// The open socket, opened now (within `timeout`) if need be.
    async fn open(&mut self, timeout: Duration) -> Result<&mut TcpStream, TransportError> {
        if self.stream.is_none() {
            let s = connect(self.addr, self.source, timeout).await?;
            self.connects += 1;
            self.stream = Some(s);
        }
        self.stream.as_mut().ok_or(TransportError::Closed)
    }
}

impl Conn {
    pub fn new(addr: SocketAddr, source: Option<IpAddr>) -> Self {
        Conn { link: Link { addr, source, stream: None, connects: 0 }, buf: ReadBuf::new() }
    }

    pub fn is_connected(&self) -> bool {
        self.link.stream.is_some()
    }

    /// Connections made (the first one included).
    pub fn connects(&self) -> u64 {
        self.link.connects
    }

    /// Opens the socket now (if not open), within `timeout`.
    pub async fn ensure_connected(&mut self, timeout: Duration) -> Result<(), TransportError> {
        self.link.open(timeout).await.map(|_| ())
    }

    /// Drops the socket (it will be reopened by the next request).
    pub fn disconnect(&mut self) {
        self.link.stream = None;
    }

    /// Releases the read buffer; for connections that will sit idle for a long time.
    pub fn shrink(&mut self) {
        self.buf.clear();
        self.buf.shrink();
    }

    /// Sends `req` and reads one response, all within `timeout`. On any error the socket is
    /// dropped. The response borrows the connection's buffer until the next request.
    pub async fn request(
        &mut self,
        req: &[u8],
        head_request: bool,
        timeout: Duration,
    ) -> Result<Response<'_>, TransportError> {
        let deadline = Instant::now() + timeout;
        let Conn { link, buf } = self;
        let result = futures_lite::future::or(exchange(link, buf, req, head_request, deadline), {
            async move {
                glommio::timer::sleep(timeout).await;
                Err(TransportError::Timeout)
            }
        })
        .await;
        if !matches!(&result, Ok(resp) if !resp.close) {
            link.stream = None;
        }
        result
    }
}

async fn exchange<'b>(
    link: &mut Link,
    buf: &'b mut ReadBuf,
    req: &[u8],
    head_request: bool,
    deadline: Instant,
) -> Result<Response<'b>, TransportError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(TransportError::Timeout);
    }
    let stream = link.open(remaining).await?;
    // One request at a time: what an earlier exchange left is no part of this one.
    buf.clear();
    stream.write_all(req).await.map_err(TransportError::Io)?;
    let mut parser = Parser::new(LIMITS).head_request(head_request);
    loop {
        if let Some(done) = buf.poll(&mut parser)? {
            if done.consumed() != buf.data().len() {
                return Err(TransportError::Stray);
            }
            return Ok(buf.response(&done));
        }
        let n = stream.read(buf.spare()).await.map_err(TransportError::Io)?;
        buf.filled(n);
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
