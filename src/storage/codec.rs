//! The binary form of a [`Record`] inside a segment.
//!
//! ## Format (version 2; version 1 has no kinds 9 and 10, and is read as it is)
//! Every record starts on an 8-byte boundary with a 16-byte header; all integers little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `len`: bytes of header + payload, before padding (≥ 16). 0 marks the end of the log |
//! | 4 | 4 | `crc`: CRC32C of bytes 0..4 (`len`) followed by bytes 8..len |
//! | 8 | 1 | `kind` (below) |
//! | 9 | 1 | `flags`: 0 (others are refused, so a future use cannot be misread) |
//! | 10 | 6 | reserved, 0 |
//! | 16 | len − 16 | payload of the kind |
//!
//! Zero bytes pad the record to the next multiple of 8. Payloads, fixed fields first, then the
//! project id and queue name (UTF-8, lengths `plen`/`nlen` as u16), then variable data:
//!
//! | kind | payload |
//! |---|---|
//! | 1 QueueUpsert | epoch u32, meta_len u32, plen, nlen, project, name, metadata JSON |
//! | 2 QueueDelete | plen, nlen, project, name |
//! | 3 Purge | last_seq u64, plen, nlen, project, name |
//! | 4 MessageAppend | seq u64, created_ms u64, client_hash u64, ttl_s u32, delay_ms u32, body_len u32, plen, nlen, project, name, body |
//! | 5 MessageDelete | seq u64, plen, nlen, project, name |
//! | 6 ClaimUpsert | claim_seq u64, created_ms u64, ttl_s u32, grace_s u32, count u32, plen, nlen, count × seq u64, project, name |
//! | 7 ClaimDelete | claim_seq u64, plen, nlen, project, name |
//! | 8 QueueCounters | last_seq u64, last_claim_seq u64, plen, nlen, project, name |
//! | 9 ClaimUpsert | claim_seq u64, secret u64, created_ms u64, ttl_s u32, grace_s u32, count u32, plen, nlen, count × seq u64, project, name |
//! | 10 Revocation | revoked_ms u64, until_ms u64, plen, slen, project, subject |
//!
//! Kind 6 is a claim without a secret, as format 1 wrote it; this build writes kind 9 instead.
//!
//! The CRC covers the length so that a damaged length is caught, and the record carries no
//! position, so compaction copies records byte for byte.

use std::ops::Range;

use super::record::{QueueRef, Record};
use crate::config::{MAX_PROJECT_ID_BYTES, MAX_QUEUE_NAME_BYTES};

pub const RECORD_HEADER_BYTES: usize = 16;
/// Records start on multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Fixed fields of the payloads that carry variable data (see the format table).
const MESSAGE_APPEND_FIXED_BYTES: usize = 40;
const QUEUE_UPSERT_FIXED_BYTES: usize = 12;
/// Of kind 9 (kind 6 lacks the 8-byte secret).
const CLAIM_UPSERT_FIXED_BYTES: usize = 40;
const LEGACY_CLAIM_UPSERT_FIXED_BYTES: usize = 32;
/// The most a record adds to its body and names: header, fixed fields, padding. Used to reserve
/// room for a batch of messages before writing any of them.
pub const MAX_MESSAGE_OVERHEAD_BYTES: usize = RECORD_HEADER_BYTES + MESSAGE_APPEND_FIXED_BYTES + RECORD_ALIGN;
const _: () = assert!(QUEUE_UPSERT_FIXED_BYTES <= MESSAGE_APPEND_FIXED_BYTES, "one overhead bounds both");

/// The most room a message append or queue upsert carrying `payload` bytes (a body or metadata)
/// takes, with the longest project id and queue name: a segment must hold this much past its
/// header for the API's largest post or metadata to be stored.
pub const fn largest_record_bytes(payload: usize) -> usize {
    payload + MAX_PROJECT_ID_BYTES + MAX_QUEUE_NAME_BYTES + MAX_MESSAGE_OVERHEAD_BYTES
}

/// The room a claim of `count` messages takes, with the longest project id and queue name.
pub const fn largest_claim_record_bytes(count: usize) -> usize {
    padded(RECORD_HEADER_BYTES + CLAIM_UPSERT_FIXED_BYTES + 8 * count + MAX_PROJECT_ID_BYTES + MAX_QUEUE_NAME_BYTES)
}

