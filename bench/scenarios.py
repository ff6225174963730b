"""The schemes as the benchmark exercises them: one upstream and one credential each.

Each scenario is a request an app would make (PlaceToPay's session create, a PayNet-like
OAuth2 call, a signed reports POST, an Azupay balance read, a DuitNow Pay intent signed as an
RS256 JWT), the sidecar's upstream config for it, and the credential stored through the admin
API. The values are throwaway bench values; the JWS key pair is made in memory per run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.upstream import TOKEN_PATH

_PAYMENT = {
    "locale": "es_CO",
    "payment": {
        "reference": "BENCH-0001",
        "description": "benchmark order",
        "amount": {"currency": "COP", "total": 10000},
    },
    "expiration": "2030-01-01T00:00:00-05:00",
    "returnUrl": "https://shop.example/return",
    "ipAddress": "127.0.0.1",
    "userAgent": "bench",
}
_JSON = {"Content-Type": "application/json"}


def _bench_rsa_pem() -> str:
    """A throwaway RS256 key for this bench run, never written anywhere but the bench Vault."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return raw.decode()


@dataclass(frozen=True)
class Scenario:
    name: str
    options: dict[str, Any]
    fields: dict[str, str]
    method: str
    path: str
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """The provider host name an SDK would call: intercepted (CONNECT) cells use it."""
        return f"{self.name.replace('_', '-')}.bench.example"

    def upstream_config(self, url: str) -> dict[str, Any]:
        return {
            "url": url,
            "hosts": [self.host],
            "scheme": self.name,
            "credential": f"bench-{self.name.replace('_', '-')}",
            "environment": "sandbox",
            **self.options,
        }

    def forwarder_spec(self, url: str) -> dict[str, Any]:
        return {"scheme": self.name, "url": url, "token_path": TOKEN_PATH, "fields": self.fields}


SCENARIOS = (
    Scenario(
        "placetopay",
        {"hash": "sha256"},
        {"login": "bench-login", "secret_key": "sk-bench-p2p-0b7e41"},
        "POST",
        "/api/session",
        json.dumps(_PAYMENT),
        _JSON,
    ),
    Scenario(
        "oauth2_client_credentials",
        {"token_url": TOKEN_PATH},
        {"client_id": "bench-client", "client_secret": "cs-bench-oauth2-5d19c3"},
        "POST",
        "/v1/payments",
        json.dumps(_PAYMENT["payment"]),
        _JSON,
    ),
    Scenario(
        "hmac",
        {
            "template": "{timestamp}\n{method}\n{path}\n{body_sha256}",
            "timestamp_header": "X-Timestamp",
            "signature_header": "X-Signature",
        },
        {"hmac_key": "hk-bench-hmac-9a2f07"},
        "POST",
        "/v1/reports",
        json.dumps({"from": "2024-01-01", "to": "2024-01-31", "format": "csv"}),
        _JSON,
    ),
    Scenario(
        "api_key",
        {"header": "Authorization", "probe": {"method": "GET", "path": "/v1/balance"}},
        {"api_key": "ak-bench-key-3c8d52"},
        "GET",
        "/v1/balance",
    ),
    Scenario(
        "jws",
        {"preset": "paynet_duitnow"},
        {
            "private_key": _bench_rsa_pem(),
            "issuer": "bench-acquirer",
            "subject": "bench-merchant",
            "key_id": "bench-key",
        },
        "POST",
        "/v1/payment-intents",
        json.dumps({"amount": "10.00", "merchant": {"productId": "P1"}, "reference": "B-1"}),
        _JSON,
    ),
)
