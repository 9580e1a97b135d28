//! The connections' deadlines: one timer wheel per shard, driven by one timer.
//!
//! Every wait of a connection has a deadline (idle, head, body, a stalled write). A glommio
//! `Timer` per wait would cost an allocation and two map entries in the reactor for each, armed
//! and disarmed for nearly every request. Here a deadline is a slot in a slab (about 40 bytes,
//! reused), linked into the bucket of its tick; one task per shard wakes every [`TICK`] while any
//! deadline is armed, fires the slots whose tick has come, and sleeps without a timer when none
//! is. A deadline fires at or after its instant, at most one tick late.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Resolution of connection deadlines.
pub const TICK: Duration = Duration::from_millis(10);
const TICK_MS: u128 = TICK.as_millis();
/// Buckets of the wheel (a span of about ten seconds; later deadlines wait for their round).
const BUCKETS: usize = 1024;
const NONE: u32 = u32::MAX;

struct Slot {
    tick: u64,
    waker: Option<Waker>,
    fired: bool,
    /// Links of the bucket list the slot is in (NONE at the ends).
    prev: u32,
    next: u32,
    in_use: bool,
}

struct Wheel {
    origin: Instant,
    slots: Vec<Slot>,
    free: Vec<u32>,
    heads: Vec<u32>,
    /// Ticks before this one have been processed.
    next_tick: u64,
    armed: usize,
    /// The executor whose driver task serves this wheel, and the driver's waker while it waits
    /// for a first deadline.
    driver: Option<usize>,
    driver_waker: Option<Waker>,
}

thread_local! {
    static WHEEL: RefCell<Wheel> = RefCell::new(Wheel::new());
}

impl Wheel {
    fn new() -> Self {
        Wheel {
            origin: Instant::now(),
            slots: Vec::new(),
            free: Vec::new(),
            heads: vec![NONE; BUCKETS],
            next_tick: 0,
            armed: 0,
            driver: None,
            driver_waker: None,
        }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        // Rounded up: a deadline never fires early.
        let ms = at.saturating_duration_since(self.origin).as_nanos().div_ceil(1_000_000);
        (ms.div_ceil(TICK_MS)) as u64
    }

    /// The slot of an armed deadline.
    fn slot(&mut self, key: u32) -> &mut Slot {
        let slot = self.slot_unchecked(key);
        assert!(slot.in_use, "deadline {key} is not armed in this shard's wheel");
        slot
    }

    fn link(&mut self, key: u32, tick: u64) {
        let tick = tick.max(self.next_tick);
        let bucket = (tick % BUCKETS as u64) as usize;
        let head = self.heads.get(bucket).copied().unwrap_or(NONE);
        {
            let slot = self.slot(key);
            slot.tick = tick;
            slot.fired = false;
            slot.prev = NONE;
            slot.next = head;
        }
        if head != NONE {
            self.slot(head).prev = key;
        }
        if let Some(h) = self.heads.get_mut(bucket) {
            *h = key;
        }
        self.armed += 1;
    }

    fn unlink(&mut self, key: u32) {
        let (tick, prev, next, fired) = {
            let s = self.slot(key);
            (s.tick, s.prev, s.next, s.fired)
        };
        if fired {
            return;
        }
        if prev == NONE {
            if let Some(h) = self.heads.get_mut((tick % BUCKETS as u64) as usize) {
                *h = next;
            }
        } else {
            self.slot(prev).next = next;
        }
        if next != NONE {
            self.slot(next).prev = prev;
        }
        self.armed -= 1;
    }

    fn insert(&mut self, at: Instant, waker: Waker) -> u32 {
        let key = match self.free.pop() {
            Some(key) => key,
            None => {
                self.slots.push(Slot { tick: 0, waker: None, fired: false, prev: NONE, next: NONE, in_use: false });
                (self.slots.len() - 1) as u32
            }
        };
        {
            let slot = self.slot_unchecked(key);
            slot.in_use = true;
            slot.waker = Some(waker);
        }
        let tick = self.tick_of(at);
        self.link(key, tick);
        if let Some(w) = self.driver_waker.take() {
            w.wake();
        }
        key
    }

    /// The slot of `key`, armed or free. Keys come only from [`Wheel::insert`] of this thread's
    /// wheel: a missing one is this module's bug, not the world's.
    #[allow(clippy::panic, reason = "an invariant of this module, asserted")]
    fn slot_unchecked(&mut self, key: u32) -> &mut Slot {
        match self.slots.get_mut(key as usize) {
            Some(slot) => slot,
            None => panic!("deadline {key} was never made"),
        }
    }

