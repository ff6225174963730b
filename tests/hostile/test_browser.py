"""A real browser attacks the sidecar: headless Chromium opens a hostile page.

The page is served from another loopback address and port (``127.0.0.2``), so Chromium's own
local-network protections, which block a *public* page from reaching loopback, do not stop it
first: what stops it must be the sidecar. ``evil.example`` resolves to ``127.0.0.1`` inside the
browser (``--host-resolver-rules``), which is what DNS rebinding achieves. The page tries every
trick of issue 13 and writes what it saw into the DOM; ``--dump-dom`` after a virtual-time budget
hands that back. Afterwards the admin API and the provider peer prove nothing changed and
nothing was spent, and the sidecar's refusal counters say why each request was refused.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import pytest
import requests
from aiohttp import web

from tests.hostile.live import GOOD_KEY, LiveSidecar

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE_HOST = "127.0.0.2"

PAGE = """<!doctype html><html><body><pre id="out">running</pre>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<script>
const ADMIN = "%(admin)s", PROXY = "%(proxy)s", EVIL_ADMIN = "%(evil_admin)s",
      EVIL_PROXY = "%(evil_proxy)s";
const bytes = (o) => new TextEncoder().encode(JSON.stringify(o));
const results = {};
async function attempt(label, url, init) {
  try {
    const r = await fetch(url, init);
    let text = "";
    try { text = await r.text(); } catch (e) {}
    results[label] = {type: r.type, status: r.status, read: text.slice(0, 200)};
  } catch (e) {
    results[label] = {error: String(e.name)};
  }
  progress();
}
let finished = false;  // a late timer must not overwrite the final RESULTS
function progress() {
  if (!finished) {
    document.getElementById("out").textContent = "PROGRESS " + JSON.stringify(results);
  }
}
function form(label, target, action, name, value) {
  return new Promise((resolve) => {
    const f = document.createElement("form");
    f.method = "POST"; f.enctype = "text/plain"; f.action = action; f.target = target;
    const i = document.createElement("input");
    i.name = name; i.value = value; f.appendChild(i); document.body.appendChild(f);
    const frame = document.getElementsByName(target)[0];
    const done = (how) => { if (!(label in results)) { results[label] = {submitted: how}; }
                            resolve(); };
    frame.addEventListener("load", () => done("loaded"), {once: true});
    setTimeout(() => done("timeout"), 3000);
    f.submit();
  });
}
function sandboxed(label, url, body) {  // a sandboxed frame's requests carry Origin: null
  return new Promise((resolve) => {
    const frame = document.createElement("iframe");
    frame.sandbox = "allow-scripts";
    frame.srcdoc = "<script>fetch(" + JSON.stringify(url) + ", {method: 'POST', " +
      "mode: 'no-cors', body: " + JSON.stringify(body) + "}).then(" +
      "r => parent.postMessage({type: r.type, status: r.status}, '*'), " +
      "e => parent.postMessage({error: String(e.name)}, '*'));<\\/script>";
    const done = (v) => { if (!(label in results)) { results[label] = v; } progress(); resolve(); };
    window.addEventListener("message", (ev) => done(ev.data), {once: true});
    setTimeout(() => done({timeout: true}), 10000);
    document.body.appendChild(frame);
  });
}
(async () => {
  const mint = {permissions: ["* /*"]};
  const pismo = {key: "SECR_attacker", provider: "azupay", type: "main"};
  await attempt("no-cors POST keys (no Content-Type)", ADMIN + "/v1/credentials/azupay/keys",
                {method: "POST", mode: "no-cors", body: bytes(mint)});
  await attempt("no-cors POST pismo (no Content-Type)", ADMIN + "/v1/credentials",
                {method: "POST", mode: "no-cors", body: bytes(pismo)});
  await attempt("no-cors POST verify (no Content-Type)", ADMIN + "/v1/credentials/azupay/verify",
                {method: "POST", mode: "no-cors", body: bytes({api_key: "SECR_guess"})});
  await attempt("cors PUT json (preflight)", ADMIN + "/v1/credentials/azupay",
                {method: "PUT", headers: {"Content-Type": "application/json"},
                 body: JSON.stringify({upstream: "azupay", fields: {api_key: "SECR_attacker"}})});
  await attempt("cors GET list", ADMIN + "/v1/credentials", {});
  await attempt("rebinding GET list", EVIL_ADMIN + "/v1/credentials", {});
  await attempt("rebinding no-cors POST keys", EVIL_ADMIN + "/v1/credentials/azupay/keys",
                {method: "POST", mode: "no-cors", body: bytes(mint)});
  await attempt("proxy no-cors POST", PROXY + "/azupay/v1/paymentRequest",
                {method: "POST", mode: "no-cors", body: JSON.stringify({amount: 100})});
  await attempt("proxy cors GET", PROXY + "/azupay/v1/balance", {});
  await attempt("rebinding proxy POST", EVIL_PROXY + "/azupay/v1/paymentRequest",
                {method: "POST", mode: "no-cors", body: JSON.stringify({amount: 100})});
  await sandboxed("sandboxed frame POST keys (Origin: null)",
                  ADMIN + "/v1/credentials/azupay/keys", JSON.stringify(mint));
  await form("text/plain form keys", "sink1", ADMIN + "/v1/credentials/azupay/keys",
             '{"permissions": ["* /*"], "x": "', '"}');
  await form("text/plain form proxy", "sink2", PROXY + "/azupay/v1/paymentRequest",
             '{"amount": 100, "x": "', '"}');
  finished = true;
  document.getElementById("out").textContent = "RESULTS " + JSON.stringify(results);
})();
</script></body></html>
"""


class HostilePage:
    """An aiohttp server on 127.0.0.2 serving :data:`PAGE`, in a thread of its own."""

    def __init__(self, html: str) -> None:
        self.html = html
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> HostilePage:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(15)
        return self

    async def _start(self) -> None:
        async def index(_request: web.Request) -> web.Response:
            return web.Response(text=self.html, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", index)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, PAGE_HOST, 0).start()
        self.url = f"http://{PAGE_HOST}:{self._runner.addresses[0][1]}/"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium); no real browser")
    return CHROMIUM


@pytest.fixture
def page(live: LiveSidecar) -> Iterator[HostilePage]:
    admin_port = live.admin_url.rsplit(":", 1)[1]
    proxy_port = live.proxy_url.rsplit(":", 1)[1]
    html = PAGE % {
        "admin": live.admin_url,
        "proxy": live.proxy_url,
        "evil_admin": f"http://evil.example:{admin_port}",
        "evil_proxy": f"http://evil.example:{proxy_port}",
    }
    server = HostilePage(html).start()
    yield server
    server.stop()


def run_chromium(binary: str, url: str) -> dict[str, dict[str, object]]:
    """Load the page, let it run (virtual time), return what it wrote into the DOM."""
    with tempfile.TemporaryDirectory(prefix="sidecar-chromium-") as profile:
        argv = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP evil.example 127.0.0.1",
            "--virtual-time-budget=60000",
            "--dump-dom",
            url,
        ]
        done = subprocess.run(argv, capture_output=True, timeout=120, check=False, text=True)
    match = re.search(r"RESULTS (\{.*?\})</pre>", done.stdout, re.S)
    out = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    seen = out.group(1)[:3000] if out else done.stdout[-500:]
    assert match is not None, f"page did not finish: {seen} {done.stderr[-1000:]}"
    results: dict[str, dict[str, object]] = json.loads(match.group(1).replace("&amp;", "&"))
    return results


def refusals(live: LiveSidecar) -> dict[str, int]:
    """Refusals by code, summed over the admin and the proxy listeners' counters."""
    assert live.runtime is not None
    counts: dict[str, int] = {}
    for metric in live.runtime.metrics.registry.collect():
        if metric.name not in ("sidecar_admin_refused", "sidecar_proxy_refused"):
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                code = sample.labels["code"]
                counts[code] = counts.get(code, 0) + int(sample.value)
    return counts


