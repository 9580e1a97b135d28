//! Socket readiness for one client thread: an edge-triggered epoll set drained by one task,
//! instead of an io_uring poll per socket and response.
//!
//! # Why not glommio's sockets
//! glommio arms an io_uring poll whenever a read would block (and after every short read), and
//! its rings are set up without `IORING_SETUP_COOP_TASKRUN`: each response then completes a poll
//! whose task work the kernel delivers by interrupting the client thread. On loopback the
//! sender runs the receiver's wake-up, so that cost lands on the *server's* CPU: under loadgen,
//! 26 % of the server's CPU went to `sock_def_readable` waking loadgen (15 % under wrk), and the
//! same server answered 0.6x the requests it answered wrk. With epoll, a socket that becomes
//! ready while this thread is busy only joins the ready list; nobody is interrupted.
//!
//! # The loop
//! [`Poller::run`] takes up to [`EVENTS`] ready sockets per round with `epoll_wait(0)`, wakes
//! the tasks waiting on them, and lets glommio run them and do its own I/O and timers before the
//! next round. After [`SPIN`] without a ready socket it parks: a helper thread sleeps in
//! `poll(2)` on the epoll fd and writes a byte to a socket glommio waits on, one wake-up per
//! park instead of one per response. The helper inherits this thread's CPU pinning.
//!
//! # Deadlines
//! A connection sets a deadline for its request; every [`TICK`] the poller fails the waits of
//! connections whose deadline passed ([`Failure::Timeout`]), so timeouts cost no timer per
//! request and fire at most one tick late. [`Poller::close`] fails every wait
//! ([`Failure::Cancelled`]) and stops the helper.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;

/// Ready sockets taken per round.
pub const EVENTS: usize = 256;
/// How long the poller keeps polling without a ready socket before it parks: a little longer
/// than a loopback round trip, so a busy thread never parks between two responses.
pub const SPIN: Duration = Duration::from_micros(100);
/// How often deadlines are checked: a request times out at most this late.
pub const TICK: Duration = Duration::from_millis(10);
/// The pause between two rounds while spinning. glommio runs a task that is woken again at once
/// before it does its own I/O, so the poller waits on a (reused) timer to let glommio's
/// completions and timers in between rounds.
const ROUND: Duration = Duration::from_micros(1);

/// Why a wait ended without the socket becoming ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection's deadline passed.
    Timeout,
    /// The poller was closed (the run is over).
    Cancelled,
}

#[derive(Debug, Default)]
struct Entry {
    live: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
    deadline: Option<Instant>,
    expired: bool,
}

/// The epoll set of one client thread. Single-threaded: shared by the thread's tasks via `Rc`,
/// its `RefCell`s are never borrowed across an await.
#[derive(Debug)]
pub struct Poller {
    epfd: OwnedFd,
    entries: RefCell<Vec<Entry>>,
    free: RefCell<Vec<usize>>,
    /// Entries with a deadline set: the tick scans only when there are some.
    with_deadline: Cell<usize>,
    closed: Cell<bool>,
    /// Every wait fails from now on (the run is ending), but the loop still runs.
    interrupted: Cell<bool>,
    /// Our end of the doorbell; the run task owns the glommio stream over it.
    bell_fd: RawFd,
    bell: RefCell<Option<glommio::net::UnixStream>>,
    helper: RefCell<Option<std::thread::JoinHandle<()>>>,
    /// An arm byte was sent and the helper has not rung yet.
    armed: Cell<bool>,
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

impl Poller {
    /// A poller for the calling (executor) thread, with its helper thread started.
    pub fn new() -> io::Result<Rc<Poller>> {
        // SAFETY: plain syscall; the fd is checked and owned at once.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(last_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let bell_fd = ours.as_raw_fd();
        let watched = epfd.as_raw_fd();
        let helper =
            std::thread::Builder::new().name("loadgen-park".into()).spawn(move || ring_when_ready(watched, theirs))?;
        // SAFETY: `ours` is a connected Unix socket whose ownership moves into the stream.
        let bell = unsafe { glommio::net::UnixStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(ours)) };
        Ok(Rc::new(Poller {
            epfd,
            entries: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            with_deadline: Cell::new(0),
            closed: Cell::new(false),
            interrupted: Cell::new(false),
            bell_fd,
            bell: RefCell::new(Some(bell)),
            helper: RefCell::new(Some(helper)),
            armed: Cell::new(false),
        }))
    }

