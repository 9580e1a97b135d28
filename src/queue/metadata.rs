//! Queue metadata: the JSON object a user attaches to a queue, and the reserved (`_`-prefixed)
//! keys in it that change how the queue behaves.
//!
//! The object is kept exactly as the user set it, so `GET` shows what was `PUT`; the reserved keys
//! are parsed once into [`QueueSettings`] so that the hot paths (post, claim) never look at JSON.
//! Validation follows Zaqar's `queue_metadata_putting` check for check, including its messages and
//! Python's truthiness quirks (a falsy value skips the type check; `true` counts as the integer 1),
//! because clients match on those texts.

use serde_json::{Map, Value};

use crate::config::{ApiLimits, MAX_QUEUE_NAME_BYTES, MIN_MESSAGE_TTL_S};
use crate::queue::EngineError;

/// Reserved keys with a default, in the order Zaqar fills them in.
const RESERVED_KEYS: [&str; 7] = [
    "_max_messages_post_size",
    "_default_message_ttl",
    "_default_message_delay",
    "_dead_letter_queue",
    "_dead_letter_queue_messages_ttl",
    "_max_claim_count",
    "_enable_encrypt_messages",
];

/// The reserved keys of a queue's metadata, parsed. `None` means "not set": the server default
/// applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSettings {
    pub default_message_ttl_s: Option<u32>,
    pub max_messages_post_size: Option<u32>,
    pub default_message_delay_s: Option<u32>,
    /// Clamped into `u32`: a negative count behaves as 0 (every claim attempt moves the message),
    /// a huge one as "never".
    pub max_claim_count: Option<u32>,
    pub dead_letter_queue: Option<Box<str>>,
    pub dead_letter_queue_messages_ttl_s: Option<u32>,
    pub enable_encrypt_messages: bool,
}

impl QueueSettings {
    /// The dead-letter queue and its threshold, when both are set (Zaqar needs both).
    pub fn dead_letter(&self) -> Option<(&str, u32)> {
        Some((self.dead_letter_queue.as_deref()?, self.max_claim_count?))
    }
}

/// A queue's metadata object and its parsed reserved keys. Only built through validation, so a
/// `Metadata` always holds acceptable reserved values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    map: Map<String, Value>,
    settings: QueueSettings,
}

/// One JSON-Patch operation on `/metadata/<key>`, already parsed by the API layer.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOp {
    Add { key: String, value: Value },
    Replace { key: String, value: Value },
    Remove { key: String },
}

impl Metadata {
    /// Validates the reserved keys of `map` as Zaqar does on `PUT` and `PATCH`.
    pub fn from_map(map: Map<String, Value>, limits: &ApiLimits) -> Result<Metadata, EngineError> {
        let settings = parse_settings(&map, limits)?;
        Ok(Metadata { map, settings })
    }

    /// Metadata read back from the log (replay). Validated as on `PUT`; when today's limits refuse
    /// what an earlier configuration accepted, the object is kept as stored with default settings
    /// (and a warning) rather than lost. `None` for an empty object or bytes that are not one.
    pub(crate) fn from_stored(json: &[u8], limits: &ApiLimits) -> Option<Metadata> {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(json) else {
            return None;
        };
        if map.is_empty() {
            return None;
        }
        match parse_settings(&map, limits) {
            Ok(settings) => Some(Metadata { map, settings }),
            Err(err) => {
                tracing::warn!(%err, "stored queue metadata no longer validates; its reserved keys are ignored");
                Some(Metadata { map, settings: QueueSettings::default() })
            }
        }
    }

    /// The object as stored, reserved keys only where the user set them.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.map
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The object as `GET /v2/queues/{name}` shows it: reserved keys that are missing or falsy
    /// (Python truthiness, as in Zaqar) replaced by their defaults.
    pub fn with_defaults(&self, limits: &ApiLimits) -> Map<String, Value> {
        let mut out = self.map.clone();
        for key in RESERVED_KEYS {
            if out.get(key).is_some_and(is_truthy) {
                continue;
            }
            let default = match key {
                "_max_messages_post_size" => Value::from(limits.max_messages_post_size_bytes),
                "_default_message_ttl" => Value::from(limits.default_message_ttl_s),
                "_default_message_delay" => Value::from(0),
                "_enable_encrypt_messages" => Value::Bool(false),
                _ => Value::Null,
            };
            out.insert(key.to_owned(), default);
        }
        out
    }

