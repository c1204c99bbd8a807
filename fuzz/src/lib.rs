//! Shared by the framing fuzz targets: how a fuzz input is read, a reference decoder, and the
//! checks that hold for every framing.
//!
//! Input layout (see README.md; `make_corpus.py` writes seeds in it):
//!
//! | bytes        | meaning                                                                 |
//! |--------------|-------------------------------------------------------------------------|
//! | 0            | `max`: 0..=0xEF as is; 0xF0..=0xFE: `1 << (8 + b - 0xF0)`; 0xFF: `usize::MAX` |
//! | 1            | low nibble: `k`, how many chunk sizes follow; high nibble: stop after that many frames (0: never) |
//! | 2..2+k       | chunk sizes, cycled (0 feeds an empty chunk; none, or all 0: one byte at a time) |
//! | the rest     | the byte stream                                                         |

use netsock::framing::{Delimiter, Framing, LengthField, feed};

/// One fuzz input, read as above.
pub struct Case<'a> {
    pub max: usize,
    pub stop_after: usize,
    pub sizes: Vec<usize>,
    pub stream: &'a [u8],
}

impl<'a> Case<'a> {
    pub fn read(data: &'a [u8]) -> Option<Case<'a>> {
        let (&m, rest) = data.split_first()?;
        let (&ctl, rest) = rest.split_first()?;
        let max = match m {
            0..=0xEF => m as usize,
            0xF0..=0xFE => 1usize << (8 + (m - 0xF0)),
            0xFF => usize::MAX,
        };
        let k = (ctl & 0x0F) as usize;
        if rest.len() < k {
            return None;
        }
        let (sizes, stream) = rest.split_at(k);
        let mut sizes: Vec<usize> = sizes.iter().map(|&b| b as usize).collect();
        if sizes.iter().all(|&n| n == 0) {
            sizes = vec![1];
        }
        Some(Case { max, stop_after: (ctl >> 4) as usize, sizes, stream })
    }
}

/// How a decoding ended: `Ok(consumed)` (the rest waits for more bytes), or `Err(at)` (the
/// message starting at byte `at` breaks the limit).
pub type Outcome = Result<usize, usize>;

/// What a framing's checks need to know beyond the decoder under test.
pub trait Spec {
    fn framing() -> Framing;
    /// The reference decoder: frames and outcome of the whole stream, written independently.
    fn reference(max: usize, stream: &[u8]) -> (Vec<Vec<u8>>, Outcome);
    /// Most bytes `partial` may keep between reads.
    fn pending_bound(max: usize) -> usize;
    /// Checks the frames against the stream they came from; returns where the frames end.
    fn reencode(max: usize, stream: &[u8], frames: &[Vec<u8>]) -> usize;
    /// The unconsumed tail after an `Ok`: it must hold no whole message.
    fn check_pending(max: usize, rest: &[u8]);
    /// The message at the start of `rest` must be one that breaks the limit.
    fn check_error(max: usize, rest: &[u8]);
}

/// Feeds `stream` in chunks of `sizes` (cycled), checking `partial` after every read.
/// Returns the frames and whether every read succeeded, and the final `partial`.
fn feed_chunked(framing: Framing, max: usize, stream: &[u8], sizes: &[usize], bound: usize) -> (Vec<Vec<u8>>, bool, Vec<u8>) {
    let mut frames = Vec::new();
    let mut partial = Vec::new();
    let mut rest = stream;
    let mut biggest = 0;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        biggest = biggest.max(chunk.len());
        let r = feed(framing, max, &mut partial, chunk, |m| {
            frames.push(m.to_vec());
            true
        });
        if r.is_err() {
            return (frames, false, partial);
        }
        // Between reads, `partial` holds at most one incomplete message ...
        assert!(partial.len() <= bound, "partial holds {} bytes, bound {bound}", partial.len());
        // ... owns no memory when it holds nothing ...
        assert!(
            !partial.is_empty() || partial.capacity() == 0,
            "empty partial still owns {} bytes",
            partial.capacity()
        );
        // ... and never more than (max + one chunk), doubled by Vec's amortized growth.
        let cap_bound = bound.saturating_add(biggest).saturating_mul(2).max(8);
        assert!(
            partial.capacity() <= cap_bound,
            "partial owns {} bytes, bound {cap_bound}",
            partial.capacity()
        );
    }
    (frames, true, partial)
}

