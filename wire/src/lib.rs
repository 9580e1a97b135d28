//! `wire`: the HTTP/1.1 client side of marconi's tools, written once. The `marconi` CLI,
//! loadgen and the test harnesses all write requests and read responses through it.
//!
//! Sans-I/O: nothing here opens a socket or needs a runtime. [`Request`] appends a request to a
//! caller's buffer; [`Parser`] is fed bytes as they arrive and reports a complete [`Response`]
//! borrowed from the caller's buffer (no copy, no allocation), with hard [`Limits`] and typed
//! [`Error`]s. [`ReadBuf`] keeps a connection's bytes for any read loop, and [`read_response`]
//! is that loop over [`std::io::Read`].
//!
//! ```
//! let mut out = Vec::new();
//! let mut req = wire::Request::new(&mut out, "GET", "/v2/ping");
//! req.header("Host", "localhost");
//! req.end();
//! assert_eq!(out, b"GET /v2/ping HTTP/1.1\r\nHost: localhost\r\n\r\n");
//!
//! let mut rb = wire::ReadBuf::new();
//! let mut answer: &[u8] = b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n";
//! let resp = wire::read_response(&mut answer, &mut rb, wire::Parser::new(wire::Limits::DEFAULT)).unwrap();
//! assert_eq!((resp.status, resp.header("x-a")), (204, Some("1")));
//! ```

mod chunked;
mod read;
mod request;
mod response;

pub use read::{read_response, ReadBuf, ReadError};
pub use request::{check_header, check_method, check_target, chunk, last_chunk, HeaderBlock, Request, RequestError};
pub use response::{Done, Error, Limits, OwnedResponse, Parser, Response, Status, MAX_HEADERS};
