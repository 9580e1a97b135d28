//! marconi's own tokens: what `marconi token issue` prints and `token` mode verifies.
//!
//! ## Format (version 1)
//! `mrc1.` then the base64url encoding (RFC 4648 §5, no padding) of these bytes, integers
//! little-endian:
//!
//! | size | field |
//! |---|---|
//! | 1 | version: 1 |
//! | 1 | key id length k (1..=32) |
//! | k | key id: which key of the keys file signed it (`[A-Za-z0-9_-]`) |
//! | 16 | token id: 128 random bits, the id `DELETE /v2/tokens/{id}` revokes (32 hex digits) |
//! | 8 | issued at, Unix seconds |
//! | 8 | expires at, Unix seconds |
//! | 1 | operations: bit 0 post, 1 read, 2 claim, 3 delete, 4 manage (others 0) |
//! | 2 | project length p (1..=256) |
//! | p | project (UTF-8, a valid `X-Project-ID`) |
//! | 1 | queue glob length g (1..=128) |
//! | g | queue glob: queue-name characters and `*` (any run of them) |
//! | 1 | name length n (0..=64) |
//! | n | name (`[A-Za-z0-9_.-]`, never 32 hex digits), empty when none |
//! | 32 | HMAC-SHA256, keyed with that key, of `marconi-token-v1\0` followed by every byte above |
//!
//! Nothing before the MAC is trusted until the MAC matches: a token is parsed (bounds only), its
//! key looked up by id, the MAC compared in constant time (`hmac`'s `verify_slice`, on `subtle`),
//! and only then are expiry, lifetime and revocation judged. Verification reads no store and
//! makes no call: a token is checked with the keys in memory alone.

use std::fmt;

use hmac::Mac;

use super::keys::{HmacKey, Keyring, MAX_KEY_ID_BYTES};
use super::{Ops, MAX_GLOB_BYTES};
use crate::config::MAX_PROJECT_ID_BYTES;

pub const PREFIX: &str = "mrc1.";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"marconi-token-v1\0";
pub const MAC_BYTES: usize = 32;
pub const MAX_NAME_BYTES: usize = 64;
const FIXED_BYTES: usize = 1 + 1 + 16 + 8 + 8 + 1 + 2 + 1 + 1 + MAC_BYTES;
/// The most bytes a token decodes to, and the most characters its text can have.
pub const MAX_TOKEN_BYTES: usize =
    FIXED_BYTES + MAX_KEY_ID_BYTES + MAX_PROJECT_ID_BYTES + MAX_GLOB_BYTES + MAX_NAME_BYTES;
pub const MAX_TOKEN_CHARS: usize = PREFIX.len() + (MAX_TOKEN_BYTES * 4).div_ceil(3);

/// A token's id: 128 random bits, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId(pub [u8; 16]);

impl TokenId {
    pub fn random() -> Result<Self, crate::random::RandomError> {
        let mut id = [0u8; 16];
        crate::random::fill(&mut id)?;
        Ok(TokenId(id))
    }

    /// Exactly 32 hex digits (either case).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (out, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
            let hex = std::str::from_utf8(pair).ok()?;
            *out = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(TokenId(id))
    }

    /// The 32 lowercase hex digits, on the stack.
    pub fn to_hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            if let [hi, lo] = pair {
                *hi = DIGITS.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
                *lo = DIGITS.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
            }
        }
        out
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.to_hex()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// What a token says, borrowed from its decoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims<'a> {
    pub key_id: &'a str,
    pub id: TokenId,
    pub issued_s: u64,
    pub expires_s: u64,
    pub ops: Ops,
    pub project: &'a str,
    pub queues: &'a str,
    /// Empty when the token has no name.
    pub name: &'a str,
}

/// Why a token is refused. Parse and signature failures are one kind for the client (`Invalid`):
/// which byte was wrong is nobody's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token was signed by a key this server does not know")]
    UnknownKey,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token lives longer than this server accepts (auth.max_token_ttl_s)")]
    TooLong,
}

/// Checks what `issue` would refuse: the fields a token may carry.
pub fn check_fields(claims: &Claims<'_>) -> Result<(), String> {
    if claims.project.is_empty() || claims.project.len() > MAX_PROJECT_ID_BYTES || !header_safe(claims.project) {
        return Err(format!(
            "a project is 1 to {MAX_PROJECT_ID_BYTES} bytes of text a header can carry, not {:?}",
            claims.project
        ));
    }
    if !super::is_valid_glob(claims.queues) {
        return Err(format!(
            "a queue glob is 1 to {MAX_GLOB_BYTES} of [A-Za-z0-9_.-] and `*` (any run of them), not {:?}",
            claims.queues
        ));
    }
    if !claims.name.is_empty() && !is_valid_name(claims.name) {
        return Err(format!(
            "a token name is 1 to {MAX_NAME_BYTES} of [A-Za-z0-9_.-] and not 32 hex digits (an id), not {:?}",
            claims.name
        ));
    }
    if claims.expires_s <= claims.issued_s {
        return Err("a token must expire after it is issued".into());
    }
    if claims.ops.is_empty() {
        return Err("a token must allow at least one operation".into());
    }
    Ok(())
}

