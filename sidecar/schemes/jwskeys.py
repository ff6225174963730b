"""Private keys for the ``jws`` scheme: parsed from PEM and checked against the algorithm.

The checks run at save (``verify``, a 422 with the reason's code) and again when a stored key
is first used, so a record written around the admin API cannot sign with a weak key either.
No message here ever holds key material: only which rule the key broke.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

Algorithm = Literal["RS256", "PS256", "ES256"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_PUBLIC_MARKERS = ("PUBLIC KEY-----", "BEGIN CERTIFICATE-----")
MAX_PEM_BYTES = 16 * 1024  # an RSA-4096 PEM is about 3.3 KiB
# Each signature (jws: per request; mtls: per handshake) costs the cube of the size, and
# validating the key at load far more: 8192 bits took ~5 s of event-loop time and ~40 ms a
# signature on the CI core. 4096 is the largest size providers ask for.
MAX_RSA_BITS = 4096


@dataclass(frozen=True, slots=True)
class KeyProblem(Exception):
    """Why a key was refused: a stable code and a reason that quotes nothing of the key."""

    code: str
    reason: str


def load_private_key(pem: str, algorithm: Algorithm, min_rsa_bits: int) -> PrivateKey:
    """The key object for ``pem``, or KeyProblem (SC2013-SC2016) saying what is wrong."""
    if len(pem) > MAX_PEM_BYTES:
        raise KeyProblem("SC2013", f"private_key is over {MAX_PEM_BYTES} bytes")
    if any(marker in pem for marker in _PUBLIC_MARKERS) and "PRIVATE KEY-----" not in pem:
        raise KeyProblem("SC2016", "private_key holds a public key or certificate")
    try:
        key = load_bounded_key(pem)
    except TypeError:  # cryptography's answer to an encrypted key without a password
        raise KeyProblem("SC2015", "private_key is encrypted; store it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyProblem("SC2013", "private_key is not a PEM private key") from None
    return _fitting(key, algorithm, min_rsa_bits)


def load_bounded_key(pem: str) -> PrivateKeyTypes:
    """``load_pem_private_key``, but an RSA key over MAX_RSA_BITS is refused (KeyProblem
    SC2014) before OpenSSL validates it, which is what costs seconds for a huge key."""
    key = load_pem_private_key(pem.encode(), None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, rsa.RSAPrivateKey):
        return key
    if key.key_size > MAX_RSA_BITS:
        raise KeyProblem("SC2014", f"RSA keys over {MAX_RSA_BITS} bits are refused")
    return load_pem_private_key(pem.encode(), None)  # now validated (p, q, d consistent)


def _fitting(key: object, algorithm: Algorithm, min_rsa_bits: int) -> PrivateKey:
    if algorithm == "ES256":
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        raise KeyProblem("SC2014", "ES256 needs an EC key on the P-256 curve")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyProblem("SC2014", f"{algorithm} needs an RSA key")
    if key.key_size < min_rsa_bits:
        raise KeyProblem("SC2014", f"{algorithm} needs an RSA key of at least {min_rsa_bits} bits")
    return key
