//! JSON in and out of the API.
//!
//! Request bodies are validated with simd-json. Message bodies must come back byte for byte as
//! posted, and simd-json's values do not remember where they came from, so [`parse_post`]
//! walks the (already validated) document once more to find the raw span of each `body`.
//! Responses are written by hand into the connection's reused buffer: bodies are copied in
//! verbatim, never re-serialized.
//!
//! # Depth
//! Everything that reads a document's values recurses once per level of nesting: the
//! [`Scanner`] below, serde's deserializer, and the drop, clone and serialization of a
//! `serde_json::Value` (metadata is stored and written back out). A body nested ten thousand
//! levels deep would overflow a shard's stack and abort the process, so every body passes
//! [`validate`] first: simd-json builds its tape without recursion, and the nesting is measured
//! on the tape, also without recursion, against `api.max_json_depth`. Only a document within
//! the limit reaches a recursive reader; a value accepted once (and stored) is as shallow.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;
use std::ops::Range;

use simd_json::Node;

use crate::config::{ApiLimits, MAX_JSON_DEPTH_CEILING};
use crate::error::ApiError;

/// Parses a small request body (metadata, claims, patches) into a generic value, once it is
/// known to be well-formed and at most `max_depth` levels deep.
pub fn parse_value(body: &[u8], max_depth: usize) -> Result<serde_json::Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid_body("Request body can not be empty"));
    }
    validate(body, max_depth)?;
    // Recurses as deep as the document, which `validate` bounded.
    let mut copy = body.to_vec();
    simd_json::serde::from_slice::<serde_json::Value>(&mut copy).map_err(|e| parse_error(&e))
}

/// Zaqar's answer to a body simd-json refuses.
fn parse_error(e: &simd_json::Error) -> ApiError {
    let text = e.to_string();
    if text.contains("too large") || text.contains("Overflow") {
        ApiError::invalid_body("JSON contains integer that is too large.")
    } else {
        ApiError::invalid_body("Request body could not be parsed.")
    }
}

/// One message of a post as read from the request, before defaults are applied.
pub struct PostedMessage {
    pub ttl_s: Option<i64>,
    pub delay_s: Option<i64>,
    /// Raw span of the message's `body` value within the request body.
    pub body: Range<usize>,
}

/// Validates a `{"messages": [...]}` document and returns each message's fields.
///
/// simd-json checks that the whole document is well-formed JSON and within
/// `limits.max_json_depth`; one structural pass over the original bytes then finds the messages,
/// their `ttl`/`delay` and the raw span of each `body` (simd-json's values do not remember where
/// they came from, and bodies are stored verbatim). The pass stops at the message after
/// `limits.max_messages_per_post`.
pub fn parse_post(body: &[u8], limits: &ApiLimits) -> Result<Vec<PostedMessage>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid_body("Request body can not be empty"));
    }
    validate(body, limits.max_json_depth)?;
    let max_messages = limits.max_messages_per_post;
    let unparsable = || ApiError::invalid_body("Request body could not be parsed.");
    let mut s = Scanner { doc: body, pos: 0 };
    if s.peek() != Some(b'{') {
        return Err(ApiError::invalid_request("No messages were found in the request body."));
    }
    let mut messages = None;
    let mut failure = None;
    let walked = s.object(|s, key| {
        if key != "messages" {
            return s.value();
        }
        if s.peek() != Some(b'[') {
            failure = Some(ApiError::invalid_body("Document type not supported."));
            return s.value();
        }
        let mut list = Vec::new();
        s.array(|s| {
            if list.len() == max_messages {
                failure.get_or_insert(ApiError::invalid_request(format!(
                    "Too many messages: a post may hold at most {max_messages}."
                )));
                // Stop the walk: nothing after this changes the answer.
                return None;
            }
            if s.peek() != Some(b'{') {
                failure.get_or_insert(ApiError::invalid_body("Document type not supported."));
                return s.value();
            }
            let mut m = PostedMessage { ttl_s: None, delay_s: None, body: 0..0 };
            let mut has_body = false;
            s.object(|s, key| {
                let start = s.pos;
                s.value()?;
                let span = start..s.pos;
                match key {
                    "body" => (m.body, has_body) = (span, true),
                    "ttl" | "delay" => match integer(s.doc.get(span)?) {
                        Some(n) if key == "ttl" => m.ttl_s = Some(n),
                        Some(n) => m.delay_s = Some(n),
                        None => {
                            failure.get_or_insert(ApiError::invalid_body(format!(
                                "The value of the \"{key}\" field must be a int."
                            )));
                        }
                    },
                    _ => {}
                }
                Some(())
            })?;
            if !has_body {
                failure.get_or_insert(ApiError::invalid_body("Missing \"body\" field."));
            }
            list.push(m);
            Some(())
        })?;
        messages = Some(list);
        Some(())
    });
    // The document is valid JSON, so the walk only stops early on purpose, after a failure.
    if let Some(err) = failure {
        return Err(err);
    }
    walked.ok_or_else(unparsable)?;
    messages.ok_or_else(|| ApiError::invalid_request("No messages were found in the request body."))
}

