#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/<target>/<name>. Run from anywhere:
python3 fuzz/make_corpus.py. Existing seeds of the same name are overwritten; others are kept
(so minimized crash inputs added by hand stay).

Framing seeds use the input layout of fuzz/src/lib.rs: byte 0 picks max, byte 1 holds the
number of chunk sizes (low nibble) and a stop-after count (high nibble), then the chunk sizes,
then the stream."""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def framed(max_byte, stream, sizes=(), stop=0):
    assert len(sizes) < 16 and stop < 16
    return bytes([max_byte, (stop << 4) | len(sizes)]) + bytes(sizes) + stream


def len32(*msgs):
    return b"".join(struct.pack(">I", len(m)) + m for m in msgs)


ADDRS = {
    "ipv4": "127.0.0.1:6666",
    "ipv4-any-port0": "0.0.0.0:0",
    "ipv4-port-leading-zeros": "127.0.0.1:00080",
    "ipv4-port-six-digits": "127.0.0.1:000080",
    "ipv4-port-too-big": "127.0.0.1:65536",
    "ipv4-port-99999": "127.0.0.1:99999",
    "ipv4-port-trailing-junk": "127.0.0.1:80x",
    "ipv4-port-minus": "127.0.0.1:-1",
    "ipv4-port-plus": "127.0.0.1:+80",
    "ipv4-port-space": "127.0.0.1:80 ",
    "ipv4-leading-space": " 127.0.0.1:80",
    "ipv4-no-port": "127.0.0.1",
    "ipv4-empty-port": "127.0.0.1:",
    "ipv4-octet-256": "256.1.1.1:80",
    "ipv4-leading-zero-octet": "01.2.3.4:80",
    "ipv4-two-ports": "1.2.3.4:80:90",
    "ipv6-loopback": "[::1]:65535",
    "ipv6-any": "[::]:80",
    "ipv6-full": "[1:2:3:4:5:6:7:8]:1",
    "ipv6-v4-mapped": "[::ffff:1.2.3.4]:8080",
    "ipv6-scope": "[fe80::1%eth0]:80",
    "ipv6-no-port": "[::1]",
    "ipv6-no-colon": "[::1]80",
    "ipv6-unclosed": "[::1:80",
    "ipv6-unbracketed": "::1:80",
    "ipv6-ipv4-inside": "[127.0.0.1]:80",
    "ipv6-two-ports": "[::1]:80:90",
    "unix-abs": "unix:/tmp/x.sock",
    "unix-rel": "unix:rel.sock",
    "unix-empty": "unix:",
    "unix-at": "unix:@name",
    "unix-107": "unix:/" + "a" * 106,
    "unix-108": "unix:/" + "a" * 107,
    "unix-interior-nul": "unix:/tmp/a\0b",
    "unix-utf8": "unix:/tmp/\u00e9\u4e2d.sock",
    "empty": "",
    "colon": ":",
    "port-only": ":80",
    "host-with-space": "host name:80",
    "host-underscore": "a_b:80",
    "host-utf8": "h\u00f6st:80",
    "not-utf8": b"\xff\xfe127.0.0.1:80",
}

# Inputs that made a target fail; kept so the failure reproduces until it is fixed.
ADDR_CRASHES = {
    # Addr::parse("unix:\0x") gives Unix("\0x"), a Linux abstract socket; format() writes it as
    # "unix:@x", which parses back as the filesystem path "@x".
    "crash-unix-leading-nul": "unix:\0x",
}

LINES = {
    "two-lines-bytewise": framed(16, b"hello\nworld\r\n"),
    "cr-handling": framed(5, b"a\nb\r\n\r\nc\rd\n", sizes=(3, 1, 7)),
    "exactly-max-crlf": framed(8, b"x" * 8 + b"\r\n", sizes=(3,)),
    "exactly-max-lf": framed(8, b"x" * 8 + b"\n", sizes=(9, 1)),
    "over-max": framed(8, b"ok\n" + b"x" * 9 + b"\nafter\n", sizes=(2, 5)),
    "unterminated-long": framed(8, b"y" * 20, sizes=(1,)),
    "unterminated-max-plus-cr": framed(8, b"x" * 8 + b"\r", sizes=(4,)),
    "unterminated-max-plus-one": framed(8, b"x" * 9, sizes=(4,)),
    "empty-lines": framed(4, b"\n\n\r\n\n", sizes=(0, 2)),
    "double-cr": framed(4, b"a\r\r\n\r\n", sizes=(1, 2)),
    "max-zero": framed(0, b"\n\r\n\n", sizes=(1,)),
    "max-zero-over": framed(0, b"\nz\n", sizes=(2,)),
    "max-unlimited": framed(0xFF, b"anything goes\r\n" + b"q" * 200, sizes=(7, 64)),
    "max-256-long-line": framed(0xF0, b"L" * 300 + b"\n", sizes=(100, 255)),
    "stop-after-two": framed(32, b"one\ntwo\nthree\nfour\n", sizes=(5,), stop=2),
    "stop-after-one-then-error": framed(3, b"abc\r\nabcd\n", stop=1),
    "binary": framed(16, bytes(range(32)) + b"\n" + bytes(range(200, 256)) + b"\r\n", sizes=(13, 0, 3)),
    "many-sizes": framed(10, b"0123456789\r\n" * 4, sizes=tuple(range(1, 16))),
    "no-stream": framed(10, b""),
}

LEN32 = {
    "two-msgs-bytewise": framed(16, len32(b"abc", b"")),
    "three-msgs-chunked": framed(16, len32(b"hello", b"", b"world!"), sizes=(3, 1, 7)),
    "ffffffff-prefix": framed(16, b"\xff\xff\xff\xff\x01\x02", sizes=(6,)),
    "ffffffff-prefix-bytewise": framed(0xF4, len32(b"ok") + b"\xff\xff\xff\xff"),
    "ffffffff-unlimited-max": framed(0xFF, b"\xff\xff\xff\xff" + b"z" * 40, sizes=(5,)),
    "exactly-max": framed(8, len32(b"x" * 8), sizes=(3,)),
    "over-max": framed(8, len32(b"a", b"x" * 9, b"b"), sizes=(2, 9)),
    "partial-header": framed(8, b"\x00\x00\x00", sizes=(1,)),
    "partial-body": framed(8, b"\x00\x00\x00\x05abc", sizes=(2,)),
    "many-empty": framed(0, len32(*[b""] * 12), sizes=(0, 3, 5)),
    "max-zero-over": framed(0, len32(b"", b"a")),
    "stop-after-one": framed(16, len32(b"first", b"second", b"third"), stop=1),
    "stop-after-three-then-error": framed(4, len32(b"a", b"b", b"c", b"toolong"), stop=3),
    "max-4096-big-msg": framed(0xF4, len32(b"B" * 300, b"c"), sizes=(255, 17)),
    "max-256-over": framed(0xF0, len32(b"B" * 257), sizes=(200,)),
    "length-2pow24": framed(0xFE, b"\x01\x00\x00\x00" + b"x" * 30, sizes=(9,)),
    "many-sizes": framed(10, len32(*[bytes([i]) * i for i in range(11)]), sizes=tuple(range(1, 16))),
    "no-stream": framed(10, b""),
}


def main():
    for name, text in ADDRS.items():
        write("addr_parse", name, text)
    for name, text in ADDR_CRASHES.items():
        write("addr_parse", name, text)
    for name, data in LINES.items():
        write("framing_line", name, data)
    for name, data in LEN32.items():
        write("framing_len32", name, data)


if __name__ == "__main__":
    main()
