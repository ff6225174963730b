"""The official IntaSend Python SDK, unmodified, through HTTPS_PROXY and the sidecar's CA.

The SDK builds ``https://sandbox.intasend.com/api/v1/...`` itself and reads no base-URL
setting, so interception is the only way to put the sidecar in its path. It runs in a
subprocess because it is synchronous and takes its proxy and CA from the environment.
"""

from __future__ import annotations

import json

from tests.intercept.conftest import (
    PUBLIC,
    PYTHON,
    SECRET,
    WALLETS,
    Intercepting,
    clean_env,
    run,
)

SDK = """
import json
from intasend import APIService

service = APIService(token="placeholder-token", publishable_key="placeholder-public", test=True)
print(json.dumps(service.wallets.retrieve()))
"""


async def test_sdk_wallets_retrieve_gets_the_real_secret_added(intercepting: Intercepting) -> None:
    """The SDK sends a placeholder token; the IntaSend peer sees the real token and public key."""
    env = clean_env(
        HTTPS_PROXY=intercepting.proxy_url, REQUESTS_CA_BUNDLE=str(intercepting.ca_file)
    )
    code, out, err = await run(PYTHON, "-c", SDK, env=env)
    assert code == 0, err
    assert json.loads(out) == WALLETS
    [seen] = intercepting.peer.seen
    assert seen["Authorization"] == f"Bearer {SECRET}"
    assert seen["INTASEND_PUBLIC_API_KEY"] == PUBLIC
    assert "placeholder" not in json.dumps(seen)


async def test_sdk_without_the_sidecar_ca_fails_tls(intercepting: Intercepting) -> None:
    """Trusting only the public CAs, the SDK refuses the sidecar's certificate."""
    env = clean_env(HTTPS_PROXY=intercepting.proxy_url)
    code, _, err = await run(PYTHON, "-c", SDK, env=env)
    assert code != 0 and "CERTIFICATE_VERIFY_FAILED" in err
    assert intercepting.peer.seen == []
