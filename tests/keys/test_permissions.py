"""Which requests a proxy key lets through: the permission matrix, end to end."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sidecar.proxykeys.permissions import first_match, parse, parse_all
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.keys.conftest import CRED, SECRET, Provider, bearer, issue, keyed_upstream


async def status_of(sc: Sidecar, method: str, path: str, key: str | None) -> tuple[int, str]:
    headers = bearer(key) if key is not None else {}
    r = await sc.proxy.request(method, f"/pix{path}", headers=headers)
    await r.read()
    return r.status, r.headers.get("X-Sidecar-Error", "")


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/session", (200, "")),
        ("GET", "/api/session", (403, "SC5003")),  # wrong method
        ("POST", "/api/sessions", (403, "SC5003")),  # wrong path
        ("POST", "/api/session/1", (403, "SC5003")),  # an exact pattern is exact
        ("GET", "/api/session/42", (200, "")),  # wildcard
        ("GET", "/api/session/42/events?page=2", (200, "")),  # * spans segments; query ignored
        ("GET", "/api/session/", (200, "")),  # * may match nothing
        ("GET", "/api/%73ession/7", (200, "")),  # matched after percent-decoding
        ("DELETE", "/api/session/42", (403, "SC5003")),
        ("PATCH", "/api/refund/9", (200, "")),  # method wildcard
    ],
)
async def test_permission_matrix(
    sidecar: Sidecar,
    provider: tuple[Provider, str],
    method: str,
    path: str,
    expected: tuple[int, str],
) -> None:
    """Allowed requests reach the provider with the real credential; others get 403 SC5003."""
    peer, _ = provider
    key = (await issue(sidecar, "POST /api/session", "GET /api/session/*", "* /api/refund/*"))[
        "key"
    ]
    before = len(peer.seen)
    assert await status_of(sidecar, method, path, key) == expected
    assert len(peer.seen) == before + (1 if expected[0] == 200 else 0)
    if expected[0] == 200:
        headers = peer.seen[-1]["headers"]
        assert headers["Authorization"] == SECRET and "Proxy-Authorization" not in headers


async def test_missing_malformed_and_unknown_keys(sidecar: Sidecar) -> None:
    """No key 401 SC5001; a non-Bearer value SC5001; a malformed or unknown key SC5002."""
    key = (await issue(sidecar, "* /*"))["key"]
    assert await status_of(sidecar, "GET", "/x", None) == (401, "SC5001")
    r = await sidecar.proxy.get("/pix/x", headers={"Proxy-Authorization": f"Basic {key}"})
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC5001")
    assert await status_of(sidecar, "GET", "/x", "sck_nope") == (401, "SC5002")
    other = "sck_pk0123456789abcdef_" + "A" * 43
    assert await status_of(sidecar, "GET", "/x", other) == (401, "SC5002")
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert await status_of(sidecar, "GET", "/x", wrong_secret) == (401, "SC5002")
    assert await status_of(sidecar, "GET", "/x", key) == (200, "")


async def test_disable_and_enable_take_effect_on_the_next_request(sidecar: Sidecar) -> None:
    """PATCH enabled=false refuses the very next request (SC5002); enabling restores it."""
    issued = await issue(sidecar, "* /*")
    url = f"/v1/credentials/{CRED}/keys/{issued['key_id']}"
    assert await status_of(sidecar, "GET", "/x", issued["key"]) == (200, "")
    r = await sidecar.admin.patch(url, json={"enabled": False})
    assert r.status == 200 and (await r.json())["enabled"] is False
    assert await status_of(sidecar, "GET", "/x", issued["key"]) == (401, "SC5002")
    await sidecar.admin.patch(url, json={"enabled": True})
    assert await status_of(sidecar, "GET", "/x", issued["key"]) == (200, "")


async def test_disable_is_effective_before_the_write_completes(sidecar: Sidecar) -> None:
    """A request racing the PATCH is refused as soon as the PATCH has started."""
    issued = await issue(sidecar, "* /*")
    url = f"/v1/credentials/{CRED}/keys/{issued['key_id']}"

    async def disable() -> int:
        r = await sidecar.admin.patch(url, json={"enabled": False})
        return r.status

    patch = asyncio.create_task(disable())
    index = sidecar.runtime.keys.index(CRED)
    while issued["key_id"] not in index.pending:
        await asyncio.sleep(0)
    assert index.entries[issued["key_id"]].enabled is False  # memory first, then Vault
    assert await status_of(sidecar, "GET", "/x", issued["key"]) == (401, "SC5002")
    assert await patch == 200


async def test_deleted_key_is_refused_at_once(sidecar: Sidecar) -> None:
    """DELETE answers 204 and the key stops working; a second DELETE is 404 SC5006."""
    issued = await issue(sidecar, "* /*")
    url = f"/v1/credentials/{CRED}/keys/{issued['key_id']}"
    assert await status_of(sidecar, "GET", "/x", issued["key"]) == (200, "")
    assert (await sidecar.admin.delete(url)).status == 204
    assert await status_of(sidecar, "GET", "/x", issued["key"]) == (401, "SC5002")
    r = await sidecar.admin.delete(url)
    assert (r.status, (await r.json())["code"]) == (404, "SC5006")
    await sidecar.runtime.keys.sync()
    assert await status_of(sidecar, "GET", "/x", issued["key"]) == (401, "SC5002")


async def test_expired_key_is_refused(sidecar: Sidecar) -> None:
    """A key past its expires_at is refused with SC5002."""
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    issued = await issue(sidecar, "* /*", expires_at=soon.isoformat())
    assert issued["expires_at"].endswith("Z")
    assert await status_of(sidecar, "GET", "/x", issued["key"]) == (200, "")
    await asyncio.sleep(1.6)
    assert await status_of(sidecar, "GET", "/x", issued["key"]) == (401, "SC5002")


async def test_a_key_only_works_for_its_own_credential(
    sidecar: Sidecar, provider: tuple[Provider, str]
) -> None:
    """A key issued for another credential is unknown to this upstream's credential."""
    await sidecar.admin.put(
        "/v1/credentials/other", json={"upstream": "pix", "fields": {"api_key": "SECR_x1"}}
    )
    r = await sidecar.admin.post("/v1/credentials/other/keys", json={"permissions": ["* /*"]})
    key = (await r.json())["key"]
    assert await status_of(sidecar, "GET", "/x", key) == (401, "SC5002")