const KIND_QUEUE_UPSERT: u8 = 1;
const KIND_QUEUE_DELETE: u8 = 2;
const KIND_PURGE: u8 = 3;
const KIND_MESSAGE_APPEND: u8 = 4;
const KIND_MESSAGE_DELETE: u8 = 5;
const KIND_LEGACY_CLAIM_UPSERT: u8 = 6;
const KIND_CLAIM_DELETE: u8 = 7;
const KIND_QUEUE_COUNTERS: u8 = 8;
const KIND_CLAIM_UPSERT: u8 = 9;
const KIND_REVOCATION: u8 = 10;

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record runs past the end of the segment")]
    Truncated,
    #[error("record length {0} is impossible")]
    BadLength(u32),
    #[error("checksum mismatch")]
    BadChecksum,
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// A record read back, borrowing from the segment (and from the caller's scratch for claim
/// sequence numbers, which need not be aligned in the segment).
#[derive(Debug)]
pub struct Decoded<'a> {
    pub record: Record<'a>,
    /// Where the body of a `MessageAppend` lies, relative to the record's start.
    pub body: Option<Range<usize>>,
    /// Bytes the record occupies, padding included: the next record starts this far on.
    pub padded_len: usize,
    /// Those `padded_len` bytes, as they lie in the buffer (compaction and repair copy them).
    pub bytes: &'a [u8],
}

/// Rounds up to the record alignment.
pub const fn padded(len: usize) -> usize {
    len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

fn names_len(q: QueueRef<'_>) -> usize {
    q.project.len() + q.name.len()
}

/// Bytes the record takes before padding. `body_len` counts only for `MessageAppend`.
pub fn encoded_len(record: &Record<'_>, body_len: usize) -> usize {
    RECORD_HEADER_BYTES
        + match record {
            Record::QueueUpsert { queue, metadata, .. } => {
                QUEUE_UPSERT_FIXED_BYTES + names_len(*queue) + metadata.len()
            }
            Record::QueueDelete { queue } => 4 + names_len(*queue),
            Record::Purge { queue, .. } | Record::MessageDelete { queue, .. } | Record::ClaimDelete { queue, .. } => {
                12 + names_len(*queue)
            }
            Record::MessageAppend { queue, .. } => MESSAGE_APPEND_FIXED_BYTES + names_len(*queue) + body_len,
            Record::ClaimUpsert { queue, seqs, secret, .. } => {
                let fixed = if secret.is_some() { CLAIM_UPSERT_FIXED_BYTES } else { LEGACY_CLAIM_UPSERT_FIXED_BYTES };
                fixed + 8 * seqs.len() + names_len(*queue)
            }
            Record::QueueCounters { queue, .. } | Record::Revocation { queue, .. } => 20 + names_len(*queue),
        }
}

/// Why a record cannot be encoded at all (the API validates far below these bounds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a project id or queue name is longer than 65535 bytes")]
    NameTooLong,
    #[error("a record would be larger than 4 GiB")]
    TooLarge,
}

/// Checks what `encode_into` cannot represent.
pub fn check_encodable(record: &Record<'_>, body_len: usize) -> Result<usize, EncodeError> {
    let q = record.queue();
    if q.project.len() > usize::from(u16::MAX) || q.name.len() > usize::from(u16::MAX) {
        return Err(EncodeError::NameTooLong);
    }
    let len = encoded_len(record, body_len);
    if u32::try_from(len).is_err() {
        return Err(EncodeError::TooLarge);
    }
    Ok(len)
}

/// Writes fields one after another into a record's payload.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        let end = self.at + b.len();
        let Some(dst) = self.out.get_mut(self.at..end) else {
            panic!(
                "a record's fields run to byte {end} of a {}-byte payload: encoded_len and encode_into disagree",
                self.out.len()
            );
        };
        dst.copy_from_slice(b);
        self.at = end;
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes())
    }
    fn lens(&mut self, q: QueueRef<'_>) {
        // Checked by `check_encodable`.
        self.u16(q.project.len() as u16);
        self.u16(q.name.len() as u16);
    }
    fn names(&mut self, q: QueueRef<'_>) {
        self.bytes(q.project.as_bytes());
        self.bytes(q.name.as_bytes());
    }
}

