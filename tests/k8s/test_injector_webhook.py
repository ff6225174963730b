"""The webhook over real HTTPS, as the API server calls it, and its certificate rotation."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest
from aiohttp import web

from sidecar.injector.certs import CertReloader, Pki, generate, service_dns_names, write_pki
from sidecar.injector.webhook import build_app
from tests.k8s.helpers import SETTINGS, fixture

HOST = "credential-sidecar-injector.credential-sidecar-system.svc"
Serve = Callable[[CertReloader], Awaitable[int]]


def client_context(pki: Pki) -> ssl.SSLContext:
    """Trusts only the given CA, like the API server with the webhook's caBundle."""
    return ssl.create_default_context(cadata=pki.ca_pem.decode())


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Run the injector app on a loopback port with TLS from a reloader; clean up after."""
    runners: list[web.AppRunner] = []

    async def start(reloader: CertReloader) -> int:
        runner = web.AppRunner(build_app(SETTINGS, reloader), access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock, ssl_context=reloader.served).start()
        runners.append(runner)
        return int(sock.getsockname()[1])

    yield start
    for runner in runners:
        await runner.cleanup()


async def call(
    port: int, pki: Pki, method: str = "POST", path: str = "/mutate", body: Any = None
) -> tuple[int, Any]:
    """One request on a fresh connection, verifying the service's DNS name like the API server."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"https://127.0.0.1:{port}{path}",
            json=body,
            ssl=client_context(pki),
            server_hostname=HOST,
        ) as resp,
    ):
        return resp.status, await resp.json()


def pki_files(tmp_path: Path) -> tuple[Pki, CertReloader]:
    pki = generate(service_dns_names("credential-sidecar-injector", "credential-sidecar-system"))
    _, cert, key = write_pki(pki, tmp_path)
    return pki, CertReloader(cert, key, interval=0.05)


async def test_mutate_over_tls_returns_a_patch_the_pod_accepts(
    serve: Serve, tmp_path: Path
) -> None:
    """A real AdmissionReview over TLS comes back with the uid, a JSONPatch, and allowed."""
    pki, reloader = pki_files(tmp_path)
    port = await serve(reloader)
    review = fixture("review-minimal.json")
    status, answer = await call(port, pki, body=review)
    assert status == 200
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"] and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    pod = jsonpatch.apply_patch(
        review["request"]["object"], json.loads(base64.b64decode(response["patch"]))
    )
    assert pod == fixture("pod-minimal.expected.json")


async def test_refusal_over_tls_carries_the_reason(serve: Serve, tmp_path: Path) -> None:
    """A refused pod gets allowed=false and the message, with the uid echoed."""
    pki, reloader = pki_files(tmp_path)
    port = await serve(reloader)
    review = fixture("review-minimal.json")
    review["request"]["object"]["metadata"]["annotations"]["credential-sidecar/inject"] = "on"
    _, answer = await call(port, pki, body=review)
    assert answer["response"]["allowed"] is False
    assert answer["response"]["uid"] == review["request"]["uid"]
    assert "must be" in answer["response"]["status"]["message"]


async def test_healthz_answers_over_tls(serve: Serve, tmp_path: Path) -> None:
    """The kubelet's probe target answers ok."""
    pki, reloader = pki_files(tmp_path)
    port = await serve(reloader)
    assert await call(port, pki, "GET", "/healthz") == (200, {"status": "ok"})


async def test_untrusted_client_cannot_connect(serve: Serve, tmp_path: Path) -> None:
    """A client trusting another CA fails the handshake: TLS is really in force."""
    _, reloader = pki_files(tmp_path)
    port = await serve(reloader)
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await call(port, generate(["elsewhere"]), "GET", "/healthz")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}, "only admission"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request.uid"),
        (["not", "a", "review"], "must be an AdmissionReview"),
    ],
)
async def test_malformed_reviews_get_400(
    serve: Serve, tmp_path: Path, body: Any, message: str
) -> None:
    """Anything that is not an AdmissionReview v1 request is a 400 with a reason."""
    pki, reloader = pki_files(tmp_path)
    port = await serve(reloader)
    status, answer = await call(port, pki, body=body)
    assert status == 400 and message in answer["message"]


async def test_non_pod_and_non_create_are_allowed_unchanged(serve: Serve, tmp_path: Path) -> None:
    """An UPDATE, or another kind, is allowed without a patch (a misroute stays harmless)."""
    pki, reloader = pki_files(tmp_path)
    port = await serve(reloader)
    for change in (
        {"operation": "UPDATE"},
        {"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}},
    ):
        review = fixture("review-minimal.json")
        review["request"].update(change)
        _, answer = await call(port, pki, body=review)
        assert answer["response"] == {"uid": review["request"]["uid"], "allowed": True}


async def test_rotated_certificate_serves_new_connections(serve: Serve, tmp_path: Path) -> None:
    """After the files change, new connections get the new certificate without a restart."""
    old, reloader = pki_files(tmp_path)
    port = await serve(reloader)
    assert (await call(port, old, "GET", "/healthz"))[0] == 200
    new = generate([HOST])
    write_pki(new, tmp_path)
    for _ in range(100):  # the app's poller (every 0.05 s) notices the change
        if reloader.current is not reloader.served:
            break
        await asyncio.sleep(0.05)
    assert (await call(port, new, "GET", "/healthz"))[0] == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await call(port, old, "GET", "/healthz")


async def test_broken_rotation_keeps_the_old_certificate(serve: Serve, tmp_path: Path) -> None:
    """A half-written key pair is refused and the previous certificate keeps serving."""
    pki, reloader = pki_files(tmp_path)
    port = await serve(reloader)
    (tmp_path / "tls.key").write_bytes(generate([HOST]).key_pem)  # key no longer matches cert
    assert reloader.reload_if_changed() is False
    assert (await call(port, pki, "GET", "/healthz"))[0] == 200
