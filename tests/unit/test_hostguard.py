"""The browser checks, as pure functions: which Host, Origin and Sec-Fetch-Site pass."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from sidecar import config
from sidecar.app import build_admin_app, build_health_app
from sidecar.errors import ConfigError, SidecarError
from sidecar.hostguard import Allow, check, check_host, check_origin, host_name
from sidecar.ratelimit import Limiter, RateLimited
from sidecar.runtime import Runtime

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


def _apps() -> tuple[web.Application, web.Application]:
    cfg = config.loads("admin: {hosts: [sidecar-admin.payments.svc]}", {})
    rt = Runtime(cfg)
    return build_admin_app(rt, own_runtime=False), build_health_app(rt)


@pytest.mark.parametrize(
    ("method", "headers", "status", "code"),
    [
        ("DELETE", {}, 415, "SC1008"),  # a body with no Content-Type, on any method
        ("POST", {"Content-Type": "text/plain"}, 415, "SC1008"),
        ("POST", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "SC1008"),
        ("POST", {"Content-Type": "application/evil+json"}, 415, "SC1008"),
        ("POST", {"Host": "evil.example:8099"}, 421, "SC1015"),
        ("POST", {"Origin": "null"}, 403, "SC1016"),
        ("GET", {"Sec-Fetch-Site": "same-site"}, 403, "SC1017"),
    ],
)
async def test_admin_app_refuses_before_any_handler(
    aiohttp_client: Any, method: str, headers: dict[str, str], status: int, code: str
) -> None:
    """The admin middleware answers with the code; no handler (and no Vault) is reached."""
    admin, _ = _apps()
    client = await aiohttp_client(admin)
    data = b'{"permissions": ["* /*"]}' if method != "GET" else None
    r = await client.request(
        method,
        "/v1/credentials/azupay/keys",
        data=data,
        headers={"Host": "127.0.0.1", **headers},
        skip_auto_headers=["Content-Type"],  # else aiohttp labels bytes application/octet-stream
    )
    assert (r.status, (await r.json())["code"]) == (status, code)
    assert not [k for k in r.headers if k.lower().startswith("access-control-")]


async def test_admin_hosts_name_is_served(aiohttp_client: Any) -> None:
    """The admin Service's DNS name from ``admin.hosts`` passes the Host check."""
    admin, _ = _apps()
    client = await aiohttp_client(admin)
    r = await client.get("/healthz", headers={"Host": "sidecar-admin.payments.svc:8099"})
    assert r.status == 200


async def test_health_app_takes_any_host_but_serves_only_probes(aiohttp_client: Any) -> None:
    """kubelet's ``Host: <pod IP>`` is fine on /healthz; /metrics is not served there."""
    _, health = _apps()
    client = await aiohttp_client(health)
    ok = await client.get("/healthz", headers={"Host": "10.1.2.3:8098"})
    assert ok.status == 200
    gone = await client.get("/metrics", headers={"Host": "10.1.2.3:8098"})
    assert (gone.status, (await gone.json())["code"]) == (404, "SC1005")
    page = await client.get("/healthz", headers={"Origin": "http://evil.example"})
    assert (page.status, (await page.json())["code"]) == (403, "SC1016")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("admin: {hosts: ['svc.ns:8099']}", "admin.hosts"),
        ("admin: {hosts: ['evil.example/x']}", "admin.hosts"),
        ("listen: {allowed_origins: ['null']}", "listen.allowed_origins"),
        ("listen: {allowed_origins: ['https://ops.example/x']}", "listen.allowed_origins"),
        ("admin: {verify_per_minute: 0}", "admin.verify_per_minute"),
    ],
)
def test_config_refuses_what_could_never_match(text: str, problem: str) -> None:
    """A port in admin.hosts, a path or ``null`` as an origin, a zero limit: refused at load."""
    with pytest.raises(ConfigError) as caught:
        config.loads(text, {})
    assert caught.value.problems[0].startswith(problem)


def test_config_takes_names_and_origins() -> None:
    """Names (IPv6 literals too) and scheme://host[:port] origins load."""
    cfg = config.loads(
        "admin: {hosts: [Admin.ns.svc, '[fd00::7]']}\n"
        "listen: {allowed_origins: ['https://ops.example:8443']}",
        {},
    )
    assert cfg.admin.hosts == ["Admin.ns.svc", "[fd00::7]"]
