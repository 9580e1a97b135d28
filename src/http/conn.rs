//! The connection loop: bytes in, requests to the [`Handler`], responses out, in order.
//!
//! # Life of a connection
//! ```text
//!  idle ──first byte──▶ head ──complete──▶ check_head ──ok──▶ [100 Continue] ▶ body ▶ handle ▶ respond
//!   ▲  (idle_timeout,      (header_read_timeout,   │                                          │
//!   │   shutdown: close)    shutdown: close)       └─refused: answer, drain or close          │
//!   └───────────────────────────── keep-alive ◀───────────────────────────────────────────────┘
//! ```
//! - Pipelining: whatever arrives is buffered; complete requests are handled one at a time in
//!   order, and their responses pile up in one output buffer that is written only when the loop
//!   would otherwise wait (for more input, or for a handler that is not ready at once). Before
//!   writing, the loop reads once more without waiting, so requests already sent join the batch.
//!   A burst of pipelined requests thus costs one write.
//! - Durability: answers are written only after [`Handler::settle`] said they may be shown (in
//!   `sync` durability, once the log is on disk up to the last change they made). It is awaited
//!   once per batch, so a burst of pipelined posts shares one flush. If it fails, no queued answer
//!   goes out: the first unsettled one is replaced by the error (a 503) and the connection closes.
//! - Bodies stay where they were read: a `Content-Length` body is handed to the handler as a
//!   slice of the read buffer right after its head. Chunked bodies are decoded into a second
//!   buffer, with a copy of their head beside it.
//! - Refusals before the body ([`Handler::check_head`], or a declared length over
//!   `max_body_bytes`): the client learns at once that its body is unwelcome, with or without
//!   `Expect: 100-continue`, and the connection closes (lingering, see below). Reading a body
//!   nobody wants first would let a client hold the connection as long as it likes; only when
//!   the whole request is already buffered does the connection stay open.
//! - Every wait has a deadline: `idle_timeout` between requests (and for each read or write that
//!   makes no progress inside a request), `header_read_timeout` from the first byte of a head to
//!   its end, `body_read_timeout` from the end of a head to the end of its body (declared or
//!   chunked), so a body trickling in a byte at a time cannot keep a connection forever. A client
//!   too slow to finish a head or a body gets a 408 before the close.
//! - Closing after an error the client may not expect (a 400 in the middle of its upload), the
//!   loop shuts its sending side and reads for a moment more ("lingering close", as nginx does):
//!   closing a socket with unread input makes the kernel send a reset, which can destroy the
//!   error response before the client reads it.
//!
//! # Memory
//! An idle connection holds no buffer: its read buffer, output buffer and answer body come from
//! the shard's pool (`pool.rs`) while a request is in progress and go back when it is answered
//! and nothing more is buffered; a wait for the next request takes a buffer only for the moment
//! of a read that finds bytes. The state of a request in progress (the handler's future among
//! it) is boxed for the time the connection is busy, so it does not inflate every idle
//! connection; an idle one is its small loop state, the stream, one slot on the shard's
//! deadline wheel (`wheel.rs`) and one on the shutdown signal. Buffers grow as far as the limits
//! allow while a big request goes through and are freed after it.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::future::{poll_fn, poll_once};
use futures_lite::{AsyncRead, AsyncWrite};

use crate::config::HttpLimits;
use crate::error::ApiError;
use crate::http::chunked::ChunkedDecoder;
use crate::http::parser::{BodyFraming, HeadParser, Method, RequestHead, Version};
use crate::http::pool::{self, BUFFER_BYTES as INITIAL_BUFFER_BYTES};
use crate::http::response::{ConnectionHeader, Response, CONTINUE_100};
use crate::http::wheel;
use crate::sync::{Notified, Notify};

/// Buffers above this size are given back after the request that grew them.
const SHRINK_ABOVE_BYTES: usize = 64 * 1024;
/// Batched pipelined responses are written once they reach this size, even if more requests
/// are ready, to bound the output buffer.
const FLUSH_ABOVE_BYTES: usize = 64 * 1024;
/// How long a lingering close keeps reading, and how much.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// A complete request: its head, its whole (decoded) body, and who sent it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub head: RequestHead<'a>,
    pub body: &'a [u8],
    pub peer: &'a Peer,
}

/// What the transport knows of the client: the same for every request of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The client's address, as the connection's socket reports it.
    pub addr: Option<std::net::SocketAddr>,
    /// The subject of the client certificate the TLS handshake verified, e.g.
    /// `CN=agent-42, O=fleet` (RFC 4514); `None` over plain HTTP or without a certificate.
    pub certificate_subject: Option<Box<str>>,
}

