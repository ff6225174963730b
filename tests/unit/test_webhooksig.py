"""Webhook signature computation and checking (``sidecar.webhooksig``), with no network."""

from __future__ import annotations

import base64

import pytest
import yaml
from multidict import CIMultiDict
from pydantic import ValidationError

from sidecar import config, webhooksig
from sidecar.errors import ConfigError
from sidecar.upstreams import build_upstreams
from sidecar.webhooksig import WebhookSignature

# RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
KEY, DATA = "Jefe", b"what do ya want for nothing?"
SHA256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
SHA512 = (
    "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0"
    "e6fdcaeab1a34d4a6b4b636e070a38bce737"
)
KOPOKOPO = WebhookSignature.model_validate(webhooksig.preset("kopokopo"))


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def signed(spec: WebhookSignature, value: str, *more: tuple[str, str]) -> CIMultiDict[str]:
    return headers((spec.header, value), *more)


def test_kopokopo_preset_is_hex_hmac_sha256_of_the_body() -> None:
    """The preset signs the raw body as RFC 4231 says HMAC-SHA256 does, in lower-case hex."""
    assert KOPOKOPO.header == "X-KopoKopo-Signature" and KOPOKOPO.field == "api_key"
    assert webhooksig.sign(KOPOKOPO, KEY, DATA, headers()) == SHA256


def test_sha512_and_base64_with_prefix() -> None:
    """sha512, base64 and a ``sha512=`` prefix follow the options, and verify round-trips."""
    spec = WebhookSignature(
        header="X-Sig", field="hook_key", algorithm="sha512", encoding="base64", prefix="sha512="
    )
    expected = "sha512=" + base64.b64encode(bytes.fromhex(SHA512)).decode()
    assert webhooksig.sign(spec, KEY, DATA, headers()) == expected
    assert webhooksig.verify(spec, KEY, DATA, signed(spec, expected))
    assert not webhooksig.verify(spec, KEY, DATA, signed(spec, expected[len("sha512=") :]))


def test_valid_signature_verifies_and_upper_case_hex_too() -> None:
    """The provider's hex verifies whatever its letter case (same bytes)."""
    assert webhooksig.verify(KOPOKOPO, KEY, DATA, signed(KOPOKOPO, SHA256))
    assert webhooksig.verify(KOPOKOPO, KEY, DATA, signed(KOPOKOPO, SHA256.upper()))


def test_tampered_body_wrong_key_and_wrong_signature_are_invalid() -> None:
    """One changed body byte, another key or another signature each give False."""
    assert not webhooksig.verify(KOPOKOPO, KEY, DATA + b" ", signed(KOPOKOPO, SHA256))
    assert not webhooksig.verify(KOPOKOPO, "jefe", DATA, signed(KOPOKOPO, SHA256))
    assert not webhooksig.verify(KOPOKOPO, KEY, DATA, signed(KOPOKOPO, "0" * 64))


@pytest.mark.parametrize(
    "value",
    ["", "zz" * 32, SHA256[:-1], SHA256[:2] + " " + SHA256[2:], SHA256[:32], "0x" + SHA256],
    ids=["empty", "non-hex", "odd-length", "inner-space", "truncated", "0x-prefix"],
)
def test_malformed_signatures_are_invalid_never_errors(value: str) -> None:
    """What an attacker writes in the header is a False verdict, never an exception."""
    assert not webhooksig.verify(KOPOKOPO, KEY, DATA, signed(KOPOKOPO, value))


def test_missing_or_repeated_signature_header_is_invalid() -> None:
    """No header, or two (even two valid ones), is ambiguous and so invalid."""
    assert not webhooksig.verify(KOPOKOPO, KEY, DATA, headers())
    twice = signed(KOPOKOPO, SHA256, (KOPOKOPO.header, SHA256))
    assert not webhooksig.verify(KOPOKOPO, KEY, DATA, twice)


def test_template_signs_a_header_and_literal_text() -> None:
    """``{header:X-Ts}.{body}`` signs the header's value, a dot and the body (Stripe-like)."""
    spec = WebhookSignature(header="X-Sig", field="hook_key", template="{header:X-Ts}.{body}")
    message = webhooksig.signed_message(spec, b"{}", headers(("X-Ts", "1700000000")))
    assert message == b"1700000000.{}"
    sig = webhooksig.encode(spec, webhooksig.digest(spec, KEY, message))
    assert webhooksig.verify(spec, KEY, b"{}", signed(spec, sig, ("X-Ts", "1700000000")))
    assert not webhooksig.verify(spec, KEY, b"{}", signed(spec, sig, ("X-Ts", "1700000001")))
    assert not webhooksig.verify(spec, KEY, b"{}", signed(spec, sig))  # timestamp missing


@pytest.mark.parametrize(
    "template", ["{header:X-Ts}", "{body}{body}", "{body}{secret}", "{body}{header:bad name}"]
)
def test_bad_templates_are_refused_at_load(template: str) -> None:
    """A template must sign the body once and name only known parts."""
    with pytest.raises(ValidationError):
        WebhookSignature(header="X-Sig", field="k", template=template)


def upstreams(webhook: object, scheme: str = "oauth2_client_credentials") -> dict[str, object]:
    return {
        "kk": {
            "url": "https://sandbox.kopokopo.com",
            "scheme": scheme,
            "token_url": "/oauth/token",
            "credential": "kk",
            "environment": "sandbox",
            "webhook_signature": webhook,
        }
    }


def load(webhook: object, scheme: str = "oauth2_client_credentials") -> config.Config:
    return config.loads(yaml.safe_dump({"upstreams": upstreams(webhook, scheme)}), {})


def test_preset_adds_an_optional_secret_field_to_the_credential() -> None:
    """``webhook_signature: kopokopo`` makes api_key a third, optional secret field."""
    spec = build_upstreams(load("kopokopo"))["kk"].spec
    assert spec.public == ("client_id",)
    assert spec.secret == ("client_secret", "api_key")
    assert spec.optional == ("api_key",)


def test_required_and_overrides_over_a_preset() -> None:
    """``{preset, required, max_body}``: the preset's shape with the given keys on top."""
    cfg = load({"preset": "kopokopo", "required": True, "max_body": 4096})
    upstream = build_upstreams(cfg)["kk"]
    assert upstream.spec.optional == ()
    ws = upstream.cfg.webhook_signature
    assert ws is not None and ws.max_body == 4096 and ws.header == "X-KopoKopo-Signature"


@pytest.mark.parametrize(
    ("webhook", "where"),
    [
        ("paypal", "webhook_signature"),
        ({"preset": "kopokopo", "algorithm": "md5"}, "webhook_signature.algorithm"),
        ({"preset": "kopokopo", "max_body": 0}, "webhook_signature.max_body"),
        ({"preset": "kopokopo", "field": "client_id"}, "webhook_signature.field"),
        ({"header": "X Sig", "field": "k"}, "webhook_signature.header"),
    ],
    ids=["unknown-preset", "md5", "zero-limit", "public-field", "bad-header"],
)
def test_bad_options_name_their_yaml_path(webhook: object, where: str) -> None:
    """Every refusal names ``upstreams.kk.webhook_signature...`` so the operator finds it."""
    with pytest.raises(ConfigError) as err:
        load(webhook)
    assert any(p.startswith(f"upstreams.kk.{where}") for p in err.value.problems), err.value
