"""Scoped proxy keys: who in the pod may spend a credential, and on which requests.

A proxy key is issued per credential with a list of permitted operations (``METHOD /path``).
Only its transit HMAC is stored; the proxy checks presented keys from memory
(:mod:`sidecar.proxykeys.index`), optionally a request signature
(:mod:`sidecar.proxykeys.signing`), then the permissions (:mod:`sidecar.proxykeys.permissions`).
"""
