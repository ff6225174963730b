"""The answer scanner (``sidecar/proxy/scrub.py``) on bytes alone: needles, masking, hold-back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sidecar.proxy import scrub
from sidecar.schemes.base import Credential

NOW = datetime.now(UTC)


def cred(**secrets: str) -> Credential:
    """A credential of its own name: tokens injected are remembered per name (scrub.RECENT)."""
    return Credential(
        f"c-{uuid.uuid4().hex}",
        "up",
        "api_key",
        "sandbox",
        True,
        {"id": "public-id-123"},
        secrets,
        {},
        1,
        NOW,
        NOW,
    )


def test_needles_are_long_secrets_the_injected_token_and_their_escapes() -> None:
    """Secrets under 8 bytes and public fields are not needles; an escaped spelling is one."""
    got = scrub.Memory().needles(cred(pin="1234", key='sk/"live"-12345'), "Bearer tok-abcdef12", None)
    assert b"1234" not in got and b"public-id-123" not in got
    assert {b'sk/"live"-12345', b'sk/\\"live\\"-12345', b'sk\\/\\"live\\"-12345'} <= set(got)
    assert b"sk%2F%22live%22-12345" in got and b"tok-abcdef12" in got
    assert b"Bearer" not in got


def test_the_apps_own_authorization_is_not_a_needle() -> None:
    """A header the app sent itself and the scheme left alone is the app's own, not injected."""
    assert scrub.Memory().needles(cred(), "Bearer app-token-123", "Bearer app-token-123") == ()


def test_a_needle_split_anywhere_is_masked_and_never_written_early() -> None:
    """Cut at every offset: no byte of the needle leaves before the rest is seen."""
    needle = b"SECRET-VALUE-42"
    body = b"a=" + needle + b"&b=" + needle
    for cut in range(len(body) + 1):
        scanner = scrub.Scanner((needle,))
        first = scanner.feed(body[:cut])
        assert needle[:1] not in first  # the held-back tail covers any prefix of the needle
        out = first + scanner.feed(body[cut:]) + scanner.end()
        assert out == b"a=" + b"*" * len(needle) + b"&b=" + b"*" * len(needle)
        assert scanner.hits == 2


def test_clean_bytes_pass_unchanged_and_unchunked() -> None:
    """Without a hit the output equals the input, and only the tail is held."""
    scanner = scrub.Scanner((b"SECRET-VALUE-42",))
    data = b"x" * 1000
    assert scanner.feed(data) == data[:-14] and scanner.end() == data[-14:]
    assert scanner.whole(data) is data and scanner.hits == 0


def test_secrets_that_are_not_clean_utf8_still_give_needles() -> None:
    """A lone surrogate (JSON allows one) or raw bytes in a secret never break the request."""
    got = scrub.Memory().needles(cred(a="key-\udcff-12345", b="key-\ud800-12345"), None, None)
    assert b"key-\xff-12345" in got and "key-\ud800-12345".encode("utf-8", "surrogatepass") in got


def test_the_last_recent_tokens_stay_needles_and_no_more() -> None:
    """A token replaced (a 401's refresh) is still a needle, the last ``RECENT`` of them only."""
    c, memory = cred(key="long-secret-value"), scrub.Memory()
    tokens = [f"tok-{i:012d}" for i in range(scrub.RECENT + 2)]
    first = memory.needles(c, f"Bearer {tokens[1]}", None, [f"Bearer {tokens[0]}"])
    assert {tokens[0].encode(), tokens[1].encode()} <= set(first)
    for token in tokens[2:]:
        memory.needles(c, f"Bearer {token}", None)
    got = set(memory.needles(c, None, None))
    assert {t.encode() for t in tokens[2:]} | {b"long-secret-value"} == got
