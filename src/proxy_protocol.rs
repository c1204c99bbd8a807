//! The PROXY protocol header (HAProxy's proxy-protocol.txt), versions 1 (text) and 2 (binary),
//! that load balancers put before a connection's first byte to name the client they accepted it
//! from. A pure parser: it reads what has arrived so far and says whether the header is whole,
//! needs more bytes, or is not a header, never looking past a header's bounded length (v1: 107
//! bytes; v2: 16 + its length field).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::SockAddr;

/// The longest v1 header, CRLF included (proxy-protocol.txt, 2.1).
pub const V1_MAX: usize = 107;
/// The fixed part of a v2 header: signature, version and command, family, length.
pub const V2_HEAD: usize = 16;
/// The v2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the bytes received so far hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// A prefix of a header: more bytes are needed. With the header's whole length once it is
    /// known (v2 after its 16-byte head).
    Partial(Option<usize>),
    /// A whole header of `len` bytes; `source` is the client it names, `None` when the header
    /// names none (v1 `UNKNOWN`, v2 `LOCAL` or an unspecified family): the connection's own
    /// peer stands.
    Done { len: usize, source: Option<SockAddr> },
}

/// Reads the start of a connection. `Err` says why it is not a PROXY header.
pub fn parse(buf: &[u8]) -> Result<Header, &'static str> {
    let Some(&first) = buf.first() else {
        return Ok(Header::Partial(None));
    };
    match first {
        b'P' => parse_v1(buf),
        b'\r' => parse_v2(buf),
        _ => Err("the connection does not start with a PROXY protocol header"),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Header, &'static str> {
    let sig = b"PROXY ";
    let n = buf.len().min(sig.len());
    if buf[..n] != sig[..n] {
        return Err("not a PROXY v1 signature");
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err("a PROXY v1 header longer than 107 bytes");
        }
        // A lone LF or CR inside the line can never become valid.
        if window.contains(&b'\n') || window[..window.len().saturating_sub(1)].contains(&b'\r') {
            return Err("a PROXY v1 header with a stray CR or LF");
        }
        return Ok(Header::Partial(None));
    };
    // A lone CR or LF before the CRLF is refused here as it is in a prefix (found by the
    // proxy_protocol fuzz target: an UNKNOWN line ignores the rest, but not its line breaks).
    if buf[..end].iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err("a PROXY v1 header with a stray CR or LF");
    }
    // The signature matched, so the CRLF comes after it.
    let line = std::str::from_utf8(&buf[sig.len()..end]).map_err(|_| "a PROXY v1 header that is not ASCII")?;
    let len = end + 2;
    let mut words = line.split(' ');
    let proto = words.next().unwrap_or("");
    if proto == "UNKNOWN" {
        // The rest of an UNKNOWN line is to be ignored (2.1).
        return Ok(Header::Done { len, source: None });
    }
    let fields: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err("a PROXY v1 header without its four fields");
    };
    // The destination is checked as strictly as the source, though only the source is used.
    let src: IpAddr = match proto {
        "TCP4" => v4(dst).and(v4(src))?.into(),
        "TCP6" => v6(dst).and(v6(src))?.into(),
        _ => return Err("a PROXY v1 header with a protocol other than TCP4, TCP6 or UNKNOWN"),
    };
    let sport = port(dport).and(port(sport))?;
    Ok(Header::Done {
        len,
        source: Some(SockAddr::from(SocketAddr::new(src, sport))),
    })
}

fn v4(s: &str) -> Result<Ipv4Addr, &'static str> {
    s.parse().map_err(|_| "a PROXY v1 header with a bad IPv4 address")
}

fn v6(s: &str) -> Result<Ipv6Addr, &'static str> {
    // Bare addresses only: no brackets, no scope.
    if s.contains('%') {
        return Err("a PROXY v1 header with a scoped IPv6 address");
    }
    s.parse().map_err(|_| "a PROXY v1 header with a bad IPv6 address")
}

/// A port as v1 writes it: 1 to 5 digits, no sign, no leading zero.
fn port(s: &str) -> Result<u16, &'static str> {
    let ok =
        !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok())
        .flatten()
        .ok_or("a PROXY v1 header with a bad port")
}

