"""The deploy/k8s manifests: schema-valid (strict), hardened, and in step with the injector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sidecar.injector import patch
from tests.k8s.helpers import (
    K8S,
    find,
    kustomize_command,
    load_kustomization,
    render,
    validate,
)

KUSTOMIZATIONS = ["base", "admin", "overlays/example", "injector/base", "injector/cert-manager"]
needs_kustomize = pytest.mark.skipif(
    kustomize_command() is None, reason="neither kubectl nor kustomize is installed"
)


def base_deployment() -> dict[str, Any]:
    return find(load_kustomization(K8S / "base"), "Deployment", "payments-app")


def sidecar_of(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in spec["initContainers"] if c["name"] == patch.CONTAINER)


def quantity(value: str) -> float:
    """Enough of Kubernetes' quantity grammar for the values used here."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


@pytest.mark.parametrize("directory", ["base", "admin", "injector/base"])
def test_documents_validate_without_kustomize(directory: str) -> None:
    """Every document of a plain kustomization is valid in strict mode for each pinned version."""
    docs = load_kustomization(K8S / directory)
    assert docs
    for doc in docs:
        validate(doc)


@needs_kustomize
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_rendered_kustomizations_validate(directory: str) -> None:
    """The kustomize output of every base and overlay is valid in strict mode."""
    docs = render(K8S / directory)
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith("cert-manager.io/"):
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                validate(doc)  # a CRD: no built-in schema; cert-manager checks it on apply
            continue
        validate(doc)


