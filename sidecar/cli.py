"""``sidecar`` command line: run | admin | dev | config check | config schema | errors | injector.

``sidecar run`` is the proxy role (what the injector injects); ``sidecar admin`` the admin role;
``sidecar run --role all`` both in one process, as ``sidecar dev`` runs them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from sidecar import config as config_mod
from sidecar.errors import ConfigError, SidecarError, error_table_markdown
from sidecar.logging import configure


def _run_loop(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(coro)  # type: ignore[arg-type]


def cmd_run(args: argparse.Namespace) -> int:
    from sidecar.server import serve

    cfg = _load_or_exit(args.config)
    configure(cfg.logging.level, cfg.logging.format, cache=True)
    try:
        _run_loop(serve(cfg, args.config, args.role))
    except SidecarError as exc:  # a refusal to start, e.g. an admin listener with no auth
        print(f"{args.config}: {exc.code} {exc.message}", file=sys.stderr)
        return 1
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from sidecar.dev import main as dev_main

    return int(dev_main(args.config, once=args.once))


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        cfg = config_mod.load(args.file)
    except ConfigError as exc:
        print(f"{args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK ({len(cfg.upstreams)} upstreams)")
    for warning in presence_only_warnings(cfg):
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    return 0


def presence_only_warnings(cfg: config_mod.Config) -> list[str]:
    """One line per upstream whose verify cannot ask the provider (no probe, no token).

    A credential saved there is checked for presence only: a mistyped key is stored and first
    fails on a real request. A warning, not an error: some providers offer no harmless call.
    """
    from yarl import URL

    from sidecar.schemes.base import UpstreamContext, verification_of
    from sidecar.schemes.registry import build_scheme

    warnings = []
    for name, up in cfg.upstreams.items():
        scheme = build_scheme(cfg.schemes[name], UpstreamContext(name=name, url=URL(up.url)))
        if verification_of(scheme) == "presence-only":
            warnings.append(
                f"upstreams.{name}: credentials are checked for presence only before they are "
                "saved (the provider is not asked); configure a probe to verify them"
            )
    return warnings


def cmd_config_schema(_args: argparse.Namespace) -> int:
    print(json.dumps(config_mod.json_schema(), indent=2))
    return 0


def cmd_errors(_args: argparse.Namespace) -> int:
    print(error_table_markdown())
    return 0


def _load_or_exit(path: str) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(1) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sidecar", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the sidecar (the proxy role unless --role says)")
    run.add_argument("--config", default="/etc/sidecar/sidecar.yaml")
    run.add_argument("--role", choices=("proxy", "admin", "all"), default="proxy")
    run.set_defaults(func=cmd_run)
    admin = sub.add_parser("admin", help="run the admin role (the authenticated admin API)")
    admin.add_argument("--config", default="/etc/sidecar/sidecar.yaml")
    admin.set_defaults(func=cmd_run, role="admin")
    dev = sub.add_parser("dev", help="OpenBao dev server + sandbox providers + sidecar")
    dev.add_argument("--config", default="config/dev.yaml")
    dev.add_argument("--once", action="store_true", help="run the demo calls, then exit")
    dev.set_defaults(func=cmd_dev)
    cfg = sub.add_parser("config", help="check a config file or print its JSON Schema")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)
    cfg_sub.add_parser("schema").set_defaults(func=cmd_config_schema)
    sub.add_parser("errors", help="print the error-code table").set_defaults(func=cmd_errors)
    sub.add_parser("injector", help="Kubernetes mutating webhook", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "injector":
        from sidecar.injector.cli import main as injector_main

        return int(injector_main(argv[1:]))
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