/// An integer literal (no fraction, no exponent) as JSON spells it.
fn integer(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

thread_local! {
    /// simd-json parses in place and needs scratch space: both are reused across the requests
    /// of a shard (one thread each, so no lock).
    static SCRATCH: RefCell<(Vec<u8>, Option<simd_json::Buffers>)> = const { RefCell::new((Vec::new(), None)) };
}

/// Checks that `doc` is well-formed JSON with simd-json, without building values, and that its
/// arrays and objects nest at most `max_depth` levels deep (`{}` is one level, `1` none).
pub fn validate(doc: &[u8], max_depth: usize) -> Result<(), ApiError> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let (copy, buffers) = &mut *scratch;
        copy.clear();
        copy.extend_from_slice(doc);
        let buffers = buffers.get_or_insert_with(|| simd_json::Buffers::new(doc.len()));
        let verdict = match simd_json::to_tape_with_buffers(copy, buffers) {
            Ok(tape) if nests_within(&tape.0, max_depth) => Ok(()),
            Ok(_) => Err(too_deep(max_depth)),
            Err(e) => Err(parse_error(&e)),
        };
        // Keep one unusually large request from pinning its memory.
        if copy.capacity() > 1 << 20 {
            *copy = Vec::new();
        }
        verdict
    })
}

fn too_deep(max_depth: usize) -> ApiError {
    ApiError::invalid_body(format!("JSON nesting is deeper than {max_depth} levels."))
}

/// Whether the containers of a simd-json tape nest at most `max_depth` deep. Iterative, with a
/// fixed stack: a container node's `count` is the number of nodes inside it, so the node index
/// where each open container ends is all there is to remember.
fn nests_within(tape: &[Node<'_>], max_depth: usize) -> bool {
    let max_depth = max_depth.min(MAX_JSON_DEPTH_CEILING);
    let mut ends = [0usize; MAX_JSON_DEPTH_CEILING];
    let mut depth = 0;
    for (i, node) in tape.iter().enumerate() {
        while depth > 0 && ends.get(depth - 1).is_some_and(|end| *end <= i) {
            depth -= 1;
        }
        if let Node::Array { count, .. } | Node::Object { count, .. } = node {
            if depth >= max_depth {
                return false;
            }
            if let Some(end) = ends.get_mut(depth) {
                *end = i + 1 + count;
            }
            depth += 1;
        }
    }
    true
}

/// A structural walker over validated JSON: it only finds where values start and end. It
/// recurses once per level of nesting, so it only ever walks documents [`validate`] accepted.
struct Scanner<'a> {
    doc: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while matches!(self.doc.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.doc.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    /// Skips a string and returns its text: borrowed unless it holds escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        // Jump between quotes and backslashes with memchr: bodies are often long strings.
        loop {
            let rest = self.doc.get(self.pos..)?;
            let at = memchr::memchr2(b'"', b'\\', rest)?;
            self.pos += at + 1;
            if rest.get(at) == Some(&b'"') {
                break;
            }
            escaped = true;
            self.pos += 1;
        }
        let raw = self.doc.get(start - 1..self.pos)?;
        if escaped {
            serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
        } else {
            std::str::from_utf8(raw.get(1..raw.len() - 1)?).ok().map(Cow::Borrowed)
        }
    }

    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(|s, _| s.value()),
            b'[' => self.array(|s| s.value()),
            b'"' => self.string().map(drop),
            _ => {
                while let Some(b) = self.doc.get(self.pos) {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
                Some(())
            }
        }
    }

    fn object(&mut self, mut member: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            self.ws();
            member(self, &key)?;
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.ws();
            element(self)?;
            if self.eat(b',').is_none() {
                return self.eat(b']');
            }
        }
    }
}

/// Writes `s` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}

/// Writes the `{"rel": "next", "href": ...}` entry of a page's `links`.
pub fn write_next_link(out: &mut Vec<u8>, href: &str) {
    out.extend_from_slice(b"{\"rel\":\"next\",\"href\":");
    write_str(out, href);
    out.push(b'}');
}

pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes any serializable value (metadata maps); not on the message hot path.
pub fn write_value<T: serde::Serialize>(out: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_come_back_byte_for_byte() {
        let doc = br#"{"x": 1, "messages": [ {"ttl": 60, "body" :  {"a": [1, 2.50, "\"}"]} }, {"body":null,"delay":5}, {"body": "s\u00e9"} ]}"#;
        let parsed = parse_post(doc, &ApiLimits::default()).unwrap();
        let texts: Vec<&[u8]> = parsed.iter().map(|m| &doc[m.body.clone()]).collect();
        assert_eq!(texts, vec![&br#"{"a": [1, 2.50, "\"}"]}"#[..], b"null", br#""s\u00e9""#]);
        assert_eq!(parsed[0].ttl_s, Some(60));
        assert_eq!(parsed[1].delay_s, Some(5));
    }

    #[test]
    fn post_errors_match_zaqar() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "Request body can not be empty"),
            (b"{", "Request body could not be parsed."),
            (b"[]", "No messages were found in the request body."),
            (br#"{"messages": {}}"#, "Document type not supported."),
            (br#"{"messages": [1]}"#, "Document type not supported."),
            (br#"{"messages": [{"ttl": 60}]}"#, "Missing \"body\" field."),
            (br#"{"messages": [{"ttl": "60", "body": 1}]}"#, "The value of the \"ttl\" field must be a int."),
        ];
        for (doc, text) in cases {
            let err = parse_post(doc, &ApiLimits::default()).err().unwrap();
            assert_eq!(err.to_string(), text, "{}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn escaped_keys_are_recognised() {
        let doc = br#"{"m\u0065ssages": [{"b\u006fdy": [1], "ttl": 60}]}"#;
        let parsed = parse_post(doc, &ApiLimits::default()).unwrap();
        assert_eq!(&doc[parsed[0].body.clone()], b"[1]");
        assert_eq!(parsed[0].ttl_s, Some(60));
    }

    #[test]
    fn only_integer_literals_are_ints() {
        assert_eq!(integer(b"60"), Some(60));
        assert_eq!(integer(b"-5"), Some(-5));
        for bad in [&b"60.0"[..], b"6e1", b"\"60\"", b"true", b"-", b""] {
            assert_eq!(integer(bad), None);
        }
    }

    /// `depth` levels of `open`, then `inner`, then the matching closers.
    fn nested(open: &str, close: &str, depth: usize, inner: &str) -> String {
        format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn nesting_is_measured_exactly() {
        for (doc, depth) in [
            ("1", 0),
            ("\"[[{{\"", 0),
            ("[]", 1),
            ("{}", 1),
            ("[1, [2], {\"a\": [3, {}]}]", 4),
            ("{\"a\": [[[]]], \"b\": 1}", 4),
            ("[[], [[]], []]", 3),
        ] {
            assert!(validate(doc.as_bytes(), depth).is_ok(), "{doc} is {depth} deep");
            if depth > 0 {
                let err = validate(doc.as_bytes(), depth - 1).unwrap_err();
                assert_eq!(err.to_string(), format!("JSON nesting is deeper than {} levels.", depth - 1), "{doc}");
            }
        }
    }

    #[test]
    fn deep_documents_are_refused_without_recursing() {
        let limits = ApiLimits::default();
        let max = limits.max_json_depth;
        let too_deep = format!("JSON nesting is deeper than {max} levels.");
        // Far beyond what any recursive reader survives on a 2 MiB stack.
        for depth in [max + 1, 1_000, 100_000, 1_000_000] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}"), ("[1,", "]")] {
                let doc = nested(open, close, depth, "0");
                assert_eq!(parse_value(doc.as_bytes(), max).unwrap_err().to_string(), too_deep, "{depth}");
                let post = format!("{{\"messages\": [{{\"body\": {doc}}}]}}");
                assert_eq!(parse_post(post.as_bytes(), &limits).err().unwrap().to_string(), too_deep);
            }
        }
        // The limit counts the whole document: a body gets what the envelope leaves.
        let fits = format!("{{\"messages\": [{{\"body\": {}}}]}}", nested("[", "]", max - 3, "0"));
        assert_eq!(parse_post(fits.as_bytes(), &limits).unwrap().len(), 1);
        let over = format!("{{\"messages\": [{{\"body\": {}}}]}}", nested("[", "]", max - 2, "0"));
        assert!(parse_post(over.as_bytes(), &limits).is_err());
        assert!(parse_value(nested("[", "]", max, "0").as_bytes(), max).is_ok());
    }

    #[test]
    fn broken_json_is_unparsable_however_deep() {
        let doc = "[".repeat(100_000);
        assert_eq!(validate(doc.as_bytes(), 64).unwrap_err().to_string(), "Request body could not be parsed.");
        let huge = parse_value(b"{\"ttl\": 123456789012345678901234567890}", 64).unwrap_err();
        assert_eq!(huge.to_string(), "Request body could not be parsed.");
    }

    #[test]
    fn posts_carry_a_bounded_number_of_messages() {
        let limits = ApiLimits { max_messages_per_post: 3, ..ApiLimits::default() };
        let post = |n: usize| format!("{{\"messages\": [{}]}}", vec!["{\"body\": 0}"; n].join(","));
        assert_eq!(parse_post(post(3).as_bytes(), &limits).unwrap().len(), 3);
        let err = parse_post(post(4).as_bytes(), &limits).err().unwrap();
        assert_eq!(err.to_string(), "Too many messages: a post may hold at most 3.");
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\u0001é\"".as_bytes());
    }
}
