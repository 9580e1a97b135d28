//! Single-thread signalling for one shard: a one-shot reply slot and a broadcast notification.
//!
//! Both live and die on one executor (Rc + RefCell, no atomics): a shard never shares them with
//! another thread, which is what lets the request path stay lock-free.

use std::cell::RefCell;
use std::future::Future;
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
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Wakes every task waiting on it when something they may want has happened (a post to a queue,
/// a released claim). Waiters re-check their condition: a notification is a hint, not a promise.
#[derive(Default)]
pub struct Notify {
    generation: RefCell<(u64, Vec<Waker>)>,
}

impl Notify {
    pub fn notify_all(&self) {
        let wakers = {
            let mut g = self.generation.borrow_mut();
            g.0 += 1;
            std::mem::take(&mut g.1)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Number of tasks currently parked (to drop idle notifiers from their map).
    pub fn waiting(&self) -> usize {
        self.generation.borrow().1.len()
    }

    /// Resolves at the next `notify_all` after this call.
    pub fn notified(self: &Rc<Self>) -> Notified {
        let start = self.generation.borrow().0;
        Notified { notify: self.clone(), start }
    }
}

pub struct Notified {
    notify: Rc<Notify>,
    start: u64,
}

impl Future for Notified {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = self.notify.generation.borrow_mut();
        if g.0 != self.start {
            return Poll::Ready(());
        }
        if !g.1.iter().any(|w| w.will_wake(cx.waker())) {
            g.1.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

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
    fn notified_resolves_only_after_notify() {
        let n = Rc::new(Notify::default());
        let mut wait = Box::pin(n.notified());
        assert!(future::block_on(future::poll_once(&mut wait)).is_none());
        assert_eq!(n.waiting(), 1);
        n.notify_all();
        assert!(future::block_on(future::poll_once(&mut wait)).is_some());
        assert_eq!(n.waiting(), 0);
    }
}
