"""Shared by the k8s tests: where the manifests are, how to render and validate them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from sidecar.injector.patch import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
FIXTURES = Path(__file__).parent / "fixtures"
# 1.31: the oldest release whose schema knows initContainers[].restartPolicy with native
# sidecars on by default; 1.34: the newest schema the pinned kubernetes-validate ships.
K8S_VERSIONS = ("1.31.0", "1.34.0")
SIDECAR_IMAGE = "registry.example.com/platform/credential-sidecar:0.1.0"
SETTINGS = Settings(image=SIDECAR_IMAGE, vault_addr="https://vault.example.internal:8200")


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def kustomize_command() -> list[str] | None:
    """``kubectl kustomize`` or ``kustomize build``, whichever is installed; else None."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def render(directory: Path) -> list[dict[str, Any]]:
    command = kustomize_command()
    assert command is not None
    out = subprocess.run([*command, str(directory)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def load_kustomization(directory: Path) -> list[dict[str, Any]]:
    """A plain kustomization without kustomize: its resources, and generated ConfigMaps."""
    spec = load_docs(directory / "kustomization.yaml")[0]
    docs = [d for name in spec.get("resources", []) for d in load_docs(directory / name)]
    for gen in spec.get("configMapGenerator", []):
        data = {Path(f).name: (directory / f).read_text() for f in gen.get("files", [])}
        labels = gen.get("options", {}).get("labels", {})
        meta = {"name": gen["name"], "labels": labels}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return docs


def validate(doc: dict[str, Any]) -> None:
    """Strict schema validation (unknown fields are errors) for every pinned version."""
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]
