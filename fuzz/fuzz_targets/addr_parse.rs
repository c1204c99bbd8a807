//! `netsock::addr::Addr::parse` and `netsock::addr::format`: parse never panics and fails only
//! with `Error::Addr`; what it accepts agrees with the text (a `unix:` path is the text after
//! `unix:`, with `@` for the NUL of an abstract name, never holding a NUL, at most 107 bytes; a
//! literal is one address, the same one std reads when std reads the text at all; `:port` is
//! that port and no host); `format` of a parsed path or literal parses back to the same
//! address, and formatting is a fixed point.
//!
//! Text that `parse` would resolve by DNS (a name of letters, digits, '-' and '.', then a port)
//! is skipped: a lookup per input would make the fuzzer slow and depend on the network.
#![no_main]

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;

use libfuzzer_sys::fuzz_target;
use netsock::Error;
use netsock::addr::{Addr, format};

/// Whether `Addr::parse` would go to the resolver (src/addr.rs: not `unix:`, not `[`, a
/// digits-only port, a host that is all `[A-Za-z0-9.-]` but not all digits and dots).
/// Errs on the side of skipping: any length of name, any port of 1 to 5 digits.
fn would_resolve(text: &str) -> bool {
    if text.starts_with("unix:") || text.starts_with('[') {
        return false;
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let port_like = (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
    let name_like =
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let dotted = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    port_like && name_like && !dotted
}

fn round_trip(addr: &Addr) {
    let socks = addr.sock_addrs().expect("a parsed address has socket addresses");
    assert_eq!(socks.len(), 1, "a literal is one socket address");
    let text = format(&socks[0]);
    let again = Addr::parse(&text).unwrap_or_else(|e| panic!("format gave {text:?}, which does not parse: {e}"));
    assert_eq!(&again, addr, "format gave {text:?}, which parses to another address");
    let socks2 = again.sock_addrs().expect("a parsed address has socket addresses");
    assert_eq!(format(&socks2[0]), text, "formatting is not a fixed point");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if would_resolve(&text) {
        return;
    }
    match Addr::parse(&text) {
        Err(e) => assert!(matches!(e, Error::Addr(_)), "{text:?}: not an address error: {e:?}"),
        Ok(addr) => {
            match &addr {
                Addr::Unix(path) => {
                    let want = text.strip_prefix("unix:").expect("a unix address without 'unix:'");
                    assert!(!want.contains('\0'), "{text:?}: a path with a NUL was accepted");
                    // `@name` names an abstract socket: the kernel's form starts with a NUL.
                    let kernel = match want.strip_prefix('@') {
                        Some(name) => format!("\0{name}"),
                        None => want.to_owned(),
                    };
                    assert_eq!(path.as_os_str().as_bytes(), kernel.as_bytes(), "path is not the text after 'unix:'");
                    assert!(!want.is_empty() && want.len() <= 107, "a {}-byte path was accepted", want.len());
                }
                // Not a literal: it stands for every interface or for the loopbacks.
                Addr::AnyHost(port) => {
                    let want = text.strip_prefix(':').and_then(|p| p.parse::<u16>().ok());
                    assert_eq!(want, Some(*port), "{text:?}: wrong port, or a host");
                    return;
                }
                Addr::Inet(list) => {
                    assert_eq!(list.len(), 1, "{text:?}: a literal gave {} addresses", list.len());
                    let port = text.rsplit_once(':').expect("no ':port'").1;
                    assert_eq!(port.parse::<u16>().ok(), Some(list[0].port()), "{text:?}: wrong port");
                    if let Ok(std) = text.parse::<SocketAddr>() {
                        assert_eq!(list[0], std, "{text:?}: std reads another address");
                    }
                }
            }
            round_trip(&addr);
        }
    }
});
