"""What the proxy-key gate reads from an incoming request.

A protocol of the gate's own, so proxy keys do not depend on the engine that parsed the request
(``sidecar.proxy.listener.Incoming`` satisfies it): the method and target for the permission
check and the signature, the headers for the key, and the audit record the gate fills in.
"""

from __future__ import annotations

from typing import Protocol

from multidict import MultiMapping

from sidecar.audit import Audited


class KeyedRequest(Audited, Protocol):
    @property
    def headers(self) -> MultiMapping[str]: ...