    /// Adds a socket (edge-triggered, both directions) and returns its token.
    pub fn register(&self, fd: RawFd) -> io::Result<usize> {
        let token = match self.free.borrow_mut().pop() {
            Some(t) => t,
            None => {
                let mut entries = self.entries.borrow_mut();
                entries.push(Entry::default());
                entries.len() - 1
            }
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token as u64,
        };
        // SAFETY: valid epoll fd, valid socket fd, event struct on the stack.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            self.free.borrow_mut().push(token);
            return Err(last_error());
        }
        self.with_entry(token, |e| *e = Entry { live: true, ..Entry::default() });
        Ok(token)
    }

    /// Removes a socket before it is closed.
    pub fn deregister(&self, token: usize, fd: RawFd) {
        // SAFETY: valid fds; the event argument may be null for EPOLL_CTL_DEL.
        unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
        self.set_deadline(token, None);
        self.with_entry(token, |e| *e = Entry::default());
        self.free.borrow_mut().push(token);
    }

    fn with_entry<T>(&self, token: usize, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.borrow_mut();
        let entry = entries.get_mut(token);
        debug_assert!(entry.is_some(), "poller token {token} was never registered");
        f(entry.unwrap_or(&mut Entry::default()))
    }

    /// Waits of `token` fail with [`Failure::Timeout`] once `deadline` has passed (checked every
    /// [`TICK`]); `None` clears it.
    pub fn set_deadline(&self, token: usize, deadline: Option<Instant>) {
        let had = self.with_entry(token, |e| {
            let had = e.deadline.is_some();
            e.deadline = deadline;
            e.expired = false;
            had
        });
        let n = self.with_deadline.get() + usize::from(deadline.is_some()) - usize::from(had);
        self.with_deadline.set(n);
    }

    fn failure(&self, token: usize) -> Option<Failure> {
        if self.interrupted.get() {
            return Some(Failure::Cancelled);
        }
        self.with_entry(token, |e| e.expired.then_some(Failure::Timeout))
    }

    /// Runs `op` (a non-blocking syscall) until it does not report `EAGAIN`, waiting for
    /// readiness in between; `write` says which direction to wait for.
    pub async fn io(
        &self,
        token: usize,
        write: bool,
        mut op: impl FnMut() -> io::Result<usize>,
    ) -> Result<io::Result<usize>, Failure> {
        poll_fn(|cx| self.poll_io(token, write, cx, &mut op)).await
    }

    fn poll_io(
        &self,
        token: usize,
        write: bool,
        cx: &Context<'_>,
        op: &mut impl FnMut() -> io::Result<usize>,
    ) -> Poll<Result<io::Result<usize>, Failure>> {
        if let Some(f) = self.failure(token) {
            return Poll::Ready(Err(f));
        }
        loop {
            match op() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                r => return Poll::Ready(Ok(r)),
            }
        }
        // Edge-triggered: the op just failed with EAGAIN, so the next change of readiness is
        // an edge that wakes this waker.
        self.with_entry(token, |e| {
            let slot = if write { &mut e.writer } else { &mut e.reader };
            match slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        });
        Poll::Pending
    }

    /// Waits until a connecting socket is writable (its connect finished, either way).
    pub async fn connected(&self, token: usize, fd: RawFd) -> Result<(), Failure> {
        let probe = || {
            let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd, zero timeout.
            match unsafe { libc::poll(&mut pfd, 1, 0) } {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                r if r < 0 => Err(last_error()),
                _ => Ok(0),
            }
        };
        // A failed probe is reported by the socket's own error afterwards.
        self.io(token, true, probe).await.map(|_| ())
    }

    /// The event loop of this thread's sockets; ends after [`Poller::close`].
    pub async fn run(self: Rc<Self>) {
        // SAFETY: epoll_event is plain data; zeroes are a valid (empty) value.
        let mut events: Vec<libc::epoll_event> = vec![unsafe { std::mem::zeroed() }; EVENTS];
        let mut round = glommio::timer::Timer::new(ROUND);
        let mut last_ready = Instant::now();
        let mut last_tick = last_ready;
        let mut bytes = [0u8; 64];
        while !self.closed.get() {
            // SAFETY: the buffer holds EVENTS entries; zero timeout, never blocks.
            let n = unsafe { libc::epoll_wait(self.epfd.as_raw_fd(), events.as_mut_ptr(), EVENTS as i32, 0) };
            let now = Instant::now();
            if n > 0 {
                last_ready = now;
                for ev in events.iter().take(n as usize) {
                    self.dispatch(ev.u64 as usize, ev.events);
                }
            }
            if now.saturating_duration_since(last_tick) >= TICK {
                last_tick = now;
                self.expire(now);
            }
            if n > 0 || now.saturating_duration_since(last_ready) < SPIN {
                round.reset(ROUND);
                (&mut round).await;
                continue;
            }
            self.park(&mut bytes).await;
            last_ready = Instant::now();
        }
        let helper = self.helper.borrow_mut().take();
        self.bell.borrow_mut().take();
        if let Some(h) = helper {
            let _ = h.join();
        }
    }

    /// Sleeps until a socket is ready, the next tick, or close.
    async fn park(&self, bytes: &mut [u8]) {
        if !self.armed.get() {
            // SAFETY: a byte from the stack to our own non-blocking socket.
            let sent = unsafe { libc::send(self.bell_fd, [1u8].as_ptr().cast(), 1, libc::MSG_DONTWAIT) };
            if sent != 1 {
                // The helper is gone (or the bell is full, which one byte per park cannot do):
                // keep polling rather than sleep with nobody to wake us.
                glommio::timer::sleep(SPIN).await;
                return;
            }
            self.armed.set(true);
        }
        let Some(mut bell) = self.bell.borrow_mut().take() else {
            return;
        };
        // Never longer than a tick: a deadline set while parked must still be checked in time.
        let rung = futures_lite::future::or(async { Some(bell.read(bytes).await) }, async {
            glommio::timer::sleep(TICK).await;
            None
        })
        .await;
        if rung.is_some() {
            // The helper rang (or the bell closed): it waits for the next arm byte.
            self.armed.set(false);
        }
        *self.bell.borrow_mut() = Some(bell);
    }

    fn dispatch(&self, token: usize, flags: u32) {
        let readable = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let writable = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let (r, w) = {
            let mut entries = self.entries.borrow_mut();
            let Some(e) = entries.get_mut(token) else { return };
            let r = if flags & readable != 0 { e.reader.take() } else { None };
            let w = if flags & writable != 0 { e.writer.take() } else { None };
            (r, w)
        };
        // Woken outside the borrow: a waker may run code that registers again.
        r.into_iter().chain(w).for_each(Waker::wake);
    }

    fn expire(&self, now: Instant) {
        if self.with_deadline.get() == 0 {
            return;
        }
        let mut woken = Vec::new();
        for e in self.entries.borrow_mut().iter_mut() {
            if e.live && !e.expired && e.deadline.is_some_and(|d| d <= now) {
                e.expired = true;
                woken.extend(e.reader.take());
                woken.extend(e.writer.take());
            }
        }
        woken.into_iter().for_each(Waker::wake);
    }

    /// Fails every wait, now and later, with [`Failure::Cancelled`]: the thread's connections
    /// are done, and any still waiting (a long poll) must stop.
    pub fn interrupt(&self) {
        self.interrupted.set(true);
        let mut woken = Vec::new();
        for e in self.entries.borrow_mut().iter_mut() {
            woken.extend(e.reader.take());
            woken.extend(e.writer.take());
        }
        woken.into_iter().for_each(Waker::wake);
    }

    /// [`Poller::interrupt`], and ends [`Poller::run`].
    pub fn close(&self) {
        self.closed.set(true);
        self.interrupt();
        // Ends the helper (it sees the hang-up) and the run task's wait on the bell.
        // SAFETY: shutdown on our own socket; the fd stays open until the stream is dropped.
        unsafe { libc::shutdown(self.bell_fd, libc::SHUT_RDWR) };
    }
}

