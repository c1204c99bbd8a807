//! `netsock::proxy_protocol::parse`: never panics on any bytes; a whole header lies within the
//! input and its bounds (v1: 107 bytes; v2: 16 + its length field); a header's length does
//! not change with what follows it; every strict prefix of a whole header is partial; a
//! partial v2 header that knows its length asks for more than it has.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsock::proxy_protocol::{Header, V1_MAX, V2_HEAD, parse};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Header::Done { len, source }) => {
            assert!(len <= data.len(), "a header longer than the input");
            if data[0] == b'P' {
                assert!(len <= V1_MAX, "a v1 header over 107 bytes");
            } else {
                let announced = V2_HEAD + usize::from(u16::from_be_bytes([data[14], data[15]]));
                assert_eq!(len, announced, "a v2 header not of its announced length");
            }
            for cut in 0..len {
                assert!(
                    matches!(parse(&data[..cut]), Ok(Header::Partial(_))),
                    "a prefix of {cut} bytes of a whole header is not partial"
                );
            }
            match parse(&data[..len]) {
                Ok(Header::Done { len: again, source: s }) => {
                    assert_eq!(again, len);
                    assert_eq!(s, source);
                }
                other => panic!("the header alone parses as {other:?}"),
            }
        }
        Ok(Header::Partial(Some(len))) => assert!(len > data.len() && len <= V2_HEAD + 65535),
        Ok(Header::Partial(None)) => assert!(data.len() < V1_MAX),
        Err(_) => {}
    }
});
