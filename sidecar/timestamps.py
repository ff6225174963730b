"""The one timestamp format of stored records and keys: ISO 8601, UTC, milliseconds, ``Z``.

Its own module so that proxy keys and the credential store share it without one importing the
other (DESIGN.md's dependency rules).
"""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))
