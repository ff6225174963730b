"""``config.loads`` on arbitrary input: a ``Config`` or a ``ConfigError``, never anything else.

A config file is read at start-up and on every reload (SIGHUP, file watch); an exception other
than ``ConfigError`` would escape the reload path's handling and the CLI's ``config check``.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import config
from sidecar.errors import ConfigError

# Names the config really uses, so generated mappings reach the validators, not only "extra".
KEYS = [
    *("vault", "address", "auth", "method", "token", "role", "listen", "admin", "proxy"),
    *("health", "upstreams", "url", "hosts", "scheme", "credential", "environment"),
    *("probe", "path", "ok", "reject", "header", "template", "query_param", "extra_headers"),
    *("key_field", "name", "cache", "intercept", "enabled", "max_body", "timeout", "logging"),
    *("level", "azupay", "sandbox", "live", "api_key", "allow_remote", "${X}", "${Y:-1}"),
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["127.0.0.1:80", "http://127.0.0.1:1", "api_key", "sandbox", "{api_key}"])
)


def structures() -> st.SearchStrategy[Any]:
    keys = st.sampled_from(KEYS) | st.text(max_size=10)
    return st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=20,
    )


def load(text: str) -> None:
    """Pass when loads returns a Config or raises ConfigError; anything else fails the test."""
    try:
        assert isinstance(config.loads(text, {"X": "x"}), config.Config)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)


YAMLISH = st.lists(
    st.sampled_from([*"abz019 :-[]{},&*!|>'\"#%@`?\n\t\\$", "${", "<<", "---", "...", "  "]),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=YAMLISH | st.text(max_size=80))
def test_arbitrary_text(text: str) -> None:
    """YAML-ish and arbitrary text: only ConfigError ever escapes."""
    load(text)


@settings(max_examples=150, deadline=None)
@given(data=st.dictionaries(st.sampled_from(KEYS), structures(), max_size=6))
def test_arbitrary_structures(data: dict[str, Any]) -> None:
    """Nested dict/list/str/int/None under real config keys, dumped to YAML."""
    load(yaml.safe_dump(data))


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(KEYS), value=structures())
def test_valid_config_with_one_field_replaced(field: str, value: Any) -> None:
    """A whole valid upstream with one option swapped for arbitrary data reaches the schemes."""
    upstream = {
        "url": "http://127.0.0.1:1",
        "scheme": "api_key",
        "credential": "azupay",
        "environment": "sandbox",
        "probe": {"method": "GET", "path": "/v1/balance"},
        field: value,
    }
    load(yaml.safe_dump({"upstreams": {"azupay": upstream}}))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,
        "a: " + "{a: " * 3000 + "1" + "}" * 3000,
        "upstreams: &a {x: *a}",
        "a: &a [*a]",
        "listen: {admin: '127.0.0.1:٨٠'}",
        "listen: {admin: '127.0.0.1:²'}",
    ],
    ids=["deep-list", "deep-map", "self-alias-map", "self-alias-list", "arabic-digits", "sup"],
)
def test_pathological_yaml_is_a_config_error(text: str) -> None:
    """Deep nesting, self-referring aliases and non-ASCII port digits are ConfigErrors."""
    with pytest.raises(ConfigError):
        config.loads(text, {})
