"""The browser checks, as pure functions: which Host, Origin and Sec-Fetch-Site pass."""

from __future__ import annotations

import pytest

from sidecar.errors import SidecarError
from sidecar.hostguard import Allow, check, check_host, check_origin, host_name
from sidecar.ratelimit import Limiter, RateLimited

ADMIN = Allow.build(["Sidecar-Admin.payments.svc"], ["https://ops.example/"])


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:8099",
        "127.3.4.5:1",
        "localhost",
        "LOCALHOST:8080",
        "[::1]",
        "[::1]:8099",
        "sidecar-admin.payments.svc",
        "sidecar-admin.payments.svc:443",
        None,
    ],
)
def test_local_and_listed_hosts_pass(host: str | None) -> None:
    """Loopback literals and localhost on any port, and the listener's own names, pass."""
    check_host(host, ADMIN)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8099",
        "localhost.",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "10.0.0.7:8099",
        "0.0.0.0:8099",
        "127.0.0.1:99999",
        "127.0.0.1:8099/x",
        "user@127.0.0.1",
        "",
        " ",
        "sidecar-admin.payments.svc.evil.example",
    ],
)
def test_other_hosts_are_421(host: str) -> None:
    """A rebinding name, a LAN address, a malformed value: SC1015, status 421."""
    with pytest.raises(SidecarError) as caught:
        check_host(host, ADMIN)
    assert (caught.value.code, caught.value.status) == ("SC1015", 421)


def test_host_name_strips_the_port_and_lowers() -> None:
    """The name compared is lower case and has no port."""
    assert host_name("EVIL.Example:80") == "evil.example"
    assert host_name("[::1]:1") == "[::1]"


@pytest.mark.parametrize(
    ("origin", "site", "code"),
    [
        ("http://evil.example", None, "SC1016"),
        ("null", None, "SC1016"),
        ("http://127.0.0.1:8099", None, "SC1016"),  # even "same" origin: the API serves no page
        ("http://127.0.0.2:9000", "cross-site", "SC1016"),
        (None, "cross-site", "SC1017"),
        (None, "same-site", "SC1017"),
        (None, "Cross-Site", "SC1017"),
    ],
)
def test_foreign_origin_or_cross_site_is_403(
    origin: str | None, site: str | None, code: str
) -> None:
    """Any Origin not on the allow-list, ``null`` included, and a cross-site fetch are 403."""
    with pytest.raises(SidecarError) as caught:
        check_origin(origin, site, ADMIN)
    assert (caught.value.code, caught.value.status) == (code, 403)


@pytest.mark.parametrize(
    ("origin", "site"),
    [
        (None, None),
        (None, "none"),
        (None, "same-origin"),
        ("https://ops.example", "cross-site"),
        ("HTTPS://OPS.EXAMPLE/", None),
    ],
)
def test_no_origin_or_an_allowed_one_passes(origin: str | None, site: str | None) -> None:
    """Tools send neither header; an allowed origin passes even when cross-site."""
    check_origin(origin, site, ADMIN)


def test_default_allow_list_is_empty() -> None:
    """With nothing configured, every Origin is refused."""
    with pytest.raises(SidecarError):
        check_origin("https://ops.example", None, Allow())


def test_health_listener_skips_only_the_host_check() -> None:
    """``host=False`` lets a pod IP through but still refuses a page's Origin."""
    check({"Host": "10.1.2.3:8098"}, Allow(), host=False)
    with pytest.raises(SidecarError) as caught:
        check({"Host": "10.1.2.3:8098", "Origin": "http://evil.example"}, Allow(), host=False)
    assert caught.value.code == "SC1016"


def test_limiter_refuses_the_eleventh_and_keys_are_independent() -> None:
    """10 attempts a minute per key; the 11th is SC1018 with Retry-After; another key is free."""
    now = [1000.0]
    limiter = Limiter(10, clock=lambda: now[0])
    for _ in range(10):
        limiter.hit("a")
    with pytest.raises(RateLimited) as caught:
        limiter.hit("a")
    assert (caught.value.code, caught.value.status) == ("SC1018", 429)
    assert caught.value.headers == {"Retry-After": "60"}
    limiter.hit("b")
    now[0] += 45
    with pytest.raises(RateLimited) as again:
        limiter.hit("a")
    assert again.value.headers == {"Retry-After": "15"}
    now[0] += 15
    limiter.hit("a")  # the first ten have left the window