/// The helper thread: for each arm byte, sleep until the epoll set has a ready socket (poll(2)
/// on an epoll fd reports that without taking the events), then ring. Ends when the bell closes.
fn ring_when_ready(epfd: RawFd, mut bell: std::os::unix::net::UnixStream) {
    use std::io::{Read, Write};
    let mut arm = [0u8; 1];
    loop {
        match bell.read(&mut arm) {
            Ok(1) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => return,
        }
        loop {
            let mut fds = [
                libc::pollfd { fd: epfd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: bell.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: two valid pollfds; blocks this helper thread only.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if r < 0 && last_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The bell is readable only when it closed (one arm byte is outstanding at most).
            if r < 0 || fds[1].revents != 0 {
                return;
            }
            if fds[0].revents != 0 {
                break;
            }
        }
        if bell.write_all(&[1]).is_err() {
            return;
        }
    }
}

/// Runs `f` with a poller for this thread, and stops the poller when `f` is done.
pub async fn with_poller<T, F, Fut>(f: F) -> io::Result<T>
where
    F: FnOnce(Rc<Poller>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let poller = Poller::new()?;
    let task = glommio::spawn_local(poller.clone().run());
    let out = f(poller.clone()).await;
    poller.close();
    task.await;
    Ok(out)
}
