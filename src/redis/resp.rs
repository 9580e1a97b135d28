//! RESP2, the Redis wire format: commands out (arrays of bulk strings), replies in.
//!
//! The reply parser is sans-I/O and incremental: [`parse`] looks at the bytes buffered so far
//! and either returns one whole reply with its length or says how many bytes it needs at least
//! before another try can succeed, so a large bulk string arriving in many reads is scanned
//! once per read, not byte by byte. Nothing is allocated until a reply is complete, and every
//! dimension is bounded ([`MAX_BULK_BYTES`], [`MAX_ARRAY_LEN`], [`MAX_DEPTH`],
//! [`MAX_LINE_BYTES`], [`MAX_REPLY_BYTES`]): a reply past a bound is a protocol error, never a
//! large allocation or a deep recursion.

use std::fmt;

/// Longest bulk string accepted (Redis allows 512 MiB; marconi's largest values are message
/// bodies of at most a few hundred KiB, and lists of them).
pub const MAX_BULK_BYTES: usize = 64 << 20;
/// Most elements in one array.
pub const MAX_ARRAY_LEN: usize = 1 << 20;
/// Deepest nesting of arrays (CLUSTER SLOTS needs 3, marconi's functions 2 or 3).
pub const MAX_DEPTH: usize = 16;
/// Longest status, error or number line.
pub const MAX_LINE_BYTES: usize = 64 << 10;
/// Most bytes in one reply, all nesting included.
pub const MAX_REPLY_BYTES: usize = 128 << 20;

