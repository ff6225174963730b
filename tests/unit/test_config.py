"""Config loading: interpolation, validation with YAML paths and lines, loopback rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar import config
from sidecar.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
vault:
  address: ${VAULT_ADDR:-http://127.0.0.1:8200}
upstreams:
  azupay:
    url: https://api-uat.azupay.com.au
    scheme: api_key
    credential: azupay
    environment: sandbox
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.loads(text, env or {})
    return info.value.problems


def test_minimal_config_loads_with_defaults() -> None:
    """A small file gets loopback listeners and the documented defaults."""
    cfg = config.loads(MINIMAL, {})
    assert cfg.vault.address == "http://127.0.0.1:8200"
    assert cfg.listen.proxy == "127.0.0.1:8080"
    assert cfg.listen.admin == "127.0.0.1:8099"
    assert [name for name, _ in cfg.schemes["azupay"]] == ["api_key"]


def test_env_interpolation_prefers_environment_over_default() -> None:
    """${VAR:-default} takes the variable when it is set."""
    cfg = config.loads(MINIMAL, {"VAULT_ADDR": "https://vault.internal:8200"})
    assert cfg.vault.address == "https://vault.internal:8200"


def test_missing_env_without_default_names_the_path() -> None:
    """${VAR} with no default and no variable is an error at its YAML path."""
    found = problems("vault:\n  address: ${NOPE}\n")
    assert found == ["vault.address (line 2): environment variable NOPE is not set"]


def test_every_problem_is_reported_with_path_and_line() -> None:
    """Several mistakes come back together, each with its path and line."""
    text = """
upstreams:
  paynet:
    url: ftp://x
    scheme: oauth2_client_credentials
    credential: Bad Name
    environment: prod
"""
    found = problems(text)
    assert any(p.startswith("upstreams.paynet.url (line 4)") for p in found)
    assert any(p.startswith("upstreams.paynet.credential (line 6)") for p in found)
    assert any(p.startswith("upstreams.paynet.environment (line 7)") for p in found)


def test_scheme_options_are_validated_by_the_scheme() -> None:
    """An option the scheme does not know is an error naming upstream and key."""
    found = problems(MINIMAL + "    no_such_option: 1\n")
    assert found[0].startswith("upstreams.azupay.no_such_option")


@pytest.mark.parametrize(
    "scheme,option",
    [
        ("api_key", "header: Content-Length"),
        ("api_key", "extra_headers: {Transfer-Encoding: chunked}"),
        ("api_key", "header: Host"),
        ("hmac", "signature_header: Content-Length"),
        ("hmac", "timestamp_header: Connection"),
        ("jws", "header: Proxy-Authorization"),
    ],
)
def test_no_scheme_may_set_a_framing_or_connection_header(scheme: str, option: str) -> None:
    """A scheme header named Content-Length, Host or a hop header would smuggle: a load error."""
    text = MINIMAL.replace("scheme: api_key", f"scheme: {scheme}") + f"    {option}\n"
    found = problems(text)
    assert any("framing or connection header" in line for line in found), found


def test_unknown_scheme_is_refused() -> None:
    """A scheme name not in the registry lists the known ones."""
    found = problems(MINIMAL.replace("scheme: api_key", "scheme: nope"))
    assert "unknown scheme 'nope'" in found[0]


def test_non_loopback_admin_requires_allow_remote_and_token() -> None:
    """Local-only by default: a remote admin address needs allow_remote and a way in (callers'
    Vault tokens, on by default, or a static token)."""
    remote = MINIMAL + "listen:\n  admin: 0.0.0.0:8099\n"
    assert "set admin.allow_remote" in problems(remote)[0]
    assert config.loads(remote + "admin:\n  allow_remote: true\n", {}).admin.vault_tokens
    with_flag = remote + "admin:\n  allow_remote: true\n  vault_tokens: false\n"
    assert problems(with_flag)[0].startswith("admin.token")
    ok = with_flag + "  token: ${ADMIN_TOKEN}\n"
    assert config.loads(ok, {"ADMIN_TOKEN": "t0ken-value"}).admin.allow_remote


def test_yaml_syntax_error_has_a_line() -> None:
    """Broken YAML is a config error with a line, not a traceback."""
    assert "line" in problems("vault: [unclosed\n")[0]


def test_shipped_configs_are_valid() -> None:
    """config/sidecar.yaml and config/dev.yaml load (every provider in the seeds)."""
    full = config.load(ROOT / "config" / "sidecar.yaml", {})
    assert {"placetopay", "paynet", "azupay", "pix-partner", "kopokopo", "intasend"} <= set(
        full.upstreams
    )
    config.load(ROOT / "config" / "dev.yaml", {})


def test_schema_covers_scheme_options() -> None:
    """`sidecar config schema` documents every built-in scheme's options."""
    schema = config.json_schema()
    assert "upstreams" in schema["properties"]
    assert "scheme_options_placetopay" in schema["$defs"]