/// Writes the record into `out`, which must be exactly `padded(encoded_len(..))` bytes long and
/// checked with [`check_encodable`]; returns where the body lies in it (for `MessageAppend`).
///
/// # Panics
/// When `out` has another length, or the fields written disagree with [`encoded_len`]: both are
/// bugs of the caller or of this module, never something the bytes of a request can cause.
pub fn encode_into(out: &mut [u8], record: &Record<'_>, body: &[u8]) -> Range<usize> {
    let len = encoded_len(record, body.len());
    let given = out.len();
    let Some((head, payload, padding)) = split_record_mut(out, len) else {
        panic!("a record of {len} bytes is encoded into {given} bytes instead of {}", padded(len));
    };
    let mut w = Writer { out: payload, at: 0 };
    let mut body_range = 0..0;
    let kind = match *record {
        Record::QueueUpsert { queue, epoch, metadata } => {
            w.u32(epoch);
            w.u32(metadata.len() as u32);
            w.lens(queue);
            w.names(queue);
            w.bytes(metadata);
            KIND_QUEUE_UPSERT
        }
        Record::QueueDelete { queue } => {
            w.lens(queue);
            w.names(queue);
            KIND_QUEUE_DELETE
        }
        Record::Purge { queue, last_seq } => {
            w.u64(last_seq);
            w.lens(queue);
            w.names(queue);
            KIND_PURGE
        }
        Record::MessageAppend { queue, seq, created_ms, ttl_s, delay_ms, client_hash } => {
            w.u64(seq);
            w.u64(created_ms);
            w.u64(client_hash);
            w.u32(ttl_s);
            w.u32(delay_ms);
            w.u32(body.len() as u32);
            w.lens(queue);
            w.names(queue);
            let start = RECORD_HEADER_BYTES + w.at;
            body_range = start..start + body.len();
            w.bytes(body);
            KIND_MESSAGE_APPEND
        }
        Record::MessageDelete { queue, seq } => {
            w.u64(seq);
            w.lens(queue);
            w.names(queue);
            KIND_MESSAGE_DELETE
        }
        Record::ClaimUpsert { queue, claim_seq, secret, created_ms, ttl_s, grace_s, seqs } => {
            w.u64(claim_seq);
            if let Some(secret) = secret {
                w.u64(secret);
            }
            w.u64(created_ms);
            w.u32(ttl_s);
            w.u32(grace_s);
            w.u32(seqs.len() as u32);
            w.lens(queue);
            for &s in seqs {
                w.u64(s);
            }
            w.names(queue);
            if secret.is_some() {
                KIND_CLAIM_UPSERT
            } else {
                KIND_LEGACY_CLAIM_UPSERT
            }
        }
        Record::ClaimDelete { queue, claim_seq } => {
            w.u64(claim_seq);
            w.lens(queue);
            w.names(queue);
            KIND_CLAIM_DELETE
        }
        Record::QueueCounters { queue, last_seq, last_claim_seq } => {
            w.u64(last_seq);
            w.u64(last_claim_seq);
            w.lens(queue);
            w.names(queue);
            KIND_QUEUE_COUNTERS
        }
        Record::Revocation { queue, revoked_ms, until_ms } => {
            w.u64(revoked_ms);
            w.u64(until_ms);
            w.lens(queue);
            w.names(queue);
            KIND_REVOCATION
        }
    };
    // One compare per record: a payload left partly unwritten would be checksummed garbage.
    assert_eq!(RECORD_HEADER_BYTES + w.at, len, "encoded_len and encode_into disagree on {record:?}");
    padding.fill(0);
    head[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    head[8] = kind;
    head[9..16].fill(0);
    let crc = checksum(head, payload);
    head[4..8].copy_from_slice(&crc.to_le_bytes());
    body_range
}

/// `out` as a record of `len` bytes: header, payload and padding; `None` unless `out` is exactly
/// `padded(len)` bytes and `len` holds a header.
fn split_record_mut(out: &mut [u8], len: usize) -> Option<(&mut [u8; RECORD_HEADER_BYTES], &mut [u8], &mut [u8])> {
    if out.len() != padded(len) {
        return None;
    }
    let (record, padding) = out.split_at_mut_checked(len)?;
    let (head, payload) = record.split_first_chunk_mut()?;
    Some((head, payload, padding))
}

/// CRC32C of a whole record: its length field, then everything after the CRC.
fn checksum(head: &[u8; RECORD_HEADER_BYTES], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[0..4]), &head[8..]);
    crc32c::crc32c_append(crc, payload)
}

