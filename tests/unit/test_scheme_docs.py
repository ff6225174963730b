"""docs/schemes/*.md stay true to the code: their config examples are config/sidecar.yaml's
upstreams, valid, and each page's "What verify does" names what the scheme really does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from yarl import URL

from sidecar import config
from sidecar.schemes.base import UpstreamContext, verification_of
from sidecar.schemes.registry import build_scheme

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["placetopay", "oauth2", "hmac", "api_key"]


def examples(page: str) -> dict[str, dict[str, object]]:
    text = (ROOT / "docs/schemes" / f"{page}.md").read_text()
    upstreams: dict[str, dict[str, object]] = {}
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        upstreams.update(yaml.safe_load(block)["upstreams"])
    return upstreams


@pytest.mark.parametrize("page", PAGES)
def test_config_examples_are_the_shipped_ones(page: str) -> None:
    """Every upstream a page shows is config/sidecar.yaml's (each key shown has the shipped
    value; a page may leave out pool sizes), and the examples load."""
    shipped = yaml.safe_load((ROOT / "config/sidecar.yaml").read_text())["upstreams"]
    shown = examples(page)
    assert shown
    for name, upstream in shown.items():
        assert upstream == {k: shipped[name][k] for k in upstream}, name
    config.loads(yaml.safe_dump({"upstreams": shown}), {})


@pytest.mark.parametrize("page", PAGES)
def test_verify_heading_names_what_the_examples_do(page: str) -> None:
    """The page's "What verify does: `x`" covers the verification of each example upstream."""
    text = (ROOT / "docs/schemes" / f"{page}.md").read_text()
    heading = re.search(r"^## What verify does: (.*)$", text, re.M)
    assert heading
    named = set(re.findall(r"`([a-z-]+)`", heading.group(1)))
    cfg = config.loads(yaml.safe_dump({"upstreams": examples(page)}), {})
    for name, upstream in cfg.upstreams.items():
        scheme = build_scheme(cfg.schemes[name], UpstreamContext(name, URL(upstream.url)))
        kind = verification_of(scheme)
        said = re.search(rf"`{name}`[^.]* answers `{kind}`", text)
        assert kind in named or said, (name, kind)


def test_readme_links_every_scheme_page() -> None:
    """The README links the four pages here and the three other helpers' pages."""
    readme = (ROOT / "README.md").read_text()
    for target in [*(f"docs/schemes/{p}.md" for p in PAGES), "docs/schemes/jws.md"]:
        assert f"]({target})" in readme
    assert "](docs/schemes/mtls.md)" in readme and "](docs/sdk-oauth2.md)" in readme
