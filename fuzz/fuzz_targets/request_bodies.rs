//! Feeds whole request bodies to the body reader of every endpoint that takes one (message post,
//! queue PUT and PATCH, claim create and renew, share, purge, an out-of-scope PUT), the functions
//! the API itself calls (`marconi::api::bodies`).
//!
//! The first byte picks the endpoint (low 3 bits) and, when its high bit is set, makes the second
//! byte a nesting amplifier: the rest of the input is wrapped in `second × 64` levels of arrays or
//! objects (up to 16,320). The readers run on a thread with a small stack ([`STACK_BYTES`]), so
//! any reader that recursed before checking the depth overflows it and the fuzzer reports the
//! crash, while readers that check first need a few kilobytes for the 64 levels they allow.
//!
//! Beyond "never panics, never overflows", it checks what an accepted body promises: it nests no
//! deeper than `api.max_json_depth`, a post holds at most `api.max_messages_per_post` messages whose
//! bodies are valid JSON, and metadata (put or patched) serializes to JSON that the start-up replay
//! (serde_json, recursion limit 128) reads back.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run request_bodies` from the repository root, or
//! `scripts/fuzz.sh`.
#![no_main]

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use marconi::api::bodies;
use marconi::config::{ApiLimits, Config};
use marconi::queue::Metadata;

/// Stack of the thread the readers run on: far less than a shard's 2 MiB.
const STACK_BYTES: usize = 256 * 1024;

/// How deep arrays and objects nest in `doc`, counting brackets outside strings: exact for valid
/// JSON, and an independent check of the server's tape-based measure.
fn depth(doc: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in doc {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Metadata as the store keeps it must come back at start-up.
fn check_stored(meta: &Metadata, limits: &ApiLimits) {
    let json = meta.to_json();
    assert!(depth(&json) <= limits.max_json_depth, "stored metadata deeper than accepted");
    serde_json::from_slice::<serde_json::Value>(&json).expect("replay reads stored metadata back");
}

fn amplified(selector: u8, data: &[u8]) -> Vec<u8> {
    let Some((&times, rest)) = data.split_first() else { return Vec::new() };
    let levels = usize::from(times) * 64;
    let (open, close): (&[u8], &[u8]) = if selector & 0x40 != 0 { (b"{\"a\":", b"}") } else { (b"[", b"]") };
    let mut doc = Vec::with_capacity(levels * (open.len() + close.len()) + rest.len());
    for _ in 0..levels {
        doc.extend_from_slice(open);
    }
    doc.extend_from_slice(rest);
    for _ in 0..levels {
        doc.extend_from_slice(close);
    }
    doc
}

/// The small-stack thread that reads every input (one for the whole run: a thread per input
/// would cost more than the reading), and the way back of its verdicts.
struct Reader {
    inputs: mpsc::Sender<Vec<u8>>,
    verdicts: mpsc::Receiver<std::thread::Result<()>>,
}

fn reader() -> &'static Mutex<Reader> {
    static READER: OnceLock<Mutex<Reader>> = OnceLock::new();
    READER.get_or_init(|| {
        let (inputs, inbox) = mpsc::channel::<Vec<u8>>();
        let (outbox, verdicts) = mpsc::channel();
        std::thread::Builder::new()
            .stack_size(STACK_BYTES)
            .spawn(move || {
                for input in inbox {
                    let verdict = std::panic::catch_unwind(AssertUnwindSafe(|| read(&input)));
                    if outbox.send(verdict).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the reader thread");
        Mutex::new(Reader { inputs, verdicts })
    })
}

fuzz_target!(|input: &[u8]| {
    let reader = reader().lock().expect("one input at a time");
    reader.inputs.send(input.to_vec()).expect("the reader thread lives");
    // A panic on the reader is the fuzzer's finding: raise it here, where libFuzzer looks.
    if let Err(panic) = reader.verdicts.recv().expect("the reader thread answers") {
        std::panic::resume_unwind(panic);
    }
});

fn read(input: &[u8]) {
    let Some((&selector, data)) = input.split_first() else { return };
    let owned;
    let body = if selector & 0x80 != 0 {
        owned = amplified(selector, data);
        &owned[..]
    } else {
        data
    };
    let mut config = Config::default();
    config.signed_url.secret_key = Some("fuzz".into());
    let limits = config.api.clone();
    let accepted = match selector & 7 {
        0 => match bodies::messages(body, &limits) {
            Ok((messages, stored)) => {
                assert!(!messages.is_empty() && messages.len() <= limits.max_messages_per_post);
                for m in &messages {
                    let raw = &stored[m.body.start as usize..m.body.end as usize];
                    assert!(depth(raw) + 3 <= limits.max_json_depth, "a body deeper than its post");
                    serde_json::from_slice::<serde_json::Value>(raw).expect("a stored body is JSON");
                }
                true
            }
            Err(_) => false,
        },
        1 => match bodies::queue_metadata(body, &limits) {
            Ok(meta) => {
                check_stored(&meta, &limits);
                true
            }
            Err(_) => false,
        },
        2 => match bodies::queue_patch(body, &limits) {
            Ok(ops) => {
                if let Ok(meta) = Metadata::default().apply_patch(&ops, &limits) {
                    check_stored(&meta, &limits);
                }
                true
            }
            Err(_) => false,
        },
        3 | 4 => match bodies::claim(body, &limits, selector & 7 == 3) {
            Ok((ttl, grace)) => {
                assert!(ttl >= 60 && ttl <= limits.max_claim_ttl_s && grace <= limits.max_claim_grace_s);
                true
            }
            Err(_) => false,
        },
        5 => bodies::share(body, &config, "q", 1_700_000_000).is_ok(),
        6 => bodies::purge(body, &limits).is_ok(),
        _ => bodies::out_of_scope(body, &limits).is_ok(),
    };
    if accepted {
        assert!(depth(body) <= limits.max_json_depth, "accepted a body deeper than the limit");
    }
}