    /// The stored object as compact JSON, for the store's `QueueUpsert` record.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a map of JSON values into a Vec cannot fail; logging `{}` instead would
        // lose the metadata at the next restart.
        match serde_json::to_vec(&self.map) {
            Ok(json) => json,
            Err(err) => panic!("queue metadata did not serialize: {err}"),
        }
    }

    /// Applies JSON-Patch operations in order, with the conflict rules of Zaqar's queue `PATCH`:
    /// `replace` needs the key to exist unless it is reserved, `remove` of an absent reserved key
    /// is a no-op (it reverts to its default). The result is validated as a whole, and its size is
    /// bounded by `max_queue_metadata_bytes` because many small patches could otherwise grow it
    /// without limit.
    pub fn apply_patch(&self, ops: &[PatchOp], limits: &ApiLimits) -> Result<Metadata, EngineError> {
        let mut map = self.map.clone();
        for op in ops {
            match op {
                PatchOp::Add { key, value } => {
                    map.insert(key.clone(), value.clone());
                }
                PatchOp::Replace { key, value } => {
                    if !map.contains_key(key) && !is_reserved(key) {
                        return Err(EngineError::Conflict(format!("Can't replace non-existent object {key}.")));
                    }
                    map.insert(key.clone(), value.clone());
                }
                PatchOp::Remove { key } => {
                    if map.remove(key).is_none() && !is_reserved(key) {
                        return Err(EngineError::Conflict(format!("Can't remove non-existent object {key}.")));
                    }
                }
            }
        }
        let size = serde_json::to_vec(&map).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > limits.max_queue_metadata_bytes {
            return Err(EngineError::Invalid(format!(
                "Queue metadata is too large. Max size: {}",
                limits.max_queue_metadata_bytes
            )));
        }
        Metadata::from_map(map, limits)
    }
}

fn is_reserved(key: &str) -> bool {
    RESERVED_KEYS.contains(&key)
}

