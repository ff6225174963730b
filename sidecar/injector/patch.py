"""Pod + annotations -> JSONPatch ops that add the credential sidecar, or a reason to refuse.

Kept free of I/O so every decision (inject, leave alone, refuse) is a plain function of the pod
dict; the webhook only wraps it in AdmissionReview.

Decisions worth knowing:

- An annotation under ``credential-sidecar/`` that is unknown, or a flag that is not exactly
  ``"true"``/``"false"``, is refused: a typo must not silently leave a payments pod without its
  credential proxy.
- Idempotent: ``credential-sidecar/status: injected`` (set by the patch) or an init container
  named ``credential-sidecar`` (injected earlier, or added by hand as in the base manifest)
  gives an empty patch. A *regular* container with that name is a clash and is refused.
- ``proxy-env`` never overwrites an app's own ``HTTP_PROXY``/``NO_PROXY`` entries: it refuses,
  naming the container and variable, because skipping would leave the app calling providers
  directly (and the NetworkPolicy would then drop those calls).
- The sidecar goes first among init containers, so later init containers can use the proxy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

PREFIX = "credential-sidecar/"
INJECT = PREFIX + "inject"
CONFIG = PREFIX + "config"
PROXY_ENV = PREFIX + "proxy-env"
STATUS = PREFIX + "status"
INJECTED = "injected"
KNOWN = frozenset({INJECT, CONFIG, PROXY_ENV, STATUS})
FLAGS = (INJECT, PROXY_ENV)

CONTAINER = "credential-sidecar"
CONFIG_VOLUME = "credential-sidecar-config"
TOKEN_VOLUME = "credential-sidecar-token"
TMP_VOLUME = "credential-sidecar-tmp"
CONFIG_DIR = "/etc/sidecar"
TOKEN_DIR = "/var/run/secrets/vault"
PROXY_URL = "http://127.0.0.1:8080"
HEALTH_PORT = 8098
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

Op = dict[str, Any]

# One source for the hardening and sizing that deploy/k8s/base/deployment.yaml also uses;
# tests/k8s compares the two so they cannot drift.
SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": HEALTH_PORT},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


# Startup gates the app containers on /readyz: they start once credentials are loaded.
PROBES: dict[str, Any] = {
    "startupProbe": _probe("/readyz", 2, 150),
    "readinessProbe": _probe("/readyz", 10, 3),
    "livenessProbe": _probe("/healthz", 20, 3),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """What the injector adds; set once from its command line."""

    image: str
    default_config: str | None = None
    vault_addr: str | None = None
    audience: str = "vault"
    no_proxy: tuple[str, ...] = (".svc", ".cluster.local")
    pull_policy: str = "IfNotPresent"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the pod cannot be admitted as asked; shown to whoever ran ``kubectl apply``."""

    message: str


def escape(token: str) -> str:
    """RFC 6901: ``~`` -> ``~0`` and ``/`` -> ``~1`` inside one JSON Pointer segment."""
    return token.replace("~", "~0").replace("/", "~1")


def plan(pod: Mapping[str, Any], settings: Settings) -> list[Op] | Refusal:
    """The JSONPatch for ``pod``: ``[]`` when nothing is to be done."""
    annotations: Mapping[str, str] = (pod.get("metadata") or {}).get("annotations") or {}
    spec: Mapping[str, Any] = pod.get("spec") or {}
    problem = _check_annotations(annotations)
    if problem is None and annotations.get(INJECT, "false") == "true":
        problem = _check_names(spec)
    if problem is not None:
        return Refusal(problem)
    if annotations.get(INJECT, "false") == "false" or _already_injected(annotations, spec):
        return []
    config = annotations.get(CONFIG) or settings.default_config
    if not config:
        return Refusal(f"{INJECT} is true but {CONFIG} names no ConfigMap (and no default is set)")
    if len(config) > 253 or not _SUBDOMAIN.match(config):
        return Refusal(f"{CONFIG}: {config!r} is not a valid ConfigMap name")
    ops = [*_init_container_ops(spec, settings), *_volume_ops(spec, config, settings)]
    if annotations.get(PROXY_ENV) == "true":
        env_ops = _env_ops(spec, _proxy_env(settings))
        if isinstance(env_ops, Refusal):
            return env_ops
        ops += env_ops
    # The inject annotation exists, so the annotations map does: add one key to it.
    ops.append({"op": "add", "path": f"/metadata/annotations/{escape(STATUS)}", "value": INJECTED})
    return ops


