//! Zaqar v2 wire formats: the message bodies the generator posts and the response shapes it
//! reads back.
//!
//! Every posted message body is tagged with the run id, the producer, a per-producer sequence
//! number, the queue it was sent to and the send time. That is what makes checking possible
//! without trusting server ids: a duplicate is the same (producer, seq) delivered twice, a
//! cross-queue leak is a tag with the wrong queue, and delivery latency comes from the tag.

use std::fmt;
use std::io::Write;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// Unique identity of a message within a run: producer in the high half, sequence in the low.
pub fn msg_key(producer: u32, seq: u32) -> u64 {
    (u64::from(producer) << 32) | u64::from(seq)
}

pub fn key_parts(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// The tag fields of a message body; absent fields mean "not one of ours".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tag {
    pub run: Option<String>,
    pub producer: Option<u32>,
    pub seq: Option<u32>,
    pub queue: Option<u32>,
    pub sent_us: Option<u64>,
}

/// What a tag says about a message, once checked against this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgMeta {
    pub key: u64,
    pub producer: u32,
    pub seq: u32,
    pub queue: u32,
    pub sent_us: u64,
}

impl Tag {
    /// `Some` only for a complete tag of this run.
    pub fn ours(&self, run: &str) -> Option<MsgMeta> {
        if self.run.as_deref() != Some(run) {
            return None;
        }
        let (producer, seq, queue) = (self.producer?, self.seq?, self.queue?);
        Some(MsgMeta { key: msg_key(producer, seq), producer, seq, queue, sent_us: self.sent_us.unwrap_or(0) })
    }
}

/// A JSON value read leniently: `Some` if it has the wanted type, `None` for anything else.
/// Tags are read from bodies other clients may have posted, so no shape is an error.
struct Lenient<T>(Option<T>);

impl<'de> Deserialize<'de> for Lenient<u64> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(|v: Scalar| match v {
            Scalar::U64(n) => Some(n),
            _ => None,
        }))
        .map(Lenient)
    }
}

impl<'de> Deserialize<'de> for Lenient<String> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(|v: Scalar| match v {
            Scalar::Str(s) => Some(s.to_owned()),
            _ => None,
        }))
        .map(Lenient)
    }
}

enum Scalar<'a> {
    U64(u64),
    Str(&'a str),
    Other,
}

struct LenientVisitor<F>(F);

