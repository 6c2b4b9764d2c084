"""The Azure OpenAI wire format of the simulated upstream: OpenAI's bodies at Azure's paths.

``/openai/deployments/{name}/chat/completions`` and ``/embeddings`` need an
``api-version`` query parameter (the deployment name is the model the behaviour tokens are
read from); the versionless ``/openai/v1/...`` takes the name as the body's ``model``.
Auth is an ``api-key`` header or an Entra ID bearer token; neither, or the bad key, answers
Azure's 401. A model name with the token ``content-filter`` answers Azure's content-filter
400 (``code: content_filter`` with an ``innererror``). Streams open with Azure's
``prompt_filter_results`` chunk (no choices, empty model), as the real service does.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from routeguard.mock import openai_wire
from routeguard.mock.faults import Fault
from routeguard.mock.transport import Headers, StreamPlan, encode

# Versions the simulated service accepts on the /openai/deployments/ paths (dated GA and
# preview versions look like this).
_VERSION = r"^\d{4}-\d{2}-\d{2}(-preview)?$"
CONTENT_FILTER_TOKEN = "content-filter"
_FILTERED = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": True, "severity": "high"},
}


def route(path: str, query: dict[str, str]) -> tuple[str, str | None]:
    """(endpoint as the OpenAI path, deployment name or None) of an Azure path; raises the
    404 / 400 Azure answers for a malformed one."""
    if path.startswith("/openai/v1/"):
        rest = path[len("/openai/v1/") :]
        if rest in ("chat/completions", "embeddings", "responses"):
            return f"/v1/{rest}", None
        raise Fault(404, "Resource not found", code="404")
    if path == "/openai/responses":  # the preview Responses API: a dated version, no deployment
        version = query.get("api-version")
        if version is None or not re.match(_VERSION, version):
            raise Fault(400, "API version not supported", code="BadRequest")
        return "/v1/responses", None
    parts = path[len("/openai/deployments/") :].split("/", 1)
    if len(parts) != 2 or parts[1] not in ("chat/completions", "embeddings") or not parts[0]:
        raise Fault(404, "Resource not found", code="404")
    version = query.get("api-version")
    if version is None:
        raise Fault(404, "Resource not found", code="404")
    if not re.match(_VERSION, version):
        raise Fault(400, "API version not supported", code="BadRequest")
    return f"/v1/{parts[1]}", parts[0]


def check_auth(headers: dict[str, str], bad_key: str) -> None:
    """Azure's 401 unless an ``api-key`` or a bearer token (other than ``bad_key``) came."""
    key = headers.get("api-key")
    auth = headers.get("authorization", "")
    token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
    if (key is None and not token) or bad_key in (key, token):
        raise Fault(
            401,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource.",
            code="401",
        )


def content_filter_fault() -> Fault:
    """Azure's refusal of a prompt its content filter caught."""
    return Fault(
        400,
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy. Please modify your prompt and retry. To learn more about our "
        "content filtering policies please read our documentation: "
        "https://go.microsoft.com/fwlink/?linkid=2198766",
        param="prompt",
        code="content_filter",
    )


def with_prompt_filter(plan: StreamPlan) -> StreamPlan:
    """``plan`` opened by Azure's ``prompt_filter_results`` chunk."""
    chunk = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [
            {
                "prompt_index": 0,
                "content_filter_results": {
                    k: {"filtered": False, "severity": "safe"} for k in _FILTERED
                },
            }
        ],
    }
    plan.head = [b"data: " + encode(chunk) + b"\n\n", *plan.head]
    return plan


def render_fault(fault: Fault, model: str | None) -> tuple[int, Headers, bytes]:
    """OpenAI's error body with Azure's additions (``status``; the content filter's
    ``innererror``)."""
    status, headers, raw = openai_wire.render_fault(fault, model)
    body: Any = msgspec.json.decode(raw)
    err = body["error"]
    if fault.code == "content_filter":
        err["status"] = 400
        err["innererror"] = {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": _FILTERED,
        }
    elif fault.code in ("401", "404", "BadRequest"):
        body = {"error": {"code": fault.code, "message": err["message"]}}
    return status, headers, encode(body)
