"""What each scheme declares its verify() does, and how a composite or a plugin is reported."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from yarl import URL

from sidecar import config
from sidecar.schemes.base import UpstreamContext, strongest, verification_of
from sidecar.schemes.registry import build_scheme

CTX = UpstreamContext(name="up", url=URL("https://provider.test"))
PROBE = {"probe": {"path": "/v1/balance"}}
OAUTH = {"name": "oauth2_client_credentials", "token_url": "/token"}


def kind(scheme: Any) -> str:
    """The verification of ``scheme:`` as an upstream would configure it."""
    yaml_text = yaml.safe_dump(
        {
            "upstreams": {
                "up": {
                    "url": "https://provider.test",
                    "credential": "c",
                    "environment": "sandbox",
                    **(scheme if isinstance(scheme, dict) else {"scheme": scheme}),
                }
            }
        }
    )
    return verification_of(build_scheme(config.loads(yaml_text, {}).schemes["up"], CTX))


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ({"scheme": "api_key"}, "presence-only"),
        ({"scheme": "api_key", **PROBE}, "probe"),
        ({"scheme": "hmac"}, "presence-only"),
        ({"scheme": "hmac", **PROBE}, "probe"),
        ({"scheme": "oauth2_client_credentials", "token_url": "/token"}, "token"),
        ({"scheme": "placetopay"}, "probe"),
        ([OAUTH, {"name": "hmac"}], "token"),
        ([OAUTH, {"name": "hmac", **PROBE}], "probe"),
        ([{"name": "api_key"}, {"name": "hmac"}], "presence-only"),
    ],
)
def test_each_configuration_reports_the_check_it_makes(scheme: Any, expected: str) -> None:
    """Probe only with a probe (or PlaceToPay's own call), token for OAuth2, strongest part."""
    assert kind(scheme) == expected


def test_a_scheme_that_declares_nothing_counts_as_presence_only() -> None:
    """A plugin without ``verification`` (or with a made-up value) is never reported stronger."""

    class Plugin:
        pass

    class Boastful:
        verification = "certified"

    assert verification_of(Plugin()) == verification_of(Boastful()) == "presence-only"


def test_strongest_orders_probe_over_token_over_presence() -> None:
    """The order a composite uses; no parts at all is presence-only."""
    assert strongest(["presence-only", "probe", "token"]) == "probe"
    assert strongest(["presence-only", "token"]) == "token"
    assert strongest([]) == "presence-only"
