"""Placeholders in JSON/form bodies and the query: exact escaping, byte preservation, and the
fail-closed refusals (SC4050-SC4054), including the encoded forms an attacker would try."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl

import pytest
from multidict import CIMultiDict
from yarl import URL

from sidecar import config
from sidecar.config import PLACEHOLDER_PATTERN
from sidecar.errors import ConfigError, SidecarError
from sidecar.proxy.placeholders import Rules, apply, rewrite, substitute_body, views
from tests.unit.conftest import credential

NASTY = 'p"a\\s&s=%2B+ w\x01\n\u00e9\u4e2d\U0001f600'  # every escaping hazard at once
CRED = credential({"login": "site-1"}, {"secret": NASTY, "other": "s3cr3t-other"})
LITERALS = {"{{SECRET}}": "secret", "{{LOGIN}}": "login", "{{OTHER}}": "other"}
RULES = Rules.of(LITERALS, PLACEHOLDER_PATTERN, CRED)
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def body(raw: bytes, **headers: str) -> bytes:
    return substitute_body(RULES, CIMultiDict(headers), raw)


def refused(raw: bytes, headers: dict[str, str]) -> str:
    with pytest.raises(SidecarError) as info:
        substitute_body(RULES, CIMultiDict(headers), raw)
    assert NASTY not in str(info.value) and "s3cr3t" not in str(info.value)
    return info.value.code


def upstream_cfg(**extra: object) -> config.UpstreamConfig:
    return config.UpstreamConfig.model_validate(
        {
            "url": "https://p.test",
            "scheme": "api_key",
            "credential": "c",
            "environment": "sandbox",
            "placeholders": LITERALS,
            **extra,
        }
    )


def test_json_value_becomes_the_secret_exactly_and_other_bytes_stay() -> None:
    """A JSON string value equal to a literal decodes to the secret; spacing, order, numbers stay."""
    raw = b'{ "z": 1.10, "key" :  "{{SECRET}}",\n "a": [1e400, "{{LOGIN}}"], "n": null }'
    out = body(raw, **JSON)
    assert json.loads(out)["key"] == NASTY and json.loads(out)["a"][1] == "site-1"
    assert out.startswith(b'{ "z": 1.10, "key" :  "') and out.endswith(b'"site-1"], "n": null }')
    assert list(json.loads(out)) == ["z", "key", "a", "n"]


def test_json_numbers_are_never_parsed_as_numbers() -> None:
    """A 5,000-digit integer (past Python's int digit limit) is kept byte for byte, not refused."""
    raw = b'{"big": ' + b"9" * 5000 + b', "k": "{{LOGIN}}"}'
    assert body(raw, **JSON) == b'{"big": ' + b"9" * 5000 + b', "k": "site-1"}'


def test_json_escaped_literal_is_the_same_value_and_is_replaced() -> None:
    """``\\u007b\\u007bSECRET\\u007d\\u007d`` is the literal once decoded, as the provider reads it."""
    out = body(b'{"k": "\\u007b\\u007bSECRET\\u007d\\u007d", "x": "a\\"b"}', **JSON)
    assert json.loads(out) == {"k": NASTY, "x": 'a"b'}


def test_json_many_occurrences_all_replaced() -> None:
    """Every occurrence, in nested arrays and objects, is replaced; none is left."""
    doc = {"items": [{"s": "{{SECRET}}", "o": "{{OTHER}}"} for _ in range(500)]}
    out = json.loads(body(json.dumps(doc).encode(), **JSON))
    assert all(i == {"s": NASTY, "o": "s3cr3t-other"} for i in out["items"])


def test_secret_that_looks_like_a_placeholder_is_not_refused() -> None:
    """The check is on what the app sent, so a secret shaped like ``{{X}}`` is substituted fine."""
    cred = credential({}, {"secret": "{{X}}"})
    rules = Rules.of({"{{SECRET}}": "secret"}, PLACEHOLDER_PATTERN, cred)
    out = substitute_body(rules, CIMultiDict(JSON), b'{"k":"{{SECRET}}"}')
    assert json.loads(out) == {"k": "{{X}}"}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"k": "{{UNKNOWN}}"}',  # not configured
        b'{"k": "Bearer {{SECRET}}"}',  # part of a longer value
        b'{"k": "{{ SECRET }}"}',  # near miss
        b'{"k": "{{secret}}"}',  # other case
        b'{"k": "%7B%7BSECRET%7D%7D"}',  # percent-encoded inside JSON
        b'{"k": "%257B%257BSECRET%257D%257D"}',  # double percent-encoded
        b'{"k": "\\\\u007b\\\\u007bSECRET}}"}',  # JSON-escaped text inside the string
        b'{"k": "&#123;&#123;SECRET&#125;&#125;"}',  # HTML entities
        b'{"k": "\xef\xbd\x9b\xef\xbd\x9bSECRET\xef\xbd\x9d\xef\xbd\x9d"}',  # fullwidth braces
        b'{"k": ["ok", {"deep": "{{NOPE}}"}]}',
    ],
)
def test_json_leftover_shape_is_refused_sc4050(raw: bytes) -> None:
    """Anything placeholder-shaped that is not a whole configured literal is refused, encoded too."""
    assert refused(raw, JSON) == "SC4050"