/// What the connection loop asks of the API.
// Handlers run on the connection's own executor and are never boxed or sent between threads,
// so the `Send`-less future of a native `async fn` is exactly what is wanted.
#[allow(async_fn_in_trait)]
pub trait Handler {
    /// Called when a head is complete, before any body is read: lets the API reject a body by its
    /// declared size (Zaqar answers 400 for oversized posts/metadata) without reading it.
    ///
    /// Runs before the `max_body_bytes` check, so a route's own answer wins over the generic 413.
    /// A chunked body has no declared size; its decoded length is checked against
    /// `max_body_bytes` only, so routes with smaller limits must check `body.len()` in
    /// [`Handler::handle`] as well.
    ///
    /// What it returns on success is handed to `handle` with the request (so work done on the
    /// head, such as routing, is done once); it borrows nothing, as the head may move between.
    fn check_head(&self, head: &RequestHead<'_>) -> Result<Self::Checked, ApiError>;

    /// What [`Handler::check_head`] learnt of a head.
    type Checked: Copy;

    /// Produces the response for a complete request (async: it may wait on other shards).
    ///
    /// A HEAD request arrives as [`Method::Head`]: answer it as the GET, the loop drops the body
    /// (and keeps its `Content-Length`).
    async fn handle(&self, req: &Request<'_>, checked: Self::Checked, resp: &mut Response);

    /// Waits until the answers handled so far may be shown: in `sync` durability, until every
    /// change made before the call is on disk. The connection awaits it once before writing a
    /// batch of answers, so pipelined requests share one flush. An error (the flush failed)
    /// keeps every unsettled answer back; the client gets the error instead and the connection
    /// closes.
    async fn settle(&self) -> Result<(), ApiError> {
        Ok(())
    }

    /// Whether answering this request may take long (a long poll that parks): the connection
    /// then keeps only a copy of the request's exact size and no answer buffer while it waits,
    /// instead of a pooled buffer of each. A hint; answering is the same either way.
    fn may_park(&self, _head: &RequestHead<'_>, _checked: &Self::Checked) -> bool {
        false
    }
}

/// A one-shot signal to stop serving, shared by the connections of one executor.
///
/// Single-threaded on purpose: each shard has its own. Connections finish the request in
/// progress and close; idle ones close at once. It is a latch over the crate's [`Notify`]: fired
/// once, and every wait made before or after resolves.
#[derive(Clone, Default)]
pub struct Shutdown {
    notify: Rc<Notify>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Signals every waiter; later calls do nothing.
    pub fn trigger(&self) {
        if !self.is_triggered() {
            self.notify.notify_all();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.notify.generation() > 0
    }

    /// A future that completes once [`Shutdown::trigger`] has been called. It can be polled again
    /// after completing (it stays ready), so it can sit in a loop of `select`s; while pending it
    /// holds one waiter slot, given back when it is dropped.
    pub fn wait(&self) -> ShutdownWait {
        Notified::since(Rc::clone(&self.notify), 0)
    }

    /// Waits pending now (one per connection between requests, at most).
    pub fn waiters(&self) -> usize {
        self.notify.waiters()
    }
}

/// See [`Shutdown::wait`].
pub type ShutdownWait = Notified<Rc<Notify>>;

/// Serves HTTP/1.1 on `stream` until the client leaves, a limit or timeout ends the connection,
/// or `shutdown` is triggered. Must run on a glommio executor (timeouts use its timers).
///
/// Protocol trouble (malformed requests, limits, timeouts) ends in `Ok(())` after the fitting
/// answer; `Err` is an I/O error of the stream, including a write that made no progress for
/// `idle_timeout` (`TimedOut`).
pub async fn serve<S, H>(
    stream: S,
    handler: &H,
    limits: &HttpLimits,
    shutdown: &Shutdown,
    peer: &Peer,
) -> Result<(), io::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut conn = Conn {
        stream,
        handler,
        peer,
        limits,
        shutdown,
        shutdown_wait: shutdown.wait(),
        rbuf: ReadBuf::new(),
        eof: false,
        broken: false,
        parser: None,
        head_copy: Vec::new(),
        body_buf: Vec::new(),
        resp: Response::new(),
        body_pooled: false,
        out: Vec::new(),
        unsettled: None,
        early: Vec::new(),
        timer: None,
    };
    conn.run().await
}

struct Conn<'a, S, H> {
    stream: S,
    handler: &'a H,
    peer: &'a Peer,
    limits: &'a HttpLimits,
    shutdown: &'a Shutdown,
    shutdown_wait: ShutdownWait,
    rbuf: ReadBuf,
    /// The client closed its sending side; what is buffered is all there will be.
    eof: bool,
    /// A settle failed: the error answer is queued, the connection must end.
    broken: bool,
    /// The head parser, held (boxed) while the connection is busy.
    parser: Option<Box<HeadParser>>,
    /// The head of a chunked request, copied out so the read buffer can be recycled under it.
    head_copy: Vec<u8>,
    /// Decoded chunked body.
    body_buf: Vec<u8>,
    /// The answer being built; its body is a pooled buffer while a request is answered (then
    /// `body_pooled`).
    resp: Response,
    body_pooled: bool,
    /// Responses not written yet (a pooled buffer while there are any).
    out: Vec<u8>,
    /// Where in `out` the first answer not yet covered by [`Handler::settle`] starts.
    unsettled: Option<usize>,
    /// Bytes that arrived while a handler was waiting (pipelined requests), appended to the read
    /// buffer once the handler's borrow of it ends.
    early: Vec<u8>,
    /// The deadline of the current wait, kept while successive reads wait for the same one.
    timer: Option<wheel::Deadline>,
}

impl<S, H> Drop for Conn<'_, S, H> {
    fn drop(&mut self) {
        // A connection that ends, or whose task is dropped, gives its pooled buffers back (the
        // read buffer does so itself).
        if self.out.capacity() > 0 {
            pool::give_write(std::mem::take(&mut self.out));
        }
        if self.body_pooled {
            pool::give_write(std::mem::take(&mut self.resp.body));
        }
    }
}

/// What is known of a request while deciding how to answer it.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    head_len: usize,
    framing: BodyFraming,
    keep_alive: bool,
    head_only: bool,
    version: Version,
    /// [`Handler::may_park`] said so.
    parks: bool,
}

impl Ctx {
    /// For answers to heads that could not be parsed.
    const UNPARSED: Ctx = Ctx {
        head_len: 0,
        framing: BodyFraming::None,
        keep_alive: false,
        head_only: false,
        version: Version::Http11,
        parks: false,
    };
}

enum HeadResult {
    Head(usize),
    Invalid(ApiError),
    TimedOut,
    /// Idle timeout, end of input or shutdown: leave without a word.
    Close,
    /// Everything is answered and written and nothing is buffered: the connection is idle.
    Idle,
    /// A settle failed; its answer is queued.
    Broken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    Close,
    /// Close, reading a little longer first (see the module docs).
    Linger,
}

enum BodyAt {
    /// The body is this many bytes right after the head in the read buffer.
    ReadBuffer(usize),
    /// The body is in `body_buf`, its head in `head_copy`.
    Decoded,
    /// Head and body are in `head_copy`, copied out of the read buffer.
    Copied,
}

enum BodyResult {
    Complete,
    Invalid(ApiError),
    /// End of input before the body was complete.
    Gone,
    /// The body's deadline passed, or a read inside it made no progress for `idle_timeout`.
    TimedOut,
}

enum Wait {
    Read(usize),
    TimedOut,
    Shutdown,
}

/// When a wait gives up: at a fixed instant, or after some time without progress, or whichever
/// comes first (relative parts are resolved only if the wait actually has to wait, which spares a
/// clock read on the fast path).
#[derive(Debug, Clone, Copy)]
enum Deadline {
    At(Instant),
    After(Duration),
    AtOrAfter(Instant, Duration),
}

