"""``--against REV``: an older revision's sidecar, started the way that revision understands.

Why a probe: since the roles change (``sidecar/roles.py``), plain ``sidecar run`` is the proxy
role, which binds no admin listener, so the old start-up (plain ``run``, ``/readyz`` on the
admin port) would wait forever. Revisions from before it have no ``--role`` and a config that
refuses ``listen.local``. So the exported tree is asked what it knows: whether ``run --help``
names ``--role``, and which of the bench's schemes its registry can load.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run inside the exported tree: one line per scheme name given, "name<TAB>why not" or "name".
_SCHEME_PROBE = """
import sys
from sidecar.schemes.registry import scheme_class
for name in sys.argv[1:]:
    try:
        scheme_class(name)
    except KeyError:
        print(name, "no such scheme at this revision", sep="\\t")
    except Exception as exc:  # an installed entry point may name a module REV lacks
        gone = (getattr(exc, "name", None) or "").startswith("sidecar.")
        why = "no such scheme at this revision" if gone else f"cannot load here: {exc!r}"
        print(name, why, sep="\\t")
    else:
        print(name)
"""


@dataclass
class Revision:
    """What an exported revision supports, read from its own code."""

    rev: str
    tree: Path
    has_roles: bool
    schemes: frozenset[str]
    missing: dict[str, str]  # scheme name -> why the revision cannot run it

    def run_args(self) -> list[str]:
        """``run --role all`` (proxy and admin in one process) where roles exist, else ``run``."""
        return ["run", "--role", "all"] if self.has_roles else ["run"]

    def listen(self, proxy: str, admin: str, local: str) -> dict[str, str]:
        """Own ports for every listener it binds; ``listen.local`` only where it exists (role
        ``all`` binds it, and an older config refuses the key)."""
        ports = {"proxy": proxy, "admin": admin}
        return {**ports, "local": local} if self.has_roles else ports


def probe(python: Path, rev: str, tree: Path, schemes: list[str]) -> Revision:
    """Ask the revision's code, run from ``tree`` with ``python``, what it supports."""
    help_text = _in_tree(python, tree, ["-m", "sidecar.cli", "run", "--help"])
    lines = _in_tree(python, tree, ["-c", _SCHEME_PROBE, *schemes]).splitlines()
    rows = [line.split("\t", 1) for line in lines]
    missing = {row[0]: row[1] for row in rows if len(row) == 2}
    known = frozenset(row[0] for row in rows if len(row) == 1)
    return Revision(rev, tree, "--role" in help_text, known, missing)


def config(rev: Revision, base: dict[str, Any], listen: dict[str, str]) -> dict[str, Any]:
    """The shared config on the revision's own ports, without the upstreams it cannot load."""
    upstreams = {k: v for k, v in base["upstreams"].items() if v["scheme"] in rev.schemes}
    return {**base, "listen": listen, "upstreams": upstreams}


def _in_tree(python: Path, tree: Path, args: list[str]) -> str:
    """Standard output of ``python args`` in ``tree`` (its ``sidecar/`` shadows the install)."""
    done = subprocess.run(
        [str(python), *args], cwd=tree, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout
