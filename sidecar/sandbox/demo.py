"""The demo set of sandbox peers that `sidecar dev` and `python -m sidecar.sandbox` start.

Names, ports and credential names match ``config/dev.yaml``. Every value here is a fake,
sandbox-only credential that exists to be printed and typed into curl examples; no real
provider accepts it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sidecar.sandbox import api_key_peer, hmac_peer, mtls_peer, oauth2, placetopay
from sidecar.sandbox.server import SandboxSpec

PTP_LOGIN = "demo-site-login"
PTP_SECRET = "demo-ptp-secretkey-0001"
PAYNET_ID = "demo-paynet-client"
PAYNET_SECRET = "demo-paynet-secret-0002"
AZUPAY_KEY = "SECR_DEMO_sandbox_0003"
INTASEND_SECRET = "ISSecretKey_test_demo_0004"
INTASEND_PUBLIC = "ISPubKey_test_demo_0005"

DEFAULT_PORTS = {
    "placetopay": 9101,
    "paynet": 9102,
    "paynet-reports": 9103,
    "azupay": 9104,
    "intasend": 9105,
    "bank-mtls": 9109,
}


def demo_apps() -> dict[str, web.Application]:
    """One fresh app per upstream of ``config/dev.yaml``, keyed by upstream name."""
    sites = {PTP_LOGIN: placetopay.SiteConfig(secret_key=PTP_SECRET)}
    return {
        "placetopay": placetopay.make_app(placetopay.PlaceToPayConfig(sites=sites)),
        "paynet": oauth2.make_app(oauth2.OAuth2Config(clients={PAYNET_ID: PAYNET_SECRET})),
        "paynet-reports": hmac_peer.make_app(hmac_peer.paynet_reports(PAYNET_SECRET)),
        "azupay": api_key_peer.make_app(api_key_peer.azupay(AZUPAY_KEY)),
        "intasend": api_key_peer.make_app(api_key_peer.intasend(INTASEND_SECRET, INTASEND_PUBLIC)),
        "bank-mtls": mtls_peer.make_app(),
    }


def demo_specs(port_base: int = 9101) -> dict[str, SandboxSpec]:
    """The demo apps on ``config/dev.yaml``'s ports shifted to ``port_base``; 0 = free ports."""
    apps = demo_apps()
    shift = port_base - DEFAULT_PORTS["placetopay"]
    pki = mtls_peer.demo_pki()
    tls = {"bank-mtls": mtls_peer.server_context(pki.ca, pki.server)}  # https, client cert required
    return {
        name: SandboxSpec(app, DEFAULT_PORTS[name] + shift if port_base else 0, tls.get(name))
        for name, app in apps.items()
    }


def demo_credentials() -> dict[str, dict[str, Any]]:
    """Admin-API ``PUT /v1/credentials/{name}`` bodies, keyed by the credential name."""

    def body(upstream: str, **fields: str) -> dict[str, Any]:
        return {"upstream": upstream, "environment": "sandbox", "fields": fields}

    return {
        "placetopay-main": body("placetopay", login=PTP_LOGIN, secret_key=PTP_SECRET),
        "paynet": body("paynet", client_id=PAYNET_ID, client_secret=PAYNET_SECRET),
        "paynet-reports": body("paynet-reports", client_secret=PAYNET_SECRET),
        "azupay": body("azupay", api_key=AZUPAY_KEY),
        "intasend": body("intasend", api_key=INTASEND_SECRET, public_key=INTASEND_PUBLIC),
        "bank-mtls": body(
            "bank-mtls",
            client_certificate=mtls_peer.demo_pki().client.cert_pem,
            client_private_key=mtls_peer.demo_pki().client.key_pem,
        ),
    }
