"""No secret leaks: full flow for every scheme, then scan logs, responses, headers and metrics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from sidecar.sandbox import api_key_peer, hmac_peer, oauth2, placetopay
from sidecar.sandbox.openbao import OpenBao
from sidecar.sandbox.server import start_sandboxes
from tests.e2e.conftest import ADMIN_TOKEN, write_config
from tests.integration.conftest import config_dict
from tests.leakscan import Collected

SECRETS = {
    "ptp": "LEAKCANARY-ptp-7c1e9a",
    "oauth": "LEAKCANARY-oauth-2b8d4f",
    "hmac": "LEAKCANARY-hmac-5e3a1c",
    "azupay": "LEAKCANARY-azupay-9d2f7b",
    "intasend": "LEAKCANARY-intasend-4a6c8e",
}


def sandbox_apps() -> dict[str, Any]:
    return {
        "ptp": placetopay.make_app(
            placetopay.PlaceToPayConfig(
                sites={"site": placetopay.SiteConfig(secret_key=SECRETS["ptp"])}
            )
        ),
        "paynet": oauth2.make_app(oauth2.OAuth2Config(clients={"cid": SECRETS["oauth"]})),
        "reports": hmac_peer.make_app(hmac_peer.paynet_reports(SECRETS["hmac"])),
        "azupay": api_key_peer.make_app(api_key_peer.azupay(SECRETS["azupay"])),
        "intasend": api_key_peer.make_app(
            api_key_peer.intasend(SECRETS["intasend"], "ISPubKey_public")
        ),
    }


def upstreams(urls: dict[str, str]) -> dict[str, Any]:
    def up(name: str, scheme: str, **opts: Any) -> dict[str, Any]:
        return {
            "url": urls[name],
            "scheme": scheme,
            "credential": name,
            "environment": "sandbox",
            **opts,
        }

    return {
        "ptp": up("ptp", "placetopay"),
        "paynet": up(
            "paynet", "oauth2_client_credentials", token_url="/v1/picasso-guard/auth/token"
        ),
        "reports": up("reports", "hmac", preset="paynet_reports"),
        "azupay": up("azupay", "api_key", probe={"path": "/v1/balance"}),
        "intasend": up(
            "intasend",
            "api_key",
            template="Bearer {api_key}",
            extra_headers={"INTASEND_PUBLIC_API_KEY": "{public_key}"},
            probe={"path": "/api/v1/wallets/"},
        ),
    }


FIELDS = {
    "ptp": {"login": "site", "secret_key": SECRETS["ptp"]},
    "paynet": {"client_id": "cid", "client_secret": SECRETS["oauth"]},
    "reports": {"client_secret": SECRETS["hmac"]},
    "azupay": {"api_key": SECRETS["azupay"]},
    "intasend": {"api_key": SECRETS["intasend"], "public_key": "ISPubKey_public"},
}
CALLS = {
    "ptp": ("POST", "/ptp/api/session", {"payment": {"reference": "x"}}),
    "paynet": ("GET", "/paynet/v1/x", None),
    "reports": ("GET", "/reports/v1/r", None),
    "azupay": ("GET", "/azupay/v1/balance", None),
    "intasend": ("GET", "/intasend/api/v1/wallets/", None),
}


async def full_flow(
    admin: str, proxy: str, seen: Collected, auth: dict[str, str] | None = None
) -> None:
    """Everything a user does: create, bad create, read, verify, disable, proxy, errors, metrics."""
    async with aiohttp.ClientSession() as http:
        for name, fields in FIELDS.items():
            secret_field = next(
                k for k in fields if k != "login" and k not in ("client_id", "public_key")
            )
            wrong = {**fields, secret_field: fields[secret_field] + "-wrong"}
            for body in (
                {"upstream": name, "fields": wrong},
                {"upstream": name, "fields": fields},
                {"upstream": name, "fields": fields, "bogus": fields},
            ):
                async with http.put(f"{admin}/v1/credentials/{name}", json=body, headers=auth) as r:
                    await seen.response(r)
            for verify in (fields[secret_field], "nope"):
                async with http.post(
                    f"{admin}/v1/credentials/{name}/verify",
                    json={secret_field: verify},
                    headers=auth,
                ) as r:
                    await seen.response(r)
            for path in (f"/v1/credentials/{name}", f"/v1/credentials/{name}/versions"):
                async with http.get(f"{admin}{path}", headers=auth) as r:
                    await seen.response(r)
            method, path, payload = CALLS[name]
            for _ in range(2):
                async with http.request(method, f"{proxy}{path}", json=payload) as r:
                    body = await seen.response(r)
                    assert r.status < 400, (name, r.status, body)
            async with http.patch(
                f"{admin}/v1/credentials/{name}", json={"enabled": False}, headers=auth
            ) as r:
                await seen.response(r)
            async with http.request(method, f"{proxy}{path}", json=payload) as r:
                await seen.response(r)
        for path in ("/v1/credentials", "/metrics", "/readyz", "/v1/nope"):
            async with http.get(f"{admin}{path}", headers=auth) as r:
                await seen.response(r)


async def test_no_secret_in_process_stderr_responses_or_metrics(
    openbao: OpenBao, prefix: str, tmp_path: Path, start_sidecar: Any
) -> None:
    """The sidecar process at debug level: its stderr, every answer and /metrics hold no secret."""
    async with await start_sandboxes(sandbox_apps()) as sandboxes:
        cfg = tmp_path / "sidecar.yaml"
        urls = {n: sandboxes.url(n) for n in sandboxes.running}
        write_config(
            cfg,
            openbao,
            prefix,
            upstreams(urls),
            logging={"level": "debug", "format": "json", "access_log": True},
        )
        proc = start_sidecar(cfg)
        await asyncio.to_thread(proc.wait_ready)
        seen = Collected()
        await full_flow(proc.admin, proc.proxy, seen, proc.auth)
        seen.add(proc.stderr())
    texts, lines = seen.size
    hits = seen.hits([*SECRETS.values(), ADMIN_TOKEN])
    print(f"leak scan (process): {texts} texts, {lines} lines scanned, {len(hits)} hits")
    assert lines > 100 and hits == []


async def test_no_secret_in_captured_log_events(
    openbao: OpenBao, prefix: str, make_sidecar_inproc: Any
) -> None:
    """In-process: every structlog event of the same flow is free of secrets."""
    async with await start_sandboxes(sandbox_apps()) as sandboxes:
        urls = {n: sandboxes.url(n) for n in sandboxes.running}
        data = config_dict(openbao.addr, prefix, upstreams(urls))
        seen = Collected()
        with capture_logs() as logs:
            sidecar = await make_sidecar_inproc(data)
            admin = f"http://{sidecar.admin.host}:{sidecar.admin.port}"
            proxy = f"http://{sidecar.proxy.host}:{sidecar.proxy.port}"
            await full_flow(admin, proxy, seen)
        for event in logs:
            seen.add(json.dumps(event, default=str))
    hits = seen.hits(SECRETS.values())
    print(
        f"leak scan (in-process): {len(logs)} events, {seen.size[1]} lines scanned, {len(hits)} hits"
    )
    assert len(logs) > 20 and hits == []