/// A name a token may carry: names and ids are both revocation subjects, so a name is never
/// mistaken for an id.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && TokenId::parse(name).is_none()
}

fn header_safe(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// Signs `claims` with `key` (the keyring's newest when issuing) and returns the token's text.
pub fn issue(claims: &Claims<'_>, key: &HmacKey) -> Result<String, String> {
    check_fields(claims)?;
    let mut bytes = Vec::with_capacity(MAX_TOKEN_BYTES);
    bytes.push(VERSION);
    push_short(&mut bytes, key.id.as_bytes());
    bytes.extend_from_slice(&claims.id.0);
    bytes.extend_from_slice(&claims.issued_s.to_le_bytes());
    bytes.extend_from_slice(&claims.expires_s.to_le_bytes());
    bytes.push(claims.ops.bits());
    bytes.extend_from_slice(&(claims.project.len() as u16).to_le_bytes());
    bytes.extend_from_slice(claims.project.as_bytes());
    push_short(&mut bytes, claims.queues.as_bytes());
    push_short(&mut bytes, claims.name.as_bytes());
    let mut mac = key.mac();
    mac.update(DOMAIN);
    mac.update(&bytes);
    bytes.extend_from_slice(&mac.finalize().into_bytes());
    let mut text = String::with_capacity(MAX_TOKEN_CHARS);
    text.push_str(PREFIX);
    base64url_encode(&bytes, &mut text);
    Ok(text)
}

fn push_short(out: &mut Vec<u8>, field: &[u8]) {
    // Every field pushed this way is checked to be far below 256 bytes first.
    out.push(field.len() as u8);
    out.extend_from_slice(field);
}

/// Decodes `text` into `buf` and checks its signature with `keys`; returns what it claims.
/// Expiry and lifetime are judged against `now_s` and `max_ttl_s` only after the signature.
pub fn verify<'b>(
    text: &str,
    buf: &'b mut [u8; MAX_TOKEN_BYTES],
    keys: &Keyring,
    now_s: u64,
    max_ttl_s: u64,
) -> Result<Claims<'b>, TokenError> {
    let (claims, signed, mac) = parse(text, buf)?;
    let key = keys.get(claims.key_id).ok_or(TokenError::UnknownKey)?;
    let mut check = key.mac();
    check.update(DOMAIN);
    check.update(signed);
    check.verify_slice(mac).map_err(|_| TokenError::BadSignature)?;
    if claims.expires_s <= now_s {
        return Err(TokenError::Expired);
    }
    if claims.expires_s.saturating_sub(claims.issued_s) > max_ttl_s {
        return Err(TokenError::TooLong);
    }
    Ok(claims)
}

/// The token's fields, the bytes the MAC covers and the MAC, without checking the MAC (for
/// `verify`, and for `marconi token inspect`, which says so).
pub fn parse<'b>(
    text: &str,
    buf: &'b mut [u8; MAX_TOKEN_BYTES],
) -> Result<(Claims<'b>, &'b [u8], &'b [u8]), TokenError> {
    let encoded = text.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let len = base64url_decode(encoded.as_bytes(), buf).ok_or(TokenError::Malformed)?;
    let bytes: &'b [u8] = buf.get(..len).ok_or(TokenError::Malformed)?;
    let body_len = len.checked_sub(MAC_BYTES).ok_or(TokenError::Malformed)?;
    let (signed, mac) = bytes.split_at_checked(body_len).ok_or(TokenError::Malformed)?;
    let mut r = Fields(signed);
    if r.u8()? != VERSION {
        return Err(TokenError::Malformed);
    }
    let key_len = usize::from(r.u8()?);
    let key_id = r.str(key_len)?;
    if key_id.is_empty() || key_len > MAX_KEY_ID_BYTES {
        return Err(TokenError::Malformed);
    }
    let id = TokenId(r.array()?);
    let issued_s = u64::from_le_bytes(r.array()?);
    let expires_s = u64::from_le_bytes(r.array()?);
    let ops = Ops::from_bits(r.u8()?).ok_or(TokenError::Malformed)?;
    let project_len = usize::from(u16::from_le_bytes(r.array()?));
    let project = r.str(project_len)?;
    let glob_len = usize::from(r.u8()?);
    let queues = r.str(glob_len)?;
    let name_len = usize::from(r.u8()?);
    let name = r.str(name_len)?;
    if !r.0.is_empty() {
        return Err(TokenError::Malformed);
    }
    let claims = Claims { key_id, id, issued_s, expires_s, ops, project, queues, name };
    check_fields(&claims).map_err(|_| TokenError::Malformed)?;
    Ok((claims, signed, mac))
}

