//! Address text: `host:port`, `[v6]:port`, `[v6%scope]:port`, `:port` (no host: every interface
//! for a server, this host for a client), `unix:/path`, `unix:@name` (a Linux abstract socket).
//! Parsing is strict (no silent defaults) because a typo in a server address should fail
//! loudly, not listen somewhere unexpected.

use std::ffi::CString;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, ToSocketAddrs};
use std::path::PathBuf;

use socket2::SockAddr;

use crate::error::{Error, Result};

/// Longest Unix socket path the kernel accepts (`sun_path` less its NUL).
const UNIX_PATH_MAX: usize = 107;

/// A parsed and resolved address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// One or more IP socket addresses (a name may resolve to several; clients try each in turn).
    Inet(Vec<SocketAddr>),
    /// `:port`, as in Go's `net`: a server listens on every interface (see `socket::bind`), a
    /// client reaches this host.
    AnyHost(u16),
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

/// Address text read, before any name is looked up.
enum Parsed<'a> {
    Addr(Addr),
    Name(&'a str, u16),
}

impl Addr {
    /// Parses address text, resolving host names (which may block on DNS).
    pub fn parse(text: &str) -> Result<Addr> {
        match Addr::parse_text(text)? {
            Parsed::Addr(addr) => Ok(addr),
            Parsed::Name(host, port) => resolve(host, port),
        }
    }

    /// Parses address text without looking names up: `None` for a name, which only
    /// [`Addr::parse`] resolves (it may block).
    pub fn parse_without_lookup(text: &str) -> Result<Option<Addr>> {
        match Addr::parse_text(text)? {
            Parsed::Addr(addr) => Ok(Some(addr)),
            Parsed::Name(..) => Ok(None),
        }
    }

    /// Reads address text as far as it goes without DNS: a name is handed back to be resolved.
    fn parse_text(text: &str) -> Result<Parsed<'_>> {
        let bad = |why: &str| Error::Addr(format!("{why} in {text:?}").into());
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("empty unix socket path"));
            }
            if path.len() > UNIX_PATH_MAX {
                return Err(bad("unix socket path longer than 107 bytes"));
            }
            // The kernel would silently cut a path at a NUL and bind somewhere else.
            if path.contains('\0') {
                return Err(bad("NUL byte in unix socket path"));
            }
            // `@name` is Linux's abstract namespace (no file), written as `format` writes it.
            if let Some(name) = path.strip_prefix('@') {
                return Ok(Parsed::Addr(Addr::Unix(PathBuf::from(format!("\0{name}")))));
            }
            return Ok(Parsed::Addr(Addr::Unix(PathBuf::from(path))));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            let port = after.strip_prefix(':').ok_or_else(|| bad("missing ':port'"))?;
            let (ip, zone) = host.split_once('%').map_or((host, None), |(ip, zone)| (ip, Some(zone)));
            let ip: Ipv6Addr = ip.parse().map_err(|_| bad("invalid IPv6 address"))?;
            let port = parse_port(port).ok_or_else(|| bad("invalid port"))?;
            let scope_id = zone.map_or(Ok(0), scope_id).map_err(|why| bad(&why))?;
            return Ok(Parsed::Addr(Addr::Inet(vec![
                SocketAddrV6::new(ip, port, 0, scope_id).into(),
            ])));
        } else {
            text.rsplit_once(':').ok_or_else(|| bad("missing ':port'"))?
        };
        let port = parse_port(port).ok_or_else(|| bad("invalid port"))?;
        if host.is_empty() {
            return Ok(Parsed::Addr(Addr::AnyHost(port)));
        }
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(Parsed::Addr(Addr::Inet(vec![SocketAddr::new(ip.into(), port)])));
        }
        // No DNS name is all digits and dots: the resolver would read `1.2.3` as 1.2.0.3.
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(bad("invalid IPv4 address"));
        }
        if host.contains(':') && host.parse::<Ipv6Addr>().is_ok() {
            return Err(Error::Addr(
                format!("IPv6 addresses need brackets: \"[{host}]:{port}\", not {text:?}").into(),
            ));
        }
        if !is_host_name(host) {
            return Err(bad("invalid host"));
        }
        Ok(Parsed::Name(host, port))
    }

    /// The socket addresses to try, in order.
    pub fn sock_addrs(&self) -> Result<Vec<SockAddr>> {
        match self {
            Addr::Inet(list) => Ok(list.iter().map(|a| SockAddr::from(*a)).collect()),
            // A client's "this host": the loopbacks, IPv4 first as Go's `net` dials them.
            Addr::AnyHost(port) => Ok([Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
                .map(|ip: IpAddr| SockAddr::from(SocketAddr::new(ip, *port)))
                .to_vec()),
            Addr::Unix(path) => Ok(vec![
                SockAddr::unix(path).map_err(|e| Error::Addr(format!("unix path {path:?}: {e}").into()))?,
            ]),
        }
    }
}

