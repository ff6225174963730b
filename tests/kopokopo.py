"""The Kopokopo upstream that the token-emulation tests share (plain and SDK-through-CONNECT)."""

from __future__ import annotations

from typing import Any

HOST = "sandbox.kopokopo.com"
CLIENT_ID = "k2-real-client-id"


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