def test_sidecar_is_a_hardened_native_sidecar() -> None:
    """The sidecar is an always-restarting init container, non-root, read-only, small."""
    deployment = base_deployment()
    pod = deployment["spec"]["template"]["spec"]
    sidecar = sidecar_of(deployment)
    assert sidecar["restartPolicy"] == "Always"
    assert pod["initContainers"][0] is sidecar
    ctx = sidecar["securityContext"]
    assert ctx["runAsNonRoot"] and ctx["readOnlyRootFilesystem"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    requests, limits = sidecar["resources"]["requests"], sidecar["resources"]["limits"]
    assert quantity(requests["memory"]) <= 64 * 2**20 and quantity(requests["cpu"]) <= 0.05
    assert quantity(limits["memory"]) >= quantity(requests["memory"])
    assert quantity(limits["cpu"]) >= quantity(requests["cpu"])
    assert pod["automountServiceAccountToken"] is False


def test_probes_use_the_health_listener() -> None:
    """Startup and readiness ask /readyz, liveness /healthz, all on the health port 8098."""
    sidecar = sidecar_of(base_deployment())
    paths = {name: sidecar[name]["httpGet"] for name in patch.PROBES}
    assert paths == {
        "startupProbe": {"path": "/readyz", "port": 8098},
        "readinessProbe": {"path": "/readyz", "port": 8098},
        "livenessProbe": {"path": "/healthz", "port": 8098},
    }


def test_base_sidecar_matches_what_the_injector_adds() -> None:
    """Hand-written and injected sidecars share hardening, sizing, probes, mounts and volumes."""
    deployment = base_deployment()
    written = sidecar_of(deployment)
    injected = patch.sidecar_container(patch.Settings(image=written["image"]))
    for key in ("securityContext", "resources", "volumeMounts", "args", "restartPolicy"):
        assert written[key] == injected[key], key
    for key in patch.PROBES:
        assert written[key] == injected[key], key
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for volume in patch.sidecar_volumes("payments-app-sidecar", patch.Settings(image="x")):
        assert volumes[volume["name"]] == volume


VAULT_ENV = {"VAULT_ADDR": "https://vault.example.internal:8200"}


def configmap_text() -> str:
    docs = load_kustomization(K8S / "base")
    text: str = find(docs, "ConfigMap", "payments-app-sidecar")["data"]["sidecar.yaml"]
    return text


def test_sidecar_config_in_the_configmap_is_valid() -> None:
    """The ConfigMap's vault and listen sections load; health is open, proxy and local stay on
    loopback, and the pod's sidecar runs the proxy role (no admin listener in the pod)."""
    from sidecar import config

    data = yaml.safe_load(configmap_text())
    data.pop("upstreams")  # checked with their schemes below
    cfg = config.loads(yaml.safe_dump(data), VAULT_ENV)
    assert cfg.listen.health == f"0.0.0.0:{patch.HEALTH_PORT}"
    assert config.is_loopback(cfg.listen.local) and config.is_loopback(cfg.listen.proxy)
    assert "admin" not in data["listen"] and "admin" not in data
    assert cfg.listen.proxy == patch.PROXY_URL.removeprefix("http://")
    assert cfg.vault.auth.method == "kubernetes"
    assert cfg.vault.auth.jwt_path == Path(patch.TOKEN_DIR) / "token"
    assert cfg.vault.create_transit_key is False


def test_sidecar_config_upstreams_are_valid() -> None:
    """The whole file, upstreams and their scheme options included, passes `config check`."""
    pytest.importorskip("sidecar.schemes.placetopay", reason="built-in schemes not in the tree")
    from sidecar import config

    assert set(config.loads(configmap_text(), VAULT_ENV).upstreams) == {"placetopay", "paynet"}


def test_configmap_is_what_the_pod_mounts() -> None:
    """The Deployment mounts the generated ConfigMap under the name the base gives it."""
    docs = load_kustomization(K8S / "base")
    volumes = base_deployment()["spec"]["template"]["spec"]["volumes"]
    config_volume = next(v for v in volumes if v["name"] == patch.CONFIG_VOLUME)
    assert find(docs, "ConfigMap", config_volume["configMap"]["name"])


def test_network_policy_allows_only_dns_vault_and_https() -> None:
    """Egress is limited to DNS (53), Vault (8200) and providers over HTTPS (443)."""
    policy = find(load_kustomization(K8S / "base"), "NetworkPolicy", "payments-app-egress")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "payments-app"
    }
    ports = [
        {(p["protocol"], p["port"]) for p in rule["ports"]} for rule in policy["spec"]["egress"]
    ]
    assert ports == [{("UDP", 53), ("TCP", 53)}, {("TCP", 8200)}, {("TCP", 443)}]
    assert all(rule.get("to") for rule in policy["spec"]["egress"])


@needs_kustomize
def test_overlay_sets_namespace_images_and_vault() -> None:
    """The example overlay moves everything to its namespace, registry and external Vault."""
    docs = render(K8S / "overlays/example")
    assert {d["metadata"]["namespace"] for d in docs} == {"payments"}
    deployment = find(docs, "Deployment", "payments-app")
    sidecar = sidecar_of(deployment)
    assert sidecar["image"] == "registry.example.com/platform/credential-sidecar:0.1.0"
    assert sidecar["env"] == [
        {"name": "VAULT_ADDR", "value": "https://vault.example.internal:8200"}
    ]
    assert deployment["spec"]["replicas"] == 3
    egress = find(docs, "NetworkPolicy", "payments-app-egress")["spec"]["egress"]
    assert egress[1]["to"] == [{"ipBlock": {"cidr": "198.51.100.10/32"}}]
    admin = find(docs, "Deployment", "sidecar-admin")
    (container,) = admin["spec"]["template"]["spec"]["containers"]
    assert container["image"] == sidecar["image"] and container["env"] == sidecar["env"]
    assert admin["spec"]["replicas"] == 3


