"""structlog setup and the redaction processor.

Redaction is a processor like any other: it runs on every event before rendering, so no code
path can bypass it. It removes values under secret-looking keys, masks Authorization-like
headers, drops bodies, and scrubs any value that equals a secret the store currently holds.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"

_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|api[_-]?key|apikey|tran_?key|hmac|private|authorization"
    r"|signature|credential_value|^key$|^body$|cookie)",
    re.IGNORECASE,
)
# Keys whose values are known to be safe even though their names look secret-ish.
_SAFE_KEYS = frozenset(
    {"secret_fields", "key_id", "token_requests", "credential", "has_token", "hmac_enabled"}
)


class SecretRegistry:
    """Secret values the process holds; the redactor replaces any occurrence of them.

    Log values repeat (names, methods, path templates), so short ones are remembered with
    their scrubbed form until the set of secrets changes: the audit line of every proxied
    request then costs a dict lookup per value instead of a search per secret.
    """

    MEMO_TEXT = 256  # longer texts (messages, tracebacks) are scrubbed every time
    MEMO_SIZE = 4096

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._memo: dict[str, str] = {}

    def add(self, values: Iterable[str]) -> None:
        self._values.update(v for v in values if len(v) >= 4)
        self._memo.clear()

    def discard(self, values: Iterable[str]) -> None:
        self._values.difference_update(values)
        self._memo.clear()

    def scrub(self, text: str) -> str:
        memo = self._memo
        done = memo.get(text)
        if done is not None:
            return done
        clean = text
        for value in self._values:
            if value in clean:
                clean = clean.replace(value, REDACTED)
        if len(text) <= self.MEMO_TEXT:
            if len(memo) >= self.MEMO_SIZE:
                memo.clear()
            memo[text] = clean
        return clean


SECRETS = SecretRegistry()


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Keys repeat from event to event: decide once per key, not once per line."""
    return key not in _SAFE_KEYS and _SECRET_KEY.search(key) is not None


def _clean(key: str, value: Any) -> Any:
    if _secret_key(key):
        return REDACTED
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return SECRETS.scrub(value)
    if isinstance(value, dict):
        return {str(k): _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(key, v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: nothing secret-looking leaves, whatever the caller passed."""
    for key, value in event_dict.items():  # values are replaced, keys never change
        if key == "event":
            event_dict[key] = SECRETS.scrub(str(value))
        else:
            event_dict[key] = _clean(key, value)
    return event_dict


class _QuietParserErrors(logging.Filter):
    """aiohttp logs a refused request with the offending header line: keep only the verdict."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__module__.startswith("aiohttp.http_exceptions"):
            record.msg, record.args, record.exc_info = f"refused: {type(exc).__name__}", (), None
            record.exc_text = None
        return True


def configure(
    level: str = "info", fmt: str = "auto", stream: Any = None, *, cache: bool = False
) -> None:
    """JSON lines by default, a console renderer on a terminal (``fmt: auto``).

    ``cache``: each logger resolves its configuration once (``sidecar run`` sets it: about
    3 µs less per line). Off by default because ``structlog.testing.capture_logs`` swaps the
    configuration under loggers that must notice.
    """
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Callable[..., Any] = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    logging.getLogger("aiohttp.server").addFilter(_QuietParserErrors())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.WriteLoggerFactory(stream),  # one write per line
        cache_logger_on_first_use=cache,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
