//! Message and claim ids: 24 lowercase hex digits, the width of the ObjectIds that Zaqar's
//! MongoDB driver hands out, so clients that validate that shape keep working.
//!
//! ## Format
//! `eeeeeeee ssssssssssssssss`: 8 hex digits of the queue's epoch (fresh each time the queue is
//! created, so ids of a deleted queue never name messages of its successor) then 16 hex digits
//! of the message's (or claim's) sequence number in that queue. Clients must treat ids as opaque.

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

macro_rules! hex_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, " within one queue incarnation.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            pub epoch: u32,
            pub seq: u64,
        }

        impl $name {
            pub fn new(epoch: u32, seq: u64) -> Self {
                Self { epoch, seq }
            }

            /// Parses the 24-hex-digit form; anything else is `None` (callers answer as for an
            /// unknown id, as Zaqar does for malformed ids).
            pub fn parse(text: &str) -> Option<Self> {
                let bytes = text.as_bytes();
                if bytes.len() != 24 || !bytes.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let epoch = u32::from_str_radix(text.get(..8)?, 16).ok()?;
                let seq = u64::from_str_radix(text.get(8..)?, 16).ok()?;
                Some(Self { epoch, seq })
            }
        }

        impl $name {
            /// The 24 hex digits, without going through `fmt` (ids are written on every
            /// message of every response).
            pub fn to_hex(&self) -> [u8; 24] {
                let mut out = [0u8; 24];
                hex_into(u64::from(self.epoch), &mut out[..8]);
                hex_into(self.seq, &mut out[8..]);
                out
            }

            /// Appends the 24 hex digits to `out`.
            pub fn write_to(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_hex());
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let hex = self.to_hex();
                // Hex digits are ASCII, so this never fails.
                f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
            }
        }
    };
}

hex_id!(MessageId, "message");
hex_id!(ClaimId, "claim");

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

    proptest! {
        #[test]
        fn display_then_parse_round_trips(epoch: u32, seq: u64) {
            let id = ClaimId::new(epoch, seq);
            prop_assert_eq!(ClaimId::parse(&id.to_string()), Some(id));
        }
    }
}