/// The addresses of a host name (blocks on DNS).
fn resolve(host: &str, port: u16) -> Result<Addr> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Addr(format!("cannot resolve {host:?}: {e}").into()))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Addr(format!("{host:?} has no address").into()));
    }
    Ok(Addr::Inet(addrs))
}

/// One address a datagram can be sent to, read from text without DNS (for `ns_peer_parse`):
/// an IP literal with a port other than 0, or a `unix:` path. Refused: names, which would
/// block, `:port`, which names no one host, and `unix:@name`, which `format` writes for a
/// peer with an abstract name but which this does not take (paths only).
pub fn parse_literal(text: &str) -> Result<SockAddr> {
    let bad = |why: &str| Error::Addr(format!("{why} in {text:?}").into());
    let addr = match Addr::parse_text(text)? {
        Parsed::Name(..) => {
            return Err(Error::Addr(
                format!("a name, not an address: ns_peer_parse does not resolve {text:?}").into(),
            ));
        }
        Parsed::Addr(Addr::AnyHost(_)) => return Err(bad("no host")),
        Parsed::Addr(addr) => addr.sock_addrs()?.remove(0),
    };
    if addr.as_abstract_namespace().is_some() {
        return Err(bad("abstract unix names are not accepted here (a unix:/path is)"));
    }
    if addr.as_socket().is_some_and(|a| a.port() == 0) {
        return Err(bad("port 0 (a datagram cannot be sent there)"));
    }
    Ok(addr)
}

/// A decimal port, 0..=65535, digits only.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The scope of a link-local IPv6 address (`fe80::1%eth0`, `fe80::1%2`): an interface index
/// as digits, taken as it is, or an interface name, which must exist now.
fn scope_id(zone: &str) -> Result<u32, String> {
    if zone.is_empty() {
        return Err("empty IPv6 scope after '%'".into());
    }
    if zone.bytes().all(|b| b.is_ascii_digit()) {
        return zone.parse().map_err(|_| format!("IPv6 scope {zone} out of range"));
    }
    let unknown = || format!("no network interface {zone:?}");
    let name = CString::new(zone).map_err(|_| unknown())?;
    // SAFETY: `name` is a NUL-terminated string that lives until the call returns.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(unknown()),
        index => Ok(index),
    }
}

