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
    /// Messages ending with a delimiter of 1 to 8 bytes, not part of the message.
    Delimiter(Delimiter),
    /// Frames whose length is a field of their header; delivered whole, header included.
    LengthField(LengthField),
    /// Messages of exactly this many bytes.
    Fixed(usize),
}

/// The delimiter of [`Framing::Delimiter`]: 1 to 8 bytes, kept inline (framing is `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiter {
    bytes: [u8; 8],
    len: u8,
}

impl Delimiter {
    pub fn new(delim: &[u8]) -> Result<Delimiter> {
        if delim.is_empty() || delim.len() > 8 {
            return Err(Error::Invalid("a delimiter has 1 to 8 bytes".into()));
        }
        let mut bytes = [0; 8];
        bytes[..delim.len()].copy_from_slice(delim);
        Ok(Delimiter {
            bytes,
            len: delim.len() as u8,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Where the delimiter first occurs in `buf`.
    fn find(&self, buf: &[u8]) -> Option<usize> {
        match self.as_bytes() {
            [b] => buf.iter().position(|x| x == b),
            d => buf.windows(d.len()).position(|w| w == d),
        }
    }
}

/// The length field of [`Framing::LengthField`]: `size` bytes (1, 2, 4 or 8; 0 for an unsigned
/// LEB128 varint of at most 10) at `offset` from the frame's start, in the given byte order,
/// giving L; the whole frame is `offset + size + L + adjust` bytes. DNS over TCP is
/// `(0, 2, big, 0)`, PostgreSQL `(1, 4, big, -4)`, MQTT `(1, varint, -, 0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthField {
    pub offset: usize,
    pub size: u8,
    pub little_endian: bool,
    pub adjust: i64,
}

/// Longest LEB128 varint read: ten bytes hold 64 bits.
const VARINT_MAX: usize = 10;

impl LengthField {
    pub fn new(offset: usize, size: usize, little_endian: bool, adjust: i64) -> Result<LengthField> {
        if !matches!(size, 0 | 1 | 2 | 4 | 8) {
            return Err(Error::Invalid(
                format!("a length field has 1, 2, 4 or 8 bytes, or 0 for a varint (not {size})").into(),
            ));
        }
        if offset > 1 << 20 {
            return Err(Error::Invalid("a length field's offset is at most 1 MiB".into()));
        }
        Ok(LengthField {
            offset,
            size: size as u8,
            little_endian,
            adjust,
        })
    }

    /// The frame's whole length, once its header is in `buf`: `Ok(None)` until then.
    fn frame_len(&self, buf: &[u8], max: usize) -> Result<Option<usize>> {
        let at = self.offset;
        let (len, header) = if self.size == 0 {
            let mut value: u64 = 0;
            let mut i = 0;
            loop {
                let Some(&b) = buf.get(at + i) else {
                    return Ok(None);
                };
                if i == VARINT_MAX - 1 && b > 1 {
                    return Err(Error::Limit("a varint length over 64 bits".into()));
                }
                value |= u64::from(b & 0x7f) << (7 * i);
                i += 1;
                if b & 0x80 == 0 {
                    break (value, at + i);
                }
                if i == VARINT_MAX {
                    return Err(Error::Limit("a varint length over 10 bytes".into()));
                }
            }
        } else {
            let size = usize::from(self.size);
            let Some(field) = buf.get(at..at + size) else {
                return Ok(None);
            };
            let mut raw = [0u8; 8];
            let value = if self.little_endian {
                raw[..size].copy_from_slice(field);
                u64::from_le_bytes(raw)
            } else {
                raw[8 - size..].copy_from_slice(field);
                u64::from_be_bytes(raw)
            };
            (value, at + size)
        };
        let total = header as i128 + i128::from(len) + i128::from(self.adjust);
        if total < header as i128 {
            return Err(Error::Limit(
                format!("a length field of {len} makes a {total}-byte frame, shorter than its {header}-byte header")
                    .into(),
            ));
        }
        if total > max as i128 {
            return Err(Error::Limit(
                format!("a {total}-byte frame exceeds the {max}-byte frame limit").into(),
            ));
        }
        Ok(Some(total as usize))
    }

    /// The header of a frame carrying `body` (offset 0 only: the field starts the frame).
    fn header(&self, body: usize) -> Result<Head> {
        if self.offset != 0 {
            return Err(Error::Invalid(
                "a length field not at the frame's start: send the whole frame with a plain send".into(),
            ));
        }
        let len = i128::try_from(body).unwrap_or(i128::MAX) - i128::from(self.adjust);
        let Ok(len) = u64::try_from(len) else {
            return Err(Error::Invalid(
                "the message is shorter than the length adjustment".into(),
            ));
        };
        let mut head = Head::default();
        if self.size == 0 {
            let mut v = len;
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                head.bytes[head.len] = b | if v > 0 { 0x80 } else { 0 };
                head.len += 1;
                if v == 0 {
                    break;
                }
            }
        } else {
            let size = usize::from(self.size);
            if size < 8 && len >> (8 * size) != 0 {
                return Err(Error::Invalid(
                    format!("{len} does not fit a {size}-byte length field").into(),
                ));
            }
            if self.little_endian {
                head.bytes[..size].copy_from_slice(&len.to_le_bytes()[..size]);
            } else {
                head.bytes[..size].copy_from_slice(&len.to_be_bytes()[8 - size..]);
            }
            head.len = size;
        }
        Ok(head)
    }
}

impl Framing {
    /// Whether a setting is complete (a fixed size of 0 is not).
    pub fn check(&self) -> Result<()> {
        match self {
            Framing::Fixed(0) => Err(Error::Invalid(
                "fixed framing needs a size (ns_options_set_fixed_size)".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// What framing writes before a message (at most a 10-byte varint).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Head {
    bytes: [u8; VARINT_MAX],
    len: usize,
}

impl Head {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
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
            Framing::Delimiter(d) => {
                let dl = d.as_bytes().len();
                match d.find(rest) {
                    Some(i) if i > max => return Err(too_large(i, max)),
                    Some(i) => (&rest[..i], i + dl),
                    // Up to `dl - 1` bytes past `max` may still begin the delimiter.
                    None if rest.len() > max.saturating_add(dl - 1) => return Err(too_large(rest.len(), max)),
                    None => return Ok(pos),
                }
            }
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
            Framing::LengthField(f) => match f.frame_len(rest, max)? {
                Some(total) if rest.len() >= total => (&rest[..total], total),
                _ => return Ok(pos),
            },
            Framing::Fixed(n) if n == 0 || rest.is_empty() => return Ok(pos),
            Framing::Fixed(n) if n > max => return Err(too_large(n, max)),
            Framing::Fixed(n) if rest.len() < n => return Ok(pos),
            Framing::Fixed(n) => (&rest[..n], n),
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
        return Ok(());
    }
    // A line (or delimited message) that goes on: only its length needs checking, not its
    // start scanning again (a peer sending a long one a byte at a time would cost time
    // squared in its length). A delimiter may begin in what was there before.
    // `Some(slack)`: the message did not end, and may pass `max` by `slack` bytes of what
    // could still be its end (a line's "\r").
    let unended = match framing {
        Framing::Line => (!chunk.contains(&b'\n')).then_some(1),
        Framing::Delimiter(d) => {
            // Where the delimiter may straddle the reads: the last `dl - 1` bytes before and
            // the first `dl - 1` of this chunk (at most 14 bytes, copied; not the chunk).
            let dl = d.as_bytes().len();
            let before = &partial[partial.len().saturating_sub(dl - 1)..];
            let after = &chunk[..chunk.len().min(dl - 1)];
            let mut edge = [0u8; 14];
            edge[..before.len()].copy_from_slice(before);
            edge[before.len()..before.len() + after.len()].copy_from_slice(after);
            let found = d.find(&edge[..before.len() + after.len()]).is_some() || d.find(chunk).is_some();
            // Up to `dl - 1` bytes past `max` may begin the delimiter.
            (!found).then_some(dl - 1)
        }
        _ => None,
    };
    partial.extend_from_slice(chunk);
    if let Some(slack) = unended {
        if partial.len() > max.saturating_add(slack) {
            return Err(too_large(partial.len(), max));
        }
        return Ok(());
    }
    let used = split(framing, max, partial, emit)?;
    partial.drain(..used);
    if partial.is_empty() {
        *partial = Vec::new();
    }
    Ok(())
}

/// What is left of the stream when the peer closes: a final line without its newline is a
/// line (as Go's `bufio.Scanner` reads it, less a trailing "\r"), and so is a final message
/// without its delimiter; a length-prefixed or fixed-size message cut short, or raw bytes the
/// application kept for a message it did not finish, are an error (`Closed`).
pub fn at_eof(framing: Framing, max: usize, partial: &[u8]) -> Result<Option<&[u8]>> {
    if partial.is_empty() {
        return Ok(None);
    }
    let last = match framing {
        Framing::Line => partial.strip_suffix(b"\r").unwrap_or(partial),
        Framing::Delimiter(_) => partial,
        _ => {
            return Err(Error::Closed(
                format!("the peer closed {} bytes into a message", partial.len()).into(),
            ));
        }
    };
    if last.len() > max {
        return Err(too_large(last.len(), max));
    }
    Ok(Some(last))
}

/// What goes before and after a message's bytes on the wire.
pub(crate) fn envelope<'f>(framing: &'f Framing, msg: &[u8]) -> Result<(Head, &'f [u8])> {
    match framing {
        Framing::Raw => Ok((Head::default(), b"")),
        Framing::Line if msg.contains(&b'\n') => Err(Error::Invalid("a line message cannot contain '\\n'".into())),
        Framing::Line => Ok((Head::default(), b"\n")),
        Framing::Delimiter(d) if d.find(msg).is_some() => {
            Err(Error::Invalid("a message cannot contain its delimiter".into()))
        }
        Framing::Delimiter(d) => Ok((Head::default(), d.as_bytes())),
        Framing::Len32 => {
            let len = u32::try_from(msg.len()).map_err(|_| Error::Invalid("message longer than 4 GiB".into()))?;
            let mut head = Head::default();
            head.bytes[..4].copy_from_slice(&len.to_be_bytes());
            head.len = 4;
            Ok((head, b""))
        }
        Framing::LengthField(f) => Ok((f.header(msg.len())?, b"")),
        Framing::Fixed(n) if msg.len() != *n => Err(Error::Invalid(
            format!("a {}-byte message in {n}-byte fixed framing", msg.len()).into(),
        )),
        Framing::Fixed(_) => Ok((Head::default(), b"")),
    }
}

/// The bytes the framing adds to `msg`, or why it cannot carry it.
pub(crate) fn envelope_len(framing: &Framing, msg: &[u8]) -> Result<usize> {
    let (head, tail) = envelope(framing, msg)?;
    Ok(head.as_bytes().len() + tail.len())
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
        assert_eq!(at_eof(Framing::Raw, 8, b"").unwrap(), None);
    }

    fn framed(framing: Framing, msg: &[u8]) -> Result<Vec<u8>> {
        let (head, tail) = envelope(&framing, msg)?;
        Ok([head.as_bytes(), msg, tail].concat())
    }

    #[test]
    fn envelopes() {
        assert_eq!(framed(Framing::Len32, b"abc").unwrap(), b"\0\0\0\x03abc");
        assert_eq!(framed(Framing::Line, b"abc").unwrap(), b"abc\n");
        assert!(matches!(framed(Framing::Line, b"a\nb"), Err(Error::Invalid(_))));
        assert_eq!(framed(Framing::Raw, b"abc").unwrap(), b"abc");
    }

    /// The framings that take settings, as real protocols set them.
    fn configured() -> Vec<Framing> {
        vec![
            Framing::Delimiter(Delimiter::new(b"\r\n").unwrap()),
            Framing::Delimiter(Delimiter::new(b"\0").unwrap()),
            Framing::Delimiter(Delimiter::new(b"--END--").unwrap()),
            Framing::LengthField(LengthField::new(0, 2, false, 0).unwrap()), // DNS over TCP
            Framing::LengthField(LengthField::new(0, 4, true, 0).unwrap()),
            Framing::LengthField(LengthField::new(0, 8, false, 0).unwrap()),
            Framing::LengthField(LengthField::new(0, 0, false, 0).unwrap()), // a varint
            Framing::LengthField(LengthField::new(0, 1, false, 3).unwrap()),
            Framing::Fixed(5),
        ]
    }

    /// What the peer's framing gives `on_data` for `msg`: the frame whole, header included,
    /// for a length field; the message itself otherwise.
    fn delivered(framing: Framing, msg: &[u8]) -> Vec<u8> {
        match framing {
            Framing::LengthField(_) => framed(framing, msg).unwrap(),
            _ => msg.to_vec(),
        }
    }

    #[test]
    fn configured_framings_cut_any_split_the_same() {
        let mut seed = 0x2545f4914f6cdd1d;
        for framing in configured() {
            for round in 0..200 {
                let msgs: Vec<Vec<u8>> = (0..(xorshift(&mut seed) % 6))
                    .map(|_| {
                        let len = match framing {
                            Framing::Fixed(n) => n,
                            Framing::LengthField(f) if f.adjust > 0 => 3 + (xorshift(&mut seed) % 200) as usize,
                            _ => (xorshift(&mut seed) % 300) as usize,
                        };
                        (0..len).map(|_| b'a' + (xorshift(&mut seed) % 26) as u8).collect()
                    })
                    .collect();
                let stream: Vec<u8> = msgs.iter().flat_map(|m| framed(framing, m).unwrap()).collect();
                let want: Vec<Vec<u8>> = msgs.iter().map(|m| delivered(framing, m)).collect();
                let sizes: Vec<usize> = (0..5).map(|_| 1 + (xorshift(&mut seed) % 23) as usize).collect();
                assert_eq!(
                    frames(framing, 4096, &stream, &sizes).unwrap(),
                    want,
                    "{framing:?} round {round}"
                );
                assert_eq!(
                    frames(framing, 4096, &stream, &[1]).unwrap(),
                    want,
                    "{framing:?} byte by byte"
                );
                assert_eq!(
                    frames(framing, 4096, &stream, &[usize::MAX]).unwrap(),
                    want,
                    "{framing:?} coalesced"
                );
            }
        }
    }

    #[test]
    fn protocol_headers_as_real_protocols_write_them() {
        // PostgreSQL: a type byte, then a length counting itself but not the type byte.
        let pg = Framing::LengthField(LengthField::new(1, 4, false, -4).unwrap());
        let query = b"Q\0\0\0\x0dSELECT 1\0";
        assert_eq!(frames(pg, 100, query, &[3]).unwrap(), vec![query.to_vec()]);
        // MQTT: a fixed header byte, then the remaining length as a varint (321 = 0xc1 0x02).
        let mqtt = Framing::LengthField(LengthField::new(1, 0, false, 0).unwrap());
        let mut publish = vec![0x30, 0xc1, 0x02];
        publish.extend(std::iter::repeat_n(b'x', 321));
        assert_eq!(frames(mqtt, 1000, &publish, &[7]).unwrap(), vec![publish.clone()]);
        // A header at an offset cannot be built by sending a frame: the caller sends it whole.
        assert!(matches!(envelope(&pg, b"x"), Err(Error::Invalid(_))));
        // DNS over TCP: two bytes of length.
        let dns = Framing::LengthField(LengthField::new(0, 2, false, 0).unwrap());
        assert_eq!(framed(dns, b"abc").unwrap(), b"\0\x03abc");
        assert!(matches!(framed(dns, &[0; 70000]), Err(Error::Invalid(_))));
    }

    #[test]
    fn hostile_lengths_fail_before_anything_is_buffered() {
        let cases: Vec<(Framing, Vec<u8>)> = vec![
            (
                Framing::LengthField(LengthField::new(0, 8, false, 0).unwrap()),
                vec![0xff; 9],
            ),
            (
                Framing::LengthField(LengthField::new(0, 4, true, 0).unwrap()),
                vec![0xff, 0xff, 0xff, 0x7f, 1],
            ),
            // Shorter than its own header: a negative total.
            (
                Framing::LengthField(LengthField::new(1, 4, false, -4).unwrap()),
                vec![b'Q', 0, 0, 0, 1, 9],
            ),
            // A varint of 11 bytes.
            (
                Framing::LengthField(LengthField::new(0, 0, false, 0).unwrap()),
                vec![0x80; 11],
            ),
            (Framing::Fixed(5000), vec![1; 10]),
            (Framing::Delimiter(Delimiter::new(b"\r\n").unwrap()), vec![b'x'; 5000]),
        ];
        for (framing, bytes) in cases {
            let mut partial = Vec::new();
            let r = feed(framing, 4096, &mut partial, &bytes, |_| true);
            assert!(matches!(r, Err(Error::Limit(_))), "{framing:?}: {r:?}");
            assert!(
                partial.capacity() <= 5000,
                "{framing:?} buffered {}",
                partial.capacity()
            );
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(Delimiter::new(b"").is_err() && Delimiter::new(&[0; 9]).is_err());
        assert!(LengthField::new(0, 3, false, 0).is_err());
        assert!(Framing::Fixed(0).check().is_err());
        let d = Framing::Delimiter(Delimiter::new(b"\r\n").unwrap());
        assert!(matches!(framed(d, b"a\r\nb"), Err(Error::Invalid(_))));
        assert!(matches!(framed(Framing::Fixed(3), b"ab"), Err(Error::Invalid(_))));
        assert_eq!(at_eof(d, 10, b"last").unwrap(), Some(&b"last"[..]));
        assert!(matches!(at_eof(Framing::Fixed(3), 10, b"ab"), Err(Error::Closed(_))));
        assert!(matches!(at_eof(Framing::Raw, 10, b"kept"), Err(Error::Closed(_))));
    }
}
