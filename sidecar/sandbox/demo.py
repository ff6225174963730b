"""The demo set of sandbox peers that `sidecar dev` and `python -m sidecar.sandbox` start.

Names, ports and credential names match ``config/dev.yaml``. Every value here is a fake,
sandbox-only credential that exists to be printed and typed into curl examples; no real
provider accepts it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sidecar.sandbox import (
    api_key_peer,
    duitnow,
    hmac_peer,
    kopokopo,
    mtls_peer,
    oauth2,
    placetopay,
)
from sidecar.sandbox.server import SandboxSpec

PTP_LOGIN = "demo-site-login"
PTP_SECRET = "demo-ptp-secretkey-0001"
PAYNET_ID = "demo-paynet-client"
PAYNET_SECRET = "demo-paynet-secret-0002"
AZUPAY_KEY = "SECR_DEMO_sandbox_0003"
INTASEND_SECRET = "ISSecretKey_test_demo_0004"
INTASEND_PUBLIC = "ISPubKey_test_demo_0005"
# Seed 000's own sample values (organization B's client id and API key), so the README's Pismo
# example works as printed; the sandbox PIX partner is the only thing that accepts them.
PIX_CLIENT_ID = "Jk10014812-4785-1293-cded-3683ce1fdwjdj"
PIX_KEY = "71069360002100"
DUITNOW_ISSUER = "demo-acquirer-0006"
DUITNOW_MERCHANT = "demo-merchant-0007"
DUITNOW_KEY_NAME = "demo-key-2026"
KOPOKOPO_ID = "demo-kopokopo-client"
KOPOKOPO_SECRET = "demo-kopokopo-secret-0006"
KOPOKOPO_API_KEY = "demo-kopokopo-apikey-0009"  # signs its webhooks

DEFAULT_PORTS = {
    "placetopay": 9101,
    "paynet": 9102,
    "paynet-reports": 9103,
    "azupay": 9104,
    "intasend": 9105,
    "pix-partner": 9107,
    "paynet-duitnow": 9108,
    "kopokopo": 9106,
    "bank-mtls": 9109,
}


@cache
def duitnow_key_pem() -> tuple[str, str]:
    """(private, public) PEM of this process's demo RS256 key pair, made in memory once.

    Generated rather than shipped, so that no private key, fake or not, sits in the repository
    for a scanner to flag or a user to copy; the peer and the demo credential share it.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private.decode(), public.decode()


def duitnow_config() -> duitnow.DuitNowConfig:
    return duitnow.DuitNowConfig(
        public_key=duitnow_key_pem()[1],
        issuer=DUITNOW_ISSUER,
        merchants=[DUITNOW_MERCHANT],
        key_name=DUITNOW_KEY_NAME,
    )


def demo_apps() -> dict[str, web.Application]:
    """One fresh app per upstream of ``config/dev.yaml``, keyed by upstream name."""
    sites = {PTP_LOGIN: placetopay.SiteConfig(secret_key=PTP_SECRET)}
    return {
        "placetopay": placetopay.make_app(placetopay.PlaceToPayConfig(sites=sites)),
        "paynet": oauth2.make_app(oauth2.OAuth2Config(clients={PAYNET_ID: PAYNET_SECRET})),
        "paynet-reports": hmac_peer.make_app(hmac_peer.paynet_reports(PAYNET_SECRET)),
        "azupay": api_key_peer.make_app(api_key_peer.azupay(AZUPAY_KEY)),
        "intasend": api_key_peer.make_app(api_key_peer.intasend(INTASEND_SECRET, INTASEND_PUBLIC)),
        "pix-partner": oauth2.make_app(pix_partner()),
        "paynet-duitnow": duitnow.make_app(duitnow_config()),
        "kopokopo": kopokopo.make_app(
            kopokopo.KopokopoConfig(
                clients={KOPOKOPO_ID: KOPOKOPO_SECRET}, webhook_key=KOPOKOPO_API_KEY
            )
        ),
        "bank-mtls": mtls_peer.make_app(),
    }


def pix_partner() -> oauth2.OAuth2Config:
    """Seed 000's organization B: an OAuth2 client-credentials partner API (the API key is the
    client secret, ``provider_data.client_id`` the client id), Basic client auth only, as
    ``config/sidecar.yaml`` configures it; its resource server echoes authorised calls."""
    return oauth2.OAuth2Config(
        clients={PIX_CLIENT_ID: PIX_KEY},
        token_path="/oauth/token",
        scope="pix.write pix.read",
        accept_body=False,
    )


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
    """Admin-API ``PUT /v1/credentials/{name}`` bodies, keyed by the credential name.

    ``pix-partner-pix`` is left out on purpose: the README's admin walk-through creates it
    (201), so that the walk-through starts from what ``make run`` leaves and runs as printed.
    """

    def body(upstream: str, **fields: str) -> dict[str, Any]:
        return {"upstream": upstream, "environment": "sandbox", "fields": fields}

    return {
        "placetopay-main": body("placetopay", login=PTP_LOGIN, secret_key=PTP_SECRET),
        "paynet": body("paynet", client_id=PAYNET_ID, client_secret=PAYNET_SECRET),
        "paynet-reports": body("paynet-reports", client_secret=PAYNET_SECRET),
        "azupay": body("azupay", api_key=AZUPAY_KEY),
        "intasend": body("intasend", api_key=INTASEND_SECRET, public_key=INTASEND_PUBLIC),
        "paynet-duitnow": body(
            "paynet-duitnow",
            private_key=duitnow_key_pem()[0],
            issuer=DUITNOW_ISSUER,
            subject=DUITNOW_MERCHANT,
            key_id=DUITNOW_KEY_NAME,
        ),
        "kopokopo": body(
            "kopokopo",
            client_id=KOPOKOPO_ID,
            client_secret=KOPOKOPO_SECRET,
            api_key=KOPOKOPO_API_KEY,
        ),
        "bank-mtls": body(
            "bank-mtls",
            client_certificate=mtls_peer.demo_pki().client.cert_pem,
            client_private_key=mtls_peer.demo_pki().client.key_pem,
        ),
    }