@pytest.mark.parametrize(
    "raw", [b'{"{{SECRET}}": 1}', b'{"a": {"%7B%7BX%7D%7D" : "v"}}', b'{"{{Z}}":"{{SECRET}}"}']
)
def test_json_key_is_never_replaced_sc4054(raw: bytes) -> None:
    """A placeholder as an object key is refused: a secret never becomes a name."""
    assert refused(raw, JSON) == "SC4054"


def test_invalid_json_with_a_placeholder_is_sc4051_and_without_one_passes() -> None:
    """Broken or absurdly deep JSON holding the shape is refused; other broken JSON is not ours."""
    assert refused(b'{"k": "{{SECRET}}"', JSON) == "SC4051"
    assert refused(b"[" * 100_000 + b'"{{SECRET}}"' + b"]" * 100_000, JSON) == "SC4051"
    raw = b'{"k": "plain"'
    assert body(raw, **JSON) is raw


def test_form_values_round_trip_through_urllib() -> None:
    """A form value equal to a literal (raw or percent-encoded) becomes the exactly-encoded secret."""
    raw = b"a=1&secret=%7B%7BSECRET%7D%7D&login={{LOGIN}}&flag&b=x+y"
    out = body(raw, **FORM)
    assert dict(parse_qsl(out.decode(), keep_blank_values=True)) == {
        "a": "1",
        "secret": NASTY,
        "login": "site-1",
        "flag": "",
        "b": "x y",
    }
    assert out.startswith(b"a=1&secret=") and out.endswith(b"&login=site-1&flag&b=x+y")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"k={{NOPE}}", "SC4050"),
        (b"k=x{{SECRET}}", "SC4050"),
        (b"k=%257B%257BSECRET%257D%257D", "SC4050"),
        (b"k=%7B%7B+SECRET+%7D%7D", "SC4050"),
        (b"k=%5Cu007b%5Cu007bSECRET}}", "SC4050"),
        (b"k=1;x={{SECRET}}", "SC4050"),
        (b"{{SECRET}}=v", "SC4054"),
        (b"a=1&%7B%7BSECRET%7D%7D", "SC4054"),
        (b"k=%FF%7B%7BSECRET%7D%7D", "SC4050"),  # not UTF-8 once decoded: read as Latin-1
    ],
)
def test_form_leftover_shape_and_names_refused(raw: bytes, code: str) -> None:
    """Unknown, partial, double-encoded, escaped or name-position placeholders are refused."""
    assert refused(raw, FORM) == code


