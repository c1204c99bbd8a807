//! The one error type of the library. Every failure is one of these kinds; the C boundary maps
//! each kind to one negative result code, and the text becomes `ns_last_error()`.

use std::borrow::Cow;
use std::io;

/// Detail text: static where it can be, owned where it names a runtime value.
pub type Detail = Cow<'static, str>;

/// What went wrong, with a human-readable detail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A NULL pointer, a bad length, or a call on the wrong kind of object.
    #[error("invalid argument: {0}")]
    Invalid(Detail),
    /// Address text that cannot be parsed or resolved.
    #[error("bad address: {0}")]
    Addr(Detail),
    /// The address is already bound by a live socket.
    #[error("address in use: {0}")]
    AddrInUse(Detail),
    /// Nobody listens at the address. The detail is a whole sentence naming the address.
    #[error("{0}")]
    Refused(Detail),
    /// The operation outlasted its time limit. The detail is a whole sentence naming the step.
    #[error("{0}")]
    Timeout(Detail),
    /// The connection is closed, the id is unknown, or the server has stopped.
    #[error("closed: {0}")]
    Closed(Detail),
    /// A reply did not fit the caller's buffer; the buffer holds its first `.0` bytes.
    #[error("reply truncated to the {0}-byte buffer")]
    Truncated(usize),
    /// A size limit was reached.
    #[error("limit reached: {0}")]
    Limit(Detail),
    /// The peer reset the connection. The detail is a whole sentence.
    #[error("{0}")]
    Reset(Detail),
    /// The server stopped while the connection was open.
    #[error("server stopped")]
    Stopped,
    /// A panic was caught before it could cross the boundary.
    #[error("internal panic: {0}")]
    Panic(Detail),
    /// A call made where it cannot work, such as waiting for a server inside its own callback.
    #[error("misuse: {0}")]
    Misuse(Detail),
    /// A TLS failure: a bad certificate or key, a failed handshake or verification, an alert.
    #[error("TLS: {0}")]
    Tls(Detail),
    /// Any other operating-system error.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Classifies an OS error, so callers get `Refused` or `AddrInUse` rather than a bare `Io`.
    /// The kinds a user acts on get a sentence naming the step, without errno text.
    pub fn io(context: &'static str, e: io::Error) -> Error {
        use io::ErrorKind as K;
        let detail = || Cow::Owned(format!("{context}: {e}"));
        match e.kind() {
            K::AddrInUse => Error::AddrInUse(detail()),
            K::ConnectionRefused => Error::Refused(format!("connection refused ({context})").into()),
            K::TimedOut | K::WouldBlock => Error::Timeout(format!("timed out ({context})").into()),
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                Error::Reset(format!("connection reset by the peer ({context})").into())
            }
            K::AddrNotAvailable => Error::Addr(detail()),
            _ if e.raw_os_error() == Some(libc::EMSGSIZE) => Error::Limit(detail()),
            _ => Error::Io { context, source: e },
        }
    }
}
