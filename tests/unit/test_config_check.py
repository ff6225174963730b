"""`sidecar config check` warns, on stderr and with exit code 0, about presence-only upstreams."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sidecar import cli

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, upstreams: dict[str, object]) -> str:
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump({"upstreams": upstreams}))
    return str(path)


def upstream(scheme: object, **extra: object) -> dict[str, object]:
    base = {"url": "https://p.test", "credential": "c", "environment": "sandbox"}
    return {**base, "scheme": scheme, **extra}


def test_each_presence_only_upstream_gets_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """api_key and hmac without a probe warn; probed, OAuth2 and probed composites do not."""
    path = write(
        tmp_path,
        {
            "bare-key": upstream("api_key"),
            "bare-hmac": upstream("hmac"),
            "probed": upstream("api_key", probe={"path": "/v1/balance"}),
            "oauth": upstream("oauth2_client_credentials", token_url="/token"),
            "pair": upstream([{"name": "api_key"}, {"name": "hmac", "probe": {"path": "/x"}}]),
        },
    )
    assert cli.main(["config", "check", path]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: OK (5 upstreams)\n"
    warned = [line for line in err.splitlines() if "presence only" in line]
    assert len(warned) == 2 == len(err.splitlines())
    named = {line.split(": warning: ")[1].split(":")[0] for line in warned}
    assert named == {"upstreams.bare-key", "upstreams.bare-hmac"}


@pytest.mark.parametrize("name", ["config/sidecar.yaml", "config/dev.yaml"])
def test_shipped_configs_verify_every_upstream(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every upstream we ship asks its provider before a save: no warning."""
    assert cli.main(["config", "check", str(ROOT / name)]) == 0
    assert capsys.readouterr().err == ""


def test_an_invalid_file_still_fails_without_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The warning pass runs only on a valid file; problems keep exit code 1."""
    path = write(tmp_path, {"bad": upstream("api_key", header=None, query_param=None)})
    assert cli.main(["config", "check", path]) == 1
    assert "presence only" not in capsys.readouterr().err
