"""Other clients through the interception proxy, each trusting the CA its own way.

Python's urllib and aiohttp (``SSL_CERT_FILE``), Node (core ``https`` over a CONNECT socket,
``NODE_EXTRA_CA_CERTS``), Java (``HttpClient`` with ``https.proxyHost`` and a PKCS#12 trust
store made by ``keytool``) and wget (``https_proxy``, ``--ca-certificate``, GnuTLS). Each
runtime that is not installed is skipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.intercept.conftest import (
    HOST,
    PYTHON,
    SECRET,
    WALLETS,
    Intercepting,
    clean_env,
    run,
)

URL = f"https://{HOST}/api/v1/wallets/"

# Node 20 has no HTTPS_PROXY support of its own (apps use an agent such as https-proxy-agent,
# or NODE_USE_ENV_PROXY=1 from Node 24); this is what those agents do, with core modules only.
NODE = """
const http = require("http"), https = require("https"), tls = require("tls");
const proxy = new URL(process.env.HTTPS_PROXY), target = new URL(process.argv[1]);
const authority = `${target.hostname}:443`;
http.request({host: proxy.hostname, port: proxy.port, method: "CONNECT", path: authority,
              headers: {Host: authority}})
  .on("connect", (res, socket) => {
    if (res.statusCode !== 200) { console.error(`CONNECT ${res.statusCode}`); process.exit(2); }
    const options = {host: target.hostname, port: 443, path: target.pathname};
    options.createConnection = () => tls.connect({socket, servername: target.hostname});
    https.get(options,
      (resp) => { let body = ""; resp.on("data", (d) => body += d);
                  resp.on("end", () => { console.log(body); process.exit(0); }); })
      .on("error", (e) => { console.error(e.code || e.message); process.exit(1); });
  })
  .on("error", (e) => { console.error(e.message); process.exit(1); })
  .end();
"""

JAVA = """
import java.net.*;
import java.net.http.*;

public class Client {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newBuilder().proxy(ProxySelector.getDefault()).build();
        HttpRequest request = HttpRequest.newBuilder(URI.create(args[0])).build();
        System.out.println(client.send(request, HttpResponse.BodyHandlers.ofString()).body());
    }
}
"""


URLLIB = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())
"""

AIOHTTP = """
import asyncio, sys, aiohttp

async def main():
    async with aiohttp.ClientSession(trust_env=True) as http:
        async with http.get(sys.argv[1]) as resp:
            print(await resp.text())

asyncio.run(main())
"""


def needs(tool: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} is not installed")


def assert_reached(it: Intercepting, code: int, out: str, err: str) -> None:
    assert code == 0, err
    assert json.loads(out) == WALLETS
    assert it.peer.seen[-1]["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("script", [URLLIB, AIOHTTP], ids=["urllib", "aiohttp"])
async def test_python_clients_trust_the_ca_through_ssl_cert_file(
    intercepting: Intercepting, script: str
) -> None:
    """urllib and aiohttp (trust_env) take HTTPS_PROXY and SSL_CERT_FILE from the environment."""
    env = clean_env(HTTPS_PROXY=intercepting.proxy_url, SSL_CERT_FILE=str(intercepting.ca_file))
    assert_reached(intercepting, *await run(PYTHON, "-c", script, URL, env=env))


@needs("node")
async def test_node_trusts_the_ca_through_node_extra_ca_certs(intercepting: Intercepting) -> None:
    """Node adds the CA to its bundled roots with NODE_EXTRA_CA_CERTS; without it, it refuses."""
    env = clean_env(HTTPS_PROXY=intercepting.proxy_url)
    code, _, err = await run("node", "-e", NODE, URL, env=env)
    assert code == 1 and "UNABLE_TO_VERIFY_LEAF_SIGNATURE" in err
    env["NODE_EXTRA_CA_CERTS"] = str(intercepting.ca_file)
    assert_reached(intercepting, *await run("node", "-e", NODE, URL, env=env))


@needs("java")
@needs("keytool")
async def test_java_trusts_the_ca_through_a_keytool_trust_store(
    intercepting: Intercepting, tmp_path: Path
) -> None:
    """Java's HttpClient uses https.proxyHost/Port and a trust store holding the CA."""
    store = tmp_path / "truststore.p12"
    keytool = ("keytool", "-importcert", "-noprompt", "-alias", "sidecar-ca", "-file")
    args = (*keytool, str(intercepting.ca_file), "-keystore", str(store))
    code, _, err = await run(
        *args, "-storetype", "PKCS12", "-storepass", "changeit", env=clean_env()
    )
    assert code == 0, err
    source = tmp_path / "Client.java"
    source.write_text(JAVA)
    props = [
        "-Dhttps.proxyHost=127.0.0.1",
        f"-Dhttps.proxyPort={intercepting.sidecar.proxy.port}",
        f"-Djavax.net.ssl.trustStore={store}",
        "-Djavax.net.ssl.trustStorePassword=changeit",
        "-Djavax.net.ssl.trustStoreType=PKCS12",
    ]
    assert_reached(intercepting, *await run("java", *props, str(source), URL, env=clean_env()))


@needs("wget")
async def test_wget_trusts_the_ca_through_ca_certificate(intercepting: Intercepting) -> None:
    """wget reads https_proxy and checks the chain against --ca-certificate."""
    env = clean_env(https_proxy=intercepting.proxy_url)
    args = ("wget", "-q", "-O", "-", f"--ca-certificate={intercepting.ca_file}", URL)
    assert_reached(intercepting, *await run(*args, env=env))
