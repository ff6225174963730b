"""Vault-backed credential sidecar for payment platforms."""
