//! Writing requests into the caller's buffer: the request line, header fields, and a body framed
//! by `Content-Length`, with nothing allocated beyond the buffer's own growth.
//!
//! # Who checks what
//! A method, target or header that could end a line would let one field inject others (or a
//! second request). What comes from the world (command-line flags, hrefs a server sent) is checked
//! where it enters, with [`check_target`], [`check_header`] or [`HeaderBlock::push`], which return
//! errors. [`Request`] asserts the same rules, as invariants of its caller: it never writes a
//! request that would be read differently from what was meant.

use std::io::Write as _;

/// Why a request could not be written as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("`{0}` is not a request method (a token, RFC 9110 §9.1)")]
    Method(String),
    #[error("the request target {0:?} is empty or contains whitespace or a control character")]
    Target(String),
    #[error("the header name {0:?} is not a token (RFC 9110 §5.1)")]
    Name(String),
    #[error("the value of the header `{0}` contains a control character")]
    Value(String),
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A token (RFC 9110 §5.6.2): one or more `tchar`s.
pub(crate) fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|b| is_tchar(*b))
}

/// Control bytes other than HTAB: never part of a field value (nor of a chunk extension).
pub(crate) fn has_control(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| (*b < b' ' && *b != b'\t') || *b == 0x7f)
}

pub fn check_method(method: &str) -> Result<(), RequestError> {
    if is_token(method.as_bytes()) {
        Ok(())
    } else {
        Err(RequestError::Method(method.to_owned()))
    }
}

/// A request target: not empty, no whitespace, no control bytes. Bytes above ASCII pass (a server
/// decides what it makes of them); `%` escapes are the sender's business.
pub fn check_target(target: &str) -> Result<(), RequestError> {
    if !target.is_empty() && target.bytes().all(|b| b > b' ' && b != 0x7f) {
        Ok(())
    } else {
        Err(RequestError::Target(target.to_owned()))
    }
}

/// A header field: a token name and a value of visible characters, spaces, tabs and bytes above
/// ASCII (`field-value`, RFC 9110 §5.5), so neither can end the line.
pub fn check_header(name: &str, value: &str) -> Result<(), RequestError> {
    if !is_token(name.as_bytes()) {
        return Err(RequestError::Name(name.to_owned()));
    }
    if has_control(value.as_bytes()) {
        return Err(RequestError::Value(name.to_owned()));
    }
    Ok(())
}

/// Header fields rendered once and copied into every request that carries them (a run's `Host`
/// and `Client-ID`, a queue's `X-Project-ID`). Only checked fields get in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock(Vec<u8>);

impl HeaderBlock {
    /// A block of `fields`, in order.
    pub fn of(fields: &[(&str, &str)]) -> Result<Self, RequestError> {
        let mut block = HeaderBlock::default();
        for (name, value) in fields {
            block.push(name, value)?;
        }
        Ok(block)
    }

    pub fn push(&mut self, name: &str, value: &str) -> Result<(), RequestError> {
        check_header(name, value)?;
        put_field(&mut self.0, name, value);
        Ok(())
    }

    /// The rendered lines, each ending in CRLF.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn put_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One request being appended to a buffer: [`Request::new`], any number of header fields, then
/// [`Request::body`] or [`Request::end`].
#[must_use = "a request is complete only after `body` or `end`"]
pub struct Request<'o> {
    out: &'o mut Vec<u8>,
    /// POST, PUT and PATCH define a meaning for content: without a body they say `Content-Length:
    /// 0` (RFC 9110 §8.6), so that no server waits for one.
    says_length: bool,
}

impl<'o> Request<'o> {
    /// Appends the request line `METHOD target HTTP/1.1`.
    ///
    /// # Panics
    /// When the method is not a token or the target fails [`check_target`]: check what comes
    /// from the world first.
    pub fn new(out: &'o mut Vec<u8>, method: &str, target: &str) -> Self {
        assert!(check_method(method).is_ok(), "request method {method:?} is not a token");
        assert!(check_target(target).is_ok(), "request target {target:?} would break the request line");
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        Request { out, says_length: matches!(method, "POST" | "PUT" | "PATCH") }
    }