/// A DNS name: letters, digits, `-` and `.`, not empty.
fn is_host_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Formats a socket address as the same text [`Addr::parse`] reads: `1.2.3.4:5`, `[::1]:5`,
/// `[fe80::1%2]:5` (the scope as its index, which names the interface without a lookup),
/// `unix:/path` (`unix:` alone for an unnamed Unix socket).
pub fn format(addr: &SockAddr) -> String {
    let mut out = String::new();
    if let Some(inet) = addr.as_socket() {
        let _ = write!(out, "{inet}");
    } else if let Some(path) = addr.as_pathname() {
        out.push_str("unix:");
        out.push_str(&path.to_string_lossy());
    } else if let Some(name) = addr.as_abstract_namespace() {
        out.push_str("unix:@");
        out.push_str(&String::from_utf8_lossy(name));
    } else {
        out.push_str("unix:");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(s: &str) -> Vec<SocketAddr> {
        match Addr::parse(s).unwrap() {
            Addr::Inet(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_ip_literals() {
        assert_eq!(inet("127.0.0.1:6666"), vec!["127.0.0.1:6666".parse().unwrap()]);
        assert_eq!(inet("0.0.0.0:0"), vec!["0.0.0.0:0".parse().unwrap()]);
        assert_eq!(inet("[::1]:65535"), vec!["[::1]:65535".parse().unwrap()]);
        assert_eq!(inet("[::]:80"), vec!["[::]:80".parse().unwrap()]);
    }

    #[test]
    fn resolves_localhost() {
        let v = inet("localhost:7");
        assert!(!v.is_empty());
        assert!(v.iter().all(|a| a.ip().is_loopback() && a.port() == 7));
    }

    #[test]
    fn parses_unix_paths() {
        assert_eq!(
            Addr::parse("unix:/tmp/x.sock").unwrap(),
            Addr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(Addr::parse("unix:rel.sock").unwrap(), Addr::Unix("rel.sock".into()));
        assert_eq!(Addr::parse("unix:@abstract").unwrap(), Addr::Unix("\0abstract".into()));
    }

    #[test]
    fn no_host_is_this_host_for_a_client() {
        for port in [6666, 0] {
            let socks = Addr::parse(&format!(":{port}")).unwrap().sock_addrs().unwrap();
            let texts: Vec<String> = socks.iter().map(format).collect();
            assert_eq!(texts, [format!("127.0.0.1:{port}"), format!("[::1]:{port}")]);
        }
    }

    #[test]
    fn unix_paths_with_nul_are_refused() {
        // Found by the addr_parse fuzz target: the kernel cuts a path at its first NUL.
        for s in ["unix:\0x", "unix:/tmp/a\0junk"] {
            assert!(matches!(Addr::parse(s), Err(Error::Addr(_))), "{s:?} was accepted");
        }
    }

    #[test]
    fn rejects_bad_text() {
        let long = format!("unix:/{}", "a".repeat(120));
        for s in [
            "",
            ":",
            "127.0.0.1",
            "127.0.0.1:",
            ":80x",
            "::80",
            "127.0.0.1:65536",
            "127.0.0.1:99999",
            "127.0.0.1:80x",
            "127.0.0.1:-1",
            "127.0.0.1:+80",
            "127.0.0.1:80 ",
            " 127.0.0.1:80",
            "[::1]",
            "[::1]80",
            "[::1:80",
            "::1:80",
            "[127.0.0.1]:80",
            "unix:",
            "host name:80",
            "127.0.0.1:000080",
            "a_b:80",
            &long,
        ] {
            assert!(matches!(Addr::parse(s), Err(Error::Addr(_))), "{s:?} was accepted");
        }
    }

    fn addr_error(s: &str) -> String {
        match Addr::parse(s) {
            Err(e @ Error::Addr(_)) => e.to_string(),
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn dotted_numbers_are_ipv4_or_nothing() {
        // Never looked up: glibc would resolve `1.2.3` to 1.2.0.3.
        for s in [
            "256.1.1.1:80",
            "1.2.3:80",
            "01.2.3.4:80",
            "1.2.3.4.5:80",
            "1234:80",
            "...:80",
        ] {
            assert!(
                addr_error(s).contains("invalid IPv4 address"),
                "{s:?}: {}",
                addr_error(s)
            );
        }
    }

    #[test]
    fn unbracketed_ipv6_hints_at_brackets() {
        for (s, hint) in [
            ("::1:80", "\"[::1]:80\""),
            ("fe80::1:80", "\"[fe80::1]:80\""),
            (":::0", "\"[::]:0\""),
        ] {
            let e = addr_error(s);
            assert!(e.contains("need brackets") && e.contains(hint), "{s:?}: {e}");
        }
    }

    fn lo_index() -> u32 {
        // SAFETY: a NUL-terminated literal.
        let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert_ne!(index, 0, "no interface lo");
        index
    }

    #[test]
    fn scoped_ipv6_keeps_its_scope() {
        let lo = lo_index();
        let want = |scope: u32| vec![format!("[fe80::1%{scope}]:80").parse::<SocketAddr>().unwrap()];
        assert_eq!(inet("[fe80::1%lo]:80"), want(lo));
        assert_eq!(inet(&format!("[fe80::1%{lo}]:80")), want(lo));
        // A number is taken as it is: the interface may come later.
        assert_eq!(inet("[fe80::1%4000000000]:80"), want(4_000_000_000));
        let e = addr_error("[fe80::1%no-such-if0]:80");
        assert!(e.contains("\"no-such-if0\""), "{e}");
        for s in [
            "[fe80::1%]:80",
            "[fe80::1%4294967296]:80",
            "[fe80::1%lo%lo]:80",
            "[fe80::1%l\0o]:80",
        ] {
            addr_error(s);
        }
    }

    #[test]
    fn scoped_ipv6_formats_with_the_index() {
        let lo = lo_index();
        let text = format(&Addr::parse("[fe80::1%lo]:80").unwrap().sock_addrs().unwrap()[0]);
        assert_eq!(text, format!("[fe80::1%{lo}]:80"));
        assert_eq!(inet(&text), inet("[fe80::1%lo]:80"));
    }

    #[test]
    fn unresolvable_names_are_addr_errors() {
        assert!(matches!(Addr::parse("nohost.invalid:80"), Err(Error::Addr(_))));
    }

    fn literal_error(s: &str) -> String {
        match parse_literal(s) {
            Err(e @ Error::Addr(_)) => e.to_string(),
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn literals_are_what_parse_gives_and_format_writes() {
        for s in [
            "127.0.0.1:5",
            "255.255.255.255:65535",
            "[::1]:5",
            "[fe80::1%7]:5",
            "unix:/tmp/a.sock",
            "unix:rel.sock",
        ] {
            let addr = parse_literal(s).unwrap();
            assert_eq!(addr, Addr::parse(s).unwrap().sock_addrs().unwrap()[0], "{s:?}");
            assert_eq!(format(&addr), s);
        }
        let scoped = parse_literal("[fe80::1%lo]:5").unwrap();
        assert_eq!(format(&scoped), format!("[fe80::1%{}]:5", lo_index()));
    }

    #[test]
    fn literals_refuse_names_without_looking_them_up() {
        // "cannot resolve" would mean a lookup was tried.
        for s in ["localhost:5", "nohost.invalid:5"] {
            let e = literal_error(s);
            assert!(
                e.contains("a name, not an address") && e.contains("does not resolve"),
                "{s:?}: {e}"
            );
        }
    }

    #[test]
    fn literals_refuse_what_a_datagram_cannot_reach() {
        for (s, why) in [
            (":5", "no host"),
            ("127.0.0.1:0", "port 0"),
            ("[::1]:0", "port 0"),
            ("unix:@x", "abstract"),
        ] {
            let e = literal_error(s);
            assert!(e.contains(why), "{s:?}: {e}");
        }
        for s in [
            "",
            "unix:",
            "127.0.0.1",
            "256.1.1.1:5",
            "::1:5",
            "[::1]",
            "a_b:5",
            "unix:/a\0b",
        ] {
            literal_error(s);
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in [
            "127.0.0.1:6666",
            "[::1]:5",
            "[fe80::1%7]:5",
            "unix:/tmp/a.sock",
            "unix:@netsock-test",
        ] {
            let a = Addr::parse(s).unwrap().sock_addrs().unwrap();
            assert_eq!(format(&a[0]), s);
        }
    }
}