/// Python's truthiness of a JSON value, which Zaqar's checks rely on.
fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// What Python's `isinstance(v, int)` sees: integers and booleans.
fn as_python_int(v: &Value) -> Option<i128> {
    match v {
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}

/// An integer reserved key. `Ok(None)` when absent or null. A truthy non-integer fails the type
/// check; a falsy non-integer (`0.0`, `""`, `[]`) slips past it in Zaqar and then fails the range
/// check (or crashes there), so it gets `range_error` here, or the type error when the key has no
/// range.
fn int_key(
    map: &Map<String, Value>,
    key: &str,
    range: Option<(i128, i128, &dyn Fn() -> String)>,
) -> Result<Option<i128>, EngineError> {
    let Some(v) = map.get(key).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let type_error = || EngineError::Invalid(format!("{key} must be integer."));
    let n = match as_python_int(v) {
        Some(n) => n,
        None if is_truthy(v) => return Err(type_error()),
        None => match &range {
            Some((_, _, message)) => return Err(EngineError::Invalid(message())),
            None => return Err(type_error()),
        },
    };
    if let Some((lo, hi, message)) = range {
        if n < lo || n > hi {
            return Err(EngineError::Invalid(message()));
        }
    }
    Ok(Some(n))
}

fn clamp_u32(n: i128) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

fn parse_settings(map: &Map<String, Value>, limits: &ApiLimits) -> Result<QueueSettings, EngineError> {
    let mut s = QueueSettings::default();
    if map.is_empty() {
        return Ok(s);
    }
    let min_ttl = i128::from(MIN_MESSAGE_TTL_S);
    let max_ttl = i128::from(limits.max_message_ttl_s);

    let ttl_message = || {
        format!(
            "_default_message_ttl can not exceed {} seconds, and must be at least {} seconds long.",
            limits.max_message_ttl_s, MIN_MESSAGE_TTL_S
        )
    };
    s.default_message_ttl_s =
        int_key(map, "_default_message_ttl", Some((min_ttl, max_ttl, &ttl_message)))?.map(clamp_u32);

    let size_message = || {
        // The double space is Zaqar's.
        format!(
            "_max_messages_post_size can not exceed {},  and must be at least greater than 0.",
            limits.max_messages_post_size_bytes
        )
    };
    let max_size = i128::try_from(limits.max_messages_post_size_bytes).unwrap_or(i128::MAX);
    s.max_messages_post_size =
        int_key(map, "_max_messages_post_size", Some((1, max_size, &size_message)))?.map(clamp_u32);

    s.max_claim_count = int_key(map, "_max_claim_count", None)?.map(clamp_u32);

    let dlq_ttl_message = || {
        format!(
            "The TTL for a message may not exceed {} seconds, and must be at least {} seconds long.",
            limits.max_message_ttl_s, MIN_MESSAGE_TTL_S
        )
    };
    s.dead_letter_queue_messages_ttl_s =
        int_key(map, "_dead_letter_queue_messages_ttl", Some((min_ttl, max_ttl, &dlq_ttl_message)))?.map(clamp_u32);

    let delay_message = || {
        format!("The TTL can not exceed {} seconds, and must be at least 0 seconds long.", limits.max_message_delay_s)
    };
    let max_delay = i128::from(limits.max_message_delay_s);
    s.default_message_delay_s =
        int_key(map, "_default_message_delay", Some((0, max_delay, &delay_message)))?.map(clamp_u32);

    match map.get("_enable_encrypt_messages") {
        Some(Value::Bool(b)) => s.enable_encrypt_messages = *b,
        Some(v) if is_truthy(v) => {
            return Err(EngineError::Invalid("_enable_encrypt_messages must be boolean.".into()));
        }
        _ => {}
    }

    // Zaqar does not check this key at all; a DLQ that can never exist is a silent failure, so
    // it must at least be a valid queue name (divergence 7).
    match map.get("_dead_letter_queue") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => {
            if !is_valid_queue_name(name) {
                return Err(EngineError::Invalid(
                    "_dead_letter_queue must be a valid queue name: 1 to 64 ASCII letters, digits, \
                     underscores, dots and dashes."
                        .into(),
                ));
            }
            s.dead_letter_queue = Some(name.as_str().into());
        }
        Some(_) => return Err(EngineError::Invalid("_dead_letter_queue must be a string.".into())),
    }
    Ok(s)
}

