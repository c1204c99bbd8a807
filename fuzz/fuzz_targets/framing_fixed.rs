//! `Framing::Fixed(7)` through `netsock::framing::feed`: no panic; one read, the input's chunk sizes and
//! one byte at a time all give the reference decoder's frames and outcome; frames are <= max;
//! `partial` stays bounded. Input layout: fuzz/src/lib.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netsock_fuzz::check::<netsock_fuzz::Fixed7>(data));