impl<'de, T, F: FnOnce(Scalar) -> Option<T>> Visitor<'de> for LenientVisitor<F> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<T>, E> {
        Ok((self.0)(Scalar::U64(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<T>, E> {
        Ok(u64::try_from(v).ok().and_then(|v| (self.0)(Scalar::U64(v))))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<T>, E> {
        Ok((self.0)(Scalar::Other))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<T>, E> {
        Ok((self.0)(Scalar::Other))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<T>, E> {
        Ok((self.0)(Scalar::Str(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok((self.0)(Scalar::Other))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de> Deserialize<'de> for Tag {
    /// Reads only the tag fields and skips the rest (the padding) without allocating; a body
    /// that is not an object, or has odd field types (someone else's message), yields an
    /// incomplete tag instead of failing the whole page.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tag, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tag, A::Error> {
                let mut t = Tag::default();
                let small = |v: Lenient<u64>| v.0.and_then(|n| u32::try_from(n).ok());
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match k.as_ref() {
                        "r" => t.run = map.next_value::<Lenient<String>>()?.0,
                        "p" => t.producer = small(map.next_value()?),
                        "s" => t.seq = small(map.next_value()?),
                        "q" => t.queue = small(map.next_value()?),
                        "t" => t.sent_us = map.next_value::<Lenient<u64>>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(t)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tag, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Tag::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Tag, E> {
                Ok(Tag::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Tag, E> {
                Ok(Tag::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Tag, E> {
                Ok(Tag::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Tag, E> {
                Ok(Tag::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Tag, E> {
                Ok(Tag::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Tag, E> {
                Ok(Tag::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub href: Option<String>,
    #[serde(default)]
    pub body: Tag,
}

#[derive(Debug, Deserialize)]
pub struct Link {
    #[serde(default)]
    pub rel: String,
    pub href: String,
}

/// Body of a message list (`GET .../messages`) or a claim (`POST .../claims`).
#[derive(Debug, Deserialize)]
pub struct MessagesPage {
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub links: Vec<Link>,
}

impl MessagesPage {
    pub fn next_href(&self) -> Option<&str> {
        self.links.iter().find(|l| l.rel == "next").map(|l| l.href.as_str())
    }
}

/// Body of `POST .../messages` (201). Only the count matters (identity comes from the body
/// tags), so the hrefs are skipped without allocating.
#[derive(Debug, Deserialize)]
pub struct Posted {
    pub resources: Vec<IgnoredAny>,
}

/// Value of query parameter `name` in an href, undecoded.
pub fn query_param<'a>(href: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = href.split_once('?')?;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The `claim_id` a claimed message's href carries (Zaqar appends `?claim_id=`).
pub fn claim_id_of(href: &str) -> Option<&str> {
    query_param(href, "claim_id").filter(|c| !c.is_empty())
}

/// Width of a patched `u32` tag field (`p`, `s`, `q`): `u32::MAX` has 10 digits.
const U32_WIDTH: usize = 10;
/// Width of the patched send time (`t`, µs since the epoch): `u64::MAX` has 20 digits.
const U64_WIDTH: usize = 20;

/// Where the patched fields of one message sit in a [`PostBody`].
#[derive(Debug, Clone, Copy)]
struct Fields {
    producer: usize,
    seq: usize,
    queue: usize,
    sent: usize,
}

/// A `POST .../messages` body of `batch` tagged messages, rendered once. The fields that change
/// from post to post (producer, sequence, queue, send time) are fixed-width numbers padded
/// with leading spaces, which JSON allows before a value: a post is a copy of these bytes and a
/// few digits written in place, never a formatting pass, and every body has the same length.
#[derive(Debug, Clone)]
pub struct PostBody {
    bytes: Vec<u8>,
    fields: Vec<Fields>,
}

impl PostBody {
    /// Messages whose bodies are `bytes` long (or as short as the tag allows).
    pub fn new(run: &str, batch: usize, bytes: usize, ttl: u32) -> PostBody {
        let mut out = Vec::new();
        let mut fields = Vec::with_capacity(batch);
        out.extend_from_slice(b"{\"messages\":[");
        for i in 0..batch {
            if i > 0 {
                out.push(b',');
            }
            // Writes into a Vec cannot fail.
            let _ = write!(out, "{{\"ttl\":{ttl},\"body\":");
            let start = out.len();
            let _ = write!(out, "{{\"r\":\"{run}\",\"p\":");
            let field = |out: &mut Vec<u8>, width: usize, after: &[u8]| {
                let at = out.len();
                out.resize(at + width - 1, b' ');
                out.push(b'0');
                out.extend_from_slice(after);
                at
            };
            let producer = field(&mut out, U32_WIDTH, b",\"s\":");
            let seq = field(&mut out, U32_WIDTH, b",\"q\":");
            let queue = field(&mut out, U32_WIDTH, b",\"t\":");
            let sent = field(&mut out, U64_WIDTH, b",\"x\":\"");
            fields.push(Fields { producer, seq, queue, sent });
            let fixed = out.len() - start + 2; // + closing `"}`
            out.resize(out.len() + bytes.saturating_sub(fixed), b'x');
            out.extend_from_slice(b"\"}}");
        }
        out.extend_from_slice(b"]}");
        PostBody { bytes: out, fields }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Messages in the body.
    pub fn batch(&self) -> usize {
        self.fields.len()
    }

    /// Writes the varying fields into a copy of [`PostBody::bytes`] that starts at `out[at]`:
    /// message `i` gets sequence number `first_seq + i`.
    pub fn patch(&self, out: &mut [u8], at: usize, producer: u32, first_seq: u32, queue: u32, sent_us: u64) {
        debug_assert!(out.len() >= at + self.bytes.len(), "patching a body that was not copied there");
        for (i, f) in self.fields.iter().enumerate() {
            let seq = first_seq.wrapping_add(i as u32);
            put_digits(out, at + f.producer, U32_WIDTH, u64::from(producer));
            put_digits(out, at + f.seq, U32_WIDTH, u64::from(seq));
            put_digits(out, at + f.queue, U32_WIDTH, u64::from(queue));
            put_digits(out, at + f.sent, U64_WIDTH, sent_us);
        }
    }
}

/// Writes `v` right-aligned into `out[at..at + width]`, padded with spaces.
fn put_digits(out: &mut [u8], at: usize, width: usize, mut v: u64) {
    let Some(dst) = out.get_mut(at..at + width) else {
        debug_assert!(false, "a patched field lies outside its body");
        return;
    };
    let mut end = dst.len();
    while let Some(b) = end.checked_sub(1).and_then(|i| dst.get_mut(i)) {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
        end -= 1;
        if v == 0 {
            break;
        }
    }
    debug_assert!(v == 0, "a number wider than its field");
    dst[..end].fill(b' ');
}

/// Appends a `POST .../messages` body with `batch` tagged messages whose bodies are
/// `bytes` long (or as short as the tag allows). Returns nothing: the caller knows the keys.
#[allow(clippy::too_many_arguments)]
pub fn encode_post_body(
    out: &mut Vec<u8>,
    run: &str,
    producer: u32,
    first_seq: u32,
    batch: usize,
    queue: u32,
    bytes: usize,
    ttl: u32,
    sent_us: u64,
) {
    let body = PostBody::new(run, batch, bytes, ttl);
    let at = out.len();
    out.extend_from_slice(body.bytes());
    body.patch(out, at, producer, first_seq, queue, sent_us);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_body_round_trips_and_has_the_right_size() {
        let mut out = Vec::new();
        encode_post_body(&mut out, "run1", 7, 41, 2, 3, 200, 300, 123);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0]["ttl"], 300);
        // Each body is 200 bytes as sent (its padded numbers included): the post is the
        // envelope and two bodies.
        let envelope = r#"{"messages":[{"ttl":300,"body":},{"ttl":300,"body":}]}"#;
        assert_eq!(out.len(), envelope.len() + 2 * 200);
        let m: Message = serde_json::from_value(msgs[1].clone()).unwrap();
        let meta = m.body.ours("run1").unwrap();
        assert_eq!((meta.producer, meta.seq, meta.queue, meta.sent_us), (7, 42, 3, 123));
        assert_eq!(key_parts(meta.key), (7, 42));
        assert!(m.body.ours("other").is_none());
        // Tiny sizes still produce a valid tag.
        let mut out = Vec::new();
        encode_post_body(&mut out, "r", 1, 1, 1, 1, 0, 60, 1);
        serde_json::from_slice::<serde_json::Value>(&out).unwrap();
    }

    #[test]
    fn patched_fields_keep_the_body_valid_and_its_length() {
        let t = PostBody::new("run", 3, 180, 60);
        let mut out = b"head".to_vec();
        out.extend_from_slice(t.bytes());
        let len = out.len();
        for (p, s, q, sent) in
            [(0, 0, 0, 0), (u32::MAX, u32::MAX - 1, 7, u64::MAX), (12, 3, 4_000_000, 1_750_000_000_000_000)]
        {
            t.patch(&mut out, 4, p, s, q, sent);
            assert_eq!(out.len(), len);
            let v: serde_json::Value = serde_json::from_slice(&out[4..]).unwrap();
            for (i, m) in v["messages"].as_array().unwrap().iter().enumerate() {
                let m: Message = serde_json::from_value(m.clone()).unwrap();
                let meta = m.body.ours("run").unwrap();
                assert_eq!((meta.producer, meta.seq, meta.queue, meta.sent_us), (p, s.wrapping_add(i as u32), q, sent));
            }
        }
        assert_eq!(t.batch(), 3);
    }

    #[test]
    fn foreign_bodies_are_tolerated() {
        let page: MessagesPage = serde_json::from_str(
            r#"{"messages":[{"id":"a","href":"/v2/queues/q/messages/a","body":[1,2]},
                {"id":"b","href":"/x","body":"text"},{"id":"c","href":"/x","body":null},
                {"id":"d","href":"/x","body":{"p":"not a number","r":"run","nested":{"a":[1]}}},
                {"id":"e","href":"/x"}],
              "links":[{"rel":"next","href":"/v2/queues/q/messages?marker=5&limit=20"}]}"#,
        )
        .unwrap();
        assert_eq!(page.messages.len(), 5);
        assert!(page.messages.iter().all(|m| m.body.ours("run").is_none()));
        assert_eq!(page.next_href(), Some("/v2/queues/q/messages?marker=5&limit=20"));
    }

    #[test]
    fn hrefs() {
        let h = "/v2/queues/q/messages/66a1?claim_id=c-9&x=1";
        assert_eq!(claim_id_of(h), Some("c-9"));
        assert_eq!(query_param(h, "x"), Some("1"));
        assert_eq!(claim_id_of("/v2/queues/q/messages/66a1"), None);
        assert_eq!(claim_id_of("/v2/queues/q/messages/66a1?claim_id="), None);
        assert_eq!(query_param("/v2/queues/q/messages?limit=20&marker=abc", "marker"), Some("abc"));
    }

    #[test]
    fn empty_pages() {
        let page: MessagesPage = serde_json::from_str(r#"{"messages":[],"links":[]}"#).unwrap();
        assert!(page.messages.is_empty() && page.next_href().is_none());
        let page: MessagesPage = serde_json::from_str(r#"{}"#).unwrap();
        assert!(page.messages.is_empty());
    }
}
