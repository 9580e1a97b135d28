//! HTTP/1.1 by hand: the connection loop, the request-head parser, the chunked-body decoder and the
//! response writer.
//!
//! # Why by hand
//! The server speaks one small dialect of HTTP (a JSON REST API, no TLS, no upgrades) at very high
//! request rates on one thread per core. A general framework would bring its own executor, its own
//! buffers and a `Send` bound on everything; here each piece is a few hundred lines we can bound,
//! test byte by byte and fuzz.
//!
//! # Pieces
//! - [`parser`]: finds a complete request head in the connection's read buffer (httparse does the
//!   tokenizing) and records where each part lies, so a head costs no allocation.
//! - [`chunked`]: a resumable chunked-body decoder with a cap on the decoded size.
//! - [`response`]: the reusable [`Response`] and its serializer (`Date` cached per second per
//!   thread, a request id per response).
//! - [`conn`]: [`serve`], the per-connection loop: keep-alive, pipelining, `Expect: 100-continue`,
//!   limits and timeouts, graceful shutdown through [`Shutdown`]. The API plugs in as a [`Handler`].
//!
//! # Contract with the world
//! No input panics this module: every index into client bytes goes through `get`, and every limit
//! of [`crate::config::HttpLimits`] turns into a clear 4xx answer or a closed connection. The lints
//! below keep it that way; tests opt out locally.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chunked;
pub mod conn;
pub mod parser;
pub mod pool;
pub mod response;
pub mod wheel;

#[cfg(test)]
mod testing;

pub use chunked::{ChunkedDecoder, Decoded};
pub use conn::{serve, Handler, Peer, Request, Shutdown, ShutdownWait};
pub use parser::{BodyFraming, HeadParser, Known, Method, RequestHead, Version};
pub use response::{ConnectionHeader, Response, JSON_CONTENT_TYPE, MAX_RESPONSE_HEAD_BYTES};
