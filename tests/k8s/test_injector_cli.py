"""`sidecar injector` as a user runs it: arguments, --write-certs, and a real process."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509

from sidecar.injector.cli import main
from sidecar.sandbox.openbao import free_port
from tests.k8s.helpers import fixture

LAUNCH = "import sys; from sidecar.injector.cli import main; sys.exit(main(sys.argv[1:]))"


def test_write_certs_makes_a_tls_secret_pair(tmp_path: Path) -> None:
    """--write-certs writes ca.crt, tls.crt and a 0600 tls.key for the Service's DNS names."""
    assert main(["--write-certs", str(tmp_path), "--namespace", "sec"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "credential-sidecar-injector.sec.svc" in names.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)


@pytest.mark.parametrize(
    "argv",
    [
        ["--self-signed"],
        ["--image", "img"],
        ["--image", "img", "--self-signed", "--tls-cert", "c", "--tls-key", "k"],
        ["--image", "img", "--tls-cert", "c"],
        ["--image", "img", "--tls-cert", "c", "--tls-key", "k", "--ca-out", "ca.pem"],
        ["--image", "img", "--self-signed", "--listen", "8443"],
    ],
)
def test_inconsistent_arguments_are_usage_errors(argv: list[str]) -> None:
    """Missing image, no TLS source, both TLS sources or a bad address exit with status 2."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_self_signed_process_serves_a_trusted_webhook(tmp_path: Path) -> None:
    """The injector process with --self-signed answers a review over TLS trusting --ca-out."""
    port, ca = free_port(), tmp_path / "ca.pem"
    argv = ["--self-signed", "--ca-out", str(ca), "--dns-name", "localhost"]
    argv += ["--listen", f"127.0.0.1:{port}", "--image", "registry.example.com/sidecar:1"]
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"https://localhost:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                health = requests.get(f"{url}/healthz", verify=str(ca), timeout=2)
                break
            except (requests.ConnectionError, OSError):
                assert proc.poll() is None and time.monotonic() < deadline, "injector did not start"
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        review = fixture("review-full.json")
        answer = requests.post(f"{url}/mutate", json=review, verify=str(ca), timeout=5).json()
        assert answer["response"]["uid"] == review["request"]["uid"]
        assert answer["response"]["patchType"] == "JSONPatch"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode in (0, -15), err.decode()
