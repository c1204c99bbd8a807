//! Message framing: cutting a byte stream into whole messages however the bytes were split or
//! coalesced on the wire, and writing messages framed the same way.

use crate::error::{Error, Result};

/// How a connection's byte stream is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No framing: `on_data` gets the bytes as each read delivered them.
    #[default]
    Raw,
    /// Lines ending in `\n`; the newline and a `\r` before it are not part of the message.
    Line,
    /// A 4-byte big-endian length, then that many bytes.
    Len32,
}

/// Cuts as many whole messages from `buf` as it holds, handing each to `emit` until `emit`
/// returns false. Returns how many bytes were used; the rest starts an incomplete message.
/// A message (or a line still without its newline) longer than `max` is an error.
pub fn split(framing: Framing, max: usize, buf: &[u8], mut emit: impl FnMut(&[u8]) -> bool) -> Result<usize> {
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let (msg, used) = match framing {
            Framing::Raw if rest.is_empty() => return Ok(pos),
            Framing::Raw => (rest, rest.len()),
            Framing::Line => match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let line = rest[..i].strip_suffix(b"\r").unwrap_or(&rest[..i]);
                    if line.len() > max {
                        return Err(too_large(line.len(), max));
                    }
                    (line, i + 1)
                }
                // One byte more than `max` may still be the `\r` of a line of exactly `max`.
                None if rest.len() > max.saturating_add(1) => return Err(too_large(rest.len(), max)),
                None => return Ok(pos),
            },
            Framing::Len32 => {
                let Some(head) = rest.first_chunk::<4>() else {
                    return Ok(pos);
                };
                let len = u32::from_be_bytes(*head) as usize;
                if len > max {
                    return Err(too_large(len, max));
                }
                match rest[4..].get(..len) {
                    Some(msg) => (msg, 4 + len),
                    None => return Ok(pos),
                }
            }
        };
        pos += used;
        if !emit(msg) {
            return Ok(pos);
        }
    }
}

fn too_large(len: usize, max: usize) -> Error {
    Error::Limit(format!("a {len}-byte message exceeds the {max}-byte frame limit").into())
}

/// Feeds one read's bytes through the framer. `partial` keeps an incomplete message between
/// reads (empty, and owning no memory, whenever the stream is between messages).
pub fn feed(
    framing: Framing,
    max: usize,
    partial: &mut Vec<u8>,
    chunk: &[u8],
    emit: impl FnMut(&[u8]) -> bool,
) -> Result<()> {
    if partial.is_empty() {
        let used = split(framing, max, chunk, emit)?;
        partial.extend_from_slice(&chunk[used..]);
    } else if framing == Framing::Line && !chunk.contains(&b'\n') {
        // The line goes on: only its length needs checking, not its start scanning again (a
        // peer sending a long line a byte at a time would cost time squared in its length).
        partial.extend_from_slice(chunk);
        if partial.len() > max.saturating_add(1) {
            return Err(too_large(partial.len(), max));
        }
    } else {
        partial.extend_from_slice(chunk);
        let used = split(framing, max, partial, emit)?;
        partial.drain(..used);
        if partial.is_empty() {
            *partial = Vec::new();
        }
    }
    Ok(())
}

/// What is left of the stream when the peer closes: a final line without its newline is a
/// line (as Go's `bufio.Scanner` reads it, less a trailing "\r"); a length-prefixed message
/// cut short is an error (`Closed`); raw bytes were all delivered already.
pub fn at_eof(framing: Framing, max: usize, partial: &[u8]) -> Result<Option<&[u8]>> {
    if partial.is_empty() {
        return Ok(None);
    }
    match framing {
        Framing::Raw => Ok(None),
        Framing::Line => {
            let line = partial.strip_suffix(b"\r").unwrap_or(partial);
            if line.len() > max {
                return Err(too_large(line.len(), max));
            }
            Ok(Some(line))
        }
        Framing::Len32 => Err(Error::Closed(
            format!("the peer closed {} bytes into a length-prefixed message", partial.len()).into(),
        )),
    }
}

/// What goes before and after a message's bytes on the wire.
pub(crate) fn envelope(framing: Framing, msg: &[u8]) -> Result<([u8; 4], usize, &'static [u8])> {
    match framing {
        Framing::Raw => Ok(([0; 4], 0, b"")),
        Framing::Line if msg.contains(&b'\n') => Err(Error::Invalid("a line message cannot contain '\\n'".into())),
        Framing::Line => Ok(([0; 4], 0, b"\n")),
        Framing::Len32 => {
            let len = u32::try_from(msg.len()).map_err(|_| Error::Invalid("message longer than 4 GiB".into()))?;
            Ok((len.to_be_bytes(), 4, b""))
        }
    }
}

