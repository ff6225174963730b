"""The error table: stable codes, and the README documents exactly the codes the code has."""

from __future__ import annotations

import re
from pathlib import Path

from sidecar.errors import CODES, SidecarError, error_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_error_body_shape() -> None:
    """An error answers {"message", "code"} with the table's status."""
    err = SidecarError("SC2001", "Credential 'x' not found")
    assert err.body() == {"message": "Credential 'x' not found", "code": "SC2001"}
    assert err.status == 404


def test_codes_are_well_formed_and_statuses_are_errors() -> None:
    """Every code is SCnnnn with a 4xx/5xx status."""
    for code, entry in CODES.items():
        assert re.fullmatch(r"SC\d{4}", code)
        assert 400 <= entry.status < 600


def test_readme_table_matches_code() -> None:
    """The README's error table is the generated one, so docs cannot drift from code."""
    assert error_table_markdown() in README.read_text()