def _check_annotations(annotations: Mapping[str, str]) -> str | None:
    unknown = sorted(k for k in annotations if k.startswith(PREFIX) and k not in KNOWN)
    if unknown:
        return f"unknown annotation {unknown[0]} (known: {', '.join(sorted(KNOWN))})"
    for key in FLAGS:
        if key in annotations and annotations[key] not in ("true", "false"):
            return f'{key}: must be "true" or "false", got {annotations[key]!r}'
    return None


def _check_names(spec: Mapping[str, Any]) -> str | None:
    if CONTAINER in _names(spec.get("containers")):
        return f"container name {CONTAINER!r} is reserved for the injected sidecar; rename it"
    if CONTAINER in _names(spec.get("initContainers")):
        return None  # already there: an empty patch, not a clash
    taken = _names(spec.get("volumes")) & {CONFIG_VOLUME, TOKEN_VOLUME, TMP_VOLUME}
    if taken:
        return f"volume name {sorted(taken)[0]!r} is reserved for the injected sidecar"
    return None


def _names(items: Iterable[Mapping[str, Any]] | None) -> set[str]:
    return {str(item.get("name")) for item in items or ()}


def _already_injected(annotations: Mapping[str, str], spec: Mapping[str, Any]) -> bool:
    return annotations.get(STATUS) == INJECTED or CONTAINER in _names(spec.get("initContainers"))


def sidecar_container(settings: Settings) -> dict[str, Any]:
    """The native sidecar: an init container that keeps running (``restartPolicy: Always``)."""
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.pull_policy,
        "restartPolicy": "Always",
        "args": ["run", "--role", "proxy", "--config", f"{CONFIG_DIR}/sidecar.yaml"],
    }
    if settings.vault_addr:
        container["env"] = [{"name": "VAULT_ADDR", "value": settings.vault_addr}]
    container["resources"] = RESOURCES
    container["securityContext"] = SECURITY_CONTEXT
    container.update(PROBES)
    container["volumeMounts"] = [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
    ]
    return container


def sidecar_volumes(config: str, settings: Settings) -> list[dict[str, Any]]:
    """Config from the ConfigMap; a Vault-audience token that the API server would reject."""
    token = {"audience": settings.audience, "expirationSeconds": 3600, "path": "token"}
    return [
        {"name": CONFIG_VOLUME, "configMap": {"name": config}},
        {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}},
        {"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]


def _init_container_ops(spec: Mapping[str, Any], settings: Settings) -> list[Op]:
    container = sidecar_container(settings)
    if spec.get("initContainers"):
        return [{"op": "add", "path": "/spec/initContainers/0", "value": container}]
    return [{"op": "add", "path": "/spec/initContainers", "value": [container]}]


def _volume_ops(spec: Mapping[str, Any], config: str, settings: Settings) -> list[Op]:
    volumes = sidecar_volumes(config, settings)
    if spec.get("volumes"):
        return [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes]
    return [{"op": "add", "path": "/spec/volumes", "value": volumes}]


def _proxy_env(settings: Settings) -> list[dict[str, str]]:
    """Upper and lower case both: curl, for one, reads only the lower-case ``http_proxy``."""
    vault_host = urlsplit(settings.vault_addr).hostname if settings.vault_addr else None
    hosts = ["127.0.0.1", "localhost", *([vault_host] if vault_host else []), *settings.no_proxy]
    no_proxy = ",".join(dict.fromkeys(hosts))
    values = {"HTTP_PROXY": PROXY_URL, "NO_PROXY": no_proxy}
    return [{"name": name, "value": values[name.upper()]} for name in PROXY_VARS]


def _env_ops(spec: Mapping[str, Any], env: list[dict[str, str]]) -> list[Op] | Refusal:
    ops: list[Op] = []
    for i, container in enumerate(spec.get("containers") or ()):
        existing = _names(container.get("env"))
        clash = [e["name"] for e in env if e["name"] in existing]
        if clash:
            return Refusal(
                f"{PROXY_ENV}: container {container.get('name')!r} already sets {clash[0]}; "
                "remove it or drop the annotation"
            )
        base = f"/spec/containers/{i}/env"
        if container.get("env"):
            ops += [{"op": "add", "path": f"{base}/-", "value": e} for e in env]
        else:
            ops.append({"op": "add", "path": base, "value": env})
    return ops
