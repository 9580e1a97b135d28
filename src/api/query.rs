//! Query-string parsing with Zaqar's (Falcon's) rules: blank values are ignored, booleans accept
//! the usual spellings, comma-separated values are lists, and a value of the wrong type is a 400
//! naming the parameter.

use std::borrow::Cow;

use crate::error::ApiError;

/// The decoded pairs of one query string, in order.
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    pub fn parse(raw: &'a str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = decode(v);
                (!v.is_empty()).then(|| (decode(k), v))
            })
            .collect();
        Self { pairs }
    }

    /// The last value given for `name` (Falcon keeps the last of repeated parameters).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_ref())
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| invalid(name, "The value must be an integer.")).and_then(|n| {
                    u64::try_from(n).map_err(|_| invalid(name, "The value must be a non-negative integer."))
                })
            })
            .transpose()
    }

    /// An integer that may be negative (so range errors, not type errors, report it).
    pub fn i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| v.trim().parse::<i64>().map_err(|_| invalid(name, "The value must be an integer.")))
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" | "t" | "y" => Ok(true),
                "false" | "no" | "0" | "off" | "f" | "n" => Ok(false),
                _ => Err(invalid(name, "The value must be a boolean.")),
            })
            .transpose()
    }

    /// Comma-separated values, blanks dropped.
    pub fn list(&self, name: &str) -> Option<Vec<&str>> {
        self.get(name).map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
    }
}

fn invalid(name: &str, why: &str) -> ApiError {
    ApiError::InvalidParam(format!("The \"{name}\" parameter is invalid. {why}").into())
}

/// Percent-decoding with `+` as space; malformed escapes are kept as they are.
pub fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-encodes a value for a query string we generate (next links).
pub fn encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_are_ignored_and_last_value_wins() {
        let q = Query::parse("limit=&echo=true&limit=5&x=a%2Cb+c");
        assert_eq!(q.u64("limit").unwrap(), Some(5));
        assert_eq!(q.bool("echo").unwrap(), Some(true));
        assert_eq!(q.get("x"), Some("a,b c"));
        assert_eq!(Query::parse("limit=").u64("limit").unwrap(), None);
    }

    #[test]
    fn wrong_types_name_the_parameter() {
        let err = Query::parse("limit=abc").u64("limit").unwrap_err();
        assert!(err.to_string().contains("\"limit\""));
        assert!(Query::parse("echo=maybe").bool("echo").is_err());
        assert!(Query::parse("limit=-1").u64("limit").is_err());
        assert_eq!(Query::parse("limit=-1").i64("limit").unwrap(), Some(-1));
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(Query::parse("ids=a,b,,c").list("ids").unwrap(), vec!["a", "b", "c"]);
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let mut s = String::new();
        encode("a b/c&d", &mut s);
        assert_eq!(decode(&s), "a b/c&d");
    }
}