fn parse_v2(buf: &[u8]) -> Result<Header, &'static str> {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] != V2_SIG[..n] {
        return Err("not a PROXY v2 signature");
    }
    if buf.len() < V2_HEAD {
        return Ok(Header::Partial(None));
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err("a PROXY v2 header of another version");
    }
    let len = V2_HEAD + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return Ok(Header::Partial(Some(len)));
    }
    let body = &buf[V2_HEAD..len];
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err("a PROXY v2 header with an unknown command"),
    };
    // The addresses are read (and checked to fit) even for LOCAL, which then ignores them.
    let source = match fam {
        // UNSPEC: no address; the receiver keeps the connection's own.
        0x00 => None,
        // TCP and UDP over IPv4.
        0x11 | 0x12 => {
            let a = body.get(..12).ok_or("a PROXY v2 IPv4 address block cut short")?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SockAddr::from(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        0x21 | 0x22 => {
            let a = body.get(..36).ok_or("a PROXY v2 IPv6 address block cut short")?;
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&a[..16]).expect("16 bytes"));
            Some(SockAddr::from(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        0x31 | 0x32 => {
            let a = body.get(..216).ok_or("a PROXY v2 Unix address block cut short")?;
            let path = &a[..108];
            let path = &path[..path.iter().position(|&b| b == 0).unwrap_or(108)];
            // An unnamed or abstract sender has no path to report: its own peer stands.
            match path {
                [] => None,
                p => Some(
                    SockAddr::unix(std::str::from_utf8(p).map_err(|_| "a PROXY v2 Unix path that is not UTF-8")?)
                        .map_err(|_| "a PROXY v2 Unix path that is too long")?,
                ),
            }
        }
        _ => return Err("a PROXY v2 header with an unknown address family"),
    };
    Ok(Header::Done {
        len,
        source: if local { None } else { source },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (usize, Option<String>) {
        match parse(buf) {
            Ok(Header::Done { len, source }) => (len, source.map(|a| crate::addr::format(&a))),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn v2(cmd: u8, fam: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h.extend_from_slice(tlvs);
        h
    }

    fn v2_inet4(src: [u8; 4], sport: u16) -> Vec<u8> {
        let mut a = src.to_vec();
        a.extend_from_slice(&[127, 0, 0, 1]);
        a.extend_from_slice(&sport.to_be_bytes());
        a.extend_from_slice(&80u16.to_be_bytes());
        a
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET /";
        assert_eq!(done(h), (45, Some("192.0.2.7:56324".into())));
        let h = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
        assert_eq!(done(h), (h.len(), Some("[2001:db8::1]:1".into())));
        assert_eq!(done(b"PROXY UNKNOWN\r\n"), (15, None));
        assert_eq!(done(b"PROXY UNKNOWN ffff:f...f:ffff 1 2\r\nxx"), (35, None));
    }

    #[test]
    fn v1_malformed() {
        for h in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY\r\n",
            b"PROXX TCP4",
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
            b"PROXY UNKNOWN 1.2.3.4\r5\r\n",
            b"PROXY UNKNOWN \n\r\n",
        ] {
            assert!(parse(h).is_err(), "{:?} accepted", String::from_utf8_lossy(h));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert!(parse(&long).is_err());
    }

    #[test]
    fn v2_headers() {
        let h = v2(1, 0x11, &v2_inet4([10, 1, 2, 3], 4000), &[]);
        assert_eq!(done(&h), (28, Some("10.1.2.3:4000".into())));
        // TLVs (here a 3-byte NOOP) are skipped.
        let mut with_data = v2(1, 0x11, &v2_inet4([10, 1, 2, 3], 4000), &[4, 0, 0]);
        with_data.extend_from_slice(b"hello");
        assert_eq!(done(&with_data), (31, Some("10.1.2.3:4000".into())));
        let mut a6 = [0u8; 36];
        a6[15] = 1;
        a6[32..34].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(done(&v2(1, 0x21, &a6, &[])).1, Some("[::1]:7".into()));
        // LOCAL: the real peer stands, whatever the block holds.
        assert_eq!(done(&v2(0, 0x11, &v2_inet4([10, 1, 2, 3], 4000), &[])).1, None);
        assert_eq!(done(&v2(0, 0x00, &[], &[])), (16, None));
        let mut unix = [0u8; 216];
        unix[..9].copy_from_slice(b"/tmp/a.sk");
        assert_eq!(done(&v2(1, 0x31, &unix, &[])).1, Some("unix:/tmp/a.sk".into()));
    }

    #[test]
    fn v2_malformed() {
        let good = v2(1, 0x11, &v2_inet4([10, 1, 2, 3], 4000), &[]);
        let mut bad_version = good.clone();
        bad_version[12] = 0x11;
        let mut bad_cmd = good.clone();
        bad_cmd[12] = 0x2f;
        let mut bad_fam = good.clone();
        bad_fam[13] = 0x41;
        let short = v2(1, 0x11, &[1, 2, 3, 4], &[]);
        let short6 = v2(1, 0x21, &[0; 12], &[]);
        let mut bad_sig = good.clone();
        bad_sig[5] = b'x';
        for h in [bad_version, bad_cmd, bad_fam, short, short6, bad_sig] {
            assert!(parse(&h).is_err(), "{h:?} accepted");
        }
    }

    /// A tiny xorshift generator: the properties run over many inputs without a crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Up to `max - 1` random bytes.
        fn bytes(&mut self, max: u64) -> Vec<u8> {
            let n = self.next() % max;
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn random_header(rng: &mut Rng) -> (Vec<u8>, Option<SocketAddr>) {
        let port = rng.next() as u16;
        let ip: IpAddr = if rng.next() % 2 == 0 {
            Ipv4Addr::from(rng.next() as u32).into()
        } else {
            Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next())).into()
        };
        let src = SocketAddr::new(ip, port);
        match rng.next() % 3 {
            0 => {
                let (proto, dst) = if ip.is_ipv4() {
                    ("TCP4", "127.0.0.1")
                } else {
                    ("TCP6", "::1")
                };
                (
                    format!("PROXY {proto} {ip} {dst} {port} 80\r\n").into_bytes(),
                    Some(src),
                )
            }
            1 => {
                let (fam, mut addrs) = match ip {
                    IpAddr::V4(v) => (0x11, [v.octets().as_slice(), &[0; 4]].concat()),
                    IpAddr::V6(v) => (0x21, [v.octets().as_slice(), &[0; 16]].concat()),
                };
                addrs.extend_from_slice(&port.to_be_bytes());
                addrs.extend_from_slice(&80u16.to_be_bytes());
                let tlvs = rng.bytes(40);
                (v2(1, fam, &addrs, &tlvs), Some(src))
            }
            _ => (v2(0, 0, &[], &rng.bytes(20)), None),
        }
    }

    #[test]
    fn property_every_prefix_is_partial_and_the_whole_is_done() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let (h, src) = random_header(&mut rng);
            for cut in 0..h.len() {
                assert!(matches!(parse(&h[..cut]), Ok(Header::Partial(_))), "{h:?} cut at {cut}");
            }
            let mut with_data = h.clone();
            with_data.extend(rng.bytes(64));
            let Ok(Header::Done { len, source }) = parse(&with_data) else {
                panic!("{h:?} not done")
            };
            assert_eq!(len, h.len());
            assert_eq!(source.and_then(|s| s.as_socket()), src);
        }
    }

    #[test]
    fn property_any_bytes_parse_without_panic_within_bounds() {
        let mut rng = Rng(12345);
        for i in 0..20000 {
            // Mostly near-headers: a valid one with bytes flipped, cut or replaced.
            let (mut h, _) = random_header(&mut rng);
            match i % 3 {
                0 => {
                    let at = (rng.next() as usize) % h.len();
                    h[at] ^= 1 << (rng.next() % 8);
                }
                1 => h.truncate((rng.next() as usize) % (h.len() + 1)),
                _ => h = rng.bytes(300),
            }
            match parse(&h) {
                Ok(Header::Done { len, .. }) => assert!(len <= h.len() && len <= V2_HEAD + 65535),
                Ok(Header::Partial(Some(len))) => assert!(len > h.len()),
                Ok(Header::Partial(None)) => assert!(h.len() < V1_MAX.max(V2_HEAD)),
                Err(_) => {}
            }
        }
    }
}
