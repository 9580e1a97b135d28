//! Pre-signed URLs: `POST /v2/queues/{q}/share` and the check of requests that carry one
//! (reference §2.8).
//!
//! The signature is hex HMAC-SHA256 over `paths \n methods \n project \n expires`, where `\n` is
//! the two characters backslash and n (Zaqar formats it from a raw string), paths and methods
//! sorted and comma-joined, and expires formatted `%Y-%m-%dT%H:%M:%S` in UTC. Verification
//! compares in constant time.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::json::{parse_value, write_str};
use super::Ctx;
use crate::config::{Config, DEFAULT_SIGNED_URL_LIFETIME_S};
use crate::error::ApiError;
use crate::http::{Known, RequestHead, Response};

const KNOWN_KEYS: [&str; 3] = ["paths", "methods", "expires"];
const VALID_PATHS: [&str; 3] = ["messages", "subscriptions", "claims"];

/// What a share request asks to sign, checked and in signing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRequest<'k> {
    pub key: &'k str,
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    /// `%Y-%m-%dT%H:%M:%S`, UTC.
    pub expires: String,
}

pub fn create(ctx: &Ctx<'_>, queue: &str, resp: &mut Response) -> Result<(), ApiError> {
    let now = crate::time::now_ms() / 1000;
    let ShareRequest { key, paths, methods, expires } = parse_share(ctx.body, ctx.config(), queue, now)?;
    let signature = sign(key, &paths, &methods, ctx.project, &expires);

    let out = &mut resp.body;
    out.extend_from_slice(b"{\"paths\":");
    super::json::write_value(out, &paths);
    out.extend_from_slice(b",\"methods\":");
    super::json::write_value(out, &methods);
    out.extend_from_slice(b",\"project\":");
    write_str(out, ctx.project);
    out.extend_from_slice(b",\"expires\":");
    write_str(out, &expires);
    out.extend_from_slice(b",\"signature\":");
    write_str(out, &signature);
    out.push(b'}');
    resp.json(200);
    Ok(())
}

