//! What loadgen's requests carry; the `wire` crate writes them and parses the answers.
//!
//! The generator must cost less per request than the server it measures: header lines that do
//! not change during a run (`Host`, `Client-ID`, a queue's `X-Project-ID`) are rendered once into
//! [`HeaderBlock`]s, so a request is one request line and a few copies into the connection's
//! buffer.

use wire::{HeaderBlock, RequestError};

/// Header fields sent on every request of a run: loadgen's own, then `extra` (`--header`, e.g. a
/// credential).
pub fn common_headers(host: &str, client_id: &str, extra: &[(String, String)]) -> Result<HeaderBlock, RequestError> {
    let mut fields = vec![
        ("Host", host),
        ("Client-ID", client_id),
        ("User-Agent", "marconi-loadgen"),
        ("Accept", "application/json"),
    ];
    fields.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    HeaderBlock::of(&fields)
}

/// The `X-Project-ID` field of a project.
pub fn project_header(project: &str) -> Result<HeaderBlock, RequestError> {
    HeaderBlock::of(&[("X-Project-ID", project)])
}

/// Appends one request to `out`. A body, when given, is JSON. `path` is one the plan rendered or
/// one [`is_safe_path`] accepted.
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    common: &HeaderBlock,
    project: &HeaderBlock,
    body: Option<&[u8]>,
) {
    let mut req = wire::Request::new(out, method, path);
    req.headers(common).headers(project);
    match body {
        Some(b) => {
            req.header("Content-Type", "application/json");
            req.body(b);
        }
        None => req.end(),
    }
}

/// True if `s` can be sent as a request target: a path on the same server, with no whitespace
/// or control bytes. Hrefs come from the server and must not be able to inject headers.
pub fn is_safe_path(s: &str) -> bool {
    s.starts_with('/') && wire::check_target(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests() {
        let common = common_headers("127.0.0.1:8888", "c1", &[("X-Auth-Token".into(), "t".into())]).unwrap();
        let project = project_header("p").unwrap();
        let mut out = Vec::new();
        encode_request(&mut out, "POST", "/v2/queues/q/messages", &common, &project, Some(b"{}"));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("POST /v2/queues/q/messages HTTP/1.1\r\nHost: 127.0.0.1:8888\r\n"));
        assert!(s.contains("Client-ID: c1\r\n"));
        assert!(s.contains("X-Project-ID: p\r\n"));
        assert!(s.ends_with("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"));
        let mut out = Vec::new();
        encode_request(&mut out, "GET", "/v2/ping", &common, &HeaderBlock::default(), None);
        assert!(out.ends_with(b"Accept: application/json\r\nX-Auth-Token: t\r\n\r\n"), "--header comes last");
        let mut out = Vec::new();
        encode_request(&mut out, "PUT", "/v2/queues/q", &common, &project, None);
        assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
        assert!(project_header("p\r\nEvil: 1").is_err());
        assert!(common_headers("h", "c\n", &[]).is_err());
    }

    #[test]
    fn safe_paths() {
        assert!(is_safe_path("/v2/queues/q/messages?marker=3&limit=20"));
        assert!(!is_safe_path("/v2/x\r\nEvil: 1"));
        assert!(!is_safe_path("/v2/x y"));
        assert!(!is_safe_path("http://elsewhere/v2"));
    }
}