/// The rule of queue names, in paths and as dead-letter targets: Zaqar's `^[A-Za-z0-9_.-]{1,64}$`,
/// except `.` and `..`. As path segments those are dot-segments, which clients and proxies remove
/// (RFC 3986 §5.2.4), so such a queue's `href` would name another resource (`/v2/queues/..` is
/// `/v2`).
pub fn is_valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_QUEUE_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name != "."
        && name != ".."
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn limits() -> ApiLimits {
        ApiLimits::default()
    }

    fn meta(v: Value) -> Result<Metadata, EngineError> {
        match v {
            Value::Object(map) => Metadata::from_map(map, &limits()),
            _ => panic!("test metadata must be an object"),
        }
    }

    fn invalid(v: Value) -> String {
        match meta(v) {
            Err(EngineError::Invalid(text)) => text,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn parses_reserved_keys_into_settings() {
        let m = meta(json!({
            "owner": "ops",
            "_default_message_ttl": 999,
            "_max_messages_post_size": 1023,
            "_default_message_delay": 30,
            "_max_claim_count": 3,
            "_dead_letter_queue": "dlq",
            "_dead_letter_queue_messages_ttl": 120,
            "_enable_encrypt_messages": true,
        }))
        .unwrap();
        let s = m.settings();
        assert_eq!(s.default_message_ttl_s, Some(999));
        assert_eq!(s.max_messages_post_size, Some(1023));
        assert_eq!(s.default_message_delay_s, Some(30));
        assert_eq!(s.max_claim_count, Some(3));
        assert_eq!(s.dead_letter_queue.as_deref(), Some("dlq"));
        assert_eq!(s.dead_letter_queue_messages_ttl_s, Some(120));
        assert!(s.enable_encrypt_messages);
        assert_eq!(s.dead_letter(), Some(("dlq", 3)));
        assert_eq!(m.as_map().get("owner"), Some(&json!("ops")));
    }

    #[test]
    fn rejects_bad_reserved_values_with_zaqar_texts() {
        assert_eq!(invalid(json!({"_default_message_ttl": "60"})), "_default_message_ttl must be integer.");
        assert_eq!(invalid(json!({"_default_message_ttl": 1.5})), "_default_message_ttl must be integer.");
        assert_eq!(
            invalid(json!({"_default_message_ttl": 59})),
            "_default_message_ttl can not exceed 1209600 seconds, and must be at least 60 seconds long."
        );
        assert_eq!(
            invalid(json!({"_default_message_ttl": 1_209_601})),
            "_default_message_ttl can not exceed 1209600 seconds, and must be at least 60 seconds long."
        );
        assert_eq!(
            invalid(json!({"_max_messages_post_size": 0})),
            "_max_messages_post_size can not exceed 262144,  and must be at least greater than 0."
        );
        assert_eq!(
            invalid(json!({"_max_messages_post_size": 262_145})),
            "_max_messages_post_size can not exceed 262144,  and must be at least greater than 0."
        );
        assert_eq!(invalid(json!({"_max_messages_post_size": "x"})), "_max_messages_post_size must be integer.");
        assert_eq!(invalid(json!({"_max_claim_count": "3"})), "_max_claim_count must be integer.");
        assert_eq!(
            invalid(json!({"_dead_letter_queue_messages_ttl": 10})),
            "The TTL for a message may not exceed 1209600 seconds, and must be at least 60 seconds long."
        );
        assert_eq!(
            invalid(json!({"_dead_letter_queue_messages_ttl": [1]})),
            "_dead_letter_queue_messages_ttl must be integer."
        );
        assert_eq!(
            invalid(json!({"_default_message_delay": 901})),
            "The TTL can not exceed 900 seconds, and must be at least 0 seconds long."
        );
        assert_eq!(
            invalid(json!({"_default_message_delay": -1})),
            "The TTL can not exceed 900 seconds, and must be at least 0 seconds long."
        );
        assert_eq!(invalid(json!({"_default_message_delay": "5"})), "_default_message_delay must be integer.");
        assert_eq!(invalid(json!({"_enable_encrypt_messages": 1})), "_enable_encrypt_messages must be boolean.");
        assert_eq!(invalid(json!({"_dead_letter_queue": 5})), "_dead_letter_queue must be a string.");
        assert!(invalid(json!({"_dead_letter_queue": "bad name"})).starts_with("_dead_letter_queue must be a valid"));
        assert!(invalid(json!({"_dead_letter_queue": ""})).starts_with("_dead_letter_queue must be a valid"));
    }

    #[test]
    fn limits_come_from_config() {
        let mut l = limits();
        l.max_message_ttl_s = 7200;
        let Value::Object(map) = json!({"_default_message_ttl": 7201}) else { unreachable!() };
        assert_eq!(
            Metadata::from_map(map, &l),
            Err(EngineError::Invalid(
                "_default_message_ttl can not exceed 7200 seconds, and must be at least 60 seconds long.".into()
            ))
        );
    }

    #[test]
    fn python_quirks_are_kept() {
        // Null means unset; a falsy encrypt flag is fine; a zero delay is valid.
        let m = meta(json!({"_default_message_ttl": null, "_enable_encrypt_messages": 0, "_default_message_delay": 0}))
            .unwrap();
        assert_eq!(m.settings().default_message_ttl_s, None);
        assert!(!m.settings().enable_encrypt_messages);
        assert_eq!(m.settings().default_message_delay_s, Some(0));
        // A falsy non-integer skips Zaqar's type check and fails its range check.
        assert!(invalid(json!({"_default_message_ttl": ""})).starts_with("_default_message_ttl can not exceed"));
        // Negative claim counts are accepted (as in Zaqar) and behave as zero.
        assert_eq!(meta(json!({"_max_claim_count": -4})).unwrap().settings().max_claim_count, Some(0));
        assert_eq!(meta(json!({"_max_claim_count": 1u64 << 40})).unwrap().settings().max_claim_count, Some(u32::MAX));
    }

    #[test]
    fn defaults_fill_missing_and_falsy_reserved_keys() {
        let m = meta(json!({"description": "invoices", "_max_claim_count": 0, "_default_message_ttl": 300})).unwrap();
        let full = m.with_defaults(&limits());
        assert_eq!(
            Value::Object(full),
            json!({
                "description": "invoices",
                "_default_message_ttl": 300,
                "_max_messages_post_size": 262144,
                "_default_message_delay": 0,
                "_dead_letter_queue": null,
                "_dead_letter_queue_messages_ttl": null,
                "_max_claim_count": null,
                "_enable_encrypt_messages": false,
            })
        );
        // The stored object itself is untouched.
        assert_eq!(m.as_map().len(), 3);
        assert!(Metadata::default().is_empty());
    }

    #[test]
    fn to_json_round_trips() {
        let m = meta(json!({"a": [1, 2], "_default_message_ttl": 120})).unwrap();
        let back: Map<String, Value> = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(&back, m.as_map());
        assert_eq!(Metadata::default().to_json(), b"{}");
    }

    #[test]
    fn patch_follows_zaqar_conflict_rules() {
        let l = limits();
        let m = meta(json!({"key1": 1, "_default_message_ttl": 120})).unwrap();
        let out = m
            .apply_patch(
                &[
                    PatchOp::Add { key: "key2".into(), value: json!("two") },
                    PatchOp::Replace { key: "key1".into(), value: json!(11) },
                    PatchOp::Replace { key: "_default_message_delay".into(), value: json!(5) },
                    PatchOp::Remove { key: "_default_message_ttl".into() },
                    PatchOp::Remove { key: "_max_claim_count".into() },
                ],
                &l,
            )
            .unwrap();
        assert_eq!(
            Value::Object(out.as_map().clone()),
            json!({"key1": 11, "key2": "two", "_default_message_delay": 5})
        );
        assert_eq!(out.settings().default_message_delay_s, Some(5));
        assert_eq!(out.settings().default_message_ttl_s, None);

        assert_eq!(
            m.apply_patch(&[PatchOp::Replace { key: "key3".into(), value: json!(1) }], &l),
            Err(EngineError::Conflict("Can't replace non-existent object key3.".into()))
        );
        assert_eq!(
            m.apply_patch(&[PatchOp::Remove { key: "key3".into() }], &l),
            Err(EngineError::Conflict("Can't remove non-existent object key3.".into()))
        );
        // The result is validated.
        assert_eq!(
            m.apply_patch(&[PatchOp::Add { key: "_default_message_ttl".into(), value: json!(1) }], &l),
            Err(EngineError::Invalid(
                "_default_message_ttl can not exceed 1209600 seconds, and must be at least 60 seconds long.".into()
            ))
        );
        // And bounded in size.
        let mut small = l.clone();
        small.max_queue_metadata_bytes = 16;
        assert!(matches!(
            m.apply_patch(&[PatchOp::Add { key: "k".into(), value: json!("x".repeat(20)) }], &small),
            Err(EngineError::Invalid(t)) if t == "Queue metadata is too large. Max size: 16"
        ));
    }

    #[test]
    fn queue_name_rule() {
        assert!(is_valid_queue_name("a.b-c_D9"));
        assert!(is_valid_queue_name(&"x".repeat(64)));
        assert!(!is_valid_queue_name(&"x".repeat(65)));
        assert!(!is_valid_queue_name("a/b"));
        assert!(!is_valid_queue_name("é"));
        assert!(!is_valid_queue_name(""));
        assert!(!is_valid_queue_name("."));
        assert!(!is_valid_queue_name(".."));
        assert!(is_valid_queue_name("..."));
        assert!(is_valid_queue_name(".hidden"));
    }
}
