"""A 3-node OpenBao raft cluster on loopback, and a TCP front that plays the k8s Services.

The cluster is real: raft storage, ``retry_join``, one unseal key (``-key-shares=1
-key-threshold=1``), ``performance_multiplier = 1`` (production election timing), each node
its own `bao server` process, so a node can be SIGKILLed. The :class:`Front` stands in for the
Kubernetes ``vault-active`` Service: it forwards each new connection to the node whose
``/v1/sys/health`` says active (polled every 100 ms, like endpoint updates).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import hvac
import requests

from sidecar.sandbox.openbao import bao_binary, free_port

HCL = """
storage "raft" {{
  path = "{data}"
  node_id = "{name}"
  performance_multiplier = 1
{joins}
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cport}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cport}"
disable_mlock = true
"""


@dataclass
class Node:
    name: str
    root: Path
    port: int = field(default_factory=free_port)
    cport: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, peers: list[Node]) -> Path:
        data = self.root / self.name
        data.mkdir(parents=True, exist_ok=True)
        joins = "\n".join(
            f'  retry_join {{\n    leader_api_addr = "{p.addr}"\n  }}'
            for p in peers
            if p is not self
        )
        path = self.root / f"{self.name}.hcl"
        path.write_text(
            HCL.format(data=data, name=self.name, joins=joins, port=self.port, cport=self.cport)
        )
        return path

    def start(self, peers: list[Node]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        with (self.root / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [bao_binary(), "server", f"-config={self.write_config(peers)}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def health(self) -> str:
        """``active``, ``standby``, ``sealed``, ``uninitialized`` or ``down``."""
        try:
            r = requests.get(f"{self.addr}/v1/sys/health", timeout=0.5)
        except requests.RequestException:
            return "down"
        return {200: "active", 429: "standby", 503: "sealed", 501: "uninitialized"}.get(
            r.status_code, "down"
        )

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None


@dataclass
class Cluster:
    nodes: list[Node]
    root_token: str = ""
    unseal_key: str = ""

    @classmethod
    def start(cls) -> Cluster:
        root = Path(tempfile.mkdtemp(prefix="bao-ha-"))
        cluster = cls([Node(f"n{i}", root) for i in range(1, 4)])
        first = cluster.nodes[0]
        first.start(cluster.nodes)
        _wait(lambda: first.health() == "uninitialized", 20, "n1 did not start")
        init = subprocess.run(
            [bao_binary(), "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"],
            env={**os.environ, "BAO_ADDR": first.addr},
            check=True,
            capture_output=True,
        )
        keys = json.loads(init.stdout)
        cluster.unseal_key, cluster.root_token = keys["unseal_keys_b64"][0], keys["root_token"]
        cluster.unseal(first)
        _wait(lambda: first.health() == "active", 20, "n1 did not become active")
        # Autopilot makes a joined node a voter only after it has been stable this long (10 s
        # by default); until then, killing the leader leaves no quorum.
        cluster.client().write(
            "sys/storage/raft/autopilot/configuration", server_stabilization_time="1s"
        )
        for node in cluster.nodes[1:]:
            node.start(cluster.nodes)
            _wait(lambda n=node: n.health() == "sealed", 20, f"{node.name} did not start")  # type: ignore[misc]
            cluster.unseal(node)
        for node in cluster.nodes[1:]:
            _wait(lambda n=node: n.health() == "standby", 30, f"{node.name} did not join")  # type: ignore[misc]
        _wait(cluster._all_voters, 30, "nodes did not become voters")
        client = cluster.client()
        client.sys.enable_secrets_engine("transit", path="transit")
        client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        _wait(cluster._kv_ready, 20, "KV v2 did not finish its upgrade")
        return cluster

    def _all_voters(self) -> bool:
        servers = self.client().read("sys/storage/raft/configuration")["data"]["config"]["servers"]
        return len(servers) == 3 and all(s["voter"] for s in servers)

    def _kv_ready(self) -> bool:
        """A write on the leader and reads on every node work (standbys upgrade late).

        The sidecar's transit key is made here too, so a test measures replaces, not the
        first encrypt on a standby that has not yet seen a key created a moment ago.
        """
        try:
            self.client().secrets.kv.v2.create_or_update_secret(path="probe", secret={"ok": "1"})
            self.client().secrets.transit.create_key(name="sidecar", key_type="aes256-gcm96")
            for node in self.nodes:
                self.client(node).secrets.transit.read_key(name="sidecar")
                self.client(node).secrets.kv.v2.read_secret_version(
                    path="probe", raise_on_deleted_version=True
                )
        except hvac.exceptions.VaultError:
            return False
        return True

    def unseal(self, node: Node) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                hvac.Client(url=node.addr, timeout=2).sys.submit_unseal_key(self.unseal_key)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def client(self, node: Node | None = None) -> hvac.Client:
        return hvac.Client(url=(node or self.leader()).addr, token=self.root_token, timeout=5)

    def leader(self) -> Node:
        for node in self.nodes:
            if node.process is not None and node.health() == "active":
                return node
        raise RuntimeError("no active node")

    def standby(self) -> Node:
        return next(n for n in self.nodes if n.process is not None and n.health() == "standby")

    def wait_leader(self, timeout: float = 30) -> float:
        """Seconds until a live node reports active (OpenBao's own election time)."""
        started = time.monotonic()
        _wait(
            lambda: any(n.process and n.health() == "active" for n in self.nodes),
            timeout,
            "no leader",
        )
        return time.monotonic() - started

    def restart(self, node: Node) -> None:
        node.start(self.nodes)
        _wait(lambda: node.health() in ("sealed", "standby"), 20, f"{node.name} did not restart")
        if node.health() == "sealed":
            self.unseal(node)
        _wait(lambda: node.health() == "standby", 30, f"{node.name} did not rejoin")

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(timeout=10)
                node.kill()


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(what)


class Front:
    """A loopback TCP front: each connection goes to the active node, bytes copied both ways."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.target: Node | None = None
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Front:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        await self._poll()
        self._watch = asyncio.create_task(self._follow())
        return self

    async def _follow(self) -> None:
        """Like the Service's endpoints: the node reporting active, polled every 100 ms."""
        while True:
            await self._poll()
            await asyncio.sleep(0.1)

    async def _poll(self) -> None:
        for node in self.cluster.nodes:
            if node.process is not None and await asyncio.to_thread(node.health) == "active":
                self.target = node
                return
        self.target = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        node = self.target
        try:
            if node is None or node.process is None:
                raise ConnectionError
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", node.port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._server is not None:
            self._server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()
