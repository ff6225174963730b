"""Header values holding control characters never reach the provider.

Two layers refuse them: aiohttp's HTTP parser (400 before any handler runs) and the proxy's
``forward_headers`` (400 SC4010), which guards whatever a more lenient parser lets through. The
requests are raw bytes on a socket, because aiohttp's own client refuses to send such headers.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import pytest
import requests
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from sidecar.errors import SidecarError
from sidecar.proxy.pipeline import forward_headers
from tests.hostile.live import GOOD_KEY, LiveSidecar

CONTROLS = [chr(c) for c in range(0x20) if c != 0x09] + ["\x7f"]  # TAB is allowed (RFC 9110)
VISIBLE = [chr(c) for c in range(0x21, 0x7F)]
FOLDS = ["\r\n ", "\r\n\t"]  # obs-fold: a CRLF that continues the value
BARE_CRLF = re.compile(r"\r\n(?![ \t])")  # would end the header line: that is framing, not a value


def hostile_values() -> st.SearchStrategy[str]:
    """Visible text, spaces and tabs around at least one control character or fold."""
    token = st.sampled_from([*VISIBLE, " ", "\t", *CONTROLS, *FOLDS])
    text = st.lists(token, max_size=6).map("".join)
    bad = st.sampled_from(CONTROLS + FOLDS)
    return st.builds(lambda a, b, c: a + b + c, text, bad, text).filter(
        lambda v: not BARE_CRLF.search(v)
    )


@pytest.fixture
def proxied(live: LiveSidecar) -> Iterator[LiveSidecar]:
    """The live sidecar with the upstream's credential stored, so clean requests go through."""
    r = requests.put(
        f"{live.admin_url}/v1/credentials/azupay",
        json={"upstream": "azupay", "fields": {"api_key": GOOD_KEY}},
        timeout=15,
    )
    assert r.status_code == 201
    yield live


def send_raw(live: LiveSidecar, value: bytes) -> tuple[int, bytes]:
    """One request with ``X-Fuzz: <value>`` as raw bytes; (status, body)."""
    url = URL(live.proxy_url)
    request = (
        b"GET /azupay/fuzz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fuzz: "
        + value
        + b"\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((url.host or "", url.port or 0), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def refused_code(body: bytes) -> str | None:
    """The sidecar's code: SC4011 when the listener's parser refused, SC4010 the header check."""
    try:
        return str(json.loads(body)["code"])
    except (ValueError, KeyError, TypeError):
        return None


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    # One live sidecar serves every example on purpose; the peer's log is compared per example.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=hostile_values())
def test_control_characters_are_refused_and_not_forwarded(proxied: LiveSidecar, value: str) -> None:
    """SC4011 from the parser or SC4010 from the proxy, and the provider sees no request at all."""
    before = len(proxied.peer.seen)
    status, body = send_raw(proxied, value.encode())
    assert status == 400
    assert refused_code(body) in ("SC4011", "SC4010")
    assert len(proxied.peer.seen) == before


@pytest.mark.parametrize("value", ["plain", "with\ttab", "sp ace", "ünïcode"])
def test_clean_values_are_forwarded_intact(proxied: LiveSidecar, value: str) -> None:
    """The harness can see forwarding: a clean value arrives upstream unchanged."""
    status, _ = send_raw(proxied, value.encode())
    assert status == 200
    assert dict(proxied.peer.seen[-1][2])["X-Fuzz"] == value


@given(
    value=st.text(st.sampled_from([*VISIBLE, " ", "\t", *CONTROLS]), min_size=1).filter(
        lambda v: any(c in v for c in CONTROLS)
    )
)
def test_forward_headers_refuses_what_a_lenient_parser_lets_through(value: str) -> None:
    """The proxy's own check: any C0 control but TAB, or DEL, is SC4010 (no parser involved)."""
    request = make_mocked_request("GET", "/azupay/x", headers={"X-Fuzz": value})
    with pytest.raises(SidecarError) as info:
        forward_headers(request)
    assert info.value.code == "SC4010"


@pytest.mark.parametrize("value", ["a\u0085b", "a\u009bb"])
def test_c1_control_characters_are_not_forwarded(proxied: LiveSidecar, value: str) -> None:
    """U+0085 (NEL) is a line break to many log pipelines; it is refused like LF."""
    before = len(proxied.peer.seen)
    status, _ = send_raw(proxied, value.encode())
    assert status == 400 and len(proxied.peer.seen) == before