impl<S, H> Conn<'_, S, H>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    async fn run(&mut self) -> io::Result<()> {
        let end = loop {
            if self.rbuf.is_empty() && !self.eof && !self.shutdown.is_triggered() {
                self.release();
                if !self.wait_idle().await? {
                    break Next::Close;
                }
            }
            // The state of requests in progress is boxed while the connection is busy, so the
            // idle loop's state stays small (module docs, "Memory").
            let next = Box::pin(self.serve_buffered()).await?;
            if next != Next::Continue {
                break next;
            }
        };
        let closed = Box::pin(self.close(end == Next::Linger)).await;
        self.release();
        closed
    }

    /// Serves requests while bytes are buffered; `Continue` once the connection is idle again.
    async fn serve_buffered(&mut self) -> io::Result<Next> {
        loop {
            let next = match self.read_head().await? {
                HeadResult::Head(head_len) => self.process(head_len).await?,
                HeadResult::Invalid(err) => self.fail(Ctx::UNPARSED, &err),
                HeadResult::TimedOut => self.too_slow("head"),
                HeadResult::Close => Next::Close,
                HeadResult::Idle => return Ok(Next::Continue),
                HeadResult::Broken => Next::Linger,
            };
            if next != Next::Continue {
                return Ok(next);
            }
            // Cooperative scheduling: a client streaming pipelined requests finds every read
            // ready and would otherwise never let the executor's other tasks run.
            glommio::yield_if_needed().await;
        }
    }

    /// Waits, holding no buffer, for the first bytes of the next request; false when the
    /// connection should close instead (end of input, idle timeout, shutdown).
    async fn wait_idle(&mut self) -> io::Result<bool> {
        let Conn { stream, rbuf, timer, shutdown_wait, limits, .. } = self;
        let mut deadline = Deadline::After(limits.idle_timeout());
        let got = poll_fn(|cx| {
            if Pin::new(&mut *shutdown_wait).poll(cx).is_ready() {
                return Poll::Ready(Ok(false));
            }
            // The buffer is only lent for the read: a read that would block keeps nothing.
            let mut buf = pool::take_read();
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    rbuf.adopt(buf, n);
                    return Poll::Ready(Ok(true));
                }
                Poll::Ready(result) => {
                    pool::give_read(buf);
                    return Poll::Ready(result.map(|_| false));
                }
                Poll::Pending => pool::give_read(buf),
            }
            poll_deadline(cx, &mut deadline, timer).map(|()| Ok(false))
        })
        .await;
        self.timer = None;
        got
    }

    /// Gives back every buffer once nothing is buffered and nothing waits to be written.
    fn release(&mut self) {
        self.rbuf.release();
        if self.out.capacity() > 0 {
            pool::give_write(std::mem::take(&mut self.out));
        }
        self.give_body();
        for buf in [&mut self.body_buf, &mut self.head_copy, &mut self.early] {
            if buf.capacity() > 0 {
                *buf = Vec::new();
            }
        }
        self.resp.headers = Vec::new();
        self.parser = None;
    }

    /// Waits until the read buffer starts with a complete head.
    async fn read_head(&mut self) -> io::Result<HeadResult> {
        self.parser.get_or_insert_with(Box::default).reset();
        if self.shutdown.is_triggered() {
            return Ok(HeadResult::Close);
        }
        let mut head_deadline = None;
        loop {
            if self.broken {
                return Ok(HeadResult::Broken);
            }
            if !self.rbuf.is_empty() {
                match self.parser.get_or_insert_with(Box::default).parse(self.rbuf.data(), self.limits) {
                    Ok(Some(head_len)) => {
                        self.timer = None;
                        return Ok(HeadResult::Head(head_len));
                    }
                    Ok(None) => {}
                    Err(err) => return Ok(HeadResult::Invalid(err)),
                }
            }
            if self.eof {
                return Ok(HeadResult::Close);
            }
            if self.rbuf.is_empty() && self.out.is_empty() {
                return Ok(HeadResult::Idle);
            }
            if !self.rbuf.make_room(self.limits.max_head_bytes) {
                return Ok(HeadResult::Invalid(ApiError::HeadTooLarge(self.limits.max_head_bytes)));
            }
            if !self.out.is_empty() {
                // Requests the client already sent join this batch (one settle, one write).
                if let Some(read) = self.try_read().await {
                    if read? == 0 {
                        self.eof = true;
                    }
                    continue;
                }
                // About to wait: the batched responses must not wait with us.
                self.flush().await?;
                continue;
            }
            let deadline =
                Deadline::At(*head_deadline.get_or_insert_with(|| Instant::now() + self.limits.header_read_timeout()));
            match self.read_more(deadline, true).await? {
                Wait::Read(0) => self.eof = true,
                Wait::Read(_) => {}
                Wait::TimedOut => return Ok(HeadResult::TimedOut),
                Wait::Shutdown => return Ok(HeadResult::Close),
            }
        }
    }

    /// Takes one request whose head is complete from check to response.
    async fn process(&mut self, head_len: usize) -> io::Result<Next> {
        let (mut ctx, expect_continue, checked) = {
            let head = self.parser.get_or_insert_with(Box::default).head(self.rbuf.data());
            let ctx = Ctx {
                head_len,
                framing: head.framing(),
                keep_alive: head.keep_alive(),
                head_only: head.method() == Method::Head,
                version: head.version(),
                parks: false,
            };
            // The route's own verdict comes first: Zaqar answers an oversized post with its 400
            // and a description naming the limit, which says more than a bare 413.
            (
                ctx,
                head.expects_continue(),
                self.handler.check_head(&head).map(|c| (self.handler.may_park(&head, &c), c)),
            )
        };
        let checked = match checked {
            Ok((parks, checked)) => {
                ctx.parks = parks;
                checked
            }
            Err(err) => return Ok(self.refuse(ctx, err)),
        };
        let max_body = self.limits.max_body_bytes;
        let body_len = match ctx.framing {
            BodyFraming::Length(n) => match usize::try_from(n) {
                Ok(n) if n <= max_body => n,
                _ => return Ok(self.fail(ctx, &ApiError::BodyTooLarge(max_body))),
            },
            _ => 0,
        };
        let wants_body = body_len > 0 || ctx.framing == BodyFraming::Chunked;
        if !wants_body {
            return self.respond(ctx, checked, BodyAt::ReadBuffer(0)).await;
        }
        let deadline = Instant::now() + self.limits.body_read_timeout();
        if expect_continue && self.rbuf.len() == head_len {
            self.out_buf().extend_from_slice(CONTINUE_100);
            self.flush().await?;
            if self.broken {
                return Ok(Next::Linger);
            }
        }
        let (read, body) = if ctx.framing == BodyFraming::Chunked {
            self.head_copy.clear();
            self.head_copy.extend_from_slice(self.rbuf.data().get(..head_len).unwrap_or_default());
            self.rbuf.consume(head_len);
            (self.read_chunked(deadline).await?, BodyAt::Decoded)
        } else {
            (self.fill(head_len.saturating_add(body_len), deadline).await?, BodyAt::ReadBuffer(body_len))
        };
        match read {
            BodyResult::Complete => self.respond(ctx, checked, body).await,
            BodyResult::Invalid(err) => Ok(self.fail(ctx, &err)),
            BodyResult::Gone => Ok(Next::Close),
            BodyResult::TimedOut => Ok(self.too_slow("body")),
        }
    }

    /// Runs the handler and queues its response.
    async fn respond(&mut self, ctx: Ctx, checked: H::Checked, body: BodyAt) -> io::Result<Next> {
        let mut body = body;
        if let BodyAt::ReadBuffer(n) = body {
            let total = ctx.head_len + n;
            if ctx.parks && self.rbuf.len() == total {
                // A long poll keeps a copy of its own size while it waits, not a pooled buffer.
                self.head_copy.clear();
                self.head_copy.extend_from_slice(self.rbuf.data());
                self.rbuf.consume(total);
                self.rbuf.release();
                body = BodyAt::Copied;
            }
        }
        self.start_answer(!ctx.parks);
        let mut refused = None;
        {
            let Conn {
                stream,
                handler,
                peer,
                rbuf,
                parser,
                head_copy,
                body_buf,
                resp,
                out,
                unsettled,
                early,
                timer,
                limits,
                ..
            } = self;
            let (head_bytes, body_bytes) = match body {
                BodyAt::ReadBuffer(n) => {
                    let data = rbuf.data();
                    (
                        data.get(..ctx.head_len).unwrap_or_default(),
                        data.get(ctx.head_len..ctx.head_len + n).unwrap_or_default(),
                    )
                }
                BodyAt::Decoded => (head_copy.as_slice(), body_buf.as_slice()),
                BodyAt::Copied => head_copy.split_at(ctx.head_len.min(head_copy.len())),
            };
            let req =
                Request { head: parser.get_or_insert_with(Box::default).head(head_bytes), body: body_bytes, peer };
            let mut handling = pin!(handler.handle(&req, checked, resp));
            // Answers already queued go out while a slow handler (a long poll, another shard)
            // works, instead of waiting for it.
            let watch_cap = limits.max_head_bytes.saturating_add(limits.max_body_bytes);
            if poll_once(handling.as_mut()).await.is_none() {
                if !out.is_empty() {
                    if unsettled.is_some() {
                        refused = handler.settle().await.err();
                        *unsettled = None;
                    }
                    if refused.is_none() {
                        write_all(stream, out, limits.idle_timeout(), timer).await?;
                        out.clear();
                        *timer = None;
                    }
                }
                if refused.is_none() && !handle_watching(stream, early, watch_cap, handling).await {
                    // The client hung up: dropping the handler cancels what it waited for.
                    return Ok(Next::Close);
                }
            }
        }
        if let Some(err) = refused {
            // The answers queued before this request may show changes the failed flush lost.
            self.refuse_unsettled(&err);
            return Ok(Next::Linger);
        }
        let close = !ctx.keep_alive || self.shutdown.is_triggered();
        let start = self.out.len();
        self.queue_answer(ctx.head_only, connection_header(ctx, close));
        self.unsettled.get_or_insert(start);
        if let BodyAt::ReadBuffer(n) = body {
            self.rbuf.consume(ctx.head_len + n);
        }
        if !self.early.is_empty() {
            self.rbuf.append(&self.early);
            self.early.clear();
        }
        self.trim();
        if close {
            return Ok(Next::Close);
        }
        if self.out.len() >= FLUSH_ABOVE_BYTES {
            self.flush().await?;
            if self.broken {
                return Ok(Next::Linger);
            }
        }
        Ok(Next::Continue)
    }

    /// Readies the answer for a new request: empty, its body a pooled buffer if `pooled` (else
    /// an empty vector that grows when the answer is written).
    fn start_answer(&mut self, pooled: bool) {
        self.resp.reset();
        if pooled && !self.body_pooled {
            self.resp.body = pool::take_write();
            self.body_pooled = true;
        }
    }

    /// Appends the answer built in `resp` to the output and gives its body buffer back.
    fn queue_answer(&mut self, head_only: bool, connection: ConnectionHeader) {
        if self.out.capacity() == 0 {
            self.out = pool::take_write();
        }
        self.resp.write_to(&mut self.out, head_only, connection);
        self.give_body();
    }

    fn give_body(&mut self) {
        let body = std::mem::take(&mut self.resp.body);
        if std::mem::take(&mut self.body_pooled) {
            pool::give_write(body);
        }
    }

    /// The output buffer, taken from the pool if none is held.
    fn out_buf(&mut self) -> &mut Vec<u8> {
        if self.out.capacity() == 0 {
            self.out = pool::take_write();
        }
        &mut self.out
    }

    /// A settle failed: no unsettled answer may go out. The first of them (or, with none
    /// queued, the next answer) becomes the error, and the connection ends after it.
    fn refuse_unsettled(&mut self, err: &ApiError) {
        if let Some(from) = self.unsettled.take() {
            self.out.truncate(from);
        }
        self.start_answer(true);
        self.resp.error(err);
        self.queue_answer(false, ConnectionHeader::Close);
        self.broken = true;
    }

    /// Answers a request that `check_head` refused at once: the connection stays open only if the
    /// whole request is already here; otherwise the body nobody wants is not waited for.
    fn refuse(&mut self, ctx: Ctx, err: ApiError) -> Next {
        match self.buffered_request_len(ctx) {
            Some(total) => {
                self.rbuf.consume(total);
                self.answer(ctx, &err)
            }
            None => self.fail(ctx, &err),
        }
    }

    /// Length of head plus body if the whole request is already buffered.
    fn buffered_request_len(&mut self, ctx: Ctx) -> Option<usize> {
        match ctx.framing {
            BodyFraming::None => Some(ctx.head_len),
            BodyFraming::Length(n) => {
                let total = ctx.head_len.checked_add(usize::try_from(n).ok()?)?;
                (self.rbuf.len() >= total).then_some(total)
            }
            BodyFraming::Chunked => {
                let rest = self.rbuf.data().get(ctx.head_len..).unwrap_or_default();
                let mut decoder = ChunkedDecoder::new(self.limits.max_body_bytes);
                let decoded = decoder.decode(rest, &mut self.body_buf);
                self.body_buf.clear();
                match decoded {
                    Ok(d) if d.done => Some(ctx.head_len + d.consumed),
                    _ => None,
                }
            }
        }
    }

    /// Queues the error answer for a request whose input is fully consumed.
    fn answer(&mut self, ctx: Ctx, err: &ApiError) -> Next {
        let close = !ctx.keep_alive || err.closes_connection() || self.shutdown.is_triggered();
        self.start_answer(true);
        self.resp.error(err);
        self.queue_answer(ctx.head_only, connection_header(ctx, close));
        self.trim();
        match (close, err.closes_connection()) {
            (false, _) => Next::Continue,
            (true, false) => Next::Close,
            (true, true) => Next::Linger,
        }
    }

    /// Queues the error answer and ends the connection: its input can no longer be followed.
    fn fail(&mut self, ctx: Ctx, err: &ApiError) -> Next {
        self.start_answer(true);
        self.resp.error(err);
        self.queue_answer(ctx.head_only, ConnectionHeader::Close);
        Next::Linger
    }

    /// Queues the 408 of a request whose `part` (head or body) did not arrive in time, and ends
    /// the connection.
    fn too_slow(&mut self, part: &str) -> Next {
        self.start_answer(true);
        self.resp.problem(
            408,
            "Request timeout",
            format_args!("The request {part} did not arrive in time."),
            "request_timeout",
        );
        self.queue_answer(false, ConnectionHeader::Close);
        Next::Linger
    }

    /// Reads until the read buffer holds `total` bytes, by `deadline`.
    async fn fill(&mut self, total: usize, deadline: Instant) -> io::Result<BodyResult> {
        while self.rbuf.len() < total {
            if self.eof || !self.rbuf.make_room(total) {
                return Ok(BodyResult::Gone);
            }
            if let Some(stopped) = self.read_body(deadline).await? {
                return Ok(stopped);
            }
        }
        self.timer = None;
        Ok(BodyResult::Complete)
    }

    /// Decodes a chunked body that starts the read buffer into `body_buf`, by `deadline`.
    async fn read_chunked(&mut self, deadline: Instant) -> io::Result<BodyResult> {
        let mut decoder = ChunkedDecoder::new(self.limits.max_body_bytes);
        self.body_buf.clear();
        loop {
            if !self.rbuf.is_empty() {
                match decoder.decode(self.rbuf.data(), &mut self.body_buf) {
                    Ok(decoded) => {
                        self.rbuf.consume(decoded.consumed);
                        if decoded.done {
                            self.timer = None;
                            return Ok(BodyResult::Complete);
                        }
                    }
                    Err(err) => return Ok(BodyResult::Invalid(err)),
                }
            }
            if self.eof || !self.rbuf.make_room(INITIAL_BUFFER_BYTES) {
                return Ok(BodyResult::Gone);
            }
            if let Some(stopped) = self.read_body(deadline).await? {
                return Ok(stopped);
            }
        }
    }

    /// One read of a body: `None` when bytes came, else why the body stopped (the client left, or
    /// `deadline` passed, or nothing came for `idle_timeout`).
    async fn read_body(&mut self, deadline: Instant) -> io::Result<Option<BodyResult>> {
        match self.read_more(Deadline::AtOrAfter(deadline, self.limits.idle_timeout()), false).await? {
            Wait::Read(0) => {
                self.eof = true;
                Ok(Some(BodyResult::Gone))
            }
            Wait::Read(_) => Ok(None),
            Wait::TimedOut => Ok(Some(BodyResult::TimedOut)),
            // Not raced: a request in progress is finished, or times out, before shutdown.
            Wait::Shutdown => Ok(Some(BodyResult::Gone)),
        }
    }

    /// Reads once into the read buffer's free space (the caller made some), racing the deadline
    /// and, between requests, the shutdown signal.
    async fn read_more(&mut self, deadline: Deadline, race_shutdown: bool) -> io::Result<Wait> {
        let Conn { stream, rbuf, timer, shutdown_wait, .. } = self;
        let spare = rbuf.spare();
        let mut deadline = deadline;
        let wait = poll_fn(|cx| {
            if race_shutdown && Pin::new(&mut *shutdown_wait).poll(cx).is_ready() {
                return Poll::Ready(Ok(Wait::Shutdown));
            }
            if let Poll::Ready(read) = Pin::new(&mut *stream).poll_read(cx, spare) {
                return Poll::Ready(read.map(Wait::Read));
            }
            poll_deadline(cx, &mut deadline, timer).map(|()| Ok(Wait::TimedOut))
        })
        .await?;
        if let Wait::Read(n) = wait {
            rbuf.filled(n);
        }
        Ok(wait)
    }

    /// Reads what has already arrived into the read buffer's free space (the caller made some),
    /// without waiting: `None` when nothing has.
    async fn try_read(&mut self) -> Option<io::Result<usize>> {
        let Conn { stream, rbuf, .. } = self;
        let read = poll_once(poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, rbuf.spare()))).await;
        if let Some(Ok(n)) = read {
            rbuf.filled(n);
        }
        read
    }

    /// Writes the queued responses, once [`Handler::settle`] allows; if it refuses, the error
    /// answer goes out instead and the connection is `broken`.
    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if self.unsettled.is_some() {
            if let Err(err) = self.handler.settle().await {
                self.refuse_unsettled(&err);
            }
            self.unsettled = None;
        }
        write_all(&mut self.stream, &self.out, self.limits.idle_timeout(), &mut self.timer).await?;
        self.timer = None;
        pool::give_write(std::mem::take(&mut self.out));
        Ok(())
    }

    /// Writes what is queued and ends the connection, lingering if asked to.
    async fn close(&mut self, linger: bool) -> io::Result<()> {
        self.flush().await?;
        poll_fn(|cx| Pin::new(&mut self.stream).poll_close(cx)).await?;
        if !linger || self.eof {
            return Ok(());
        }
        let deadline = Deadline::At(Instant::now() + LINGER);
        let mut drained = 0;
        while drained < LINGER_MAX_BYTES {
            self.rbuf.consume(self.rbuf.len());
            if !self.rbuf.make_room(INITIAL_BUFFER_BYTES) {
                break;
            }
            match self.read_more(deadline, true).await {
                Ok(Wait::Read(n)) if n > 0 => drained += n,
                // The answer is out; whatever happens to the input now changes nothing.
                _ => break,
            }
        }
        Ok(())
    }

    /// Gives back what a big request made the buffers grow to.
    fn trim(&mut self) {
        self.rbuf.shrink();
        for buf in [&mut self.body_buf, &mut self.head_copy] {
            if buf.capacity() > SHRINK_ABOVE_BYTES {
                buf.clear();
                buf.shrink_to(INITIAL_BUFFER_BYTES);
            }
        }
    }
}

