//! Parsing `--url` into a socket address.
//!
//! Load tests are only allowed against loopback: a generator that can open 100,000 connections
//! must not be pointed at a shared network by a typo, so non-loopback hosts are refused here
//! rather than merely documented.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("only http:// URLs are supported (got `{0}`)")]
    Scheme(String),
    #[error("bad host or port in `{0}`")]
    Authority(String),
    #[error("`{0}` is not a loopback address: load tests must target 127.0.0.0/8, ::1 or localhost")]
    NotLoopback(String),
    #[error("URL paths are not supported (Zaqar hrefs are absolute `/v2/...` paths): `{0}`")]
    Path(String),
}

/// Where requests go, and the `Host` header to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub host_header: String,
}

/// Parses `http://host[:port][/]` where host is an IP literal or `localhost`.
pub fn parse_url(url: &str) -> Result<Target, UrlError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| UrlError::Scheme(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !(path.is_empty() || path == "/") {
        return Err(UrlError::Path(path.to_string()));
    }
    let bad = || UrlError::Authority(url.to_string());
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| bad())?,
            None if after.is_empty() => 80,
            None => return Err(bad()),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
            None => (authority, 80),
        }
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| bad())?
    };
    if !ip.is_loopback() {
        return Err(UrlError::NotLoopback(host.to_string()));
    }
    Ok(Target { addr: SocketAddr::new(ip, port), host_header: authority.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        let t = parse_url("http://127.0.0.1:8888").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8888".parse().unwrap());
        assert_eq!(t.host_header, "127.0.0.1:8888");
        assert_eq!(parse_url("http://localhost:1/").unwrap().addr, "127.0.0.1:1".parse().unwrap());
        assert_eq!(parse_url("http://[::1]:9").unwrap().addr, "[::1]:9".parse().unwrap());
        assert_eq!(parse_url("http://127.1.2.3").unwrap().addr.port(), 80);
    }

    #[test]
    fn refuses_the_rest() {
        assert!(matches!(parse_url("http://10.0.0.1:80"), Err(UrlError::NotLoopback(_))));
        assert!(matches!(parse_url("https://127.0.0.1"), Err(UrlError::Scheme(_))));
        assert!(matches!(parse_url("http://example.com"), Err(UrlError::Authority(_))));
        assert!(matches!(parse_url("http://127.0.0.1:80/v2"), Err(UrlError::Path(_))));
        assert!(matches!(parse_url("http://127.0.0.1:x"), Err(UrlError::Authority(_))));
    }
}
