//! The per-shard pool of connection buffers.
//!
//! A connection holds a buffer only while it has bytes in it: a read buffer while part of a
//! request (or a pipelined burst) is buffered, an output buffer while answers wait to be written,
//! a body buffer while a handler writes its answer. Between requests it holds none, so ten
//! thousand idle keep-alive connections cost ten thousand small connection states, not twenty
//! thousand 8 KiB buffers. A read that has to wait takes no buffer either: the stream's
//! `poll_read` receives into the buffer it is given or, when nothing is there, only arms a
//! readiness poll, so the buffer goes straight back to the pool.
//!
//! Buffers are all [`BUFFER_BYTES`] long; one that grew past it (a big request) is freed rather
//! than pooled. At most [`KEEP_FREE`] free buffers of each kind stay pooled; beyond that they are
//! freed, so a burst of connections that closes gives its memory back. The counters are the
//! shard's `marconi_http_buffers{state=…}` gauges.
//!
//! Two kinds, because they are used differently: read buffers are kept initialised to their full
//! length (a read goes straight into them), write buffers are empty vectors with that capacity.

use std::cell::RefCell;

/// Size of every pooled buffer; most requests and answers of this API fit one.
pub const BUFFER_BYTES: usize = 8 * 1024;
/// Free buffers kept per kind and shard (2 MiB of each at most).
pub const KEEP_FREE: usize = 256;

#[derive(Default)]
struct Free {
    read: Vec<Vec<u8>>,
    write: Vec<Vec<u8>>,
}

thread_local! {
    static FREE: RefCell<Free> = RefCell::default();
}

fn count(in_use: i64, free: i64, made: u64) {
    crate::metrics::with(|m| {
        m.http_buffers_in_use.set(m.http_buffers_in_use.get().saturating_add_signed(in_use));
        m.http_buffers_free.set(m.http_buffers_free.get().saturating_add_signed(free));
        m.http_buffers_made.set(m.http_buffers_made.get() + made);
    });
}

/// A read buffer: `BUFFER_BYTES` long, contents unspecified.
pub fn take_read() -> Vec<u8> {
    match FREE.with(|f| f.borrow_mut().read.pop()) {
        Some(buf) => {
            count(1, -1, 0);
            buf
        }
        None => {
            count(1, 0, 1);
            vec![0; BUFFER_BYTES]
        }
    }
}

/// An empty write buffer with room for `BUFFER_BYTES`.
pub fn take_write() -> Vec<u8> {
    match FREE.with(|f| f.borrow_mut().write.pop()) {
        Some(buf) => {
            count(1, -1, 0);
            buf
        }
        None => {
            count(1, 0, 1);
            Vec::with_capacity(BUFFER_BYTES)
        }
    }
}

/// Gives a buffer from [`take_read`] back (one that grew is freed).
pub fn give_read(buf: Vec<u8>) {
    give(buf, buf_is_standard_read, |f| &mut f.read)
}

/// Gives a buffer from [`take_write`] back, emptied (one that grew is freed).
pub fn give_write(mut buf: Vec<u8>) {
    buf.clear();
    give(buf, |b| b.capacity() == BUFFER_BYTES, |f| &mut f.write)
}

fn buf_is_standard_read(buf: &Vec<u8>) -> bool {
    buf.len() == BUFFER_BYTES && buf.capacity() == BUFFER_BYTES
}

fn give(buf: Vec<u8>, standard: fn(&Vec<u8>) -> bool, list: fn(&mut Free) -> &mut Vec<Vec<u8>>) {
    let pooled = standard(&buf)
        && FREE.with(|f| {
            let mut f = f.borrow_mut();
            let list = list(&mut f);
            if list.len() < KEEP_FREE {
                list.push(buf);
                true
            } else {
                false
            }
        });
    count(-1, i64::from(pooled), 0);
}

/// Buffers of this shard now: handed out, and kept free.
pub fn in_use_and_free() -> (u64, u64) {
    crate::metrics::with(|m| (m.http_buffers_in_use.get(), m.http_buffers_free.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_counted_and_grown_ones_freed() {
        let (used0, free0) = in_use_and_free();
        let a = take_read();
        let b = take_write();
        assert_eq!(a.len(), BUFFER_BYTES);
        assert_eq!(b.capacity(), BUFFER_BYTES);
        assert_eq!(in_use_and_free(), (used0 + 2, free0));
        give_read(a);
        give_write(b);
        assert_eq!(in_use_and_free(), (used0, free0 + 2));
        let mut grown = take_write();
        grown.extend_from_slice(&[1; BUFFER_BYTES + 1]);
        give_write(grown);
        assert_eq!(in_use_and_free(), (used0, free0 + 1), "a grown buffer is freed, not pooled");
        let again = take_write();
        assert!(again.is_empty(), "write buffers come back empty");
        give_write(again);
    }
}