fn connection_header(ctx: Ctx, close: bool) -> ConnectionHeader {
    if close {
        ConnectionHeader::Close
    } else if ctx.version == Version::Http10 {
        ConnectionHeader::KeepAlive
    } else {
        ConnectionHeader::Default
    }
}

/// Polls the wheel for `deadline`, arming it (and fixing a relative deadline) on first need.
fn poll_deadline(cx: &mut Context<'_>, deadline: &mut Deadline, slot: &mut Option<wheel::Deadline>) -> Poll<()> {
    let now = Instant::now();
    let at = match *deadline {
        Deadline::At(at) => at,
        Deadline::After(after) => now + after,
        Deadline::AtOrAfter(at, after) => at.min(now + after),
    };
    *deadline = Deadline::At(at);
    if now >= at {
        return Poll::Ready(());
    }
    if slot.as_ref().is_none_or(|armed| armed.at() != at) {
        *slot = None;
        *slot = Some(wheel::Deadline::arm(at, cx));
    }
    match slot {
        Some(armed) => armed.poll(cx),
        None => Poll::Ready(()),
    }
}

/// Writes all of `data`, failing with `TimedOut` when no byte goes out for `stall`.
/// Awaits a handler that did not finish at once while watching the socket, so that a client
/// that hangs up during a long poll is noticed now rather than when the wait runs out. Bytes
/// that arrive meanwhile (pipelined requests) go to `early`, up to `cap`. False when the peer
/// is gone.
async fn handle_watching<S: AsyncRead + Unpin, F: Future<Output = ()>>(
    stream: &mut S,
    early: &mut Vec<u8>,
    cap: usize,
    mut handling: Pin<&mut F>,
) -> bool {
    poll_fn(|cx| {
        if handling.as_mut().poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        // As in an idle wait, a read that finds nothing keeps no buffer (a parked poll holds none).
        let mut chunk = pool::take_read();
        let mut gone = false;
        while early.len() < cap {
            match Pin::new(&mut *stream).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    gone = true;
                    break;
                }
                Poll::Ready(Ok(n)) => early.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Poll::Pending => break,
            }
        }
        pool::give_read(chunk);
        if gone {
            Poll::Ready(false)
        } else {
            Poll::Pending
        }
    })
    .await
}

