//! netsock: TCP and UDP servers and clients with an event loop, for C (through the `ns_*`
//! functions of [`ffi`]) and for Rust (through [`Server`], [`Client`], the handler traits and
//! the blocking clients).

pub mod addr;
pub mod client;
pub mod conn;
mod deadline;
pub mod error;
mod event_loop;
pub mod ffi;
pub mod framing;
pub mod log;
mod mmsg;
pub mod options;
pub mod panic;
pub mod server;
mod socket;
pub mod stats;
mod sys;
pub mod tcp;
pub mod tcp_client;
pub mod udp;

pub use conn::Conn;
pub use error::{Error, Result};
pub use framing::Framing;
pub use options::Options;
pub use server::Server;
pub use stats::Stats;
pub use tcp::TcpHandler;
pub use tcp_client::{Client, ClientLoop};
pub use udp::{Responder, UdpHandler};
