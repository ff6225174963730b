"""The client-certificate peer: it reports the serial it saw and refuses what it must."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sidecar.sandbox import mtls_peer
from sidecar.sandbox.mtls_peer import TestCa
from sidecar.sandbox.server import Sandboxes, SandboxSpec, start_sandboxes
from sidecar.tlskeys import load_chain

CA = TestCa()


@pytest.fixture
async def bank() -> AsyncIterator[Sandboxes]:
    spec = SandboxSpec(mtls_peer.make_app(), tls=mtls_peer.server_context(CA, CA.server()))
    async with await start_sandboxes({"bank": spec}) as sandboxes:
        yield sandboxes


def client_ctx(issuer: TestCa | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=CA.cert_pem)
    if issuer is not None:
        pair = issuer.client()
        load_chain(ctx, pair.cert_pem, pair.key_pem)
    return ctx


async def test_reports_the_serial_and_records_it(bank: Sandboxes) -> None:
    """A certificate from the peer's CA gets 200 with its serial, appended to SEEN."""
    pair = CA.client()
    ctx = ssl.create_default_context(cadata=CA.cert_pem)
    load_chain(ctx, pair.cert_pem, pair.key_pem)
    url = bank.url("bank") + "/a"
    async with aiohttp.ClientSession() as http, http.get(url, ssl=ctx) as r:
        assert r.status == 200 and int((await r.json())["serial"]) == pair.serial
    assert bank.app("bank")[mtls_peer.SEEN] == [pair.serial]


@pytest.mark.parametrize("issuer", [None, TestCa("a stranger")], ids=["none", "foreign"])
async def test_refuses_no_certificate_and_a_foreign_one(
    bank: Sandboxes, issuer: TestCa | None
) -> None:
    """No client certificate, or one another CA signed: no HTTP answer, nothing recorded."""
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(bank.url("bank") + "/a", ssl=client_ctx(issuer)) as r:
                await r.read()
    assert bank.app("bank")[mtls_peer.SEEN] == []


@pytest.mark.parametrize("delay", ["x%2F", "nan", "inf", "-inf", "1e999"])
async def test_delay_must_be_a_finite_number(bank: Sandboxes, delay: str) -> None:
    """``?delay=`` that is not a finite number is a 400, not a crash or an endless wait."""
    url = bank.url("bank") + f"/a?delay={delay}"
    async with aiohttp.ClientSession() as http, http.get(url, ssl=client_ctx(CA)) as r:
        assert r.status == 400