def test_webhook_configuration_is_scoped_and_v1() -> None:
    """The webhook takes v1 reviews of pod creations in opted-in namespaces only."""
    docs = load_kustomization(K8S / "injector/base")
    (hook,) = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Fail"
    assert 1 <= hook["timeoutSeconds"] <= 10
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["namespaceSelector"]["matchLabels"] == {"credential-sidecar/injection": "enabled"}
    service = find(docs, "Service", hook["clientConfig"]["service"]["name"])
    assert hook["clientConfig"]["service"]["path"] == "/mutate"
    assert service["spec"]["ports"][0]["port"] == hook["clientConfig"]["service"]["port"]


def test_injector_deployment_runs_the_same_image_hardened() -> None:
    """The injector runs `sidecar injector` from the sidecar's image with mounted TLS files."""
    deployment = find(load_kustomization(K8S / "injector/base"), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"][1:])
    assert container["args"][0] == "injector"
    assert args["image"] == container["image"]
    assert args["tls-cert"].startswith(container["volumeMounts"][0]["mountPath"])
    assert container["securityContext"] == patch.SECURITY_CONTEXT
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_cli_certificate_defaults_name_the_manifests_service() -> None:
    """`sidecar injector --write-certs` defaults to the Service the webhook calls."""
    from sidecar.injector.cli import parser

    docs = load_kustomization(K8S / "injector/base")
    (hook,) = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    defaults = parser().parse_args([])
    service = hook["clientConfig"]["service"]
    assert (defaults.service, defaults.namespace) == (service["name"], service["namespace"])


def test_pod_sidecar_runs_the_proxy_role() -> None:
    """The hand-written and the injected sidecar both run `sidecar run --role proxy`."""
    injected = patch.sidecar_container(patch.Settings(image="x"))
    assert sidecar_of(base_deployment())["args"][:3] == ["run", "--role", "proxy"]
    assert injected["args"][:3] == ["run", "--role", "proxy"]


def admin_docs() -> list[dict[str, Any]]:
    return load_kustomization(K8S / "admin")


def test_admin_deployment_runs_the_admin_role_behind_a_service() -> None:
    """Several replicas of `sidecar admin`, same hardening as the pod sidecar, a Service on the
    admin port, probes on the health port, its own ServiceAccount."""
    docs = admin_docs()
    deployment = find(docs, "Deployment", "sidecar-admin")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] >= 2
    assert container["args"] == ["admin", "--config", "/etc/sidecar/sidecar.yaml"]
    assert container["securityContext"] == patch.SECURITY_CONTEXT
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["port"] == "health" and ports["health"] == 8098
    service = find(docs, "Service", "sidecar-admin")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["admin"]
    assert ports["admin"] == 8099


def test_admin_config_authenticates_with_vault_tokens() -> None:
    """The admin ConfigMap loads: admin listener on the pod IP for the Service, Vault-token
    authentication on, its own Vault role, and no proxy listener used."""
    from sidecar import config
    from sidecar.server import Server

    text = find(admin_docs(), "ConfigMap", "sidecar-admin")["data"]["sidecar.yaml"]
    cfg = config.loads(text, VAULT_ENV)
    assert cfg.listen.admin == "0.0.0.0:8099" and cfg.admin.vault_tokens is True
    assert cfg.vault.auth.role == "payments-admin" and cfg.vault.create_transit_key is False
    assert Server(cfg, "admin").admin_auth().required


def test_admin_network_policy_admits_only_labelled_namespaces() -> None:
    """The admin port only from namespaces labelled as admin clients (never the app pods);
    the health port for the kubelet; egress DNS, Vault and HTTPS."""
    policy = find(admin_docs(), "NetworkPolicy", "sidecar-admin")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    admin_rule, health_rule = policy["ingress"]
    assert admin_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"credential-sidecar/admin-clients": "true"}}}
    ]
    assert [p["port"] for p in admin_rule["ports"]] == [8099]
    assert "from" not in health_rule and [p["port"] for p in health_rule["ports"]] == [8098]
    ports = [{p["port"] for p in rule["ports"]} for rule in policy["egress"]]
    assert ports == [{53}, {8200}, {443}]