async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
    stall: Duration,
    timer: &mut Option<wheel::Deadline>,
) -> io::Result<()> {
    let mut written = 0;
    let mut deadline = Deadline::After(stall);
    poll_fn(|cx| loop {
        let Some(rest) = data.get(written..).filter(|rest| !rest.is_empty()) else {
            return Pin::new(&mut *stream).poll_flush(cx);
        };
        match Pin::new(&mut *stream).poll_write(cx, rest) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                written += n;
                deadline = Deadline::After(stall);
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => {
                return poll_deadline(cx, &mut deadline, timer).map(|()| Err(io::ErrorKind::TimedOut.into()));
            }
        }
    })
    .await
}

/// The connection's read buffer: `buf[start..end]` is received and not yet consumed.
///
/// `buf` is a pooled buffer while one is held (an empty vector otherwise), kept initialized to
/// its full length so reads can go straight into it; it grows only when full, by doubling, up to
/// the cap the caller gives.
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        self.release_any();
    }
}

impl ReadBuf {
    fn new() -> Self {
        Self { buf: Vec::new(), start: 0, end: 0 }
    }

    /// Takes `buf` from the pool with its first `n` bytes received.
    fn adopt(&mut self, buf: Vec<u8>, n: usize) {
        self.release_any();
        self.buf = buf;
        self.start = 0;
        self.end = n.min(self.buf.len());
    }

