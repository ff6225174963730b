"""Vault access: the token's owner (:mod:`.session`) and the KV/transit facade (:mod:`.client`)."""

from __future__ import annotations

from sidecar.vault.client import CAS_MISMATCH, CallerVault, Vault, hmac_key_version
from sidecar.vault.session import Session

__all__ = ["CAS_MISMATCH", "CallerVault", "Session", "Vault", "hmac_key_version"]