/// Fields read one after another; running past the end is `Malformed`, never a panic.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        let (field, rest) = self.0.split_at_checked(n).ok_or(TokenError::Malformed)?;
        self.0 = rest;
        Ok(field)
    }
    fn u8(&mut self) -> Result<u8, TokenError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let (field, rest) = self.0.split_first_chunk::<N>().ok_or(TokenError::Malformed)?;
        self.0 = rest;
        Ok(*field)
    }
    fn str(&mut self, n: usize) -> Result<&'a str, TokenError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| TokenError::Malformed)
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// RFC 4648 §5 without padding.
pub fn base64url_encode(bytes: &[u8], out: &mut String) {
    let digit = |v: u32| char::from(BASE64URL.get((v & 63) as usize).copied().unwrap_or(b'A'));
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let v = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(digit(v >> 18));
        out.push(digit(v >> 12));
        if chunk.len() > 1 {
            out.push(digit(v >> 6));
        }
        if chunk.len() > 2 {
            out.push(digit(v));
        }
    }
}

fn base64url_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// Decodes unpadded base64url into `out`; `None` for any other character, an impossible length,
/// non-zero spare bits (so each byte string has exactly one encoding) or more than `out` holds.
pub fn base64url_decode(text: &[u8], out: &mut [u8]) -> Option<usize> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut n = 0;
    for chunk in text.chunks(4) {
        let mut v = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            v |= base64url_value(c)? << (18 - 6 * i);
        }
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        let keep = chunk.len() - 1;
        if bytes.get(keep..).is_some_and(|spare| spare.iter().any(|&b| b != 0)) {
            return None;
        }
        out.get_mut(n..n + keep)?.copy_from_slice(bytes.get(..keep)?);
        n += keep;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::auth::Op;
    use proptest::prelude::*;

    pub(crate) fn ring() -> Keyring {
        Keyring::from_toml("[[key]]\nid = \"k1\"\nsecret = \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA\"\n\n[[key]]\nid = \"k2\"\nsecret = \"YW5vdGhlci1zZWNyZXQtYW5vdGhlci1zZWNyZXQtYW5vdGhlcg\"\n").unwrap()
    }

    fn claims() -> Claims<'static> {
        Claims {
            key_id: "",
            id: TokenId([7; 16]),
            issued_s: 1_000,
            expires_s: 2_000,
            ops: Ops::of(&[Op::Read, Op::Claim, Op::Delete]),
            project: "tenant-a",
            queues: "agent-42-*",
            name: "agent-42",
        }
    }

    #[test]
    fn a_token_round_trips_and_names_its_key() {
        let keys = ring();
        let text = issue(&claims(), keys.newest()).unwrap();
        assert!(text.starts_with(PREFIX) && text.len() <= MAX_TOKEN_CHARS, "{text}");
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "URL-safe: {text}");
        let mut buf = [0u8; MAX_TOKEN_BYTES];
        let got = verify(&text, &mut buf, &keys, 1_500, 10_000).unwrap();
        assert_eq!(got, Claims { key_id: "k2", ..claims() }, "the newest key signs");
        let mut buf = [0u8; MAX_TOKEN_BYTES];
        assert_eq!(verify(&text, &mut buf, &keys, 2_000, 10_000), Err(TokenError::Expired));
        let mut buf = [0u8; MAX_TOKEN_BYTES];
        assert_eq!(verify(&text, &mut buf, &keys, 1_500, 999), Err(TokenError::TooLong));
    }

    #[test]
    fn every_key_of_the_ring_verifies_and_others_do_not() {
        let keys = ring();
        let old = issue(&claims(), keys.get("k1").unwrap()).unwrap();
        let mut buf = [0u8; MAX_TOKEN_BYTES];
        assert_eq!(verify(&old, &mut buf, &keys, 1_500, 10_000).unwrap().key_id, "k1");
        let other =
            Keyring::from_toml("[[key]]\nid = \"k1\"\nsecret = \"b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXI\"\n")
                .unwrap();
        let mut buf = [0u8; MAX_TOKEN_BYTES];
        assert_eq!(verify(&old, &mut buf, &other, 1_500, 10_000), Err(TokenError::BadSignature));
        let only_k2 = Keyring::from_toml(
            "[[key]]\nid = \"k2\"\nsecret = \"YW5vdGhlci1zZWNyZXQtYW5vdGhlci1zZWNyZXQtYW5vdGhlcg\"\n",
        )
        .unwrap();
        let mut buf = [0u8; MAX_TOKEN_BYTES];
        assert_eq!(verify(&old, &mut buf, &only_k2, 1_500, 10_000), Err(TokenError::UnknownKey));
    }

    #[test]
    fn issue_refuses_fields_a_token_cannot_carry() {
        let keys = ring();
        let bad = [
            Claims { project: "", ..claims() },
            Claims { project: "a\nb", ..claims() },
            Claims { queues: "a/b", ..claims() },
            Claims { queues: "", ..claims() },
            Claims { name: "0123456789abcdef0123456789abcdef", ..claims() },
            Claims { name: "has space", ..claims() },
            Claims { expires_s: 1_000, ..claims() },
            Claims { ops: Ops::NONE, ..claims() },
        ];
        for c in bad {
            assert!(issue(&c, keys.newest()).is_err(), "{c:?}");
        }
        let longest = "p".repeat(MAX_PROJECT_ID_BYTES);
        let glob = "q".repeat(MAX_GLOB_BYTES);
        let name = "n".repeat(MAX_NAME_BYTES);
        let c = Claims { project: &longest, queues: &glob, name: &name, ..claims() };
        let text = issue(&c, keys.newest()).unwrap();
        assert!(text.len() <= MAX_TOKEN_CHARS);
        let mut buf = [0u8; MAX_TOKEN_BYTES];
        assert_eq!(verify(&text, &mut buf, &keys, 1_500, 10_000).unwrap().project, longest);
    }

    #[test]
    fn base64url_is_canonical() {
        let mut out = [0u8; 8];
        for bytes in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\xfe\xfd\xfc"] {
            let mut text = String::new();
            base64url_encode(bytes, &mut text);
            assert_eq!(base64url_decode(text.as_bytes(), &mut out), Some(bytes.len()));
            assert_eq!(&out[..bytes.len()], bytes);
        }
        assert_eq!(base64url_decode(b"Zh", &mut out), None, "spare bits must be zero (Zg is `f`)");
        assert_eq!(base64url_decode(b"Z", &mut out), None);
        assert_eq!(base64url_decode(b"Zm9v+", &mut out), None, "standard base64's + is not base64url");
        assert_eq!(base64url_decode(b"AAAAAAAAAAAA", &mut out), None, "more than the buffer holds");
    }

    proptest! {
        /// Whatever the text, parsing and verifying never panic.
        #[test]
        fn any_text_is_refused_or_verified_without_panic(text in "(mrc1\\.)?[A-Za-z0-9_-]{0,800}") {
            let mut buf = [0u8; MAX_TOKEN_BYTES];
            let _ = verify(&text, &mut buf, &ring(), 1_500, 10_000);
        }

        /// Changing any character of a valid token, or cutting it, gets it refused: nothing of
        /// what it says (key id, id, times, operations, project, queues, name, MAC) can be
        /// altered without the key.
        #[test]
        fn an_altered_token_is_never_accepted(at in 0usize..1000, with in any::<u8>(), cut in 0usize..1000) {
            let keys = ring();
            let text = issue(&claims(), keys.newest()).unwrap();
            let mut bytes = text.clone().into_bytes();
            let at = PREFIX.len() + at % (bytes.len() - PREFIX.len());
            let replacement = BASE64URL[usize::from(with) % 64];
            prop_assume!(bytes[at] != replacement);
            bytes[at] = replacement;
            let altered = String::from_utf8(bytes).unwrap();
            let mut buf = [0u8; MAX_TOKEN_BYTES];
            prop_assert!(verify(&altered, &mut buf, &keys, 1_500, 10_000).is_err(), "{altered} was accepted");
            let cut = cut % text.len();
            let mut buf = [0u8; MAX_TOKEN_BYTES];
            prop_assert!(verify(&text[..cut], &mut buf, &keys, 1_500, 10_000).is_err());
        }

        /// Re-signing altered fields with a key the server does not have, or under the id of a
        /// key it has, never passes.
        #[test]
        fn fields_signed_by_another_key_are_refused(expires in 1_501u64..5_000, ops in 1u8..32, glob in "[a-z*]{1,10}") {
            let keys = ring();
            let forged_key = Keyring::from_toml("[[key]]\nid = \"k2\"\nsecret = \"Zm9yZ2VkLWZvcmdlZC1mb3JnZWQtZm9yZ2VkLWZvcmdlZA\"\n").unwrap();
            let forged = Claims { expires_s: expires, ops: Ops::from_bits(ops).unwrap(), queues: &glob, ..claims() };
            let text = issue(&forged, forged_key.newest()).unwrap();
            let mut buf = [0u8; MAX_TOKEN_BYTES];
            prop_assert_eq!(verify(&text, &mut buf, &keys, 1_500, 10_000), Err(TokenError::BadSignature));
        }
    }
}
