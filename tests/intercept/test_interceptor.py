"""The interceptor's certificate life cycle: leaf cache, re-issue, CA rotation, the CA file."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from sidecar.config import InterceptConfig
from sidecar.proxy.intercept import Interceptor
from sidecar.runtime import Runtime

HOST = "sandbox.intasend.com"


@dataclass
class FakeUpstream:
    hosts: frozenset[str]


@dataclass
class FakeRuntime:
    """Just what the interceptor reads: the intercept config and the upstreams' hosts."""

    ca_file: Path
    upstreams: dict[str, FakeUpstream] = field(default_factory=dict)

    @property
    def config(self) -> SimpleNamespace:
        return SimpleNamespace(intercept=InterceptConfig(enabled=True, ca_cert_path=self.ca_file))


def interceptor(tmp_path: Path, *hosts: str) -> tuple[Interceptor, FakeRuntime]:
    rt = FakeRuntime(
        tmp_path / "ca" / "ca.pem", {"p": FakeUpstream(frozenset({*hosts, "10.0.0.1"}))}
    )
    return Interceptor(cast(Runtime, rt)), rt


def test_ca_permits_only_dns_hosts_of_the_upstreams(tmp_path: Path) -> None:
    """The CA's constraints come from the upstreams' host names; IP url hosts are left out."""
    it, _ = interceptor(tmp_path, HOST)
    assert it.authority.hosts == {HOST}


def test_leaf_context_is_cached_then_reissued_after_two_thirds(tmp_path: Path) -> None:
    """One leaf serves many handshakes; after 16 of its 24 hours a fresh one is issued."""
    it, _ = interceptor(tmp_path, HOST)
    t0 = datetime.now(UTC)
    first = it.context(HOST, t0)
    assert it.context(HOST, t0 + timedelta(hours=15)) is first
    assert it.context(HOST, t0 + timedelta(hours=17)) is not first


def test_ca_rotates_before_it_expires_and_the_file_keeps_both(tmp_path: Path) -> None:
    """With less than one leaf lifetime left, a new CA signs; the file lists new then old."""
    it, rt = interceptor(tmp_path, HOST)
    it.write_bundle()
    old = it.authority
    it.context(HOST, old.not_after - timedelta(hours=23))
    assert it.authority is not old and it.previous is old
    assert rt.ca_file.read_bytes() == it.authority.cert_pem() + old.cert_pem()


def test_host_added_by_reload_gets_a_new_ca(tmp_path: Path) -> None:
    """A host the current CA does not permit triggers a rotation that covers every host."""
    it, rt = interceptor(tmp_path, HOST)
    rt.upstreams["q"] = FakeUpstream(frozenset({"api.other.example"}))
    it.context("api.other.example")
    assert it.authority.hosts == {HOST, "api.other.example"}
    assert it.previous is not None


def test_ca_file_is_replaced_atomically(tmp_path: Path) -> None:
    """The file is written whole, world-readable (it is a certificate), with no temp left over."""
    it, rt = interceptor(tmp_path, HOST)
    it.write_bundle()
    assert rt.ca_file.read_bytes() == it.authority.cert_pem()
    assert oct(rt.ca_file.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in rt.ca_file.parent.iterdir()) == ["ca.pem"]