    fn remove(&mut self, key: u32) {
        self.unlink(key);
        let slot = self.slot(key);
        slot.in_use = false;
        slot.waker = None;
        self.free.push(key);
        if self.armed == 0 && self.free.len() == self.slots.len() && self.slots.capacity() > 64 {
            // Every deadline is gone (a burst of connections closed): give the slab back.
            self.slots = Vec::new();
            self.free = Vec::new();
        }
    }

    /// Fires every deadline whose tick is at most `now`'s; returns the wakers to call.
    fn advance(&mut self, now: Instant, wake: &mut Vec<Waker>) {
        let now_tick = {
            let ms = now.saturating_duration_since(self.origin).as_millis();
            (ms / TICK_MS) as u64
        };
        if now_tick < self.next_tick {
            return;
        }
        let span = (now_tick - self.next_tick + 1).min(BUCKETS as u64);
        for t in 0..span {
            let bucket = ((self.next_tick + t) % BUCKETS as u64) as usize;
            let mut key = self.heads.get(bucket).copied().unwrap_or(NONE);
            while key != NONE {
                let (tick, next) = {
                    let s = self.slot(key);
                    (s.tick, s.next)
                };
                if tick <= now_tick {
                    self.unlink(key);
                    let s = self.slot(key);
                    s.fired = true;
                    if let Some(w) = s.waker.take() {
                        wake.push(w);
                    }
                }
                key = next;
            }
        }
        self.next_tick = now_tick + 1;
    }
}

/// An armed deadline of the current shard; disarmed when dropped.
pub struct Deadline {
    key: u32,
    at: Instant,
}

impl Deadline {
    /// Arms a deadline at `at` that wakes `cx`'s task, starting the shard's driver if needed.
    pub fn arm(at: Instant, cx: &Context<'_>) -> Deadline {
        let start = WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            let id = glommio::executor().id();
            let start = w.driver != Some(id);
            w.driver = Some(id);
            start
        });
        if start {
            glommio::spawn_local(drive()).detach();
        }
        let key = WHEEL.with(|w| w.borrow_mut().insert(at, cx.waker().clone()));
        Deadline { key, at }
    }

    pub fn at(&self) -> Instant {
        self.at
    }

    /// Ready once the deadline has passed.
    pub fn poll(&self, cx: &Context<'_>) -> Poll<()> {
        WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            let slot = w.slot(self.key);
            if slot.fired {
                return Poll::Ready(());
            }
            if !slot.waker.as_ref().is_some_and(|old| old.will_wake(cx.waker())) {
                slot.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        // The wheel outlives every connection of its thread, except at thread exit.
        let _ = WHEEL.try_with(|w| w.borrow_mut().remove(self.key));
    }
}

/// Deadlines armed on this shard now, and slots the wheel holds (for tests and metrics).
pub fn armed_and_slots() -> (usize, usize) {
    WHEEL.with(|w| {
        let w = w.borrow();
        (w.armed, w.slots.len())
    })
}

/// The shard's driver: wakes every tick while deadlines are armed, and waits without a timer
/// while none is.
async fn drive() {
    let mut wake = Vec::new();
    loop {
        std::future::poll_fn(|cx| {
            WHEEL.with(|w| {
                let mut w = w.borrow_mut();
                if w.armed > 0 {
                    Poll::Ready(())
                } else {
                    w.driver_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .await;
        glommio::timer::sleep(TICK).await;
        WHEEL.with(|w| w.borrow_mut().advance(Instant::now(), &mut wake));
        for w in wake.drain(..) {
            w.wake();
        }
    }
}

/// A future that completes after `dur` on the shard's wheel (tests and simple waits).
pub struct Sleep {
    at: Instant,
    deadline: Option<Deadline>,
}

impl Sleep {
    pub fn new(dur: Duration) -> Sleep {
        Sleep { at: Instant::now() + dur, deadline: None }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let at = self.at;
        self.deadline.get_or_insert_with(|| Deadline::arm(at, cx)).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::run;

    #[test]
    fn deadlines_fire_in_order_never_early_and_leave_nothing_behind() {
        run(|| async {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for ms in [35u64, 5, 20, 0, 12_000 / 1000] {
                tasks.push(glommio::spawn_local(async move {
                    Sleep::new(Duration::from_millis(ms)).await;
                    (ms, Instant::now())
                }));
            }
            for t in tasks {
                let (ms, fired) = t.await;
                assert!(fired.duration_since(start) >= Duration::from_millis(ms), "{ms} ms fired early");
            }
            assert_eq!(armed_and_slots().0, 0, "every deadline disarmed");
            // A deadline dropped before it fires disarms itself.
            let dropped = glommio::spawn_local(async {
                futures_lite::future::or(Sleep::new(Duration::from_secs(3600)), async {}).await;
            });
            dropped.await;
            assert_eq!(armed_and_slots().0, 0);
        });
    }
}
