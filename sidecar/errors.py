"""Every error the sidecar answers with, and its stable code.

The tree is deliberately shallow::

    SidecarError                 code, HTTP status, a message that never holds a secret
    ├── ConfigError              start-up only: a list of "yaml.path: problem" lines
    ├── VerificationFailed       the provider refused a credential during verify()
    └── VaultUnavailable         Vault could not be reached or answered 5xx

One server middleware turns a ``SidecarError`` into ``{"message": ..., "code": ...}``.
``CODES`` is the single table of codes; the README's error table is generated from it
(``sidecar errors``) and a test keeps the two equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    status: int
    message: str


CODES: dict[str, Code] = {
    c.code: c
    for c in (
        # SC1xxx: the request itself
        Code("SC1000", 500, "Internal error"),
        Code("SC1001", 400, "Request body is not valid JSON"),
        Code("SC1002", 422, "Request body failed validation"),
        Code("SC1003", 413, "Request body too large"),
        Code("SC1004", 400, "Invalid credential name"),
        Code("SC1005", 404, "No such route"),
        Code("SC1006", 405, "Method not allowed"),
        Code("SC1007", 401, "Admin token missing or invalid"),
        Code("SC1008", 415, "Content-Type must be application/json"),
        Code("SC1009", 400, "Invalid query parameter"),
        Code("SC1010", 401, "X-Vault-Token is not a valid Vault token"),
        Code("SC1015", 421, "Host is not a name this listener serves"),
        Code("SC1016", 403, "Origin is not on the allow-list"),
        Code("SC1017", 403, "Cross-site request refused (Sec-Fetch-Site)"),
        Code("SC1018", 429, "Too many verify attempts for this credential; retry later"),
        # SC2xxx: credentials
        Code("SC2001", 404, "Credential not found"),
        Code("SC2002", 409, "Credential was changed concurrently; retry"),
        Code("SC2003", 412, "If-Match does not match the current version"),
        Code("SC2004", 422, "Unknown upstream"),
        Code("SC2005", 422, "Provider rejected the credential"),
        Code("SC2006", 502, "Provider could not be reached to verify the credential"),
        Code("SC2013", 422, "JWS private_key is not a PEM private key"),
        Code("SC2014", 422, "JWS private_key does not fit the algorithm (type, curve or size)"),
        Code("SC2015", 422, "JWS private_key is encrypted; store it unencrypted"),
        Code("SC2016", 422, "JWS private_key holds a public key or certificate"),
        # SC2017-SC2021: mTLS client certificates (schemes/mtls.py, tlskeys.py)
        Code("SC2017", 422, "Client certificate or private key is not usable PEM"),
        Code("SC2018", 422, "Client private key does not match the client certificate"),
        Code("SC2019", 422, "Client certificate is expired or not yet valid"),
        Code("SC2020", 422, "Provider's TLS handshake rejected the client certificate"),
        Code("SC2021", 422, "Client certificate is not for TLS client authentication"),
        # SC3xxx: Vault
        Code("SC3001", 503, "Vault is unavailable"),
        Code("SC3002", 503, "Vault denied an operation the sidecar needs"),
        Code("SC3003", 502, "Vault returned an unexpected error"),
        Code("SC3004", 503, "Not authenticated to Vault"),
        Code("SC3005", 503, "Vault token is invalid or revoked; the sidecar is logging in again"),
        Code("SC3006", 503, "Vault policy denies an operation the sidecar needs"),
        Code("SC3007", 503, "Vault login was refused; waiting before the next attempt"),
        # SC4xxx: the proxy
        Code("SC4001", 403, "Destination is not a configured upstream"),
        Code("SC4002", 503, "No credential stored for this upstream"),
        Code("SC4003", 403, "Credential is disabled"),
        Code("SC4004", 403, "Credential environment does not match the upstream"),
        Code("SC4005", 413, "Request body exceeds the upstream's limit"),
        Code("SC4006", 504, "Upstream timed out"),
        Code("SC4007", 502, "Upstream connection failed"),
        Code("SC4008", 502, "Token endpoint failed"),
        Code("SC4009", 400, "Request body is not what the upstream's scheme needs"),
        Code("SC4010", 400, "Invalid header value"),
        Code("SC4011", 400, "Malformed proxy request"),
        Code(
            "SC4012",
            503,
            "Cached credential is older than cache.max_stale and Vault is unreachable",
        ),
        Code("SC4013", 431, "Request head too large (over 64 KiB or 128 headers)"),
        Code("SC4014", 408, "Request body sent nothing for listen.body_idle_timeout"),
        Code("SC4015", 400, "Client closed the connection before the request body ended"),
        Code("SC4025", 502, "Upstream sent an interim (1xx) answer with a body"),
        Code("SC4026", 503, "No free upstream connection within the upstream's pool_timeout"),
        Code("SC4027", 400, "Request target holds a fragment (#)"),
        Code("SC4028", 400, "Encoded slash or backslash in the path"),
        Code("SC4029", 502, "Upstream answer uses a transfer coding other than chunked"),
        Code("SC4030", 502, "Upstream answer head carries a secret the sidecar injected"),
        Code("SC4031", 502, "Upstream answer is compressed and cannot be scanned for secrets"),
        Code("SC4032", 400, "Placeholder field too short to be masked in answers (scrub_answers)"),
        Code("SC4035", 503, "Sidecar is starting: credentials not loaded from Vault yet"),
        Code("SC4040", 400, "Token request is not a client-credentials form or JSON object"),
        Code("SC4041", 413, "Token request body exceeds token_max_body"),
        Code("SC4042", 405, "The emulated token endpoint accepts POST only"),
        Code("SC4043", 401, "Bearer token unknown or expired (a restart forgets them): ask again"),
        Code("SC4044", 400, "A spelling of the emulated token_path that is not token_path"),
        Code("SC4045", 422, "The credential's upstream declares no webhook_signature"),
        Code("SC4046", 422, "The credential holds no webhook signing key"),
        Code("SC4047", 413, "Webhook body exceeds the upstream's webhook_signature.max_body"),
        Code("SC4048", 413, "Body or query over twice max_body once placeholders are substituted"),
        # SC4050-SC4054: placeholders in bodies and queries (sidecar/proxy/placeholders.py)
        Code("SC4050", 400, "Request carries a placeholder-shaped value that is not a placeholder"),
        Code("SC4051", 400, "Placeholder in a body whose content type cannot be rewritten"),
        Code("SC4052", 400, "Placeholder names a field the stored credential lacks"),
        Code("SC4053", 400, "Compressed or non-UTF-8 body on an upstream with placeholders"),
        Code("SC4054", 400, "Placeholder-shaped name (JSON key or form/query name)"),
        Code("SC4055", 400, "Request body is not JSON, which the JWS claims need ({body_json})"),
        Code("SC4056", 413, "Signed JWS would exceed the upstream's max_token_bytes"),
        Code("SC4057", 503, "Stored JWS private key cannot sign with the upstream's algorithm"),
        # SC4060-SC4064: upstream mTLS (tlskeys.py)
        Code("SC4060", 503, "Stored client certificate or key cannot be loaded into TLS"),
        Code("SC4061", 503, "Stored client certificate has expired or is not yet valid"),
        # SC5xxx: proxy keys
        Code("SC5001", 401, "Proxy key required"),
        Code("SC5002", 401, "Proxy key invalid, disabled or expired"),
        Code("SC5003", 403, "Proxy key does not permit this request"),
        Code("SC5004", 401, "Proxy key signature missing, stale or invalid"),
        Code("SC5005", 401, "Proxy key signature replayed"),
        Code("SC5006", 404, "Proxy key not found"),
        Code("SC5007", 401, "Token request client authentication failed (client_id/secret)"),
        Code("SC5008", 401, "Bearer token's proxy key was disabled, deleted or expired"),
        # SC6xxx: roles and admin authentication
        Code("SC6001", 403, "Your Vault token's policy does not allow this on the credential"),
        Code("SC6002", 500, "The admin role has no authentication configured"),
    )
}


_PEM_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]{0,32}PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]{0,32}PRIVATE KEY-----|\Z)",
    re.DOTALL,
)


def unarmored(message: str) -> str:
    """A message that quotes input (a field name, an upstream) may quote a private key pasted
    in the wrong place by mistake: a PEM private key block never leaves in an answer."""
    if "PRIVATE KEY-----" not in message:
        return message
    return _PEM_KEY.sub("[private key]", message)


class SidecarError(Exception):
    """An error with a stable code; ``message`` is shown to the caller and must hold no secret."""

    def __init__(self, code: str, message: str | None = None, **details: Any) -> None:
        entry = CODES[code]
        self.code = code
        self.status = entry.status
        self.message = unarmored(message or entry.message)
        self.details = details
        # Extra answer headers (X-Sidecar-Request-Sent); never a secret, like the message.
        self.headers: dict[str, str] = {}
        super().__init__(f"{code}: {self.message}")

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every ``path: reason`` found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class VerificationFailed(SidecarError):
    """The provider said no to the credential (a wrong secret, an unknown login)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__("SC2005", message)


class VaultUnavailable(SidecarError):
    """Vault did not answer in time, refused the connection, or is sealed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__("SC3001", message)


def error_table_markdown() -> str:
    """The README's error-code table, generated so that docs and code cannot drift."""
    rows = ["| code | HTTP | meaning |", "|---|---|---|"]
    rows += [f"| `{c.code}` | {c.status} | {c.message} |" for c in CODES.values()]
    return "\n".join(rows)
