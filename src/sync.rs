//! Single-thread signalling, the crate's one copy: a one-shot reply slot and a broadcast
//! notification.
//!
//! Both live and die on one executor (`Rc`/`RefCell`/`Cell`, no atomics): a shard never shares
//! them with another thread, which is what keeps the request path lock-free. They sit at the
//! bottom of the dependency order so that `http`, `shard` and `storage` all use the same ones.
//!
//! # Waiters deregister
//! A [`Notified`] takes one slot in its [`Notify`] the first time it is polled and gives it back
//! when it completes or is dropped, whichever comes first. So a notifier that is waited on a
//! million times by futures that then time out or are cancelled holds nothing afterwards:
//! [`Notify::waiters`] is the number of futures pending on it right now, never a history.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

/// The sending half of a one-shot: completes the matching [`Receiver`] once.
pub struct Sender<T>(Rc<RefCell<Slot<T>>>);
/// Resolves to the value sent, or `None` when the sender was dropped unsent.
pub struct Receiver<T>(Rc<RefCell<Slot<T>>>);

pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot { value: None, waker: None, closed: false }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    pub fn send(self, value: T) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.closed = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.0.borrow_mut();
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Some(v));
        }
        if slot.closed {
            return Poll::Ready(None);
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Wakes every task waiting on it when something they may want has happened (a post to a queue,
/// a flush, shutdown). Waiters re-check their condition: a notification is a hint, not a
/// promise. Each [`notify_all`](Notify::notify_all) starts a new *generation*; a [`Notified`]
/// resolves once the generation differs from the one it started in.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Waiters>,
}

/// The wakers of the pending [`Notified`]s: a slab whose slots are owned by the futures, so a
/// future updates its waker in place and frees its slot when it ends.
#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
    taken: usize,
}

/// Above this many slots an empty slab gives its memory back (one burst of parked polls must
/// not pin its peak for the life of the notifier).
const KEEP_SLOTS: usize = 64;

impl Waiters {
    fn take_slot(&mut self) -> usize {
        self.taken += 1;
        match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        }
    }

    fn release(&mut self, slot: usize) {
        let entry = self.slots.get_mut(slot);
        assert!(entry.is_some(), "a Notified released slot {slot} that its Notify never handed out");
        if let Some(entry) = entry {
            *entry = None;
        }
        self.taken -= 1;
        if self.taken == 0 {
            // Every slot is free: forget them all rather than keep a free list as long as the peak.
            self.slots.clear();
            self.free.clear();
            if self.slots.capacity() > KEEP_SLOTS {
                self.slots.shrink_to(KEEP_SLOTS);
                self.free.shrink_to(KEEP_SLOTS);
            }
        } else {
            self.free.push(slot);
        }
    }
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new generation and wakes every pending waiter. Their slots stay theirs until
    /// they are polled (and complete) or dropped.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let wakers: Vec<Waker> = self.waiters.borrow_mut().slots.iter_mut().filter_map(Option::take).collect();
        for w in wakers {
            w.wake();
        }
    }

    /// How many [`notify_all`](Notify::notify_all)s there have been.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Futures pending on this notifier now (polled at least once, neither completed nor dropped).
    pub fn waiters(&self) -> usize {
        self.waiters.borrow().taken
    }

    /// Resolves at the next `notify_all` after this call. Create it *before* checking the
    /// condition it stands for, so a notification in between is not lost.
    pub fn notified(&self) -> Notified<&Self> {
        Notified::new(self)
    }
}

/// A wait on a [`Notify`], holding it by any pointer (`&Notify`, `Rc<Notify>`), so that it can
/// sit in a struct that owns its notifier. Resolves once the notifier's generation differs from
/// `start`, and stays resolved if polled again.
pub struct Notified<N: Deref<Target = Notify>> {
    notify: N,
    start: u64,
    slot: Option<usize>,
}

impl<N: Deref<Target = Notify>> Notified<N> {
    /// Resolves at the next `notify_all`.
    pub fn new(notify: N) -> Self {
        let start = notify.generation();
        Notified { notify, start, slot: None }
    }

    /// Resolves once the generation differs from `generation` (at once if it already does):
    /// with `generation` 0 on a notifier fired at most once, a latch.
    pub fn since(notify: N, generation: u64) -> Self {
        Notified { notify, start: generation, slot: None }
    }

    fn release(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.notify.waiters.borrow_mut().release(slot);
        }
    }
}

impl<N: Deref<Target = Notify>> Future for Notified<N> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.notify.generation() != this.start {
            this.release();
            return Poll::Ready(());
        }
        let mut waiters = this.notify.waiters.borrow_mut();
        let slot = match this.slot {
            Some(slot) => slot,
            None => {
                let slot = waiters.take_slot();
                this.slot = Some(slot);
                slot
            }
        };
        if let Some(entry) = waiters.slots.get_mut(slot) {
            if !entry.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *entry = Some(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl<N: Deref<Target = Notify>> Drop for Notified<N> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A `Notified` holds no self-references (its slot is an index), so it may move while pending.
impl<N: Deref<Target = Notify>> Unpin for Notified<N> {}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    fn pending<F: Future + Unpin>(f: &mut F) -> bool {
        future::block_on(future::poll_once(f)).is_none()
    }

    #[test]
    fn oneshot_delivers_or_reports_drop() {
        let (tx, rx) = oneshot();
        tx.send(7);
        assert_eq!(future::block_on(rx), Some(7));
        let (tx, rx) = oneshot::<u8>();
        drop(tx);
        assert_eq!(future::block_on(rx), None);
    }

    #[test]
    fn notified_resolves_only_after_notify_and_stays_resolved() {
        let n = Notify::new();
        let mut wait = n.notified();
        assert!(pending(&mut wait));
        assert_eq!(n.waiters(), 1);
        assert!(pending(&mut wait), "polling again keeps the one slot");
        assert_eq!(n.waiters(), 1);
        n.notify_all();
        assert!(!pending(&mut wait));
        assert_eq!(n.waiters(), 0, "completion gives the slot back");
        assert!(!pending(&mut wait), "stays ready");
        let mut late = n.notified();
        assert!(pending(&mut late), "a wait made after the notification waits for the next one");
    }

    #[test]
    fn dropped_waits_leave_nothing_behind() {
        let n = Rc::new(Notify::new());
        for round in 0..3 {
            let mut waits: Vec<_> = (0..1000).map(|_| Notified::new(n.clone())).collect();
            for w in &mut waits {
                assert!(pending(w));
            }
            assert_eq!(n.waiters(), 1000, "round {round}");
            // Half are cancelled while pending, half are woken and then dropped unpolled.
            waits.truncate(500);
            assert_eq!(n.waiters(), 500);
            n.notify_all();
            assert_eq!(n.waiters(), 500, "woken but not yet polled: still theirs");
            drop(waits);
            assert_eq!(n.waiters(), 0);
            assert!(n.waiters.borrow().slots.capacity() <= KEEP_SLOTS, "the slab shrank back");
        }
    }

    #[test]
    fn since_zero_is_a_latch() {
        let n = Notify::new();
        let mut before = Notified::since(&n, 0);
        assert!(pending(&mut before));
        n.notify_all();
        assert!(!pending(&mut before));
        let mut after = Notified::since(&n, 0);
        assert!(!pending(&mut after), "a latch stays open for late comers");
        assert_eq!(n.waiters(), 0);
    }
}
