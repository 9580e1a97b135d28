//! One keep-alive HTTP/1.1 connection, on its thread's [`Poller`].
//!
//! A connection sends one request, or with pipelining a batch of requests written at once, and
//! reads their responses in order. Any error or timeout drops the socket, since its state is
//! then unknown; the next request reconnects, and the reconnect time is part of that request's
//! latency, as it would be for a real client. The socket is a plain non-blocking socket
//! (socket2) driven by the poller, not a glommio stream: see `poll.rs` for why.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use thiserror::Error;

use wire::{Done, Limits, Parser, ReadBuf, Response};

use crate::poll::{Failure, Poller};

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
    #[error("the run ended while the request was in flight")]
    Cancelled,
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

impl From<Failure> for TransportError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Timeout => TransportError::Timeout,
            Failure::Cancelled => TransportError::Cancelled,
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
            TransportError::Cancelled => "cancelled",
        }
    }
}

/// Largest response accepted; anything bigger is a protocol error, not a reason to eat memory.
const LIMITS: Limits = Limits { head_bytes: 64 * 1024, body_bytes: 64 * 1024 * 1024 };

pub struct Conn {
    link: Link,
    /// Grown on demand, dropped while idle (`connections` holds 100k of these).
    buf: ReadBuf,
    /// The response handed out last: its bytes stay in `buf` until the next one is read.
    last: Option<Done>,
}

/// The socket side of a connection, apart from its buffer so that a response can borrow the
/// buffer while the socket is dropped.
struct Link {
    poller: Rc<Poller>,
    addr: SocketAddr,
    source: Option<IpAddr>,
    sock: Option<Sock>,
    /// Connections made (the first one included), to report reconnect churn.
    connects: u64,
    /// When the exchange in progress must be over.
    deadline: Option<Instant>,
}

/// A socket registered with the poller; deregistered and closed on drop.
struct Sock {
    poller: Rc<Poller>,
    socket: socket2::Socket,
    token: usize,
}

impl Drop for Sock {
    fn drop(&mut self) {
        self.poller.deregister(self.token, self.socket.as_raw_fd());
    }
}

impl Link {
    /// The open socket, opened now (within the deadline) if need be.
    async fn open(&mut self) -> Result<&Sock, TransportError> {
        if self.sock.is_none() {
            let deadline = self.deadline.unwrap_or_else(Instant::now);
            let s = connect(&self.poller, self.addr, self.source, deadline).await?;
            self.connects += 1;
            self.sock = Some(s);
        }
        self.sock.as_ref().ok_or(TransportError::Closed)
    }
}

impl Link {
    /// No deadline until the next exchange starts.
    fn end_exchange(&mut self) {
        self.deadline = None;
        if let Some(s) = &self.sock {
            self.poller.set_deadline(s.token, None);
        }
    }
}

impl Conn {
    pub fn new(poller: &Rc<Poller>, addr: SocketAddr, source: Option<IpAddr>) -> Self {
        Conn {
            link: Link { poller: poller.clone(), addr, source, sock: None, connects: 0, deadline: None },
            buf: ReadBuf::new(),
            last: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.link.sock.is_some()
    }

    /// Connections made (the first one included).
    pub fn connects(&self) -> u64 {
        self.link.connects
    }

    /// Opens the socket now (if not open), within `timeout`.
    pub async fn ensure_connected(&mut self, timeout: Duration) -> Result<(), TransportError> {
        self.link.deadline = Some(Instant::now() + timeout);
        let r = self.link.open().await.map(|_| ());
        self.link.end_exchange();
        self.settle(r.is_ok());
        r
    }

    /// Drops the socket (it will be reopened by the next request).
    pub fn disconnect(&mut self) {
        self.link.sock = None;
    }

    /// Releases the read buffer; for connections that will sit idle for a long time.
    pub fn shrink(&mut self) {
        self.forget_last();
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
        self.send(req, timeout).await?;
        self.next_response(head_request, false).await
    }

    /// Starts an exchange: writes `reqs` (one or more requests, pipelined), connecting first if
    /// need be. Their responses, read with [`Conn::next_response`], must all be in within
    /// `timeout` of now.
    pub async fn send(&mut self, reqs: &[u8], timeout: Duration) -> Result<(), TransportError> {
        let deadline = Instant::now() + timeout;
        self.link.deadline = Some(deadline);
        // One exchange at a time: what an earlier exchange left is no part of this one.
        self.forget_last();
        self.buf.clear();
        let r = write_all(&mut self.link, reqs).await;
        self.settle(r.is_ok());
        r
    }

    /// Reads the next response of the exchange (the previous one's bytes are dropped first).
    /// `more`: further responses are expected after this one; without it, bytes after the
    /// response are a protocol error ([`TransportError::Stray`]). The exchange ends (its
    /// deadline is cleared) with the last response or the first error.
    pub async fn next_response(&mut self, head_request: bool, more: bool) -> Result<Response<'_>, TransportError> {
        self.forget_last();
        let Conn { link, buf, last } = self;
        let r = read_response(link, buf, head_request, more).await;
        let keep = matches!(&r, Ok(done) if !done_closes(buf, done));
        if !keep || !more {
            link.end_exchange();
        }
        if !keep {
            link.sock = None;
        }
        let done = r?;
        *last = Some(done);
        Ok(buf.response(&done))
    }

