//! Feeds arbitrary text to the marconi token verifier (`auth.mode = token`), and arbitrary
//! alterations to a valid token: nothing panics, and a token that is not exactly the one the
//! key signed is never accepted.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run token_verify` from the repository root, or
//! `scripts/fuzz.sh token_verify`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marconi::auth::token::{self, Claims, TokenId};
use marconi::auth::{token_buf, Keyring, Op, Ops};

const KEYS: &str = "[[key]]\nid = \"k1\"\nsecret = \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA\"\n";
const NOW_S: u64 = 1_500;
const MAX_TTL_S: u64 = 10_000;

fuzz_target!(|data: &[u8]| {
    let Ok(keys) = Keyring::from_toml(KEYS) else { return };
    // Arbitrary text, with and without the prefix.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = token::verify(text, &mut token_buf(), &keys, NOW_S, MAX_TTL_S);
        let prefixed = format!("{}{text}", token::PREFIX);
        let _ = token::verify(&prefixed, &mut token_buf(), &keys, NOW_S, MAX_TTL_S);
    }
    // A valid token with the input XORed into its text: accepted only if unchanged.
    let claims = Claims {
        key_id: "k1",
        id: TokenId([7; 16]),
        issued_s: 1_000,
        expires_s: 2_000,
        ops: Ops::of(&[Op::Read, Op::Claim]),
        project: "tenant-a",
        queues: "agent-42-*",
        name: "agent-42",
    };
    let Ok(valid) = token::issue(&claims, keys.newest()) else { return };
    let mut bytes = valid.clone().into_bytes();
    for (b, x) in bytes.iter_mut().zip(data) {
        *b ^= x;
    }
    if let Ok(altered) = String::from_utf8(bytes) {
        let mut buf = token_buf();
        let accepted = token::verify(&altered, &mut buf, &keys, NOW_S, MAX_TTL_S).is_ok();
        assert!(!accepted || altered == valid, "an altered token was accepted: {altered}");
    }
});