    /// Gives the buffer back if it holds nothing.
    fn release(&mut self) {
        if self.is_empty() {
            self.release_any();
        }
    }

    fn release_any(&mut self) {
        if self.buf.capacity() > 0 {
            pool::give_read(std::mem::take(&mut self.buf));
        }
        self.start = 0;
        self.end = 0;
    }

    fn hold(&mut self) {
        if self.buf.capacity() == 0 {
            self.buf = pool::take_read();
        }
    }

    fn data(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for at least one more byte, moving the data to the front and growing the
    /// buffer up to `cap` bytes (or its current size, if larger) as needed; false when full.
    fn make_room(&mut self, cap: usize) -> bool {
        self.hold();
        if self.end < self.buf.len() {
            return true;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Grow when more than half is data, so a big request is not read a few bytes at a time.
        let size = self.buf.len();
        if self.end * 2 > size && size < cap {
            self.buf.resize(size.saturating_mul(2).min(cap), 0);
        }
        self.end < self.buf.len()
    }

    /// Appends bytes received out of band (see `Conn::early`), growing as needed.
    fn append(&mut self, bytes: &[u8]) {
        self.hold();
        if self.buf.len() - self.end < bytes.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < bytes.len() {
                self.buf.resize(self.end + bytes.len(), 0);
            }
        }
        if let Some(dst) = self.buf.get_mut(self.end..self.end + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.end += bytes.len();
        }
    }

    fn spare(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    fn shrink(&mut self) {
        if self.buf.len() > SHRINK_ABOVE_BYTES && self.len() <= INITIAL_BUFFER_BYTES {
            let mut small = pool::take_read();
            let len = self.len();
            if let Some(dst) = small.get_mut(..len) {
                dst.copy_from_slice(self.data());
            }
            pool::give_read(std::mem::replace(&mut self.buf, small));
            self.start = 0;
            self.end = len;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;
    use crate::http::testing::{duplex, run, within, Client};

    /// Echoes `METHOD path query` and the body; refuses `/reject*` in `check_head`; `/gated`
    /// waits for the gate, `/slow` for a moment. Counts its settles, and fails them on demand.
    #[derive(Default)]
    struct Echo {
        gate: Shutdown,
        settles: Rc<std::cell::Cell<usize>>,
        fail_settles: Rc<std::cell::Cell<bool>>,
    }

    impl Handler for Echo {
        type Checked = ();

        fn check_head(&self, head: &RequestHead<'_>) -> Result<(), ApiError> {
            if head.path().starts_with("/reject") {
                return Err(ApiError::invalid_request("Rejected before the body."));
            }
            Ok(())
        }

        async fn handle(&self, req: &Request<'_>, (): (), resp: &mut Response) {
            match req.head.path() {
                "/gated" => self.gate.wait().await,
                "/slow" => glommio::timer::sleep(Duration::from_millis(30)).await,
                _ => {}
            }
            let head = &req.head;
            let line = format!("{} {} {}\n", head.method_str(), head.path(), head.query());
            resp.body.extend_from_slice(line.as_bytes());
            resp.body.extend_from_slice(req.body);
            resp.content_type = Some("text/plain");
        }

        async fn settle(&self) -> Result<(), ApiError> {
            self.settles.set(self.settles.get() + 1);
            if self.fail_settles.get() {
                return Err(ApiError::from(crate::storage::StoreError::Io("flush failed".into())));
            }
            Ok(())
        }
    }

    fn limits() -> HttpLimits {
        HttpLimits {
            max_head_bytes: 2048,
            max_headers: 16,
            max_body_bytes: 4096,
            header_read_timeout_ms: 5_000,
            idle_timeout_ms: 5_000,
            ..HttpLimits::default()
        }
    }

    struct Ctl {
        shutdown: Shutdown,
        gate: Shutdown,
        settles: Rc<std::cell::Cell<usize>>,
        fail_settles: Rc<std::cell::Cell<bool>>,
    }

    /// Runs `test` as the client of a served in-memory connection, then checks that the server
    /// ends once the client is gone, and returns how it ended.
    fn with_server<F, Fut>(limits: HttpLimits, test: F) -> io::Result<()>
    where
        F: FnOnce(Client, Ctl) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let result = run(move || async move {
            let (client_end, server_end) = duplex();
            let shutdown = Shutdown::new();
            let gate = Shutdown::new();
            let echo = Echo { gate: gate.clone(), ..Echo::default() };
            let ctl = Ctl { shutdown, gate, settles: echo.settles.clone(), fail_settles: echo.fail_settles.clone() };
            let server_shutdown = ctl.shutdown.clone();
            let server = glommio::spawn_local(async move {
                serve(server_end, &echo, &limits, &server_shutdown, &Peer::default()).await.map_err(|e| e.to_string())
            });
            within("client", test(Client::new(client_end), ctl)).await;
            within("server end", server).await
        });
        result.map_err(io::Error::other)
    }

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
    }

    fn post(path: &str, body: &str) -> Vec<u8> {
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    #[test]
    fn keep_alive_serves_request_after_request() {
        with_server(limits(), |mut c, _| async move {
            for i in 0..3 {
                c.send(&get(&format!("/a?i={i}"))).await;
                let r = c.reply().await;
                assert_eq!((r.status, r.body_str()), (200, format!("GET /a i={i}\n").as_str()));
                assert!(!r.closes());
                assert!(r.header("x-openstack-request-id").unwrap().starts_with("req-"));
            }
            c.send(&post("/b", "hello")).await;
            assert_eq!(c.reply().await.body_str(), "POST /b \nhello");
        })
        .unwrap();
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_in_one_write() {
        with_server(limits(), |mut c, _| async move {
            let burst = [get("/1"), post("/2", "two"), get("/3?x"), post("/4", "")].concat();
            c.send(&burst).await;
            let bodies = [c.reply().await.body, c.reply().await.body, c.reply().await.body, c.reply().await.body];
            assert_eq!(bodies, [&b"GET /1 \n"[..], b"POST /2 \ntwo", b"GET /3 x\n", b"POST /4 \n"]);
            assert_eq!(c.end.writes_received(), 1, "one write for the whole burst");
        })
        .unwrap();
    }

    #[test]
    fn pipelined_requests_share_one_settle() {
        with_server(limits(), |mut c, ctl| async move {
            let burst: Vec<u8> = (0..8).flat_map(|i| post(&format!("/p{i}"), "x")).collect();
            c.send(&burst).await;
            for i in 0..8 {
                assert_eq!(c.reply().await.body_str(), format!("POST /p{i} \nx"));
            }
            assert_eq!(ctl.settles.get(), 1, "one settle for the batch");
        })
        .unwrap();
    }

    #[test]
    fn a_failed_settle_lets_no_queued_answer_out() {
        with_server(limits(), |mut c, ctl| async move {
            c.send(&get("/first")).await;
            assert_eq!(c.reply().await.status, 200);
            ctl.fail_settles.set(true);
            c.send(&[get("/a"), get("/b")].concat()).await;
            let r = c.reply().await;
            assert_eq!(r.status, 503, "the first unsettled answer becomes the error: {}", r.body_str());
            assert!(r.closes());
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn idle_connections_hold_no_buffers() {
        with_server(limits(), |mut c, _| async move {
            assert_eq!(pool::in_use_and_free().0, 0);
            for path in ["/1", "/slow", "/3"] {
                c.send(&[get(path), post("/big", &"b".repeat(3000))].concat()).await;
                assert_eq!(c.reply().await.status, 200);
                assert_eq!(c.reply().await.status, 200);
                // The server gives its buffers back once it has nothing more to do.
                while pool::in_use_and_free().0 > 0 {
                    futures_lite::future::yield_now().await;
                }
                assert!(pool::in_use_and_free().1 > 0, "given back to the pool, for the next request");
            }
            assert_eq!(crate::http::wheel::armed_and_slots().0, 1, "only the idle deadline is armed");
        })
        .unwrap();
    }

    #[test]
    fn requests_split_at_every_fragment_size() {
        with_server(limits(), |mut c, _| async move {
            let chunked =
                b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n";
            let burst = [get("/1"), post("/2", "two"), chunked.to_vec()].concat();
            for fragment in [100_000, 1000, 100, 10, 5, 2, 1] {
                c.send_in(&burst, fragment).await;
                assert_eq!(c.reply().await.body, b"GET /1 \n", "fragment {fragment}");
                assert_eq!(c.reply().await.body, b"POST /2 \ntwo", "fragment {fragment}");
                assert_eq!(c.reply().await.body, b"PUT /c \nabcde", "fragment {fragment}");
            }
        })
        .unwrap();
    }

    #[test]
    fn expect_continue_gets_100_before_the_body() {
        with_server(limits(), |mut c, _| async move {
            c.send(b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").await;
            assert_eq!(c.raw(CONTINUE_100.len()).await, CONTINUE_100);
            c.send(b"hello").await;
            let r = c.reply().await;
            assert_eq!((r.status, r.body_str()), (200, "POST /e \nhello"));
            // A client that did not wait gets no 100.
            c.send(b"POST /f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi").await;
            let r = c.reply().await;
            assert_eq!((r.status, r.body_str()), (200, "POST /f \nhi"));
        })
        .unwrap();
    }

    #[test]
    fn refused_expect_continue_answers_and_closes_without_reading() {
        with_server(limits(), |mut c, _| async move {
            c.send(b"POST /reject HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3000\r\n\r\n").await;
            let r = c.reply().await;
            assert_eq!(r.status, 400);
            assert!(r.closes());
            let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(json["description"], "Rejected before the body.");
            assert_eq!(json["code"], "invalid_request");
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn refused_expect_continue_with_the_body_already_here_keeps_the_connection() {
        with_server(limits(), |mut c, _| async move {
            let mut req =
                b"POST /reject HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc".to_vec();
            req.extend(get("/next"));
            c.send(&req).await;
            let r = c.reply().await;
            assert_eq!(r.status, 400);
            assert!(!r.closes());
            assert_eq!(c.reply().await.body_str(), "GET /next \n");
        })
        .unwrap();
    }

    #[test]
    fn refused_without_expect_answers_before_the_body_and_closes() {
        // Only the head (and a piece of the body) is sent: the answer must not wait for the rest.
        for start in [
            &b"POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n"[..],
            b"PUT /reject HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        ] {
            with_server(limits(), move |mut c, _| async move {
                c.send(start).await;
                let r = c.reply().await;
                assert_eq!(r.status, 400);
                assert!(r.closes());
                c.expect_eof().await;
            })
            .unwrap();
        }
    }

    /// Sends `pieces`, one every few milliseconds, never finishing the body they belong to.
    async fn trickle(c: &Client, pieces: usize) {
        for _ in 0..pieces {
            c.end.send(b"x");
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn bodies_that_trickle_past_their_deadline_get_408() {
        // Bytes keep coming far more often than the idle timeout: only the body deadline ends it.
        let limits = HttpLimits { body_read_timeout_ms: 30, idle_timeout_ms: 5_000, ..limits() };
        for head in [
            &b"POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n"[..],
            b"POST /slow-body HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4000\r\n\r\n",
            b"POST /slow-body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfff\r\n",
        ] {
            with_server(limits.clone(), move |mut c, _| async move {
                c.send(head).await;
                if head.windows(12).any(|w| w == b"100-continue") {
                    assert_eq!(c.raw(CONTINUE_100.len()).await, CONTINUE_100);
                }
                trickle(&c, 40).await;
                let r = c.reply().await;
                assert_eq!(r.status, 408, "{}", r.body_str());
                assert!(r.closes());
                let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(json["description"], "The request body did not arrive in time.");
                c.expect_eof().await;
            })
            .unwrap();
        }
    }

    #[test]
    fn refused_with_a_body_too_big_to_drain_closes() {
        with_server(limits(), |mut c, _| async move {
            c.send(b"POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc").await;
            let r = c.reply().await;
            assert_eq!(r.status, 400, "the route's answer wins over 413");
            assert!(r.closes());
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn head_responses_have_no_body() {
        with_server(limits(), |mut c, _| async move {
            c.send(&[b"HEAD /h?q HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), get("/g")].concat()).await;
            let r = c.reply_to(true).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-length"), Some("10"), "the GET's length: \"HEAD /h q\\n\"");
            assert!(r.body.is_empty());
            // Were a body written, this would read it instead of the next response.
            assert_eq!(c.reply().await.body_str(), "GET /g \n");
        })
        .unwrap();
    }

    #[test]
    fn oversized_heads_get_431_and_close() {
        with_server(limits(), |mut c, _| async move {
            let head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(3000));
            c.send(head.as_bytes()).await;
            let r = c.reply().await;
            assert_eq!(r.status, 431);
            assert!(r.closes());
            c.expect_eof().await;
        })
        .unwrap();
        with_server(limits(), |mut c, _| async move {
            let mut head = "GET / HTTP/1.1\r\nHost: x\r\n".to_owned();
            for i in 0..17 {
                head += &format!("X-{i}: 1\r\n");
            }
            c.send(format!("{head}\r\n").as_bytes()).await;
            assert_eq!(c.reply().await.status, 431);
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn oversized_bodies_get_413_and_close() {
        with_server(limits(), |mut c, _| async move {
            c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 4097\r\n\r\n").await;
            let r = c.reply().await;
            assert_eq!(r.status, 413);
            assert!(r.closes());
            c.expect_eof().await;
        })
        .unwrap();
        with_server(limits(), |mut c, _| async move {
            c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n").await;
            c.send(&[b'a'; 0x800]).await;
            c.send(b"\r\n801\r\n").await;
            let r = c.reply().await;
            assert_eq!(r.status, 413);
            assert!(r.closes());
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn bodies_bigger_than_the_initial_buffer() {
        let limits = HttpLimits { max_body_bytes: 200_000, ..limits() };
        with_server(limits, |mut c, _| async move {
            let body = "b".repeat(150_000);
            c.send_in(&post("/big", &body), 7000).await;
            let r = c.reply().await;
            assert_eq!(r.body.len(), "POST /big \n".len() + body.len());
            c.send(&get("/small")).await;
            assert_eq!(c.reply().await.body_str(), "GET /small \n");
        })
        .unwrap();
    }

    #[test]
    fn garbage_gets_400_and_close() {
        with_server(limits(), |mut c, _| async move {
            c.send(b"this is not http\r\n\r\n").await;
            let r = c.reply().await;
            assert_eq!(r.status, 400);
            assert!(r.closes());
            let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(json["title"], "Bad request");
            c.expect_eof().await;
        })
        .unwrap();
        with_server(limits(), |mut c, _| async move {
            c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").await;
            assert_eq!(c.reply().await.status, 400);
            c.expect_eof().await;
        })
        .unwrap();
        with_server(limits(), |mut c, _| async move {
            c.send(b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await;
            assert_eq!(c.reply().await.status, 400);
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn http10_closes_unless_asked_to_keep_alive() {
        with_server(limits(), |mut c, _| async move {
            c.send(b"GET /old HTTP/1.0\r\n\r\n").await;
            let r = c.reply().await;
            assert_eq!(r.body_str(), "GET /old \n");
            assert!(r.closes());
            c.expect_eof().await;
        })
        .unwrap();
        with_server(limits(), |mut c, _| async move {
            for _ in 0..2 {
                c.send(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await;
                let r = c.reply().await;
                assert_eq!(r.header("connection"), Some("keep-alive"));
            }
        })
        .unwrap();
    }

    #[test]
    fn connection_close_is_honoured() {
        with_server(limits(), |mut c, _| async move {
            c.send(&[b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), get("/ignored")].concat())
                .await;
            let r = c.reply().await;
            assert_eq!(r.body_str(), "GET /last \n");
            assert!(r.closes());
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn idle_connections_close_silently() {
        let limits = HttpLimits { idle_timeout_ms: 50, ..limits() };
        with_server(limits, |mut c, _| async move {
            c.send(&get("/once")).await;
            assert_eq!(c.reply().await.status, 200);
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn slow_heads_get_408() {
        let limits = HttpLimits { header_read_timeout_ms: 50, ..limits() };
        with_server(limits, |mut c, _| async move {
            c.send(b"GET /slow HTTP/1.1\r\nHost:").await;
            let r = c.reply().await;
            assert_eq!(r.status, 408);
            assert!(r.closes());
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn shutdown_closes_idle_connections() {
        with_server(limits(), |mut c, ctl| async move {
            c.send(&get("/before")).await;
            assert_eq!(c.reply().await.status, 200);
            ctl.shutdown.trigger();
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn shutdown_finishes_the_request_in_progress() {
        with_server(limits(), |mut c, ctl| async move {
            c.send(&[get("/gated"), get("/never")].concat()).await;
            glommio::timer::sleep(Duration::from_millis(5)).await;
            ctl.shutdown.trigger();
            ctl.gate.trigger();
            let r = c.reply().await;
            assert_eq!(r.body_str(), "GET /gated \n");
            assert!(r.closes(), "the last answer says so");
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn queued_answers_go_out_while_a_handler_waits() {
        with_server(limits(), |mut c, ctl| async move {
            c.send(&[get("/quick"), get("/gated")].concat()).await;
            // Would time out if /quick's answer waited for /gated's.
            assert_eq!(c.reply().await.body_str(), "GET /quick \n");
            ctl.gate.trigger();
            assert_eq!(c.reply().await.body_str(), "GET /gated \n");
        })
        .unwrap();
    }

    #[test]
    fn half_closed_clients_still_get_their_answers() {
        with_server(limits(), |mut c, _| async move {
            c.send(&[get("/1"), post("/2", "x")].concat()).await;
            c.end.close_write();
            assert_eq!(c.reply().await.body_str(), "GET /1 \n");
            assert_eq!(c.reply().await.body_str(), "POST /2 \nx");
            c.expect_eof().await;
        })
        .unwrap();
    }

    #[test]
    fn a_client_leaving_mid_request_ends_the_connection() {
        with_server(limits(), |c, _| async move {
            c.end.send(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
            futures_lite::future::yield_now().await;
            drop(c);
        })
        .unwrap();
    }

    #[test]
    fn shutdown_wait_is_reusable_and_wakes_everyone() {
        run(|| async {
            let shutdown = Shutdown::new();
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let wait = shutdown.wait();
                    glommio::spawn_local(wait)
                })
                .collect();
            let mut dropped = shutdown.wait();
            assert!(poll_once(&mut dropped).await.is_none());
            drop(dropped);
            glommio::timer::sleep(Duration::from_millis(1)).await;
            assert!(!shutdown.is_triggered());
            shutdown.trigger();
            shutdown.trigger();
            for w in waiters {
                within("waiter", w).await;
            }
            let mut late = shutdown.wait();
            assert!(poll_once(&mut late).await.is_some());
            assert!(poll_once(&mut late).await.is_some(), "stays ready");
        });
    }

    #[test]
    fn real_tcp_streams_work_too() {
        run(|| async {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let shutdown = Shutdown::new();
            let server_shutdown = shutdown.clone();
            let server = glommio::spawn_local(async move {
                let stream = listener.accept().await.unwrap();
                let echo = Echo::default();
                serve(stream, &echo, &limits(), &server_shutdown, &Peer::default()).await.unwrap();
            });
            let stream = glommio::net::TcpStream::connect(addr).await.unwrap();
            let mut c = Client::new(stream);
            c.send(&[get("/tcp"), post("/tcp", "body")].concat()).await;
            assert_eq!(within("reply", c.reply()).await.body_str(), "GET /tcp \n");
            assert_eq!(within("reply", c.reply()).await.body_str(), "POST /tcp \nbody");
            shutdown.trigger();
            within("server", server).await;
        });
    }
}