/// Little-endian fields read one after another from bytes that may be short: a field that
/// would run past the end is `None`, never a panic. Segment headers are read with it too.
pub(super) struct Fields<'a> {
    rest: &'a [u8],
    /// Bytes consumed so far.
    at: usize,
}

impl<'a> Fields<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Fields { rest: bytes, at: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (field, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        self.at += n;
        Some(field)
    }
    pub(super) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (field, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        self.at += N;
        Some(*field)
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Reads a record's payload; every field past the record's end is a decode error.
struct Reader<'a>(Fields<'a>);

const PAST_THE_END: DecodeError = DecodeError::Malformed("field past the record's end");

impl<'a> Reader<'a> {
    /// Offset from the record's start of the next field.
    fn at(&self) -> usize {
        RECORD_HEADER_BYTES + self.0.at
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.0.take(n).ok_or(PAST_THE_END)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.0.u16().ok_or(PAST_THE_END)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.0.u32().ok_or(PAST_THE_END)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.0.u64().ok_or(PAST_THE_END)
    }
    fn str(&mut self, n: u16) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(usize::from(n))?).map_err(|_| DecodeError::Malformed("name is not UTF-8"))
    }
    fn queue(&mut self, plen: u16, nlen: u16) -> Result<QueueRef<'a>, DecodeError> {
        Ok(QueueRef { project: self.str(plen)?, name: self.str(nlen)? })
    }
    fn finished(&self) -> bool {
        self.0.rest.is_empty()
    }
}

/// What lies at the start of `buf` when it is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// A zero length: the end of the written log.
    End,
    /// A record of this many bytes (padding included) fits in `buf`.
    Record(usize),
}

/// A record at the start of a buffer, cut as its length field says (nothing checked beyond it).
struct Framed<'a> {
    head: &'a [u8; RECORD_HEADER_BYTES],
    payload: &'a [u8],
    padding: &'a [u8],
    /// Header, payload and padding together.
    bytes: &'a [u8],
}

/// Cuts the record at the start of `buf` by its length field; `None` at the end of the log.
fn frame(buf: &[u8]) -> Result<Option<Framed<'_>>, DecodeError> {
    let len = u32::from_le_bytes(*buf.first_chunk().ok_or(DecodeError::Truncated)?);
    if len == 0 {
        return Ok(None);
    }
    let record_len = len as usize;
    if record_len < RECORD_HEADER_BYTES {
        return Err(DecodeError::BadLength(len));
    }
    let bytes = buf.get(..padded(record_len)).ok_or(DecodeError::Truncated)?;
    let (record, padding) = bytes.split_at_checked(record_len).ok_or(DecodeError::Truncated)?;
    let (head, payload) = record.split_first_chunk().ok_or(DecodeError::BadLength(len))?;
    Ok(Some(Framed { head, payload, padding, bytes }))
}

/// Reads the length field only.
pub fn peek(buf: &[u8]) -> Result<Peek, DecodeError> {
    Ok(frame(buf)?.map_or(Peek::End, |f| Peek::Record(f.bytes.len())))
}

/// Checks the framed record's CRC and padding.
fn check(f: &Framed<'_>) -> Result<(), DecodeError> {
    let h = f.head;
    if checksum(h, f.payload) != u32::from_le_bytes([h[4], h[5], h[6], h[7]]) {
        return Err(DecodeError::BadChecksum);
    }
    if f.padding.iter().any(|&b| b != 0) {
        return Err(DecodeError::Malformed("padding is not zero"));
    }
    Ok(())
}

/// Checks the record at the start of `buf` (length, CRC, padding) without decoding it; returns
/// its padded length, or `None` at the end of the log.
pub fn verify(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(f) = frame(buf)? else {
        return Ok(None);
    };
    check(&f)?;
    Ok(Some(f.bytes.len()))
}

