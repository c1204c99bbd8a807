//! `Framing::Len32` through `netsock::framing::feed`: no panic; one read, the input's chunk
//! sizes and one byte at a time all give the reference decoder's frames and outcome; frames
//! are <= max; re-encoded frames are the consumed prefix; an over-limit length fails at once;
//! `partial` stays bounded. Input layout: fuzz/src/lib.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netsock_fuzz::check::<netsock_fuzz::Len32>(data));
