//! netsock: TCP and UDP servers and clients with an event loop, for C (through the `ns_*`
//! functions of [`ffi`]) and for Rust (through [`Server`], the handler traits and the clients).

pub mod addr;
pub mod client;
pub mod conn;
pub mod error;
mod event_loop;
pub mod ffi;
pub mod panic;
pub mod server;
mod socket;
pub mod tcp;
pub mod udp;

pub use conn::Conn;
pub use error::{Error, Result};
pub use server::Server;
pub use tcp::TcpHandler;
pub use udp::{Responder, UdpHandler};