def test_query_is_replaced_and_body_untouched_when_absent() -> None:
    """Query values are replaced like form values; a request without a body stays bodiless."""
    url = URL("https://p.test/v1/pay?x=1&key=%7B%7BSECRET%7D%7D&y=%2F", encoded=True)
    new, data = apply(upstream_cfg(), CRED, url, CIMultiDict(), None)
    assert data is None and new.raw_path == "/v1/pay"
    assert new.raw_query_string.startswith("x=1&key=") and new.raw_query_string.endswith("&y=%2F")
    assert dict(parse_qsl(new.raw_query_string))["key"] == NASTY


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("/v1?key=%7B%7BNOPE%7D%7D", "SC4050"),
        ("/v1?key=%257B%257BSECRET%257D%257D", "SC4050"),
        ("/v1?%7B%7BSECRET%7D%7D=1", "SC4054"),
        ("/v1/%7B%7BSECRET%7D%7D", "SC4050"),  # the path is never rewritten
    ],
)
def test_query_and_path_leftovers_refused(target: str, code: str) -> None:
    """A shaped query value or name, or any shape in the path, is refused before sending."""
    url = URL("https://p.test" + target, encoded=True)
    with pytest.raises(SidecarError) as info:
        apply(upstream_cfg(), CRED, url, CIMultiDict(), None)
    assert info.value.code == code


def test_no_placeholders_configured_means_nothing_checked() -> None:
    """An upstream without placeholders passes bodies and queries through as they are."""
    cfg = upstream_cfg(placeholders={})
    url = URL("https://p.test/v1?k={{X}}", encoded=True)
    raw = b'{"k": "{{X}}"}'
    assert apply(cfg, CRED, url, CIMultiDict(JSON), raw) == (url, raw)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {},
    ],
)
def test_other_content_types_with_a_placeholder_are_sc4051(headers: dict[str, str]) -> None:
    """Outside JSON and form the sidecar does not guess an escaping: it refuses."""
    assert refused(b'k="{{SECRET}}"', headers) == "SC4051"
    assert body(b"plain text, no placeholder", **headers) == b"plain text, no placeholder"


def test_two_content_types_are_not_trusted() -> None:
    """Two Content-Type headers: the provider might read either, so a placeholder is refused."""
    headers = CIMultiDict([("Content-Type", "application/json"), ("Content-Type", "text/plain")])
    with pytest.raises(SidecarError) as info:
        substitute_body(RULES, headers, b'{"k":"{{SECRET}}"}')
    assert info.value.code == "SC4051"


def test_json_suffix_types_and_utf8_charset_are_json() -> None:
    """``application/vnd.x+json; charset=UTF-8`` is JSON and is rewritten."""
    out = body(b'{"k":"{{LOGIN}}"}', **{"Content-Type": "application/vnd.x+json; charset=UTF-8"})
    assert out == b'{"k":"site-1"}'


@pytest.mark.parametrize(
    ("raw", "headers"),
    [
        (b'{"k":"{{SECRET}}"}', {**JSON, "Content-Encoding": "gzip"}),
        (b'{"k":"plain"}', {**JSON, "Content-Encoding": "identity, br"}),
        (b'{"k":"{{SECRET}}"}', {"Content-Type": "application/json; charset=latin-1"}),
        ('{"k":"{{SECRET}}","é":1}'.encode("utf-16"), {"Content-Type": "text/plain"}),
        (b'{"k":"\xff{{SECRET}}"}', JSON),
    ],
)
def test_compressed_or_non_utf8_bodies_are_sc4053(raw: bytes, headers: dict[str, str]) -> None:
    """A compressed body is never passed unseen; a non-UTF-8 one holding the shape is refused."""
    assert refused(raw, headers) == "SC4053"


def test_empty_and_non_utf8_plain_bodies_pass() -> None:
    """An empty body, or a Latin-1 one without the shape, goes through unchanged."""
    assert apply(upstream_cfg(), CRED, URL("https://p.test/x"), CIMultiDict(JSON), b"") == (
        URL("https://p.test/x"),
        b"",
    )
    raw = "k=caf\u00e9".encode("latin-1")
    assert body(raw, **FORM) is raw


