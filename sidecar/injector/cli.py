"""``sidecar injector``: serve the mutating webhook over HTTPS, or write a dev key pair.

In a cluster the certificate comes from a mounted Secret (``--tls-cert/--tls-key``), reloaded
when it is rotated. ``--self-signed`` makes a throwaway CA at start for local runs and writes
its certificate to ``--ca-out`` for the caller to trust. ``--write-certs DIR`` writes a CA and
serving pair for the Service's DNS names, for clusters without cert-manager.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from aiohttp import web

from sidecar.config import split_hostport
from sidecar.injector.certs import CertReloader, generate, service_dns_names, write_pki
from sidecar.injector.patch import Settings
from sidecar.injector.webhook import build_app
from sidecar.logging import configure, get_logger

log = get_logger("sidecar.injector")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sidecar injector", description=__doc__)
    p.add_argument("--listen", default="0.0.0.0:8443", help="host:port of the HTTPS listener")
    p.add_argument("--tls-cert", type=Path, help="serving certificate (PEM), reloaded on change")
    p.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    p.add_argument("--self-signed", action="store_true", help="make a dev CA + cert at start")
    p.add_argument("--ca-out", type=Path, help="with --self-signed: write the CA (PEM) here")
    p.add_argument("--write-certs", type=Path, metavar="DIR", help="write ca.crt/tls.* and exit")
    p.add_argument("--service", default="credential-sidecar-injector")
    p.add_argument("--namespace", default="credential-sidecar-system")
    p.add_argument("--dns-name", action="append", default=[], help="extra certificate name")
    p.add_argument("--image", help="sidecar image to inject")
    p.add_argument("--default-config", help="ConfigMap used when a pod names none")
    p.add_argument("--vault-addr", help="VAULT_ADDR for the sidecar; its host joins NO_PROXY")
    p.add_argument("--audience", default="vault", help="audience of the projected SA token")
    p.add_argument("--no-proxy", default=".svc,.cluster.local", help="extra NO_PROXY entries")
    p.add_argument("--reload-interval", type=float, default=10.0, help="cert poll, seconds")
    return p


def _dns_names(args: argparse.Namespace) -> list[str]:
    return [*service_dns_names(args.service, args.namespace), *args.dns_name]


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.write_certs:
        return
    if not args.image:
        p.error("--image is required")
    files = args.tls_cert is not None or args.tls_key is not None
    if args.self_signed == files:
        p.error("give either --tls-cert and --tls-key, or --self-signed")
    if files and (args.tls_cert is None or args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    if args.ca_out and not args.self_signed:
        p.error("--ca-out goes with --self-signed")
    try:
        split_hostport(args.listen)
    except ValueError:
        p.error(f"--listen: {args.listen!r} is not host:port")


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        image=args.image,
        default_config=args.default_config,
        vault_addr=args.vault_addr,
        audience=args.audience,
        no_proxy=tuple(h.strip() for h in args.no_proxy.split(",") if h.strip()),
    )


def reloader_from(args: argparse.Namespace) -> CertReloader:
    """Mounted files as they are; or a fresh dev pair in a private temporary directory."""
    if not args.self_signed:
        return CertReloader(args.tls_cert, args.tls_key, args.reload_interval)
    pki = generate(_dns_names(args))
    _, cert, key = write_pki(pki, Path(tempfile.mkdtemp(prefix="sidecar-injector-")))
    if args.ca_out:
        args.ca_out.write_bytes(pki.ca_pem)
    return CertReloader(cert, key, args.reload_interval)


def main(argv: list[str]) -> int:
    p = parser()
    args = p.parse_args(argv)
    _check(p, args)
    configure("info", "auto")
    if args.write_certs:
        ca, cert, key = write_pki(generate(_dns_names(args)), args.write_certs)
        print(f"wrote {ca}, {cert} and {key} for {', '.join(_dns_names(args))}")
        return 0
    reloader = reloader_from(args)
    host, port = split_hostport(args.listen)
    log.info("injector_listening", listen=args.listen, image=args.image)
    web.run_app(
        build_app(settings_from(args), reloader),
        host=host,
        port=port,
        ssl_context=reloader.served,
        access_log=None,
        print=None,
    )
    return 0
