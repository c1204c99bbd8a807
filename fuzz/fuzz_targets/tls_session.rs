//! The TLS layer's glue between socket bytes and the rustls connection (`TlsSession`: feed,
//! read_plain, write_plain, write_cipher), as the stream handle drives it. Two modes, by the
//! low bit of the first byte:
//!
//! - raw: the rest is what a peer sends a server, cut into reads at the sizes the second byte
//!   gives. No panic; a failure is only `Tls` or `Closed`; no plaintext while handshaking;
//!   once `read_plain` says `Empty`, nothing waits in the session (the stream may read the
//!   socket again), so memory stays bounded by one read.
//! - pair: a netsock client and server session talk through memory, the reads cut at the
//!   input's sizes, one byte of the client's stream flipped at the input's position (or none).
//!   Unflipped, the handshake finishes and the server gets exactly the client's message;
//!   flipped, the server gets a prefix of it or nothing (never other bytes) and fails with
//!   `Tls` or `Closed`, or ignores the byte (it fell in a part TLS does not check).
//!
//! Input: [mode][size byte][flip position u16 BE (0xFFFF: none)][rest].
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netsock::tls_config::{TlsConfig, TlsSettings};
use netsock::{Error, TlsInput, TlsSession};

const CERT: &[u8] = include_bytes!("../../tests/tls/localhost.pem");
const KEY: &[u8] = include_bytes!("../../tests/tls/localhost.key");

fn configs() -> &'static (TlsConfig, TlsConfig) {
    static CONFIGS: OnceLock<(TlsConfig, TlsConfig)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let server = TlsSettings::server(CERT, KEY).unwrap().build().unwrap();
        let client = TlsSettings::client(Some(CERT)).unwrap().build().unwrap();
        (server, client.for_address("localhost:443").unwrap())
    })
}

/// Feeds `bytes` to `s` in reads of `size`, draining plaintext into `got` after each read.
/// Returns the failure, if any.
fn deliver(s: &mut TlsSession, bytes: &[u8], size: usize, got: &mut Vec<u8>) -> Option<Error> {
    let mut plain = [0u8; 4096];
    for read in bytes.chunks(size.max(1)) {
        if let Err(e) = s.feed(read) {
            return Some(e);
        }
        loop {
            match s.read_plain(&mut plain) {
                Ok(TlsInput::Plain(n)) => {
                    assert!(!s.handshaking(), "plaintext before the handshake finished");
                    got.extend_from_slice(&plain[..n]);
                }
                Ok(TlsInput::Empty) => {
                    assert!(s.wants_input(), "input waits in the session after Empty");
                    break;
                }
                Ok(TlsInput::End) => return None,
                Err(e) => return Some(e),
            }
        }
    }
    None
}

fn check_error(e: &Error) {
    assert!(matches!(e, Error::Tls(_) | Error::Closed(_)), "unexpected failure kind: {e:?}");
}

fn raw(size: usize, data: &[u8]) {
    let mut server = TlsSession::server(&configs().0).unwrap();
    let mut got = Vec::new();
    if let Some(e) = deliver(&mut server, data, size, &mut got) {
        check_error(&e);
    }
    // What the server answers (its hello, or an alert) is bounded too.
    let mut out = Vec::new();
    let _ = server.write_cipher(&mut out);
    assert!(out.len() < 64 * 1024, "{} bytes of output for {} of input", out.len(), data.len());
}

fn pair(size: usize, flip: Option<usize>, message: &[u8]) {
    let (server_config, client_config) = configs();
    let mut client = TlsSession::client(client_config).unwrap();
    let mut server = TlsSession::server(server_config).unwrap();
    client.write_plain(&[message]).unwrap();
    let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
    let mut sent = 0usize;
    let mut failed = None;
    for _ in 0..16 {
        let mut c2s = Vec::new();
        client.write_cipher(&mut c2s).unwrap();
        if let Some(at) = flip
            && (sent..sent + c2s.len()).contains(&at)
        {
            c2s[at - sent] ^= 0x01;
        }
        sent += c2s.len();
        let mut s2c = Vec::new();
        if let Some(e) = deliver(&mut server, &c2s, size, &mut at_server) {
            failed = Some(e);
        }
        server.write_cipher(&mut s2c).unwrap();
        if failed.is_some() {
            break;
        }
        if let Some(e) = deliver(&mut client, &s2c, size, &mut at_client) {
            check_error(&e);
            break;
        }
        if c2s.is_empty() && s2c.is_empty() {
            break;
        }
    }
    assert!(message.starts_with(&at_server), "the server got bytes the client never sent");
    match (flip.filter(|&at| at < sent), failed) {
        (None, None) => {
            assert!(!server.handshaking() && !client.handshaking(), "the handshake did not finish");
            assert_eq!(at_server, message, "the server did not get the whole message");
        }
        (None, Some(e)) => panic!("an untouched stream failed: {e}"),
        (Some(_), Some(e)) => check_error(&e),
        (Some(_), None) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, size, hi, lo, rest @ ..] = data else { return };
    let size = match *size {
        0 => 1,
        s => s as usize * 67,
    };
    if mode & 1 == 0 {
        raw(size, rest);
    } else {
        let flip = u16::from_be_bytes([*hi, *lo]);
        pair(size, (flip != u16::MAX).then_some(flip as usize), rest);
    }
});