/// Every check for one input.
pub fn check<S: Spec>(data: &[u8]) {
    let Some(case) = Case::read(data) else { return };
    let (max, stream) = (case.max, case.stream);
    let bound = S::pending_bound(max);

    // The stream in one read.
    let mut whole = Vec::new();
    let mut partial = Vec::new();
    let r = feed(S::framing(), max, &mut partial, stream, |m| {
        whole.push(m.to_vec());
        true
    });

    // Matches the reference decoder.
    let (want, outcome) = S::reference(max, stream);
    assert_eq!(whole, want, "frames differ from the reference decoder");
    assert_eq!(r.is_ok(), outcome.is_ok(), "outcome differs from the reference decoder: {r:?} vs {outcome:?}");

    // Every frame is within the limit; the frames re-encode to the consumed prefix.
    for f in &whole {
        assert!(f.len() <= max, "a {}-byte frame exceeds max {max}", f.len());
    }
    let end = S::reencode(max, stream, &whole);
    match outcome {
        Ok(consumed) => {
            assert_eq!(end, consumed, "frames end at {end}, the decoder consumed {consumed}");
            assert_eq!(partial, &stream[consumed..], "partial is not the unconsumed tail");
            assert!(partial.len() <= bound, "partial holds {} bytes, bound {bound}", partial.len());
            S::check_pending(max, &stream[consumed..]);
        }
        Err(at) => {
            assert_eq!(end, at, "frames end at {end}, the error is at {at}");
            S::check_error(max, &stream[at..]);
        }
    }

    // Any split into reads yields the same frames and the same outcome: the sizes from the
    // input, then one byte at a time.
    for sizes in [&case.sizes[..], &[1]] {
        let (frames, ok, partial) = feed_chunked(S::framing(), max, stream, sizes, bound);
        assert_eq!(frames, whole, "chunks {sizes:?}: frames differ from one read");
        assert_eq!(ok, r.is_ok(), "chunks {sizes:?}: outcome differs from one read");
        if let Ok(consumed) = outcome {
            assert_eq!(partial, &stream[consumed..], "chunks {sizes:?}: partial is not the unconsumed tail");
        }
    }

    // `emit` returning false stops at once: the frames so far, `Ok`, and the rest in `partial`.
    if case.stop_after > 0 {
        let n = case.stop_after;
        let mut got = Vec::new();
        let mut partial = Vec::new();
        let r = feed(S::framing(), max, &mut partial, stream, |m| {
            got.push(m.to_vec());
            got.len() < n
        });
        if whole.len() >= n {
            assert_eq!(got, whole[..n], "stop after {n}: wrong frames");
            assert!(r.is_ok(), "stop after {n}: {r:?}");
            let at = S::reencode(max, stream, &got);
            assert_eq!(partial, &stream[at..], "stop after {n}: partial is not the rest");
        } else {
            assert_eq!(got, whole, "stop after {n}: frames differ");
            assert_eq!(r.is_ok(), outcome.is_ok(), "stop after {n}: outcome differs");
        }
    }
}

/// `\n`-terminated lines, a `\r` before the `\n` dropped.
pub struct Line;

impl Spec for Line {
    fn framing() -> Framing {
        Framing::Line
    }

    fn reference(max: usize, stream: &[u8]) -> (Vec<Vec<u8>>, Outcome) {
        let mut frames = Vec::new();
        let mut start = 0;
        for (i, &b) in stream.iter().enumerate() {
            if b == b'\n' {
                let mut line = &stream[start..i];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                if line.len() > max {
                    return (frames, Err(start));
                }
                frames.push(line.to_vec());
                start = i + 1;
            }
        }
        // An unterminated tail may be a line of `max` bytes plus its `\r`; beyond that it is
        // too long whatever comes next.
        let tail = stream.len() - start;
        if max < usize::MAX && tail > max + 1 { (frames, Err(start)) } else { (frames, Ok(start)) }
    }

