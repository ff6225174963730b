"""A per-key sliding-window limit: what keeps ``verify`` from being a guessing oracle.

Why per credential and not per caller: the attacker is whoever reaches the admin API, and
the thing to protect is one credential's secret. Ten tries a minute make guessing a random
secret hopeless while an operator checking a pasted value never notices.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from sidecar.errors import SidecarError

WINDOW = 60.0
MAX_KEYS = 10_000  # names tried at once; the oldest is forgotten beyond this


class RateLimited(SidecarError):
    """429 SC1018 with ``Retry-After``: the whole seconds until the oldest attempt expires."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("SC1018")
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class Limiter:
    """At most ``limit`` attempts per key in any ``window`` seconds; memory bounded."""

    def __init__(
        self,
        limit: int,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, key: str, limit: int | None = None) -> None:
        """Count one attempt, or raise :class:`RateLimited` (a refused attempt is not counted).

        ``limit`` overrides the one given at construction (the config's, after a reload).
        """
        limit = self.limit if limit is None else limit
        now = self._clock()
        times = self._seen.get(key)
        if times is None:
            times = self._seen[key] = deque()
            if len(self._seen) > MAX_KEYS:
                self._seen.popitem(last=False)
        self._seen.move_to_end(key)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= limit:
            raise RateLimited(max(1, math.ceil(times[0] + self.window - now)))
        times.append(now)