async def test_custom_header_carries_the_bare_key_and_is_stripped(
    provider: tuple[Provider, str], make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """With proxy_key_header X-Proxy-Key the bare key works, and the header is not forwarded."""
    peer, url = provider
    sc = await make_sidecar(
        make_config({"pix": keyed_upstream(url, proxy_key_header="X-Proxy-Key")})
    )
    await sc.admin.put(
        f"/v1/credentials/{CRED}", json={"upstream": "pix", "fields": {"api_key": SECRET}}
    )
    key = (await issue(sc, "GET /*"))["key"]
    for value in (key, f"Bearer {key}"):
        r = await sc.proxy.get("/pix/a", headers={"X-Proxy-Key": value})
        assert r.status == 200
        assert "X-Proxy-Key" not in peer.seen[-1]["headers"]
    r = await sc.proxy.get("/pix/a", headers=bearer(key))
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC5001")


def test_permission_parsing() -> None:
    """Methods are normalised, duplicates merged, and malformed permissions refused."""
    perms = parse_all(["post /a", "POST /a", "GET /b/*"])
    assert [p.text for p in perms] == ["POST /a", "GET /b/*"]
    assert first_match(perms, "GET", "/b/c/d") is perms[1]
    assert first_match(perms, "HEAD", "/b/c") is None
    for bad in ("/a", "FETCH /a", "GET a", "GET /a?x=1", "GET /a b", "GET /a#f", "GET"):
        with pytest.raises(ValueError):
            parse(bad)
    with pytest.raises(ValueError):
        parse_all([])
    assert parse("GET /a.b").allows("GET", "/a.b") and not parse("GET /a.b").allows("GET", "/aXb")
