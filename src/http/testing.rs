//! Test support: an in-memory duplex stream, a glommio runner and a small response reader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One direction of a duplex: bytes in flight, whether the writer closed, who waits to read.
#[derive(Default)]
struct Pipe {
    data: VecDeque<u8>,
    closed: bool,
    reader: Option<Waker>,
    /// Number of `poll_write` calls that carried data (to see batching).
    writes: usize,
}

/// One end of an in-memory, unbounded, single-threaded duplex stream.
pub struct End {
    rx: Rc<RefCell<Pipe>>,
    tx: Rc<RefCell<Pipe>>,
}

pub fn duplex() -> (End, End) {
    let a = Rc::new(RefCell::new(Pipe::default()));
    let b = Rc::new(RefCell::new(Pipe::default()));
    (End { rx: a.clone(), tx: b.clone() }, End { rx: b, tx: a })
}

impl End {
    /// Number of writes the other end made towards this one.
    pub fn writes_received(&self) -> usize {
        self.rx.borrow().writes
    }

    /// Closes this end's sending side (the peer reads EOF once the data is drained).
    pub fn close_write(&self) {
        let mut tx = self.tx.borrow_mut();
        tx.closed = true;
        if let Some(w) = tx.reader.take() {
            w.wake();
        }
    }

    pub fn send(&self, bytes: &[u8]) {
        let mut tx = self.tx.borrow_mut();
        tx.data.extend(bytes);
        tx.writes += 1;
        if let Some(w) = tx.reader.take() {
            w.wake();
        }
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.close_write();
    }
}

impl AsyncRead for End {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut rx = self.rx.borrow_mut();
        if !rx.data.is_empty() {
            let n = buf.len().min(rx.data.len());
            for (dst, src) in buf.iter_mut().zip(rx.data.drain(..n)) {
                *dst = src;
            }
            return Poll::Ready(Ok(n));
        }
        if rx.closed {
            return Poll::Ready(Ok(0));
        }
        rx.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for End {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.tx.borrow().closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.send(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close_write();
        Poll::Ready(Ok(()))
    }
}

/// Runs `make()`'s future on a fresh glommio executor on its own thread.
pub fn run<F, T>(make: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 * 1024)
        .spawn(make)
        .expect("executor starts")
        .join()
        .expect("executor finishes")
}

/// Fails the test instead of hanging it.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(Duration::from_secs(10)).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("timed out: {what}"))
}

/// A response as read by the test client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads responses from a stream, remembering what it read beyond the last one.
pub struct Client<S = End> {
    pub end: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(end: S) -> Self {
        Self { end, buf: Vec::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.end.write_all(bytes).await.unwrap();
    }

    /// Sends `bytes` a few at a time, letting the server run between pieces.
    pub async fn send_in(&mut self, bytes: &[u8], fragment: usize) {
        for piece in bytes.chunks(fragment) {
            self.send(piece).await;
            futures_lite::future::yield_now().await;
        }
    }

    async fn read_some(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = self.end.read(&mut chunk).await.unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads one response; `head_request` says the body is absent whatever `Content-Length` says.
    pub async fn reply_to(&mut self, head_request: bool) -> Reply {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = parsed.parse(&self.buf).unwrap() {
                let status = parsed.code.unwrap();
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), String::from_utf8(h.value.to_vec()).unwrap()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                let len = if head_request { 0 } else { len };
                while self.buf.len() < head_len + len {
                    assert!(self.read_some().await > 0, "EOF inside a response body");
                }
                let body = self.buf[head_len..head_len + len].to_vec();
                self.buf.drain(..head_len + len);
                return Reply { status, headers, body };
            }
            assert!(self.read_some().await > 0, "EOF before a response: {:?}", String::from_utf8_lossy(&self.buf));
        }
    }

    pub async fn reply(&mut self) -> Reply {
        self.reply_to(false).await
    }

    /// Asserts the server closed the connection without sending anything more.
    pub async fn expect_eof(&mut self) {
        while self.read_some().await > 0 {}
        assert!(self.buf.is_empty(), "unexpected bytes before EOF: {:?}", String::from_utf8_lossy(&self.buf));
    }

    /// Reads exactly `n` raw bytes.
    pub async fn raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.read_some().await > 0, "EOF");
        }
        self.buf.drain(..n).collect()
    }
}