    fn pending_bound(max: usize) -> usize {
        max.saturating_add(1)
    }

    fn reencode(_max: usize, stream: &[u8], frames: &[Vec<u8>]) -> usize {
        let mut pos = 0;
        for f in frames {
            assert!(!f.contains(&b'\n'), "a line frame contains '\\n'");
            assert!(stream[pos..].starts_with(f), "frame is not the stream's next bytes");
            pos += f.len();
            match &stream[pos..] {
                [b'\n', ..] => {
                    assert!(!f.ends_with(b"\r"), "a frame kept the '\\r' before its '\\n'");
                    pos += 1;
                }
                [b'\r', b'\n', ..] => pos += 2,
                _ => panic!("frame is not followed by \\n or \\r\\n"),
            }
        }
        pos
    }

    fn check_pending(max: usize, rest: &[u8]) {
        assert!(!rest.contains(&b'\n'), "a whole line was left unread");
        assert!(rest.len() <= max.saturating_add(1), "a too-long line was kept");
    }

    fn check_error(max: usize, rest: &[u8]) {
        let len = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => rest[..i].strip_suffix(b"\r").unwrap_or(&rest[..i]).len(),
            None => rest.len().saturating_sub(1),
        };
        assert!(len > max, "a {len}-byte line was refused with max {max}");
    }
}

/// A 4-byte big-endian length, then that many bytes.
pub struct Len32;

impl Spec for Len32 {
    fn framing() -> Framing {
        Framing::Len32
    }

    fn reference(max: usize, stream: &[u8]) -> (Vec<Vec<u8>>, Outcome) {
        let mut frames = Vec::new();
        let mut pos = 0;
        while stream.len() - pos >= 4 {
            let len = u32::from_be_bytes(stream[pos..pos + 4].try_into().unwrap()) as u64;
            if len > max as u64 {
                return (frames, Err(pos));
            }
            let end = pos as u64 + 4 + len;
            if end > stream.len() as u64 {
                break;
            }
            frames.push(stream[pos + 4..end as usize].to_vec());
            pos = end as usize;
        }
        (frames, Ok(pos))
    }

    fn pending_bound(max: usize) -> usize {
        // A header and all but the last byte of its body; or a partial header.
        max.saturating_add(3).max(3)
    }

    fn reencode(_max: usize, stream: &[u8], frames: &[Vec<u8>]) -> usize {
        let encoded: Vec<u8> = frames
            .iter()
            .flat_map(|f| (f.len() as u32).to_be_bytes().into_iter().chain(f.iter().copied()))
            .collect();
        assert!(stream.starts_with(&encoded), "re-encoded frames are not the stream's prefix");
        encoded.len()
    }

    fn check_pending(max: usize, rest: &[u8]) {
        if let Some(head) = rest.first_chunk::<4>() {
            let len = u32::from_be_bytes(*head) as u64;
            assert!(len <= max as u64, "an over-limit header was kept");
            assert!((rest.len() as u64) < 4 + len, "a whole message was left unread");
        }
    }

    fn check_error(max: usize, rest: &[u8]) {
        let head = rest.first_chunk::<4>().expect("an error before a whole header");
        let len = u32::from_be_bytes(*head) as u64;
        assert!(len > max as u64, "a {len}-byte message was refused with max {max}");
    }
}

/// Messages ending with "\r\n", which is not part of them.
pub struct Crlf;

impl Spec for Crlf {
    fn framing() -> Framing {
        Framing::Delimiter(Delimiter::new(b"\r\n").unwrap())
    }

    fn reference(max: usize, stream: &[u8]) -> (Vec<Vec<u8>>, Outcome) {
        let mut frames = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i + 1 < stream.len() {
            if stream[i] == b'\r' && stream[i + 1] == b'\n' {
                if i - start > max {
                    return (frames, Err(start));
                }
                frames.push(stream[start..i].to_vec());
                start = i + 2;
                i = start;
            } else {
                i += 1;
            }
        }
        // An unended tail may be a message of `max` bytes and the "\r" of its delimiter.
        let tail = stream.len() - start;
        if max < usize::MAX && tail > max + 1 { (frames, Err(start)) } else { (frames, Ok(start)) }
    }