def test_missing_field_is_sc4052_naming_the_literal_only() -> None:
    """A literal whose (optional) field the credential lacks is refused at request time."""
    rules = Rules.of({"{{WEBHOOK}}": "webhook_key"}, PLACEHOLDER_PATTERN, CRED)
    with pytest.raises(SidecarError) as info:
        substitute_body(rules, CIMultiDict(JSON), b'{"k":"{{WEBHOOK}}"}')
    assert info.value.code == "SC4052" and "{{WEBHOOK}}" in info.value.message


def test_views_find_chained_encodings_and_stop() -> None:
    """Three chained decodings are seen; the number of views stays small for big texts."""
    assert any("{{A}}" in v for v in views("%255Cu007b%255Cu007bA}}"))
    nested = "%252525%5Cu0026%23x41;+\\u0025&amp;\uff5b" * 1000
    assert len(list(views(nested))) <= 7  # the text, then two chains of three rounds


async def test_rewrite_moves_a_large_body_off_the_loop_with_the_same_result() -> None:
    """Over 64 KiB the rewrite runs in a worker thread and gives what apply gives."""
    url = URL("https://p.test/v1")
    raw = json.dumps({"k": "{{OTHER}}", "pad": "x" * 100_000}).encode()
    expected = apply(upstream_cfg(), CRED, url, CIMultiDict(JSON), raw)
    assert await rewrite(upstream_cfg(), CRED, url, CIMultiDict(JSON), raw) == expected
    assert json.loads(expected[1] or b"")["k"] == "s3cr3t-other"


def test_max_size_body_is_rewritten(capsys: pytest.CaptureFixture[str]) -> None:
    """A 1 MiB JSON body with 10,000 placeholders among other strings is rewritten whole."""
    items = [{"id": f"n-{i}", "s": "{{OTHER}}", "note": "x%y\\z&w"} for i in range(10_000)]
    raw = json.dumps({"items": items}).encode().ljust(1024 * 1024, b" ")
    started = time.perf_counter()
    out = body(raw, **JSON)
    took = time.perf_counter() - started
    assert sum(i["s"] == "s3cr3t-other" for i in json.loads(out)["items"]) == 10_000
    with capsys.disabled():
        print(f"\n1 MiB JSON, 10k placeholders: {took * 1000:.0f} ms")


def test_config_checks_literals_fields_and_pattern() -> None:
    """Load refuses a literal off the shape, an unknown field and a bad pattern, by YAML path."""
    text = """
upstreams:
  azupay:
    url: https://p.test
    scheme: api_key
    credential: azupay
    environment: sandbox
    placeholders:
      "{{API_KEY}}": api_key
      "{{NOPE}}": no_such_field
      "API_KEY": api_key
"""
    with pytest.raises(ConfigError) as info:
        config.loads(text, {})
    assert info.value.problems == [
        "upstreams.azupay.placeholders.{{NOPE}} (line 10): 'no_such_field' is not a field of "
        "(api_key, key_id, public_key)",
        "upstreams.azupay.placeholders.API_KEY (line 11): literal must match placeholder_pattern",
    ]
    for pattern in ["(", ".*", "[a-z]+"]:
        with pytest.raises(ConfigError) as info:
            config.loads(
                text.replace(
                    "    placeholders:", f"    placeholder_pattern: '{pattern}'\n    placeholders:"
                ),
                {},
            )
        assert info.value.problems[0].startswith("upstreams.azupay.placeholder_pattern (line 8)")


def test_config_accepts_a_custom_prefix_pattern() -> None:
    """A prefix-style pattern (``SIDECAR_PH_...``) is accepted with matching literals."""
    text = """
upstreams:
  azupay:
    url: https://p.test
    scheme: api_key
    credential: azupay
    environment: sandbox
    placeholder_pattern: 'SIDECAR_PH_[A-Z0-9_]+'
    placeholders: {SIDECAR_PH_KEY: api_key}
"""
    cfg = config.loads(text, {})
    assert cfg.upstreams["azupay"].placeholders == {"SIDECAR_PH_KEY": "api_key"}
