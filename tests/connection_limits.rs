//! Limits at accept: connections per client address (per shard) and a reconnect storm shed by
//! the accept rate, while connections already open keep being served.

mod common;
use common::*;
use std::net::{SocketAddr, TcpStream};

/// Connects from `from` (any 127.x address: loopback has them all) to the server.
fn connect_from(from: &str, to: SocketAddr) -> Client {
    use std::os::fd::FromRawFd;
    let (std::net::IpAddr::V4(src_ip), SocketAddr::V4(dst)) = (from.parse().unwrap(), to) else { panic!("IPv4 only") };
    // std has no bind-before-connect. SAFETY: plain socket calls on a descriptor we own, with
    // sockaddr_in values we fill.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let addr = |ip: std::net::Ipv4Addr, port: u16| {
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_port = port.to_be();
            sa.sin_addr.s_addr = u32::from(ip).to_be();
            sa
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let (src, dst) = (addr(src_ip, 0), addr(*dst.ip(), dst.port()));
        assert_eq!(libc::bind(fd, &src as *const _ as *const libc::sockaddr, len), 0);
        assert_eq!(libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len), 0);
        TcpStream::from_raw_fd(fd)
    };
    Client::from_stream(stream)
}

/// `marconi_connections_refused_total` for `reason`, read on `via`.
fn refused(via: &mut Client, reason: &str) -> f64 {
    let text = via.get("/metrics").text();
    let name = format!("marconi_connections_refused_total{{shard=\"all\",reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&name)).unwrap_or_else(|| panic!("no {name}")).parse().unwrap()
}

#[test]
fn connections_per_address_are_capped_and_given_back() {
    let server = Server::start_with(&["--shards", "1", "--set", "http.max_connections_per_address=3"]);
    let mut held: Vec<Client> = (0..3).map(|_| connect_from("127.0.0.2", server.addr)).collect();
    for c in &mut held {
        assert_eq!(c.get("/v2/ping").status, 204);
    }
    let mut fourth = connect_from("127.0.0.2", server.addr);
    assert!(fourth.try_request("GET", "/v2/ping", None).is_none(), "closed at accept");
    let mut scraper = server.client();
    assert_eq!(refused(&mut scraper, "address"), 1.0);
    // Another address is not affected (the metrics client itself comes from 127.0.0.1).
    assert_eq!(connect_from("127.0.0.3", server.addr).get("/v2/ping").status, 204);
    // A connection that ends gives its place back.
    held.pop();
    // Open now: the two held, the scraper, and the connection asking.
    until_metrics(server.addr, "the connection closed", |m| m[r#"marconi_connections_open{shard="all"}"#] <= 4.0);
    assert_eq!(connect_from("127.0.0.2", server.addr).get("/v2/ping").status, 204);
    assert_eq!(refused(&mut scraper, "address"), 1.0);
}

#[test]
fn a_reconnect_storm_is_shed_at_accept_and_open_connections_keep_working() {
    let server = Server::start_with(&["--shards", "1", "--set", "http.max_new_connections_per_second=5"]);
    let mut established = server.client();
    assert_eq!(established.get("/v2/ping").status, 204);
    // Far more connections at once than a second's worth: most are closed at accept.
    let storm: Vec<Client> = (0..40).map(|_| server.client()).collect();
    let answered = storm.into_iter().filter_map(|mut c| c.try_request("GET", "/v2/ping", None)).count();
    assert!(answered < 40, "every storm connection was served");
    assert!(refused(&mut established, "rate") >= 1.0);
    assert_eq!(established.get("/v2/ping").status, 204, "the connection made before the storm");
}
