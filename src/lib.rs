//! netsock: TCP and UDP servers and clients with an event loop, for C (through the `ns_*`
//! functions of [`ffi`]) and for Rust (through [`Server`], [`Client`], the handler traits and
//! the blocking clients).

// The event loop is epoll (through mio, woken by an eventfd), the UDP path recvmmsg/sendmmsg,
// the accept path accept4: Linux calls, with no fallbacks for other systems.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "netsock supports Linux only: its event loop is epoll and its UDP path recvmmsg/sendmmsg (README, Platforms)"
);

pub mod addr;
pub mod client;
mod deadline;
pub mod error;
pub mod ffi;
pub mod framing;
mod handles;
mod handoff;
mod inherit;
mod listen;
pub mod log;
mod loop_core;
mod mmsg;
pub mod options;
pub mod panic;
pub mod proxy_protocol;
pub mod server;
mod socket;
pub mod stats;
mod sys;
pub mod tcp_client;
pub mod tls_config;

/// The TLS layer's glue between socket bytes and rustls, for the fuzz target.
#[doc(hidden)]
pub use handles::tls::{Input as TlsInput, Session as TlsSession};

pub use error::{Error, Result};
pub use framing::Framing;
pub use handles::conn::{Conn, TcpHandler};
pub use handles::datagram::{Responder, UdpHandler};
pub use handles::outq::OwnedBuf;
pub use options::Options;
pub use server::Server;
pub use stats::Stats;
pub use tcp_client::{Client, ClientLoop};
