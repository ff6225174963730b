"""The per-key cap on opaque tokens (``token_max_per_key``) and the token table's metrics.

With ``require_proxy_key`` the table's bound is per upstream, so without a per-key cap one key
holder flooding token requests would evict every other key's tokens. These tests flood for real,
through the proxy listener, against the Kopokopo sandbox peer and the suite's OpenBao.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from sidecar.config import ConfigError
from sidecar.proxy import tokens
from sidecar.schemes.oauth2 import OAuth2Options
from tests.integration import test_token_emulation as emulation
from tests.integration.conftest import MakeConfig
from tests.integration.test_token_emulation import Emulating
from tests.kopokopo import k2_upstream

peer, start = emulation.peer, emulation.start  # the emulation tests' fixtures, by name

FLOOD = 1000


async def new_key(it: Emulating) -> dict[str, Any]:
    r = await it.sidecar.admin.post("/v1/credentials/kopokopo/keys", json={"permissions": ["* /*"]})
    assert r.status == 201, await r.text()
    body: dict[str, Any] = await r.json()
    return body


async def token_of(it: Emulating, key: dict[str, Any]) -> str:
    answer = await it.token(client_id=key["key_id"], client_secret=key["key"])
    token: str = answer["access_token"]
    return token


def sample(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name + '{' + labels + '}')} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} missing"
    return float(match.group(1))


async def test_a_flooding_key_churns_only_its_own_tokens(start: Any) -> None:
    """Key A asks for 1,000 tokens while key B holds one: B's still works, A holds at most
    token_max_per_key (8), and the table holds A's 8 plus B's 1, well under token_max_live."""
    it = await start(require_proxy_key=True, token_max_live=100)
    a, b = await new_key(it), await new_key(it)
    kept = await token_of(it, b)
    started = time.perf_counter()
    flood = [await token_of(it, a) for _ in range(FLOOD)]
    elapsed = time.perf_counter() - started
    print(f"{FLOOD} keyed token requests in {elapsed * 1000:.0f} ms")
    assert (await it.pay(kept)).status == 201
    table = tokens.table(it.sidecar.runtime, "kopokopo")
    assert (table.held_by(a["key_id"]), table.held_by(b["key_id"]), len(table.tokens)) == (8, 1, 9)
    assert table.evictions == {"expired": 0, "per_key": FLOOD - 8, "table_full": 0}
    assert (await it.pay(flood[-1])).status == 201
    r = await it.pay(flood[-9])  # A's ninth newest: evicted by A's own cap
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC4043")


async def test_the_table_bound_still_holds_across_keys(start: Any) -> None:
    """Three keys at their cap of 2 with token_max_live=5: the table keeps 5, evicting the
    oldest token of all (key A's first) as table_full; the per-key cap never overshoots."""
    it = await start(require_proxy_key=True, token_max_live=5, token_max_per_key=2)
    keys = [await new_key(it) for _ in range(3)]
    issued = [[await token_of(it, key) for _ in range(2)] for key in keys]
    extra = await token_of(it, keys[2])  # C's third: its own oldest goes, not A's
    table = tokens.table(it.sidecar.runtime, "kopokopo")
    assert len(table.tokens) == 5 and [table.held_by(k["key_id"]) for k in keys] == [1, 2, 2]
    assert table.evictions == {"expired": 0, "per_key": 1, "table_full": 1}
    statuses = [(await it.pay(t)).status for t in (*issued[0], *issued[1], *issued[2], extra)]
    assert statuses == [401, 201, 201, 201, 401, 201, 201]


async def test_without_proxy_keys_only_the_table_bound_applies(start: Any) -> None:
    """Without require_proxy_key all callers are one principal: the per-key cap does not apply
    and twenty tokens with token_max_per_key=2 all stay live under token_max_live=20."""
    it = await start(token_max_live=20, token_max_per_key=2)
    issued = [(await it.token())["access_token"] for _ in range(20)]
    table = tokens.table(it.sidecar.runtime, "kopokopo")
    assert (len(table.tokens), table.evicted, table.by_key) == (20, 0, {})
    assert (await it.pay(issued[0])).status == 201


async def test_metrics_count_live_tokens_and_evictions_without_key_ids(start: Any) -> None:
    """/metrics shows the live gauge and evictions by a closed set of reasons, and no label
    value is a key id or a token."""
    it = await start(require_proxy_key=True, token_max_live=100, token_max_per_key=3)
    a = await new_key(it)
    issued = [await token_of(it, a) for _ in range(10)]
    table = tokens.table(it.sidecar.runtime, "kopokopo")
    table.clock = lambda: time.monotonic() + 3601
    assert (await it.pay(issued[-1])).status == 401  # expired: dropped at lookup
    text = await (await it.sidecar.admin.get("/metrics")).text()
    up = 'upstream="kopokopo"'
    assert sample(text, "sidecar_emulated_tokens", up) == 0
    evictions = "sidecar_emulated_token_evictions_total"
    assert sample(text, evictions, f'reason="per_key",{up}') == 7
    assert sample(text, evictions, f'reason="expired",{up}') == 1
    assert sample(text, evictions, f'reason="table_full",{up}') == 0
    live = await token_of(it, a)  # still an hour on: A's two other tokens are dropped first
    text = await (await it.sidecar.admin.get("/metrics")).text()
    assert sample(text, "sidecar_emulated_tokens", up) == 1
    assert sample(text, evictions, f'reason="expired",{up}') == 3
    found = set(re.findall(r'reason="([^"]*)"', text))
    assert found == {"expired", "per_key", "table_full"}
    for secret in (a["key_id"], a["key"], live, *issued):
        assert secret not in text


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"token_max_per_key": 0}, "greater than 0"),
        ({"token_max_per_key": 1001}, "less than or equal to 1000"),
        ({"token_max_per_key": "many"}, "valid integer"),
        ({"token_max_per_key": 6, "token_max_live": 5}, "must not exceed token_max_live"),
    ],
)
def test_token_max_per_key_is_validated_at_load(
    make_config: MakeConfig, options: dict[str, Any], needle: str
) -> None:
    """Zero, too large, not a number, or over token_max_live: a config error naming the key."""
    with pytest.raises(ConfigError) as info:
        make_config({"kopokopo": k2_upstream("http://127.0.0.1:9", **options)})
    assert "token_max_per_key" in str(info.value) and needle in str(info.value)


def test_token_max_per_key_defaults_to_8_clamped_to_the_table_bound(
    make_config: MakeConfig,
) -> None:
    """Unset, the cap is 8; a token_max_live below 8 is accepted and bounds the cap instead."""
    cfg = make_config({"kopokopo": k2_upstream("http://127.0.0.1:9", token_max_live=3)})
    [(_, options)] = cfg.schemes["kopokopo"]
    assert isinstance(options, OAuth2Options)
    table = tokens.TokenTable()
    for _ in range(5):
        table.issue(60, options.token_max_live, ("pkA", 1), options.token_max_per_key)
    assert options.token_max_per_key == 8
    assert (table.held_by("pkA"), table.evictions["per_key"]) == (3, 2)
