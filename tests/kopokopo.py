"""The Kopokopo upstream and payment that the token-emulation tests share."""

from __future__ import annotations

from typing import Any

HOST = "sandbox.kopokopo.com"
CLIENT_ID = "k2-real-client-id"
STK = {  # an STK push (receive payments) as k2-connect sends it
    "payment_channel": "M-PESA STK Push",
    "till_number": "K000000",
    "subscriber": {"first_name": "Jane", "last_name": "Doe", "phone_number": "+254700000000"},
    "amount": {"currency": "KES", "value": 100},
    "_links": {"callback_url": "https://example.com/cb"},
}


def k2_upstream(url: str, **extra: Any) -> dict[str, Any]:
    """Kopokopo's sandbox peer at ``url``, its token endpoint emulated at ``/oauth/token``."""
    return {
        "url": url,
        "hosts": [HOST],
        "scheme": "oauth2_client_credentials",
        "credential": "kopokopo",
        "environment": "sandbox",
        "token_url": "/oauth/token",
        "token_path": "/oauth/token",
        "token_extras": ["created_at"],
        **extra,
    }