    fn forget_last(&mut self) {
        if let Some(done) = self.last.take() {
            self.buf.consume(&done);
        }
    }

    /// After a step of an exchange: a failed one drops the socket; the deadline is the
    /// poller's to enforce while the exchange goes on.
    fn settle(&mut self, ok: bool) {
        if !ok {
            self.link.sock = None;
            self.link.deadline = None;
        }
    }
}

fn done_closes(buf: &ReadBuf, done: &Done) -> bool {
    buf.response(done).close
}

async fn write_all(link: &mut Link, mut bytes: &[u8]) -> Result<(), TransportError> {
    let deadline = link.deadline;
    let poller = link.poller.clone();
    let sock = link.open().await?;
    poller.set_deadline(sock.token, deadline);
    let fd = sock.socket.as_raw_fd();
    while !bytes.is_empty() {
        let chunk = bytes;
        let n = poller.io(sock.token, true, || sys_send(fd, chunk)).await?.map_err(TransportError::Io)?;
        bytes = bytes.get(n..).unwrap_or_default();
    }
    Ok(())
}

async fn read_response(
    link: &mut Link,
    buf: &mut ReadBuf,
    head_request: bool,
    more: bool,
) -> Result<Done, TransportError> {
    let sock = link.sock.as_ref().ok_or(TransportError::Closed)?;
    let fd = sock.socket.as_raw_fd();
    let mut parser = Parser::new(LIMITS).head_request(head_request);
    loop {
        if let Some(done) = buf.poll(&mut parser)? {
            if !more && done.consumed() != buf.data().len() {
                return Err(TransportError::Stray);
            }
            return Ok(done);
        }
        let spare = buf.spare();
        let n = link.poller.io(sock.token, false, || sys_recv(fd, &mut *spare)).await?.map_err(TransportError::Io)?;
        buf.filled(n);
    }
}

fn sys_send(fd: i32, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: a valid socket fd and a live buffer of the given length.
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn sys_recv(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: a valid socket fd and a live, writable buffer of the given length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Connects to `addr`, from `source` if given, by `deadline`.
///
/// A non-blocking socket is bound (when a source is given, with `IP_BIND_ADDRESS_NO_PORT`, so the
/// ephemeral port is picked at connect time per 4-tuple rather than reserved at bind time),
/// registered with the poller, and connected; the poller reports when the handshake is over.
async fn connect(
    poller: &Rc<Poller>,
    addr: SocketAddr,
    source: Option<IpAddr>,
    deadline: Instant,
) -> Result<Sock, TransportError> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let err = TransportError::Connect;
    let domain = if addr.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP)).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    // Requests are written in one call; disabling Nagle keeps a partial write from waiting.
    socket.set_nodelay(true).map_err(err)?;
    if let Some(src) = source {
        if addr.is_ipv4() {
            set_bind_no_port(&socket);
        }
        socket.bind(&SockAddr::from(SocketAddr::new(src, 0))).map_err(err)?;
    }
    let token = poller.register(socket.as_raw_fd()).map_err(err)?;
    let sock = Sock { poller: poller.clone(), socket, token };
    poller.set_deadline(token, Some(deadline));
    match sock.socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            poller.connected(token, sock.socket.as_raw_fd()).await?;
            if let Some(e) = sock.socket.take_error().map_err(err)? {
                return Err(TransportError::Connect(e));
            }
        }
        Err(e) => return Err(TransportError::Connect(e)),
    }
    Ok(sock)
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