/// Decodes the record at the start of `buf`; `Ok(None)` at the end of the log. With `check_crc`
/// false the checksum is trusted (recovery verified it already while scanning). Whatever the
/// bytes, a damaged or short record is an error, never a panic.
pub fn decode<'a>(buf: &'a [u8], seqs: &'a mut Vec<u64>, check_crc: bool) -> Result<Option<Decoded<'a>>, DecodeError> {
    let Some(f) = frame(buf)? else {
        return Ok(None);
    };
    if check_crc {
        check(&f)?;
    }
    let h = f.head;
    let (kind, flags) = (h[8], h[9]);
    if flags != 0 || h[10..16].iter().any(|&b| b != 0) {
        return Err(DecodeError::Malformed("reserved header bytes are set"));
    }
    let mut r = Reader(Fields::new(f.payload));
    let mut body = None;
    let record = match kind {
        KIND_QUEUE_UPSERT => {
            let epoch = r.u32()?;
            let meta_len = r.u32()?;
            let (pl, nl) = (r.u16()?, r.u16()?);
            let queue = r.queue(pl, nl)?;
            let metadata = r.take(meta_len as usize)?;
            Record::QueueUpsert { queue, epoch, metadata }
        }
        KIND_QUEUE_DELETE => {
            let (pl, nl) = (r.u16()?, r.u16()?);
            Record::QueueDelete { queue: r.queue(pl, nl)? }
        }
        KIND_PURGE => {
            let last_seq = r.u64()?;
            let (pl, nl) = (r.u16()?, r.u16()?);
            Record::Purge { queue: r.queue(pl, nl)?, last_seq }
        }
        KIND_MESSAGE_APPEND => {
            let seq = r.u64()?;
            let created_ms = r.u64()?;
            let client_hash = r.u64()?;
            let ttl_s = r.u32()?;
            let delay_ms = r.u32()?;
            let body_len = r.u32()? as usize;
            let (pl, nl) = (r.u16()?, r.u16()?);
            let queue = r.queue(pl, nl)?;
            let start = r.at();
            r.take(body_len)?;
            body = Some(start..start + body_len);
            Record::MessageAppend { queue, seq, created_ms, ttl_s, delay_ms, client_hash }
        }
        KIND_MESSAGE_DELETE => {
            let seq = r.u64()?;
            let (pl, nl) = (r.u16()?, r.u16()?);
            Record::MessageDelete { queue: r.queue(pl, nl)?, seq }
        }
        KIND_CLAIM_UPSERT | KIND_LEGACY_CLAIM_UPSERT => {
            let claim_seq = r.u64()?;
            let secret = if kind == KIND_CLAIM_UPSERT { Some(r.u64()?) } else { None };
            let created_ms = r.u64()?;
            let ttl_s = r.u32()?;
            let grace_s = r.u32()?;
            let count = r.u32()? as usize;
            let (pl, nl) = (r.u16()?, r.u16()?);
            if count > (RECORD_HEADER_BYTES + f.payload.len()) / 8 {
                return Err(DecodeError::Malformed("claim lists more messages than fit"));
            }
            seqs.clear();
            for _ in 0..count {
                seqs.push(r.u64()?);
            }
            let queue = r.queue(pl, nl)?;
            Record::ClaimUpsert { queue, claim_seq, secret, created_ms, ttl_s, grace_s, seqs: seqs.as_slice() }
        }
        KIND_CLAIM_DELETE => {
            let claim_seq = r.u64()?;
            let (pl, nl) = (r.u16()?, r.u16()?);
            Record::ClaimDelete { queue: r.queue(pl, nl)?, claim_seq }
        }
        KIND_QUEUE_COUNTERS => {
            let last_seq = r.u64()?;
            let last_claim_seq = r.u64()?;
            let (pl, nl) = (r.u16()?, r.u16()?);
            let queue = r.queue(pl, nl)?;
            Record::QueueCounters { queue, last_seq, last_claim_seq }
        }
        KIND_REVOCATION => {
            let revoked_ms = r.u64()?;
            let until_ms = r.u64()?;
            let (pl, nl) = (r.u16()?, r.u16()?);
            let queue = r.queue(pl, nl)?;
            Record::Revocation { queue, revoked_ms, until_ms }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if !r.finished() {
        return Err(DecodeError::Malformed("bytes left over after the payload"));
    }
    Ok(Some(Decoded { record, body, padded_len: f.bytes.len(), bytes: f.bytes }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    fn q() -> QueueRef<'static> {
        QueueRef { project: "proj", name: "queue-1" }
    }

    fn all_kinds() -> Vec<(Record<'static>, &'static [u8])> {
        const SEQS: &[u64] = &[3, 5, 8];
        vec![
            (Record::QueueUpsert { queue: q(), epoch: 0xdead_beef, metadata: b"{\"a\":1}" }, b""),
            (Record::QueueDelete { queue: q() }, b""),
            (Record::Purge { queue: q(), last_seq: 77 }, b""),
            (
                Record::MessageAppend {
                    queue: q(),
                    seq: 9,
                    created_ms: 1_700_000_000_000,
                    ttl_s: 300,
                    delay_ms: 5000,
                    client_hash: u64::MAX,
                },
                b"{\"body\": [1, 2.50]}",
            ),
            (Record::MessageDelete { queue: q(), seq: 9 }, b""),
            (
                Record::ClaimUpsert {
                    queue: q(),
                    claim_seq: 4,
                    secret: Some(0x5eed),
                    created_ms: 12,
                    ttl_s: 60,
                    grace_s: 30,
                    seqs: SEQS,
                },
                b"",
            ),
            (
                Record::ClaimUpsert {
                    queue: q(),
                    claim_seq: 4,
                    secret: None,
                    created_ms: 12,
                    ttl_s: 60,
                    grace_s: 30,
                    seqs: SEQS,
                },
                b"",
            ),
            (
                Record::Revocation {
                    queue: QueueRef { project: "proj", name: "0123456789abcdef0123456789abcdef" },
                    revoked_ms: 5,
                    until_ms: 9,
                },
                b"",
            ),
            (Record::ClaimDelete { queue: q(), claim_seq: 4 }, b""),
            (Record::QueueCounters { queue: q(), last_seq: 10, last_claim_seq: 4 }, b""),
        ]
    }

    fn encode(record: &Record<'_>, body: &[u8]) -> (Vec<u8>, Range<usize>) {
        let len = check_encodable(record, body.len()).unwrap();
        let mut out = vec![0xaa; padded(len)];
        let at = encode_into(&mut out, record, body);
        (out, at)
    }

    #[test]
    fn every_kind_round_trips() {
        for (record, body) in all_kinds() {
            let (bytes, at) = encode(&record, body);
            assert_eq!(bytes.len() % RECORD_ALIGN, 0);
            let mut seqs = Vec::new();
            let d = decode(&bytes, &mut seqs, true).unwrap().unwrap();
            assert_eq!(d.record, record);
            assert_eq!(d.padded_len, bytes.len());
            if let Some(range) = d.body {
                assert_eq!(&bytes[range.clone()], body);
                assert_eq!(range, at);
            }
        }
    }

    #[test]
    fn zero_length_is_the_end_and_flipped_bits_are_caught() {
        let mut seqs = Vec::new();
        assert!(decode(&[0u8; 32], &mut seqs, true).unwrap().is_none());
        for (record, body) in all_kinds() {
            let (bytes, _) = encode(&record, body);
            let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
            for i in (0..len).filter(|i| !(4..8).contains(i)) {
                for bit in [0x01u8, 0x80] {
                    let mut bad = bytes.clone();
                    bad[i] ^= bit;
                    let mut seqs = Vec::new();
                    assert!(decode(&bad, &mut seqs, true).is_err(), "flip at {i} of {record:?} went unnoticed");
                }
            }
        }
    }

    #[test]
    fn a_record_cut_short_is_truncated() {
        let (record, body) = all_kinds().swap_remove(3);
        let (bytes, _) = encode(&record, body);
        for cut in 0..bytes.len() {
            let mut seqs = Vec::new();
            assert!(decode(&bytes[..cut], &mut seqs, true).is_err(), "cut at {cut}");
        }
    }

    #[test]
    #[should_panic(expected = "is encoded into 8 bytes instead of")]
    fn encoding_into_a_buffer_of_another_size_is_a_bug() {
        let (record, body) = all_kinds().swap_remove(1);
        encode_into(&mut [0u8; 8], &record, body);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut seqs = Vec::new();
            let _ = decode(&bytes, &mut seqs, true);
            let _ = decode(&bytes, &mut seqs, false);
        }

        #[test]
        fn messages_round_trip(seq: u64, created: u64, ttl: u32, delay: u32, hash: u64,
                               project in "[a-z0-9-]{1,40}", name in "[A-Za-z0-9_.-]{1,64}",
                               body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let record = Record::MessageAppend {
                queue: QueueRef { project: &project, name: &name },
                seq, created_ms: created, ttl_s: ttl, delay_ms: delay, client_hash: hash,
            };
            let (bytes, at) = encode(&record, &body);
            let mut seqs = Vec::new();
            let d = decode(&bytes, &mut seqs, true).unwrap().unwrap();
            prop_assert_eq!(d.record, record);
            prop_assert_eq!(&bytes[at], &body[..]);
        }
    }
}