/// Reads the body of `POST /v2/queues/{queue}/share` at `now_s` (Unix seconds), with Zaqar's
/// checks in Zaqar's order (unknown keys before the missing secret).
pub fn parse_share<'c>(body: &[u8], config: &'c Config, queue: &str, now_s: u64) -> Result<ShareRequest<'c>, ApiError> {
    let doc =
        if body.is_empty() { Value::Object(Default::default()) } else { parse_value(body, config.api.max_json_depth)? };
    let Value::Object(doc) = doc else {
        return Err(ApiError::invalid_body("Document type not supported."));
    };
    let mut unknown: Vec<&str> = doc.keys().map(String::as_str).filter(|k| !KNOWN_KEYS.contains(k)).collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(ApiError::invalid_request(format!("Unknown keys: {}", unknown.join(", "))));
    }
    let key = secret(config)?;
    let mut paths = match doc.get("paths") {
        None => vec!["messages".to_owned()],
        Some(v) => {
            let list = string_list(v).ok_or_else(|| ApiError::invalid_request("`paths` must be a non-empty list"))?;
            let invalid: Vec<&String> = list.iter().filter(|p| !VALID_PATHS.contains(&p.as_str())).collect();
            if !invalid.is_empty() {
                return Err(ApiError::invalid_request(format!(
                    "Invalid paths: {}",
                    invalid.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            if list.is_empty() {
                vec!["messages".to_owned()]
            } else {
                list
            }
        }
    };
    for p in &mut paths {
        *p = format!("/v2/queues/{queue}/{p}");
    }
    let mut methods = match doc.get("methods") {
        None => vec!["GET".to_owned()],
        Some(v) => string_list(v).ok_or_else(|| ApiError::invalid_request("`methods` should be a list"))?,
    };
    if methods.is_empty() {
        methods.push("GET".to_owned());
    }
    let expires = match doc.get("expires") {
        None => now_s + DEFAULT_SIGNED_URL_LIFETIME_S,
        Some(v) => parse_expires(v)?,
    };
    if expires <= now_s {
        return Err(ApiError::invalid_request("`expires` is lower than the current time"));
    }
    paths.sort();
    methods.sort();
    Ok(ShareRequest { key, paths, methods, expires: format_expires(expires) })
}

/// Checks a request that carries `URL-Signature`. Every failure is a 404, as in Zaqar: the URL
/// simply does not exist for whoever lacks a valid signature.
pub fn verify(config: &Config, head: &RequestHead) -> Result<(), ApiError> {
    let denied = || ApiError::not_found("The requested resource does not exist.");
    let key = config.signed_url.secret_key.as_deref().ok_or_else(denied)?;
    let signature = head.known(Known::UrlSignature).ok_or_else(denied)?;
    let project = head.known(Known::XProjectId).unwrap_or("");
    let expires = head.known(Known::UrlExpires).ok_or_else(denied)?;
    let split = |h: &str| -> Vec<String> { head.header(h).unwrap_or("").split(',').map(str::to_owned).collect() };
    let mut methods = split("url-methods");
    let mut paths = split("url-paths");
    if !methods.iter().any(|m| m == head.method().as_str()) {
        return Err(denied());
    }
    // Zaqar matches each path as a regular expression anywhere in the request path; paths are
    // made of [A-Za-z0-9_./-], so a substring match only differs for '.', which it treats
    // literally (stricter).
    if !paths.iter().any(|p| !p.is_empty() && head.path().contains(p.as_str())) {
        return Err(denied());
    }
    let expires_at = parse_expires(&Value::from(expires)).map_err(|_| denied())?;
    if expires_at <= crate::time::now_ms() / 1000 {
        return Err(denied());
    }
    methods.sort();
    paths.sort();
    let expected = hex_decode(signature).ok_or_else(denied)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(|_| denied())?;
    mac.update(signed_text(&paths, &methods, project, &format_expires(expires_at)).as_bytes());
    mac.verify_slice(&expected).map_err(|_| denied())
}

fn secret(config: &Config) -> Result<&str, ApiError> {
    config.signed_url.secret_key.as_deref().ok_or_else(|| ApiError::invalid_request("The `key` can't be None"))
}

fn signed_text(paths: &[String], methods: &[String], project: &str, expires: &str) -> String {
    format!("{}\\n{}\\n{}\\n{}", paths.join(","), methods.join(","), project, expires)
}

fn sign(key: &str, paths: &[String], methods: &[String], project: &str, expires: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(signed_text(paths, methods, project, expires).as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(|s| s.as_str().map(str::to_owned)).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Parses an ISO-8601 date-time (`2026-09-01T00:00:00`, optional fraction, `Z` or `±HH:MM`) to
/// Unix seconds. Integers are refused, with Zaqar's message.
fn parse_expires(v: &Value) -> Result<u64, ApiError> {
    let text = match v {
        Value::String(s) => s.trim(),
        Value::Number(n) => {
            return Err(ApiError::invalid_request(format!(
                "`expires` should be date format, for example 2016-01-01T00:00:00, not integer value: {n}"
            )))
        }
        _ => return Err(ApiError::invalid_request("`expires` should be date format")),
    };
    if let Ok(n) = text.parse::<i64>() {
        return Err(ApiError::invalid_request(format!(
            "`expires` should be date format, for example 2016-01-01T00:00:00, not integer value: {n}"
        )));
    }
    crate::time::parse_iso8601(text)
        .ok_or_else(|| ApiError::invalid_request(format!("Unable to parse date string '{text}'")))
}

fn format_expires(unix_s: u64) -> String {
    let iso = crate::time::iso8601(unix_s);
    iso.trim_end_matches('Z').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_zaqar_construction() {
        // Computed with Python: hmac.new(b"k", rb"/v2/queues/q/messages\nGET\np\n2030-01-01T00:00:00".encode(), sha256)
        let sig = sign("k", &["/v2/queues/q/messages".into()], &["GET".into()], "p", "2030-01-01T00:00:00");
        assert_eq!(sig, "6483a00a70b8f32f727e501b93537a2ed20eff92772775eb4adf8388164ef509");
        assert_eq!(hex_decode(&sig).map(|b| b.len()), Some(32));
    }

    #[test]
    fn expires_parses_iso_forms_and_refuses_integers() {
        let at = |s: &str| parse_expires(&Value::from(s));
        assert_eq!(at("2030-01-01T00:00:00").unwrap(), 1_893_456_000);
        assert_eq!(at("2030-01-01T00:00:00.123Z").unwrap(), 1_893_456_000);
        assert_eq!(at("2030-01-01T01:00:00+01:00").unwrap(), 1_893_456_000);
        assert!(at("wrong date format").is_err());
        assert!(at("1893456000").is_err());
        assert!(parse_expires(&Value::from(5)).is_err());
        assert_eq!(format_expires(1_893_456_000), "2030-01-01T00:00:00");
    }
}