/// The bytes the framing adds to `msg`, or why it cannot carry it.
pub(crate) fn envelope_len(framing: Framing, msg: &[u8]) -> Result<usize> {
    let (_, head_len, tail) = envelope(framing, msg)?;
    Ok(head_len + tail.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of `stream` when it arrives in the given chunk sizes (cycled).
    fn frames(framing: Framing, max: usize, stream: &[u8], sizes: &[usize]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut partial = Vec::new();
        let mut rest = stream;
        for &n in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(n.min(rest.len()));
            feed(framing, max, &mut partial, chunk, |m| {
                out.push(m.to_vec());
                true
            })?;
            rest = tail;
        }
        Ok(out)
    }

    fn len32(msgs: &[&[u8]]) -> Vec<u8> {
        msgs.iter()
            .flat_map(|m| (m.len() as u32).to_be_bytes().into_iter().chain(m.iter().copied()))
            .collect()
    }

    /// A small deterministic generator, so the property tests need no extra crate.
    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn any_split_yields_the_same_frames() {
        let mut seed = 0x9e3779b97f4a7c15;
        for round in 0..300 {
            let msgs: Vec<Vec<u8>> = (0..(xorshift(&mut seed) % 8))
                .map(|_| {
                    (0..xorshift(&mut seed) % 40)
                        .map(|_| b'a' + (xorshift(&mut seed) % 26) as u8)
                        .collect()
                })
                .collect();
            let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
            let lines: Vec<u8> = msgs.iter().flat_map(|m| m.iter().copied().chain(*b"\r\n")).collect();
            let sizes: Vec<usize> = (0..5).map(|_| 1 + (xorshift(&mut seed) % 17) as usize).collect();
            assert_eq!(
                frames(Framing::Len32, 64, &len32(&refs), &sizes).unwrap(),
                msgs,
                "round {round}"
            );
            assert_eq!(
                frames(Framing::Line, 64, &lines, &sizes).unwrap(),
                msgs,
                "round {round}"
            );
            assert_eq!(frames(Framing::Len32, 64, &len32(&refs), &[1]).unwrap(), msgs);
            assert_eq!(frames(Framing::Line, 64, &lines, &[usize::MAX]).unwrap(), msgs);
        }
    }

    #[test]
    fn lines_drop_newline_and_carriage_return() {
        let got = frames(Framing::Line, 10, b"a\nb\r\n\r\nc\rd\n", &[100]).unwrap();
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec(), b"".to_vec(), b"c\rd".to_vec()]);
    }

    #[test]
    fn limits_hold_just_under_and_just_over() {
        let at = vec![b'x'; 8];
        let over = vec![b'x'; 9];
        assert!(frames(Framing::Len32, 8, &len32(&[&at]), &[3]).is_ok());
        assert!(matches!(
            frames(Framing::Len32, 8, &len32(&[&over]), &[3]),
            Err(Error::Limit(_))
        ));
        assert!(frames(Framing::Line, 8, &[&at[..], b"\r\n"].concat(), &[1]).is_ok());
        assert!(matches!(
            frames(Framing::Line, 8, &[&over[..], b"\n"].concat(), &[1]),
            Err(Error::Limit(_))
        ));
        // A line that never ends is refused once it is too long, not buffered forever.
        assert!(matches!(
            frames(Framing::Line, 8, &[b'y'; 1000], &[1]),
            Err(Error::Limit(_))
        ));
    }

    #[test]
    fn a_huge_length_prefix_fails_at_once() {
        let mut partial = Vec::new();
        let r = feed(
            Framing::Len32,
            1 << 20,
            &mut partial,
            &[0xff, 0xff, 0xff, 0xff, 1, 2],
            |_| true,
        );
        assert!(matches!(r, Err(Error::Limit(_))));
        assert!(partial.capacity() < 64);
    }

    #[test]
    fn what_is_left_at_eof() {
        assert_eq!(at_eof(Framing::Line, 8, b"world").unwrap(), Some(&b"world"[..]));
        assert_eq!(at_eof(Framing::Line, 8, b"world\r").unwrap(), Some(&b"world"[..]));
        assert_eq!(at_eof(Framing::Line, 8, b"").unwrap(), None);
        assert!(matches!(at_eof(Framing::Line, 4, b"world"), Err(Error::Limit(_))));
        assert!(matches!(
            at_eof(Framing::Len32, 8, &[0, 0, 0, 9, 1]),
            Err(Error::Closed(_))
        ));
        assert_eq!(at_eof(Framing::Len32, 8, b"").unwrap(), None);
        assert_eq!(at_eof(Framing::Raw, 8, b"x").unwrap(), None);
    }

    #[test]
    fn envelopes() {
        assert_eq!(envelope(Framing::Len32, b"abc").unwrap(), ([0, 0, 0, 3], 4, &b""[..]));
        assert_eq!(envelope(Framing::Line, b"abc").unwrap(), ([0; 4], 0, &b"\n"[..]));
        assert!(matches!(envelope(Framing::Line, b"a\nb"), Err(Error::Invalid(_))));
        assert_eq!(envelope(Framing::Raw, b"abc").unwrap(), ([0; 4], 0, &b""[..]));
    }
}