def test_hostile_page_changes_nothing_and_spends_nothing(
    live: LiveSidecar, page: HostilePage, chromium: str
) -> None:
    """Every trick a page can play through a real Chromium is refused by the sidecar."""
    put = requests.put(
        f"{live.admin_url}/v1/credentials/azupay",
        json={"upstream": "azupay", "fields": {"api_key": GOOD_KEY}},
        timeout=15,
    )
    assert put.status_code == 201
    before = {k: v for k, v in put.json().items() if k != "verification"}  # GET has no such key
    baseline = refusals(live)

    results = run_chromium(chromium, page.url)

    for label, seen in sorted(results.items()):
        print(f"page saw: {label}: {seen}")
    assert len(results) == 13
    # The page read nothing: opaque answers, network errors (CORS) or an empty frame.
    for label, seen in results.items():
        assert seen.get("read", "") in ("", None) or seen.get("type") == "opaque", label
    after = requests.get(f"{live.admin_url}/v1/credentials/azupay", timeout=10).json()
    assert after == before  # same version: not replaced, not disabled
    listing = requests.get(f"{live.admin_url}/v1/credentials", timeout=10).json()
    assert [c["name"] for c in listing["credentials"]] == ["azupay"]  # no azupay-main
    keys = requests.get(f"{live.admin_url}/v1/credentials/azupay/keys", timeout=10).json()
    assert keys["keys"] == []  # no key minted
    assert live.peer.seen == []  # the provider got nothing: nothing spent

    counts = refusals(live)
    refused = {c: n - baseline.get(c, 0) for c, n in counts.items() if n - baseline.get(c, 0)}
    print("refused by reason:", ", ".join(f"{c}x{n}" for c, n in sorted(refused.items())))
    print(f"total refused: {sum(refused.values())}")
    # 13 attempts, 16 requests: the 3 rebinding ones (admin GET and POST, proxy POST) are each
    # retried once by Chromium on a fresh connection after the 421, as RFC 9110 allows; the
    # other 10 (the PUT's preflight included) carry the page's Origin, or "null".
    assert refused == {"SC1015": 6, "SC1016": 10}
