"""Redaction: no secret-looking key, header or known secret value reaches a log line."""

from __future__ import annotations

import io
import json

import structlog
from structlog.testing import capture_logs

from sidecar.logging import REDACTED, SECRETS, configure, get_logger, redact


def test_secret_keys_are_redacted() -> None:
    """Values under secret-looking keys are replaced, whatever their content."""
    event = redact(None, "info", {"event": "x", "client_secret": "s3cr3t-value", "login": "site"})
    assert event["client_secret"] == REDACTED
    assert event["login"] == "site"


def test_nested_headers_are_redacted() -> None:
    """Authorization-like headers inside a dict are masked; bodies are dropped."""
    event = redact(
        None,
        "info",
        {"event": "x", "headers": {"Authorization": "Bearer abc", "Accept": "json"}, "body": "{}"},
    )
    assert event["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert event["body"] == REDACTED


def test_known_secret_values_are_scrubbed_anywhere() -> None:
    """A secret the store holds is scrubbed even from free text and the event name."""
    SECRETS.add(["very-distinct-secret-42"])
    try:
        event = redact(
            None,
            "info",
            {"event": "saw very-distinct-secret-42", "note": "very-distinct-secret-42!"},
        )
        assert "very-distinct-secret-42" not in json.dumps(event)
    finally:
        SECRETS.discard(["very-distinct-secret-42"])


def test_configured_pipeline_redacts_rendered_json_lines() -> None:
    """The real processor chain writes JSON lines with secrets removed."""
    out = io.StringIO()
    configure("info", "json", stream=out)
    try:
        get_logger("t").info("login", api_key="k-123456", upstream="azupay")
        line = json.loads(out.getvalue().strip())
        assert line["api_key"] == REDACTED and line["upstream"] == "azupay"
    finally:
        structlog.reset_defaults()


def test_capture_logs_sees_events() -> None:
    """capture_logs works with our loggers (used by the leak tests)."""
    with capture_logs() as logs:
        get_logger("t").info("hello", upstream="x")
    assert logs[0]["event"] == "hello"
