"""A seeded generator of HTTP/1.1 messages: well-formed ones, then mutated ones.

Why seeded rather than hypothesis: the differential run wants 100,000 cases in well under a
minute, the same cases on every run (a disagreement is reproduced from its case number), and
mutations aimed at the framing rules of RFC 9112 (chunk lines, Transfer-Encoding, lengths, line
endings) rather than at random bytes only. Each case records which mutation made it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

UPSTREAM = "peer"  # the path-mode prefix every generated request target starts with
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
VCHAR = bytes(range(0x21, 0x7F))
PATH = "abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@%"
STATUSES = [200, 200, 200, 201, 202, 204, 206, 301, 304, 400, 401, 404, 409, 500, 502, 503, 599]
INTERIM = [100, 102, 103, 150, 199]


@dataclass
class Case:
    """One generated input: the bytes, where they are split into reads, and how they were made."""

    number: int
    kind: str  # "request" or "response"
    data: bytes
    mutation: str  # "" for a well-formed message
    splits: list[int] = field(default_factory=list)
    method: str = "GET"  # response cases: the method of the request being answered
    version: str = "1.1"  # response cases: the app's HTTP version

    def reads(self) -> list[bytes]:
        """The data cut at the split points, as the socket would deliver it."""
        edges = [0, *sorted(s for s in self.splits if 0 < s < len(self.data)), len(self.data)]
        return [self.data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def _token(rng: random.Random, low: int = 1, high: int = 12) -> str:
    return "".join(rng.choice(TOKEN) for _ in range(rng.randint(low, high)))


def _value(rng: random.Random) -> bytes:
    """A header value: visible ASCII with inner spaces and tabs, sometimes empty."""
    if rng.random() < 0.05:
        return b""
    chars = [rng.choice(VCHAR) for _ in range(rng.randint(1, 24))]
    for _ in range(rng.randint(0, 2)):
        chars.insert(rng.randint(1, len(chars)), rng.choice(b" \t"))
    return bytes(chars).strip(b" \t") or b"v"


def _body(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.03:  # past the listener's one-write limit (64 KiB): the streaming path
        return rng.randbytes(rng.randint(60000, 140000))
    return rng.randbytes(rng.choice([0, 1, 2, 5, 17, 100, rng.randint(0, 4000)]))


def _chunked(rng: random.Random, body: bytes) -> bytes:
    """Chunked coding with random chunk sizes, hex case, extensions and a trailer."""
    out, pos = [], 0
    while pos < len(body):
        size = min(len(body) - pos, rng.choice([1, 7, 16, 255, 4096, 70000]))
        hexed = b"%x" % size if rng.random() < 0.7 else b"%X" % size
        ext = b";ext=1" if rng.random() < 0.1 else b""
        out.append(hexed + ext + b"\r\n" + body[pos : pos + size] + b"\r\n")
        pos += size
    trailer = b"X-Trailer: t\r\n" if rng.random() < 0.1 else b""
    out.append(b"0\r\n" + trailer + b"\r\n")
    return b"".join(out)


def _extra_headers(rng: random.Random) -> list[tuple[bytes, bytes]]:
    headers = [(("X-" + _token(rng)).encode(), _value(rng)) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.2:
        headers.append((b"Set-Cookie" if rng.random() < 0.5 else b"Accept", b"a=1"))
        headers.append((b"Set-Cookie" if rng.random() < 0.5 else b"Accept", b"b=2"))
    if rng.random() < 0.15:  # a header the Connection header names: hop-by-hop
        headers.append((b"X-Hop", b"only for the next hop"))
        headers.append((b"Connection", rng.choice([b"X-Hop", b"keep-alive, X-Hop", b"x-hop"])))
    elif rng.random() < 0.2:
        headers.append((b"Connection", rng.choice([b"keep-alive", b"close", b"Keep-Alive"])))
    if rng.random() < 0.05:
        headers.append((b"Keep-Alive", b"timeout=5"))
    rng.shuffle(headers)
    return headers


def _framed(
    rng: random.Random, headers: list[tuple[bytes, bytes]], body: bytes, allow_close: bool
) -> bytes:
    """Append the framing header for ``body`` and return the framed body bytes."""
    choice = rng.random()
    if choice < 0.5:
        headers.append((rng.choice([b"Content-Length", b"content-length"]), b"%d" % len(body)))
        return body
    if choice < 0.85 or not allow_close:
        headers.append((rng.choice([b"Transfer-Encoding", b"transfer-encoding"]), b"chunked"))
        return _chunked(rng, body)
    return body  # response only: delimited by the connection's close


def _head(start: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    return start + b"".join(b"%s: %s\r\n" % pair for pair in headers) + b"\r\n"


def request(rng: random.Random) -> bytes:
    """One well-formed request in path mode (or absolute form) with a framed body or none."""
    method = rng.choice(METHODS)
    path = "/" + "/".join(
        "".join(rng.choice(PATH[:-1]) for _ in range(rng.randint(1, 8)))
        for _ in range(rng.randint(1, 3))
    )
    if rng.random() < 0.3:
        path += "?" + _token(rng) + "=" + _token(rng)
    target = f"/{UPSTREAM}{path}"
    if rng.random() < 0.1:
        target = f"http://up.test{path}"
    version = b"HTTP/1.1" if rng.random() < 0.9 else b"HTTP/1.0"
    headers = _extra_headers(rng)
    if version == b"HTTP/1.1" or rng.random() < 0.5:
        headers.insert(rng.randint(0, len(headers)), (b"Host", b"localhost"))
    body = b""
    if method in ("POST", "PUT", "PATCH") or rng.random() < 0.1:
        if rng.random() < 0.1 and version == b"HTTP/1.1":
            headers.append((b"Expect", b"100-continue"))
        body = _framed(rng, headers, _body(rng), allow_close=False)
    return _head(b"%s %s %s\r\n" % (method.encode(), target.encode(), version), headers) + body


def response(rng: random.Random, method: str) -> bytes:
    """Zero or more interim answers, then a final answer framed by length, chunks or close."""
    out = b""
    for _ in range(rng.choice([0, 0, 0, 0, 1, 2])):
        status = rng.choice(INTERIM)
        out += _head(b"HTTP/1.1 %d Info\r\n" % status, _extra_headers(rng)[:2])
    status = rng.choice(STATUSES)
    version = b"HTTP/1.1" if rng.random() < 0.9 else b"HTTP/1.0"
    reason = rng.choice([b"OK", b"Whatever", b"", b"Two Words", b"\xe9t\xe9"])
    headers = _extra_headers(rng)
    body = _body(rng)
    if status in (204, 304) or method == "HEAD":
        if rng.random() < 0.5 and status != 204:
            headers.append((b"Content-Length", b"%d" % len(body)))
        body = b""
    else:
        body = _framed(rng, headers, body, allow_close=True)
    return out + _head(b"%s %d %s\r\n" % (version, status, reason), headers) + body


# -- mutations ----------------------------------------------------------------------------
# Each takes well-formed bytes and returns bytes that break one framing rule (or a generic
# byte-level change). The name is what a disagreement report shows.


def _replace_te(data: bytes, value: bytes) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    lines = [ln for ln in lines if not ln.lower().startswith((b"content-length:", b"transfer-"))]
    return b"\r\n".join([*lines, b"Transfer-Encoding: " + value]) + sep + body


def _te(value: bytes) -> object:
    return lambda rng, data: _replace_te(data, value)


def _cl_and_te(rng: random.Random, data: bytes) -> bytes:
    return _replace_te(data, b"chunked\r\nContent-Length: 3") + b"0\r\n\r\n"


def _bad_cl(rng: random.Random, data: bytes) -> bytes:
    bad = rng.choice([b"+5", b"-1", b"0x10", b"5 5", b"5,6", b"", b"99999999999999999999", b"1e3"])
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"content-length:")]
    lines = [ln for ln in lines if not ln.lower().startswith(b"transfer-encoding:")]
    return b"\r\n".join([*lines, b"Content-Length: " + bad]) + sep + body


def _double_cl(rng: random.Random, data: bytes) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"transfer-encoding:")]
    lines = [ln for ln in lines if not ln.lower().startswith(b"content-length:")]
    n = len(body)
    extra = rng.choice([[b"%d" % n, b"%d" % n], [b"%d" % n, b"%d" % (n + 1)], [b"%d, %d" % (n, n)]])
    return b"\r\n".join([*lines, *(b"Content-Length: " + v for v in extra)]) + sep + body


def _chunk_body(rng: random.Random, data: bytes, make: object) -> bytes:
    head, sep, _ = data.partition(b"\r\n\r\n")
    chunked = _replace_te(head + sep, b"chunked")
    return chunked + make(rng)  # type: ignore[operator]


def _chunks(kind: str) -> object:
    def bad(rng: random.Random) -> bytes:
        return {
            "overflow": lambda: b"fffffffffffffffff\r\n" + b"x" * 10 + b"\r\n0\r\n\r\n",
            "negative": lambda: b"-5\r\nhello\r\n0\r\n\r\n",
            "lf-only": lambda: b"5\nhello\n0\n\n",
            "lf-size": lambda: b"5\nhello\r\n0\r\n\r\n",
            "garbage-after": lambda: b"5\r\nhelloXX\r\n0\r\n\r\n",
            "no-size": lambda: b"\r\nhello\r\n0\r\n\r\n",
            "hex-junk": lambda: b"5g\r\nhello\r\n0\r\n\r\n",
            "space-size": lambda: b"5 \r\nhello\r\n0\r\n\r\n",
            "0x-size": lambda: b"0x5\r\nhello\r\n0\r\n\r\n",
            "bad-ext": lambda: b"5;\x01\r\nhello\r\n0\r\n\r\n",
            "short": lambda: b"9\r\nhello\r\n0\r\n\r\n",
            "bare-cr": lambda: b"5\rhello\r\n0\r\n\r\n",
            "bad-trailer": lambda: b"5\r\nhello\r\n0\r\nX Y: z\r\n\r\n",
        }[kind]()

    return lambda rng, data: _chunk_body(rng, data, bad)


def _line_endings(rng: random.Random, data: bytes) -> bytes:
    """One CRLF of the head becomes a bare LF or a bare CR."""
    head, sep, body = data.partition(b"\r\n\r\n")
    ends = [i for i in range(len(head)) if head.startswith(b"\r\n", i)]
    if not ends:
        return data
    i = rng.choice(ends)
    return head[:i] + rng.choice([b"\n", b"\r"]) + head[i + 2 :] + sep + body


def _lf_head(rng: random.Random, data: bytes) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.replace(b"\r\n", b"\n") + b"\n\n" + body


def _header(line: bytes) -> object:
    def add(rng: random.Random, data: bytes) -> bytes:
        head, sep, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        lines.insert(rng.randint(1, len(lines)), line)
        return b"\r\n".join(lines) + sep + body

    return add


def _bad_value(rng: random.Random, data: bytes) -> bytes:
    bad = bytes([rng.choice([0, 1, 8, 0x0B, 0x0C, 0x0D, 0x1F, 0x7F, 0x80, 0xFF])])
    return _header(b"X-Bad: a" + bad + b"b")(rng, data)  # type: ignore[operator]


def _request_line(rng: random.Random, data: bytes) -> bytes:
    line, sep, rest = data.partition(b"\r\n")
    method, _, tail = line.partition(b" ")
    target, _, version = tail.rpartition(b" ")
    line = rng.choice(
        [
            method + b"  " + target + b" " + version,
            method + b" " + target + b"  " + version,
            method.lower() + b" " + target + b" " + version,
            method + b"@" + b" " + target + b" " + version,
            method + b" " + target + b" HTTP/1.2",
            method + b" " + target + b" HTTP/2.0",
            method + b" " + target + b" HTTP/1.1 ",
            method + b" " + target,
            method + b" " + target + b"#frag " + version,
            method + b" " + target + b"\x00 " + version,
            b" " + method + b" " + target + b" " + version,
        ]
    )
    return line + sep + rest


def _status_line(rng: random.Random, data: bytes) -> bytes:
    line, sep, rest = data.partition(b"\r\n")
    version, _, tail = line.partition(b" ")
    code, _, reason = tail.partition(b" ")
    line = rng.choice(
        [
            version + b" " + code,
            version + b" " + code[:2] + b" " + reason,
            version + b" 1000 " + reason,
            version + b"  " + code + b" " + reason,
            b"HTTP/2.0 " + code + b" " + reason,
            b"HTTP/1.1 " + code + b" a\x00b",
            b"ICY " + code + b" " + reason,
            version + b" 099 " + reason,
        ]
    )
    return line + sep + rest


def _interim_body(rng: random.Random, data: bytes) -> bytes:
    status = rng.choice([100, 103, 150, 199])
    if rng.random() < 0.5:
        interim = b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHELLO\r\n0\r\n\r\n"
    else:
        interim = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\nHELLO"
    return interim % status + data


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))] if data else data


def _flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(out))
        op = rng.random()
        if op < 0.4:
            out[i] = rng.randrange(256)
        elif op < 0.7:
            out.insert(i, rng.choice(b"\r\n :\t\x00\x7f,;"))
        elif len(out) > 1:
            del out[i]
    return bytes(out)


def _head_flip(rng: random.Random, data: bytes) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    return _flip(rng, head) + sep + body


def _trailing(rng: random.Random, data: bytes) -> bytes:
    return data + rng.choice([b"X", b"\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])


COMMON = {
    "te-identity": _te(b"identity"),
    "te-chunked-identity": _te(b"chunked, identity"),
    "te-identity-chunked": _te(b"identity, chunked"),
    "te-gzip": _te(b"gzip"),
    "te-chunked-chunked": _te(b"chunked, chunked"),
    "te-space": _te(b" chunked"),
    "te-upper": _te(b"CHUNKED"),
    "te-xchunked": _te(b"xchunked"),
    "cl-and-te": _cl_and_te,
    "bad-cl": _bad_cl,
    "double-cl": _double_cl,
    **{
        f"chunk-{k}": _chunks(k)
        for k in (
            "overflow",
            "negative",
            "lf-only",
            "lf-size",
            "garbage-after",
            "no-size",
            "hex-junk",
            "space-size",
            "0x-size",
            "bad-ext",
            "short",
            "bare-cr",
            "bad-trailer",
        )
    },
    "bare-line-end": _line_endings,
    "lf-head": _lf_head,
    "obs-fold": _header(b"X-Fold: a\r\n b"),
    "space-before-colon": _header(b"X-Sp : a"),
    "space-in-name": _header(b"X Sp: a"),
    "empty-name": _header(b": a"),
    "no-colon": _header(b"X-No-Colon"),
    "leading-space-line": _header(b" X-Lead: a"),
    "bad-value-byte": _bad_value,
    "te-in-trailer-dup": _header(b"Transfer-Encoding: chunked"),
    "truncate": _truncate,
    "flip": _flip,
    "head-flip": _head_flip,
    "trailing": _trailing,
}
REQUEST_ONLY = {"request-line": _request_line}
RESPONSE_ONLY = {"status-line": _status_line, "interim-body": _interim_body}


def _mutate(rng: random.Random, data: bytes, table: dict[str, object]) -> tuple[bytes, str]:
    name = rng.choice(sorted(table))
    return table[name](rng, data), name  # type: ignore[operator]


def _splits(rng: random.Random, size: int) -> list[int]:
    if size < 2 or rng.random() < 0.5:
        return []
    return [rng.randrange(1, size) for _ in range(rng.randint(1, 4))]


def cases(seed: int, count: int, mutated: float = 0.5) -> Iterator[Case]:
    """``count`` cases, half requests and half responses, ``mutated`` of them mutated.

    A generator: 100,000 cases with their bodies would not fit in memory at once.
    """
    rng = random.Random(seed)
    for number in range(count):
        mutate = rng.random() < mutated
        if number % 2 == 0:
            data = b"".join(request(rng) for _ in range(rng.choice([1, 1, 1, 2, 3])))
            mutation = ""
            if mutate:
                data, mutation = _mutate(rng, data, {**COMMON, **REQUEST_ONLY})
            yield Case(number, "request", data, mutation, _splits(rng, len(data)))
        else:
            method = rng.choice(["GET", "GET", "POST", "HEAD"])
            version = "1.1" if rng.random() < 0.9 else "1.0"
            data = response(rng, method)
            mutation = ""
            if mutate:
                data, mutation = _mutate(rng, data, {**COMMON, **RESPONSE_ONLY})
            splits = _splits(rng, len(data))
            yield Case(number, "response", data, mutation, splits, method, version)