    /// Appends one header field.
    ///
    /// # Panics
    /// When the field fails [`check_header`].
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        assert!(check_header(name, value).is_ok(), "header {name:?}: {value:?} would break the request head");
        put_field(self.out, name, value);
        self
    }

    /// Appends pre-rendered header fields.
    pub fn headers(&mut self, block: &HeaderBlock) -> &mut Self {
        self.out.extend_from_slice(block.as_bytes());
        self
    }

    /// Ends the head with `Content-Length` and appends the body.
    pub fn body(self, body: &[u8]) {
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "Content-Length: {}\r\n\r\n", body.len());
        self.out.extend_from_slice(body);
    }

    /// Ends a request without a body.
    pub fn end(self) {
        if self.says_length {
            self.out.extend_from_slice(b"Content-Length: 0\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
    }
}

/// Appends one chunk of a chunked body (RFC 9112 §7.1). Empty data writes nothing: an empty
/// chunk would end the body.
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        let _ = write!(out, "{:x}\r\n", data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// Ends a chunked body: the last chunk and an empty trailer section.
pub fn last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_line_fields_and_body() {
        let mut out = b"leftover".to_vec();
        let block = HeaderBlock::of(&[("Host", "127.0.0.1:8888"), ("Client-ID", "c1")]).unwrap();
        let mut r = Request::new(&mut out, "POST", "/v2/queues/q/messages");
        r.headers(&block).header("Content-Type", "application/json");
        r.body(b"{}");
        assert_eq!(
            text(out),
            "leftoverPOST /v2/queues/q/messages HTTP/1.1\r\nHost: 127.0.0.1:8888\r\nClient-ID: c1\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn methods_with_content_say_their_length_even_when_empty() {
        for (method, says) in [("PUT", true), ("POST", true), ("PATCH", true), ("GET", false), ("DELETE", false)] {
            let mut out = Vec::new();
            Request::new(&mut out, method, "/x").end();
            assert_eq!(text(out).contains("Content-Length: 0\r\n\r\n"), says, "{method}");
        }
        let mut out = Vec::new();
        Request::new(&mut out, "GET", "/x").end();
        assert_eq!(text(out), "GET /x HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn checks_refuse_what_would_break_a_line() {
        assert!(check_target("/v2/queues?limit=1&x=%20").is_ok());
        assert!(check_target("/v2/ünï").is_ok());
        for bad in ["", "/a b", "/a\r\nX: 1", "/a\t", "/\u{7f}"] {
            assert_eq!(check_target(bad), Err(RequestError::Target(bad.into())), "{bad:?}");
        }
        assert!(check_header("X-Project-ID", "").is_ok());
        assert!(check_header("User-Agent", "a b\tc ü").is_ok());
        assert_eq!(check_header("X Y", "v"), Err(RequestError::Name("X Y".into())));
        assert_eq!(check_header("", "v"), Err(RequestError::Name("".into())));
        assert_eq!(check_header("X", "a\r\nEvil: 1"), Err(RequestError::Value("X".into())));
        assert_eq!(check_header("X", "a\0"), Err(RequestError::Value("X".into())));
        assert!(check_method("GET").is_ok());
        assert!(check_method("G ET").is_err());
        let mut block = HeaderBlock::default();
        assert!(block.push("X-Project-ID", "p\n").is_err());
        assert!(block.as_bytes().is_empty(), "a refused field leaves nothing behind");
    }

    #[test]
    #[should_panic(expected = "would break the request line")]
    fn an_unchecked_target_is_a_bug() {
        let _ = Request::new(&mut Vec::new(), "GET", "/a b");
    }

    #[test]
    #[should_panic(expected = "would break the request head")]
    fn an_unchecked_header_is_a_bug() {
        let mut out = Vec::new();
        let mut r = Request::new(&mut out, "GET", "/");
        r.header("X", "a\r\nb");
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        chunk(&mut out, b"hello world, seventeen");
        chunk(&mut out, b"");
        last_chunk(&mut out);
        assert_eq!(text(out), "16\r\nhello world, seventeen\r\n0\r\n\r\n");
    }
}
