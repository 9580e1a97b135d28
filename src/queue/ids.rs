//! Message and claim ids, in lowercase hex. Clients must treat ids as opaque.
//!
//! ## Format
//! - message: 24 digits, the width of the ObjectIds that Zaqar's MongoDB driver hands out, so
//!   clients that validate that shape keep working. `eeeeeeee ssssssssssssssss`: 8 hex digits of
//!   the queue's epoch (fresh each time the queue is created, so ids of a deleted queue never name
//!   messages of its successor) then 16 hex digits of the message's sequence number in that
//!   queue, so ids stay ordered.
//! - claim: 32 digits, the width of the uuid4 hex ids of Zaqar's redis driver: 16 hex digits of
//!   the claim's sequence number, then 16 of its secret (64 random bits from the OS, kept in the
//!   claim's log records). See [`ClaimId`].

use std::fmt;

/// Writes `value` as lowercase hex into `out`, zero-padded to `out.len()` digits.
#[expect(clippy::indexing_slicing, reason = "a nibble (`value & 0xf`) always indexes the 16 digits")]
fn hex_into(mut value: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// The id of a message within one queue incarnation: 24 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    pub epoch: u32,
    pub seq: u64,
}

impl MessageId {
    pub fn new(epoch: u32, seq: u64) -> Self {
        Self { epoch, seq }
    }

    /// Parses the 24-hex-digit form; anything else is `None` (callers answer as for an unknown
    /// id, as Zaqar does for malformed ids).
    pub fn parse(text: &str) -> Option<Self> {
        let [epoch, seq] = parse_hex(text, [8, 16])?;
        Some(Self { epoch: u32::try_from(epoch).ok()?, seq })
    }

    /// The 24 hex digits, without going through `fmt` (ids are written on every message of
    /// every response).
    pub fn to_hex(&self) -> [u8; MESSAGE_ID_LEN] {
        let mut out = [0u8; MESSAGE_ID_LEN];
        let (epoch, seq) = out.split_at_mut(8);
        hex_into(u64::from(self.epoch), epoch);
        hex_into(self.seq, seq);
        out
    }

    /// Appends the 24 hex digits to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_hex());
    }
}

/// The id of a claim: a capability. Whoever holds it may renew or release the claim and delete
/// the messages it holds, so it carries a secret of 64 random bits beside the claim's sequence
/// number (32 hex digits: `ssssssssssssssss kkkkkkkkkkkkkkkk`, sequence then secret). It is
/// longer than a message id, so the two can never be the same string, and it is not the queue's
/// epoch plus a counter, so another worker's claim cannot be guessed. The engine compares the
/// secret in constant time ([`ClaimId::holds`]); `==` is for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimId {
    pub seq: u64,
    pub secret: u64,
}

impl ClaimId {
    pub fn new(seq: u64, secret: u64) -> Self {
        Self { seq, secret }
    }

    /// Parses the 32-hex-digit form; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let [seq, secret] = parse_hex(text, [16, 16])?;
        Some(Self { seq, secret })
    }

    /// Whether this id names the claim `seq` whose secret is `secret` (`None`: a claim that no id
    /// names, see `Claim::secret`). The secrets are compared in constant time.
    pub fn holds(&self, seq: u64, secret: Option<u64>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(secret) = secret else { return false };
        self.seq == seq && bool::from(self.secret.ct_eq(&secret))
    }

    pub fn to_hex(&self) -> [u8; CLAIM_ID_LEN] {
        let mut out = [0u8; CLAIM_ID_LEN];
        let (seq, secret) = out.split_at_mut(16);
        hex_into(self.seq, seq);
        hex_into(self.secret, secret);
        out
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_hex());
    }
}

/// Length of a message id and of a claim id: different, so no string is both.
pub const MESSAGE_ID_LEN: usize = 24;
pub const CLAIM_ID_LEN: usize = 32;

/// `text` as consecutive fields of exactly `widths` hex digits, nothing more.
fn parse_hex<const N: usize>(text: &str, widths: [usize; N]) -> Option<[u64; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != widths.iter().sum::<usize>() || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u64; N];
    let mut at = 0;
    for (slot, width) in out.iter_mut().zip(widths) {
        *slot = u64::from_str_radix(text.get(at..at + width)?, 16).ok()?;
        at += width;
    }
    Some(out)
}

macro_rules! display_hex {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let hex = self.to_hex();
                // Hex digits are ASCII, so this never fails.
                f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
            }
        }
    };
}

display_hex!(MessageId);
display_hex!(ClaimId);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_as_24_hex_digits() {
        let id = MessageId::new(0xdead_beef, 42);
        assert_eq!(id.to_string(), "deadbeef000000000000002a");
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in ["", "xyz", "deadbeef00000000000002a", "deadbeef000000000000002g", "deadbeef000000000000002a0"] {
            assert_eq!(MessageId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn claim_ids_are_sequence_then_secret_and_never_message_ids() {
        let id = ClaimId::new(1, 0x0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "00000000000000010123456789abcdef");
        assert_eq!(ClaimId::parse(&MessageId::new(0, 1).to_string()), None);
        assert_eq!(MessageId::parse(&id.to_string()), None);
        assert!(id.holds(1, Some(0x0123_4567_89ab_cdef)));
        assert!(!id.holds(1, Some(0x0123_4567_89ab_cdee)), "the secret must match");
        assert!(!id.holds(2, Some(0x0123_4567_89ab_cdef)), "the sequence must match");
        assert!(!id.holds(1, None), "a claim without a secret is named by no id");
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(epoch: u32, seq: u64, secret: u64) {
            let id = ClaimId::new(seq, secret);
            prop_assert_eq!(ClaimId::parse(&id.to_string()), Some(id));
            let m = MessageId::new(epoch, seq);
            prop_assert_eq!(MessageId::parse(&m.to_string()), Some(m));
            prop_assert_ne!(m.to_string(), id.to_string());
        }

        #[test]
        fn parsing_any_text_never_panics(text in "\\PC{0,40}") {
            let _ = (ClaimId::parse(&text), MessageId::parse(&text));
        }
    }
}
