"""What the proxy pipeline reads from an incoming request, whichever engine parsed it.

Two engines feed the pipeline in ``proxy/pipeline.py``: the listener's own HTTP/1.1 server
(``sidecar.proxy.listener.Incoming``, every plain proxied request) and aiohttp's ``web.Request``
(requests decrypted by HTTPS interception). Both satisfy this protocol structurally.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from multidict import CIMultiDict, CIMultiDictProxy


class Body(Protocol):
    def iter_any(self) -> AsyncIterator[bytes]: ...

    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...


class ProxyRequest(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def raw_path(self) -> str:
        """The request target exactly as sent: origin-form or absolute-form."""
        ...

    @property
    def headers(self) -> CIMultiDictProxy[str] | CIMultiDict[str]: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def body_exists(self) -> bool: ...

    @property
    def content(self) -> Any: ...

    # Per-request state (the audit record), as on ``web.Request``.
    def get(self, key: Any, /) -> Any: ...

    def __setitem__(self, key: Any, value: Any, /) -> None: ...