    fn pending_bound(max: usize) -> usize {
        max.saturating_add(1)
    }

    fn reencode(_max: usize, stream: &[u8], frames: &[Vec<u8>]) -> usize {
        let encoded: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied().chain(*b"\r\n")).collect();
        assert!(stream.starts_with(&encoded), "re-encoded frames are not the stream's prefix");
        for f in frames {
            assert!(!f.windows(2).any(|w| w == b"\r\n"), "a frame holds its delimiter");
        }
        encoded.len()
    }

    fn check_pending(max: usize, rest: &[u8]) {
        assert!(!rest.windows(2).any(|w| w == b"\r\n"), "a whole message was left unread");
        assert!(rest.len() <= max.saturating_add(1), "a too-long message was kept");
    }

    fn check_error(max: usize, rest: &[u8]) {
        let len = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => i,
            None => rest.len().saturating_sub(1),
        };
        assert!(len > max, "a {len}-byte message was refused with max {max}");
    }
}

/// DNS over TCP: a 2-byte big-endian length at offset 0; frames delivered whole.
pub struct Dns;

impl Spec for Dns {
    fn framing() -> Framing {
        Framing::LengthField(LengthField::new(0, 2, false, 0).unwrap())
    }

    fn reference(max: usize, stream: &[u8]) -> (Vec<Vec<u8>>, Outcome) {
        let mut frames = Vec::new();
        let mut pos = 0;
        while stream.len() - pos >= 2 {
            let total = 2 + u16::from_be_bytes([stream[pos], stream[pos + 1]]) as usize;
            if total > max {
                return (frames, Err(pos));
            }
            if pos + total > stream.len() {
                break;
            }
            frames.push(stream[pos..pos + total].to_vec());
            pos += total;
        }
        (frames, Ok(pos))
    }

    fn pending_bound(max: usize) -> usize {
        max.saturating_sub(1).max(1)
    }

    fn reencode(_max: usize, stream: &[u8], frames: &[Vec<u8>]) -> usize {
        let encoded: Vec<u8> = frames.concat();
        assert!(stream.starts_with(&encoded), "frames are not the stream's prefix");
        for f in frames {
            assert_eq!(f.len(), 2 + u16::from_be_bytes([f[0], f[1]]) as usize, "a frame of the wrong length");
        }
        encoded.len()
    }

    fn check_pending(max: usize, rest: &[u8]) {
        if rest.len() >= 2 {
            let total = 2 + u16::from_be_bytes([rest[0], rest[1]]) as usize;
            assert!(total <= max, "an over-limit header was kept");
            assert!(rest.len() < total, "a whole frame was left unread");
        }
    }

    fn check_error(max: usize, rest: &[u8]) {
        let total = 2 + u16::from_be_bytes([rest[0], rest[1]]) as usize;
        assert!(total > max, "a {total}-byte frame was refused with max {max}");
    }
}

/// Messages of exactly 7 bytes.
pub struct Fixed7;

impl Spec for Fixed7 {
    fn framing() -> Framing {
        Framing::Fixed(7)
    }

    fn reference(max: usize, stream: &[u8]) -> (Vec<Vec<u8>>, Outcome) {
        if max < 7 {
            return (Vec::new(), if stream.is_empty() { Ok(0) } else { Err(0) });
        }
        let n = stream.len() / 7;
        (stream[..n * 7].chunks(7).map(<[u8]>::to_vec).collect(), Ok(n * 7))
    }

    fn pending_bound(_max: usize) -> usize {
        6
    }

    fn reencode(_max: usize, stream: &[u8], frames: &[Vec<u8>]) -> usize {
        let encoded = frames.concat();
        assert!(stream.starts_with(&encoded), "frames are not the stream's prefix");
        assert!(frames.iter().all(|f| f.len() == 7), "a frame of another size");
        encoded.len()
    }

    fn check_pending(_max: usize, rest: &[u8]) {
        assert!(rest.len() < 7, "a whole message was left unread");
    }

    fn check_error(max: usize, _rest: &[u8]) {
        assert!(max < 7, "a 7-byte message was refused with max {max}");
    }
}
