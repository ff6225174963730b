"""The injector's decisions on real AdmissionReview v1 documents, applied with jsonpatch."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest

from sidecar.injector import patch
from sidecar.injector.webhook import review_response
from tests.k8s.helpers import SETTINGS, fixture, validate

CASES = ["minimal", "full"]


def pod_of(review: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = review["request"]["object"]
    return pod


def answer(review: dict[str, Any], settings: patch.Settings = SETTINGS) -> dict[str, Any]:
    response: dict[str, Any] = review_response(review, settings)["response"]
    return response


def patched(review: dict[str, Any]) -> dict[str, Any]:
    """The pod as the API server stores it after applying the webhook's patch."""
    response = answer(review)
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(pod_of(review), ops)
    return result


def annotated(**annotations: str | None) -> dict[str, Any]:
    """The minimal review with annotations changed (``None`` removes one)."""
    review = copy.deepcopy(fixture("review-minimal.json"))
    current = pod_of(review)["metadata"]["annotations"]
    for key, value in annotations.items():
        name = patch.PREFIX + key.replace("_", "-")
        if value is None:
            current.pop(name, None)
        else:
            current[name] = value
    return review


@pytest.mark.parametrize("case", CASES)
def test_patched_pod_matches_expected(case: str) -> None:
    """Applying the returned patch to the review's pod gives exactly the expected pod."""
    assert patched(fixture(f"review-{case}.json")) == fixture(f"pod-{case}.expected.json")


@pytest.mark.parametrize("case", CASES)
def test_injected_pod_is_a_valid_pod(case: str) -> None:
    """The injected pod passes strict schema validation for every pinned Kubernetes version."""
    validate(patched(fixture(f"review-{case}.json")))


@pytest.mark.parametrize("case", CASES)
def test_reinjection_is_a_no_op(case: str) -> None:
    """A pod that went through the injector once gets an empty patch the second time."""
    review = fixture(f"review-{case}.json")
    review["request"]["object"] = patched(review)
    response = answer(review)
    assert response == {"uid": review["request"]["uid"], "allowed": True}


def test_sidecar_by_hand_without_status_is_left_alone() -> None:
    """An init container already named credential-sidecar means injected: empty patch."""
    pod = pod_of(annotated())
    pod["spec"]["initContainers"] = [patch.sidecar_container(SETTINGS)]
    assert patch.plan(pod, SETTINGS) == []


def test_sidecar_runs_before_existing_init_containers() -> None:
    """The sidecar is inserted first, so later init containers can already use the proxy."""
    names = [c["name"] for c in patched(fixture("review-full.json"))["spec"]["initContainers"]]
    assert names == [patch.CONTAINER, "migrate"]


def test_pod_without_annotations_is_untouched() -> None:
    """A pod that asked for nothing is allowed with no patch at all."""
    review = fixture("review-plain.json")
    assert answer(review) == {"uid": review["request"]["uid"], "allowed": True}


def test_inject_false_is_untouched() -> None:
    """inject: "false" is an explicit no, not an error."""
    assert patch.plan(pod_of(annotated(inject="false")), SETTINGS) == []


def test_proxy_env_false_leaves_app_env_alone() -> None:
    """Without proxy-env the app containers keep their env exactly as they were."""
    ops = patch.plan(pod_of(annotated(proxy_env="false")), SETTINGS)
    assert isinstance(ops, list) and ops
    assert not [op for op in ops if op["path"].startswith("/spec/containers")]


def test_default_config_fills_a_missing_annotation() -> None:
    """With --default-config, a pod that names no ConfigMap gets the default one."""
    settings = patch.Settings(image="img", default_config="team-sidecar")
    ops = patch.plan(pod_of(annotated(config=None)), settings)
    assert isinstance(ops, list)
    volumes = next(op["value"] for op in ops if op["path"] == "/spec/volumes")
    assert volumes[0]["configMap"] == {"name": "team-sidecar"}


def test_no_proxy_names_vault_and_keeps_order() -> None:
    """NO_PROXY holds loopback, the Vault host and the cluster suffixes, each once."""
    settings = patch.Settings(image="img", vault_addr="http://localhost:8200")
    ops = patch.plan(pod_of(annotated()), settings)
    assert isinstance(ops, list)
    env = next(op["value"] for op in ops if op["path"] == "/spec/containers/0/env")
    assert {e["name"]: e["value"] for e in env}["NO_PROXY"] == (
        "127.0.0.1,localhost,.svc,.cluster.local"
    )


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"inject": "yes"}, 'credential-sidecar/inject: must be "true" or "false"'),
        ({"inject": "True"}, 'credential-sidecar/inject: must be "true" or "false"'),
        ({"proxy_env": "1"}, 'credential-sidecar/proxy-env: must be "true" or "false"'),
        ({"configmap": "x"}, "unknown annotation credential-sidecar/configmap"),
        ({"config": None}, "credential-sidecar/config names no ConfigMap"),
        ({"config": "Bad_Name"}, "'Bad_Name' is not a valid ConfigMap name"),
        ({"config": "-leading"}, "is not a valid ConfigMap name"),
        ({"config": "a" * 254}, "is not a valid ConfigMap name"),
    ],
)
def test_bad_annotations_are_refused(annotations: dict[str, str | None], message: str) -> None:
    """Annotations the injector cannot honour deny the pod with a message saying why."""
    review = annotated(**annotations)
    response = answer(review)
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is False and "patch" not in response
    assert message in response["status"]["message"]
    assert response["status"]["code"] == 400


def test_invalid_flag_is_refused_even_without_inject() -> None:
    """A typo in a flag is refused on any pod, so it cannot silently disable injection."""
    assert isinstance(
        patch.plan(pod_of(annotated(inject=None, proxy_env="ja")), SETTINGS), patch.Refusal
    )


def test_app_container_named_like_the_sidecar_is_refused() -> None:
    """A regular container called credential-sidecar clashes with the injected one."""
    review = annotated()
    pod_of(review)["spec"]["containers"][0]["name"] = patch.CONTAINER
    assert "is reserved" in answer(review)["status"]["message"]


def test_reserved_volume_name_is_refused() -> None:
    """A volume already using one of the sidecar's volume names is refused, not overwritten."""
    review = annotated()
    pod_of(review)["spec"]["volumes"] = [{"name": patch.TMP_VOLUME, "emptyDir": {}}]
    assert "volume name 'credential-sidecar-tmp'" in answer(review)["status"]["message"]


@pytest.mark.parametrize("name", ["HTTP_PROXY", "no_proxy"])
def test_existing_proxy_env_is_refused_not_clobbered(name: str) -> None:
    """proxy-env never overwrites an app's own proxy variable; it names the clash instead."""
    review = fixture("review-full.json")
    pod_of(review)["spec"]["containers"][1]["env"] = [{"name": name, "value": "http://corp:3128"}]
    message = answer(review)["status"]["message"]
    assert f"container 'worker' already sets {name}" in message


def test_status_annotation_path_is_escaped() -> None:
    """The slash in credential-sidecar/status is written ~1 in the JSON Pointer."""
    ops = patch.plan(pod_of(annotated()), SETTINGS)
    assert isinstance(ops, list)
    assert ops[-1] == {
        "op": "add",
        "path": "/metadata/annotations/credential-sidecar~1status",
        "value": "injected",
    }
    assert patch.escape("a~b/c") == "a~0b~1c"
