"""JWS signing cost per algorithm, in-process: what the ``jws`` row's CPU is mostly made of.

For RS256, PS256 and ES256 (a fresh 2048-bit RSA or P-256 key): the scheme's whole token
(``Jws.token``: claims from the DuitNow preset over a ~80 B JSON body, PyJWT encoding, the
signature) and the private-key signature alone (``cryptography``'s ``key.sign`` over the same
signing input), in µs per operation of this process's CPU time. Each algorithm runs for
``seconds`` after a short warm-up; the figures are reported, never asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from multidict import CIMultiDict
from yarl import URL

from sidecar.schemes.base import Credential, OutboundRequest, UpstreamContext
from sidecar.schemes.jws import Jws, JwsOptions

ALGORITHMS = ("RS256", "PS256", "ES256")
BODY = b'{"amount": "10.00", "merchant": {"productId": "P1"}, "reference": "B-1"}'


def _key(alg: str) -> Any:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _raw_signer(alg: str, key: Any) -> Callable[[bytes], bytes]:
    if alg == "ES256":
        return lambda data: bytes(key.sign(data, ec.ECDSA(hashes.SHA256())))
    if alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return lambda data: bytes(key.sign(data, pss, hashes.SHA256()))
    return lambda data: bytes(key.sign(data, padding.PKCS1v15(), hashes.SHA256()))


def _credential(key: Any) -> Credential:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    fields = {"issuer": "bench-acquirer", "subject": "bench-merchant", "key_id": "bench-key"}
    now = datetime.now(UTC)
    return Credential(
        name="bench",
        upstream="jws",
        scheme="jws",
        environment="sandbox",
        enabled=True,
        fields=fields,
        secrets={"private_key": pem},
        provider_data={},
        version=1,
        created_at=now,
        updated_at=now,
    )


def _per_op_us(op: Callable[[], object], seconds: float) -> float:
    for _ in range(20):
        op()
    count, start = 0, time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            op()
        count += 10
    return (time.process_time() - start) / count * 1e6


def measure(seconds: float = 1.0) -> dict[str, dict[str, float]]:
    """{alg: {"token_us": ..., "sign_us": ...}}: µs of CPU per token and per bare signature."""
    return {alg: _measure_one(alg, seconds) for alg in ALGORITHMS}


def _measure_one(alg: str, seconds: float) -> dict[str, float]:
    key = _key(alg)
    options = JwsOptions.model_validate({"preset": "paynet_duitnow", "algorithm": alg})
    scheme = Jws(options, UpstreamContext("bench", URL("http://127.0.0.1")))
    cred = _credential(key)
    request = OutboundRequest("POST", URL("http://127.0.0.1/v1/x"), CIMultiDict(), BODY)
    raw = _raw_signer(alg, key)
    signing_input = scheme.token(request, cred).rpartition(".")[0].encode()
    return {
        "token_us": _per_op_us(lambda: scheme.token(request, cred), seconds),
        "sign_us": _per_op_us(lambda: raw(signing_input), seconds),
    }


def table(results: dict[str, dict[str, float]]) -> str:
    lines = ["JWS signing, in-process CPU per operation (bench/jwssign.py)"]
    lines.append(f"{'alg':<8}{'token µs/op':>13}{'bare sign µs/op':>17}{'sign share':>12}")
    for alg, r in results.items():
        share = r["sign_us"] / r["token_us"] if r["token_us"] else 0.0
        lines.append(f"{alg:<8}{r['token_us']:>13.0f}{r['sign_us']:>17.0f}{share:>11.0%}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(measure()))
