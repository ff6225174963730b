"""AdmissionReview v1 in, AdmissionReview v1 out: the HTTP shell around :func:`patch.plan`.

Anything that is not a Pod CREATE is allowed unchanged: the webhook configuration only routes
pod creations here, and answering "allowed" for the rest keeps a misrouted request harmless.
A malformed review is a 400 (the API server then applies the configuration's failurePolicy).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from sidecar.injector.certs import CertReloader
from sidecar.injector.patch import Refusal, Settings, plan
from sidecar.logging import get_logger

log = get_logger("sidecar.injector")
API_VERSION = "admission.k8s.io/v1"
# The API server caps objects at about 1.5 MiB; a review carries the object once or twice.
MAX_REVIEW_BYTES = 4 * 1024 * 1024
SETTINGS = web.AppKey("settings", Settings)


class BadReview(ValueError):
    """The body is not an AdmissionReview v1 request."""


def review_response(review: Any, settings: Settings) -> dict[str, Any]:
    """The AdmissionReview to answer ``review`` with; raises :class:`BadReview`."""
    request = _request(review)
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    kind = (request.get("kind") or {}).get("kind")
    if kind == "Pod" and request.get("operation") == "CREATE":
        pod = request.get("object")
        if not isinstance(pod, Mapping):
            raise BadReview("request.object must be a Pod")
        _decide(response, pod, settings, request)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _request(review: Any) -> Mapping[str, Any]:
    if not isinstance(review, Mapping) or review.get("kind") != "AdmissionReview":
        raise BadReview("body must be an AdmissionReview")
    if review.get("apiVersion") != API_VERSION:
        raise BadReview(f"only {API_VERSION} is supported (admissionReviewVersions: [v1])")
    request = review.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str):
        raise BadReview("request.uid is missing")
    return request


def _decide(
    response: dict[str, Any],
    pod: Mapping[str, Any],
    settings: Settings,
    request: Mapping[str, Any],
) -> None:
    metadata = pod.get("metadata") or {}
    where = {
        "namespace": request.get("namespace"),
        "pod": metadata.get("name") or metadata.get("generateName"),
    }
    result = plan(pod, settings)
    if isinstance(result, Refusal):
        response["allowed"] = False
        response["status"] = {"code": 400, "reason": "BadRequest", "message": result.message}
        log.info("injector_refused", reason=result.message, **where)
    elif result:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(result).encode()).decode()
        log.info("injector_injected", ops=len(result), **where)


async def mutate(request: web.Request) -> web.Response:
    try:
        review = await request.json()
    except ValueError:
        return web.json_response({"message": "body is not JSON"}, status=400)
    try:
        answer = review_response(review, request.app[SETTINGS])
    except BadReview as exc:
        return web.json_response({"message": str(exc)}, status=400)
    return web.json_response(answer)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(settings: Settings, reloader: CertReloader | None = None) -> web.Application:
    """The injector's app; with ``reloader``, the certificate files are polled while it runs."""
    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app[SETTINGS] = settings
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    if reloader is not None:
        app.cleanup_ctx.append(reloader.watch)
    return app