/// A reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `$-1` or `*-1`.
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    /// A status line (`+OK`).
    Simple(String),
    /// An error line (`-ERR …`), without the dash.
    Error(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The bytes of a bulk string or a status line.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_error(&self) -> Option<&str> {
        match self {
            Value::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Appends this value in RESP2 (used by tests and by the fuzz target to round-trip).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::Int(n) => {
                out.push(b':');
                out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Value::Bulk(b) => {
                out.push(b'$');
                out.extend_from_slice(itoa::Buffer::new().format(b.len()).as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Simple(s) | Value::Error(s) => {
                out.push(if matches!(self, Value::Simple(_)) { b'+' } else { b'-' });
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(items) => {
                out.push(b'*');
                out.extend_from_slice(itoa::Buffer::new().format(items.len()).as_bytes());
                out.extend_from_slice(b"\r\n");
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("(nil)"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Bulk(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::Simple(s) => f.write_str(s),
            Value::Error(e) => write!(f, "(error) {e}"),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Appends one command: an array of bulk strings.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(itoa::Buffer::new().format(arg.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One command as its own buffer.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    encode_command(&mut out, args);
    out
}

/// Why a reply was refused. Any of these closes the connection it came on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown RESP type byte 0x{0:02x}")]
    UnknownType(u8),
    #[error("a line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("a line ends in LF without CR")]
    BareLf,
    #[error("a bad number in a reply")]
    BadNumber,
    #[error("a bulk string of {0} bytes (at most {MAX_BULK_BYTES})")]
    BulkTooLong(i64),
    #[error("an array of {0} elements (at most {MAX_ARRAY_LEN})")]
    ArrayTooLong(i64),
    #[error("arrays nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("a bulk string not followed by CRLF")]
    BulkUnterminated,
    #[error("a reply longer than {MAX_REPLY_BYTES} bytes")]
    ReplyTooLong,
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A whole reply and the bytes it took.
    Reply(Value, usize),
    /// Not yet whole: no reply can be parsed until the buffer holds at least this many bytes.
    Incomplete(usize),
}

/// Parses the reply at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    match walk(buf, 0, 0, &mut None)? {
        Step::Need(n) if n > MAX_REPLY_BYTES => Err(ProtocolError::ReplyTooLong),
        Step::Need(n) => Ok(Parsed::Incomplete(n)),
        Step::Done(end) if end > MAX_REPLY_BYTES => Err(ProtocolError::ReplyTooLong),
        Step::Done(_) => {
            let mut out = Some(Vec::with_capacity(1));
            match walk(buf, 0, 0, &mut out)? {
                Step::Done(end) => match out.and_then(|mut v| v.pop()) {
                    Some(value) => Ok(Parsed::Reply(value, end)),
                    // The building pass pushes exactly one value where the first found one.
                    None => Ok(Parsed::Incomplete(end + 1)),
                },
                Step::Need(n) => Ok(Parsed::Incomplete(n)),
            }
        }
    }
}

enum Step {
    /// The value ends here (exclusive).
    Done(usize),
    /// The buffer must hold at least this many bytes.
    Need(usize),
}

/// Walks one value at `pos`; with `out` set it also builds it (pushing onto `out`). The first
/// pass runs without building, so an incomplete reply costs no allocation.
fn walk(buf: &[u8], pos: usize, depth: usize, out: &mut Option<Vec<Value>>) -> Result<Step, ProtocolError> {
    let Some(&tag) = buf.get(pos) else { return Ok(Step::Need(pos + 1)) };
    let (line, next) = match line_at(buf, pos + 1)? {
        Some(found) => found,
        None => return Ok(Step::Need(buf.len() + 1)),
    };
    match tag {
        b'+' | b'-' => {
            if let Some(out) = out {
                let text = String::from_utf8_lossy(line).into_owned();
                out.push(if tag == b'+' { Value::Simple(text) } else { Value::Error(text) });
            }
            Ok(Step::Done(next))
        }
        b':' => {
            let n = number(line)?;
            if let Some(out) = out {
                out.push(Value::Int(n));
            }
            Ok(Step::Done(next))
        }
        b'$' => {
            let n = number(line)?;
            if n == -1 {
                if let Some(out) = out {
                    out.push(Value::Nil);
                }
                return Ok(Step::Done(next));
            }
            let len = usize::try_from(n).ok().filter(|&l| l <= MAX_BULK_BYTES).ok_or(ProtocolError::BulkTooLong(n))?;
            let end = next + len + 2;
            let Some(body) = buf.get(next..end) else { return Ok(Step::Need(end)) };
            if &body[len..] != b"\r\n" {
                return Err(ProtocolError::BulkUnterminated);
            }
            if let Some(out) = out {
                out.push(Value::Bulk(body[..len].to_vec()));
            }
            Ok(Step::Done(end))
        }
        b'*' => {
            let n = number(line)?;
            if n == -1 {
                if let Some(out) = out {
                    out.push(Value::Nil);
                }
                return Ok(Step::Done(next));
            }
            let len = usize::try_from(n).ok().filter(|&l| l <= MAX_ARRAY_LEN).ok_or(ProtocolError::ArrayTooLong(n))?;
            if depth + 1 > MAX_DEPTH {
                return Err(ProtocolError::TooDeep);
            }
            // Only the building pass allocates, and only once the whole array is in the buffer:
            // every element takes at least 3 bytes, so `len` is bounded by the bytes received.
            let mut items = out.as_ref().map(|_| Vec::with_capacity(len));
            let mut at = next;
            for _ in 0..len {
                match walk(buf, at, depth + 1, &mut items)? {
                    Step::Done(end) => at = end,
                    need => return Ok(need),
                }
                if at > MAX_REPLY_BYTES {
                    return Err(ProtocolError::ReplyTooLong);
                }
            }
            if let (Some(out), Some(items)) = (out, items) {
                out.push(Value::Array(items));
            }
            Ok(Step::Done(at))
        }
        other => Err(ProtocolError::UnknownType(other)),
    }
}

/// The line starting at `start` (without CRLF) and where the next one starts; `None` while its
/// end has not arrived.
fn line_at(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_LINE_BYTES + 2)];
    match memchr::memchr(b'\n', window) {
        Some(0) => Err(ProtocolError::BareLf),
        Some(i) if rest[i - 1] == b'\r' => Ok(Some((&rest[..i - 1], start + i + 1))),
        Some(_) => Err(ProtocolError::BareLf),
        None if window.len() > MAX_LINE_BYTES => Err(ProtocolError::LineTooLong),
        None => Ok(None),
    }
}

/// A decimal i64: optional `-`, 1 to 19 digits, no overflow, nothing else.
fn number(line: &[u8]) -> Result<i64, ProtocolError> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(ProtocolError::BadNumber);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ProtocolError::BadNumber);
        }
        let digit = i64::from(d - b'0');
        n = n.checked_mul(10).ok_or(ProtocolError::BadNumber)?;
        n = if negative { n.checked_sub(digit) } else { n.checked_add(digit) }.ok_or(ProtocolError::BadNumber)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(bytes: &[u8]) -> Value {
        match parse(bytes) {
            Ok(Parsed::Reply(v, used)) => {
                assert_eq!(used, bytes.len(), "{bytes:?}");
                v
            }
            other => panic!("{bytes:?}: {other:?}"),
        }
    }

    #[test]
    fn parses_every_type() {
        assert_eq!(whole(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(whole(b"-ERR no\r\n"), Value::Error("ERR no".into()));
        assert_eq!(whole(b":-42\r\n"), Value::Int(-42));
        assert_eq!(whole(b"$3\r\na\r\n\r\n"), Value::Bulk(b"a\r\n".to_vec()));
        assert_eq!(whole(b"$0\r\n\r\n"), Value::Bulk(vec![]));
        assert_eq!(whole(b"$-1\r\n"), Value::Nil);
        assert_eq!(whole(b"*-1\r\n"), Value::Nil);
        assert_eq!(whole(b"*0\r\n"), Value::Array(vec![]));
        assert_eq!(
            whole(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n"),
            Value::Array(vec![Value::Int(1), Value::Array(vec![Value::Bulk(b"x".to_vec())])])
        );
        assert_eq!(whole(b":-9223372036854775808\r\n"), Value::Int(i64::MIN));
    }

    #[test]
    fn incomplete_says_how_much_it_needs() {
        assert_eq!(parse(b""), Ok(Parsed::Incomplete(1)));
        assert_eq!(parse(b"+OK"), Ok(Parsed::Incomplete(4)));
        assert_eq!(parse(b"$10\r\nabc"), Ok(Parsed::Incomplete(17)));
        assert_eq!(parse(b"*2\r\n:1\r\n"), Ok(Parsed::Incomplete(9)));
        assert_eq!(parse(b"+OK\r\n:1\r\n"), Ok(Parsed::Reply(Value::Simple("OK".into()), 5)), "one reply at a time");
    }

    #[test]
    fn bounds_and_garbage_are_errors() {
        assert_eq!(parse(b"?x\r\n"), Err(ProtocolError::UnknownType(b'?')));
        assert_eq!(parse(b":12a\r\n"), Err(ProtocolError::BadNumber));
        assert_eq!(parse(b":\r\n"), Err(ProtocolError::BadNumber));
        assert_eq!(parse(b":9223372036854775808\r\n"), Err(ProtocolError::BadNumber));
        assert_eq!(parse(b"+OK\n"), Err(ProtocolError::BareLf));
        assert_eq!(parse(b"$-2\r\n"), Err(ProtocolError::BulkTooLong(-2)));
        assert_eq!(parse(b"$3\r\nabcde"), Err(ProtocolError::BulkUnterminated));
        let huge = format!("${}\r\n", MAX_BULK_BYTES + 1);
        assert!(matches!(parse(huge.as_bytes()), Err(ProtocolError::BulkTooLong(_))));
        let long = format!("*{}\r\n", MAX_ARRAY_LEN + 1);
        assert!(matches!(parse(long.as_bytes()), Err(ProtocolError::ArrayTooLong(_))));
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep), Err(ProtocolError::TooDeep));
        let ok_deep = [b"*1\r\n".repeat(MAX_DEPTH), b":1\r\n".to_vec()].concat();
        assert!(matches!(parse(&ok_deep), Ok(Parsed::Reply(..))));
        let line = vec![b'a'; MAX_LINE_BYTES + 3];
        assert_eq!(parse(&[b"+".as_slice(), &line].concat()), Err(ProtocolError::LineTooLong));
        // Two large bulks add up past the reply bound without either being too long.
        let mut buf = format!("*2\r\n${MAX_BULK_BYTES}\r\n").into_bytes();
        buf.resize(buf.len() + MAX_BULK_BYTES, b'x');
        buf.extend_from_slice(format!("\r\n${MAX_BULK_BYTES}\r\n").as_bytes());
        assert_eq!(parse(&buf), Err(ProtocolError::ReplyTooLong));
    }

    #[test]
    fn commands_encode_as_bulk_arrays() {
        assert_eq!(command(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(command(&[]), b"*0\r\n");
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bulk),
            "[a-zA-Z0-9 :._-]{0,20}".prop_map(Value::Simple),
            "[a-zA-Z0-9 :._-]{1,20}".prop_map(Value::Error),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| proptest::collection::vec(inner, 0..6).prop_map(Value::Array))
    }

    /// Feeds `bytes` as a connection would, in pieces cut at `cuts`, honouring the size hint.
    fn parse_stream(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Value>, ProtocolError> {
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        let (mut values, mut start, mut need) = (Vec::new(), 0, 0);
        for end in ends {
            while end - start >= need && start < end {
                match parse(&bytes[start..end])? {
                    Parsed::Reply(v, used) => {
                        values.push(v);
                        start += used;
                        need = 0;
                    }
                    Parsed::Incomplete(n) => {
                        assert!(n > end - start, "a hint asks for more than is there");
                        need = n;
                    }
                }
            }
        }
        assert_eq!(start, bytes.len(), "everything parsed");
        Ok(values)
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_values(values in proptest::collection::vec(value(), 1..5),
                                           cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let mut bytes = Vec::new();
            for v in &values {
                v.encode(&mut bytes);
            }
            prop_assert_eq!(parse_stream(&bytes, &cuts), Ok(values));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Parsed::Reply(_, used)) = parse(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        #[test]
        fn garbage_made_of_resp_pieces_never_panics(
            pieces in proptest::collection::vec(prop_oneof![
                Just(&b"*"[..]), Just(&b"$"[..]), Just(&b":"[..]), Just(&b"+"[..]), Just(&b"-"[..]),
                Just(&b"\r\n"[..]), Just(&b"1"[..]), Just(&b"-1"[..]), Just(&b"3"[..]), Just(&b"x"[..]),
            ], 0..60)
        ) {
            let bytes = pieces.concat();
            match parse(&bytes) {
                Ok(Parsed::Reply(_, used)) => prop_assert!(used <= bytes.len()),
                Ok(Parsed::Incomplete(n)) => prop_assert!(n > bytes.len()),
                Err(_) => {}
            }
        }
    }
}
