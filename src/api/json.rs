//! JSON in and out of the API.
//!
//! Request bodies are validated with simd-json. Message bodies must come back byte for byte as
//! posted, and simd-json's values do not remember where they came from, so [`message_bodies`]
//! walks the (already validated) document once more to find the raw span of each `body`.
//! Responses are written by hand into the connection's reused buffer: bodies are copied in
//! verbatim, never re-serialized.

use std::io::Write;
use std::ops::Range;

use simd_json::prelude::*;

use crate::error::ApiError;

/// Parses a small request body (metadata, claims, patches) into a generic value.
pub fn parse_value(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid_body("Request body can not be empty"));
    }
    let mut copy = body.to_vec();
    simd_json::serde::from_slice::<serde_json::Value>(&mut copy).map_err(|e| {
        if e.to_string().contains("too large") || e.to_string().contains("Overflow") {
            ApiError::invalid_body("JSON contains integer that is too large.")
        } else {
            ApiError::invalid_body("Request body could not be parsed.")
        }
    })
}

/// One message of a post as read from the request, before defaults are applied.
pub struct PostedMessage {
    pub ttl_s: Option<i64>,
    pub delay_s: Option<i64>,
    /// Raw span of the message's `body` value within the request body.
    pub body: Range<usize>,
}

/// Validates a `{"messages": [...]}` document and returns each message's fields.
pub fn parse_post(body: &[u8]) -> Result<Vec<PostedMessage>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid_body("Request body can not be empty"));
    }
    let mut copy = body.to_vec();
    let doc = simd_json::to_borrowed_value(&mut copy)
        .map_err(|_| ApiError::invalid_body("Request body could not be parsed."))?;
    let messages = match doc.as_object().and_then(|o| o.get("messages")) {
        Some(m) => m,
        None => return Err(ApiError::invalid_request("No messages were found in the request body.")),
    };
    let list = messages.as_array().ok_or_else(|| ApiError::invalid_body("Document type not supported."))?;
    let spans = message_bodies(body).ok_or_else(|| ApiError::invalid_body("Request body could not be parsed."))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, message) in list.iter().enumerate() {
        let obj = message.as_object().ok_or_else(|| ApiError::invalid_body("Document type not supported."))?;
        let body = match (obj.get("body"), spans.get(i).cloned().flatten()) {
            (Some(_), Some(span)) => span,
            _ => return Err(ApiError::invalid_body("Missing \"body\" field.")),
        };
        out.push(PostedMessage {
            ttl_s: int_field(obj.get("ttl"), "ttl")?,
            delay_s: int_field(obj.get("delay"), "delay")?,
            body,
        });
    }
    Ok(out)
}

fn int_field(value: Option<&simd_json::BorrowedValue<'_>>, name: &str) -> Result<Option<i64>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|_| v.is_i64() || v.is_u64())
            .map(Some)
            .ok_or_else(|| ApiError::invalid_body(format!("The value of the \"{name}\" field must be a int."))),
    }
}

/// For each element of the top-level `messages` array, the span of its `body` value (the last one
/// if repeated), or `None` when it has none. Expects a document simd-json already accepted.
pub fn message_bodies(doc: &[u8]) -> Option<Vec<Option<Range<usize>>>> {
    let mut s = Scanner { doc, pos: 0 };
    let mut found = None;
    s.object(|s, key| {
        if key == "messages" && s.peek() == Some(b'[') {
            let mut spans = Vec::new();
            s.array(|s| {
                if s.peek() == Some(b'{') {
                    let mut span = None;
                    s.object(|s, key| {
                        if key == "body" {
                            let start = s.pos;
                            s.value()?;
                            span = Some(start..s.pos);
                            Some(())
                        } else {
                            s.value()
                        }
                    })?;
                    spans.push(span);
                    Some(())
                } else {
                    spans.push(None);
                    s.value()
                }
            })?;
            found = Some(spans);
            Some(())
        } else {
            s.value()
        }
    })?;
    found.or(Some(Vec::new()))
}

/// A structural walker over validated JSON: it only finds where values start and end.
struct Scanner<'a> {
    doc: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
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

    /// Skips a string and returns its decoded text.
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let b = *self.doc.get(self.pos)?;
            self.pos += 1;
            match b {
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                }
                b'"' => break,
                _ => {}
            }
        }
        let raw = self.doc.get(start - 1..self.pos)?;
        if escaped {
            serde_json::from_slice(raw).ok()
        } else {
            std::str::from_utf8(raw.get(1..raw.len() - 1)?).ok().map(str::to_owned)
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

pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    let _ = write!(out, "{n}");
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
        let parsed = parse_post(doc).unwrap();
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
            let err = parse_post(doc).err().unwrap();
            assert_eq!(err.to_string(), text, "{}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn escaped_keys_are_recognised() {
        let doc = br#"{"m\u0065ssages": [{"b\u006fdy": [1]}]}"#;
        assert_eq!(message_bodies(doc).unwrap(), vec![Some(33..36)]);
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\u0001é\"".as_bytes());
    }
}
