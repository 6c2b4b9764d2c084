"""Google Vertex AI as the simulated upstream speaks it, with Google's OAuth token endpoint.

Paths are ``/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/
{model}:{method}``: ``publishers/google`` serves Gemini's ``generateContent`` /
``streamGenerateContent`` (the Gemini wire format, :mod:`.gemini_wire`) and ``:predict``
for text embeddings (``instances`` / ``predictions``); ``publishers/anthropic`` serves
Claude's ``:rawPredict`` / ``:streamRawPredict`` (Anthropic Messages bodies without
``model``, with ``anthropic_version: vertex-2023-10-16``; :mod:`.anthropic_wire`), and
their token count, ``models/count-tokens:rawPredict`` (the model in the body).

Every Vertex call needs ``Authorization: Bearer`` with a token this mock's
:class:`GoogleOAuth` issued and that has not expired. ``POST /token`` is that endpoint: a
JWT-bearer grant (RFC 7523) whose assertion must be signed RS256 by a key registered with
:meth:`GoogleOAuth.register` (a test generates it and writes the service-account file),
with ``aud`` Google's token endpoint (or this one's URL) and the cloud-platform scope.
Errors are Google's ``{"error": {"code", "message", "status"}}``, except Claude's request
errors (400), which Vertex passes through in Anthropic's shape.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from routeguard.mock import anthropic_wire, gemini_wire
from routeguard.mock.answers import count_tokens, default_dimensions, embedding
from routeguard.mock.faults import Fault
from routeguard.mock.transport import JSON_HEADERS, Headers, encode

TOKEN_PATH = "/token"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ANTHROPIC_VERSION = "vertex-2023-10-16"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The audience Google requires of a service account's assertion, whatever token_uri says.
AUDIENCE = "https://oauth2.googleapis.com/token"
MAX_INSTANCES = 250  # text-embedding models; gemini-embedding takes one
_PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[a-z0-9-]+)"
    r"/publishers/(?P<publisher>google|anthropic)/models/(?P<model>[^/:]+):(?P<method>\w+)$"
)
GEMINI_METHODS = frozenset({"generateContent", "streamGenerateContent", "countTokens", "predict"})
CLAUDE_METHODS = frozenset({"rawPredict", "streamRawPredict"})


@dataclass(frozen=True, slots=True)
class VertexPath:
    """What a Vertex AI path names."""

    project: str
    location: str
    publisher: str
    model: str
    method: str


def parse_path(path: str) -> VertexPath | None:
    """The parts of a Vertex AI model path, or None if ``path`` is not one."""
    m = _PATH.match(path)
    if m is None:
        return None
    return VertexPath(**m.groupdict())


# --------------------------------------------------------------------------- OAuth


class GoogleOAuth:
    """Google's OAuth 2.0 token endpoint for service accounts, simulated (thread-safe).

    ``register(email, public_pem)`` trusts a key; ``lifetimes`` queues the ``expires_in`` of
    the next grants (default 3600 s); ``delay`` seconds pass before each answer; ``grants``
    counts tokens issued; ``revoke()`` makes every token issued so far invalid.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._tokens: dict[str, float] = {}  # access token -> expiry (time.time())
        self.lifetimes: deque[int] = deque()
        self.delay = 0.0
        self.grants = 0

    def register(self, client_email: str, public_pem: bytes) -> None:
        """Trust assertions from ``client_email`` signed by the key ``public_pem``."""
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        with self._lock:
            self._keys[client_email] = load_pem_public_key(public_pem)

    def revoke(self) -> None:
        """Invalidate every token issued so far (as revoking a key or a session does)."""
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = 0.0

    @property
    def issued(self) -> list[str]:
        """Every access token issued so far (for tests that look for leaks)."""
        with self._lock:
            return list(self._tokens)

    def grant(self, body: bytes, url: str) -> tuple[int, Headers, bytes]:
        """Answer one token request (form-encoded) received at ``url``."""
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        if form.get("grant_type") != JWT_BEARER:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type.")
        try:
            self._verify(form.get("assertion", ""), url)
        except ValueError as exc:
            return _oauth_error("invalid_grant", str(exc))
        token = "ya29.mock-" + secrets.token_urlsafe(24)
        with self._lock:
            lifetime = self.lifetimes.popleft() if self.lifetimes else 3600
            self._tokens[token] = time.time() + lifetime
            self.grants += 1
        answer = {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}
        return 200, list(JSON_HEADERS), encode(answer)

    def _verify(self, assertion: str, url: str) -> dict[str, Any]:
        """The claims of a valid RS256 assertion for this endpoint; ValueError says why not."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        parts = assertion.split(".")
        if len(parts) != 3:
            raise ValueError("Invalid JWT: expected header.claims.signature")
        header, claims = (json.loads(_b64(p)) for p in parts[:2])
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            raise ValueError("Invalid JWT: signing algorithm must be RS256.")
        if not isinstance(claims, dict):
            raise ValueError("Invalid JWT: claims must be an object.")
        with self._lock:
            key = self._keys.get(str(claims.get("iss")))
        if key is None:
            raise ValueError("Invalid grant: account not found")
        try:
            key.verify(
                _b64(parts[2]),
                f"{parts[0]}.{parts[1]}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise ValueError("Invalid JWT Signature.") from None
        if claims.get("aud") not in (AUDIENCE, url):
            raise ValueError(f"Invalid JWT: audience must be {AUDIENCE}.")
        if SCOPE not in str(claims.get("scope", "")).split():
            raise ValueError("Invalid OAuth scope or ID token audience provided.")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or not iat - 300 <= now <= exp:
            raise ValueError(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim."
            )
        return claims

    def check_bearer(self, headers: dict[str, str]) -> None:
        """Raise a 401 Fault unless the request carries a live token issued here."""
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None or expiry <= time.time():
            raise Fault(401, _UNAUTHENTICATED)


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _oauth_error(error: str, description: str) -> tuple[int, Headers, bytes]:
    body = encode({"error": error, "error_description": description})
    return 400, list(JSON_HEADERS), body


_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


# --------------------------------------------------------------------------- Claude bodies


COUNT_TOKENS_MODEL = "count-tokens"
"""The pseudo-model of Claude's token count on Vertex (``.../models/count-tokens:rawPredict``)."""


def claude_count_body(body: Any) -> Any:
    """A ``count-tokens:rawPredict`` body checked as Vertex does (the model in the body, the
    version, if given, Vertex's), as :func:`anthropic_wire.parse_messages` takes it."""
    if not isinstance(body, dict):
        raise Fault(400, "Invalid JSON payload received.")
    version = body.get("anthropic_version", ANTHROPIC_VERSION)
    if version != ANTHROPIC_VERSION:
        raise Fault(400, f"anthropic_version: Input should be '{ANTHROPIC_VERSION}' on Vertex AI")
    return {k: v for k, v in body.items() if k != "anthropic_version"}


def claude_body(body: Any, model: str) -> dict[str, Any]:
    """A ``rawPredict`` body checked as Vertex does, with ``model`` from the path added for
    :func:`anthropic_wire.parse_messages`."""
    if not isinstance(body, dict):
        raise Fault(400, "Invalid JSON payload received.")
    if "model" in body:
        raise Fault(400, "model: Extra inputs are not permitted (the model is in the URL)")
    if body.get("anthropic_version") != ANTHROPIC_VERSION:
        raise Fault(400, f"anthropic_version: Input should be '{ANTHROPIC_VERSION}' on Vertex AI")
    anthropic_wire.require_max_tokens(body)
    rest = {k: v for k, v in body.items() if k != "anthropic_version"}
    return {**rest, "model": model}


# --------------------------------------------------------------------------- embeddings


def predict_body(body: Any, model: str, ctx: int | None) -> bytes:
    """The ``:predict`` answer of a text-embedding model."""
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list) or not instances:
        raise Fault(400, "Invalid value at 'instances': expected a non-empty list.")
    limit = 1 if model.startswith("gemini-embedding") else MAX_INSTANCES
    if len(instances) > limit:
        raise Fault(
            400,
            f"Unable to submit request because {model} takes at most {limit} instance(s) per "
            f"request; got {len(instances)}.",
        )
    params = body.get("parameters") or {}
    dims = params.get("outputDimensionality") if isinstance(params, dict) else None
    dims = default_dimensions(model) if dims is None else dims
    if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
        raise Fault(400, "Invalid value at 'parameters.outputDimensionality'.")
    predictions = []
    chars = 0
    for i, inst in enumerate(instances):
        text = inst.get("content") if isinstance(inst, dict) else None
        if not isinstance(text, str) or not text:
            raise Fault(400, f"Invalid value at 'instances[{i}].content': expected text.")
        tokens = count_tokens(len(text))
        if ctx is not None and tokens > ctx:
            raise Fault(
                400,
                f"Unable to submit request because the input token count is {tokens} but "
                f"model only supports up to {ctx}. Reduce the input token count and try again.",
            )
        chars += len(text)
        values: list[float] = embedding(text, dims).tolist()
        stats = {"token_count": tokens, "truncated": False}
        predictions.append({"embeddings": {"values": values, "statistics": stats}})
    return encode({"predictions": predictions, "metadata": {"billableCharacterCount": chars}})


# --------------------------------------------------------------------------- errors


def render_gemini_fault(fault: Fault, model: str | None) -> tuple[int, Headers, bytes]:
    """A Vertex error in Google's shape (the Gemini API's, with Vertex's auth message)."""
    if fault.status == 401 and fault.message is None:
        fault.message = _UNAUTHENTICATED
    status, headers, body = gemini_wire.render_fault(fault, model)
    if status == 401:  # OAuth, not an API key: no API_KEY_INVALID detail
        data = json.loads(body)
        data["error"].pop("details", None)
        data["error"]["status"] = "UNAUTHENTICATED"
        body = encode(data)
    elif status == 404 and fault.message is None:
        data = json.loads(body)
        data["error"]["message"] = (
            f"Publisher Model `{model}` was not found or your project does not have access "
            "to it." + fault.hint()
        )
        body = encode(data)
    return status, headers, body


def render_claude_fault(fault: Fault, model: str | None) -> tuple[int, Headers, bytes]:
    """Claude on Vertex: request errors in Anthropic's shape, the platform's in Google's."""
    if fault.status in (400, 413):
        return anthropic_wire.render_fault(fault, model)
    return render_gemini_fault(fault, model)


def claude_context_fault(prompt: int, limit: int, max_tokens: int | None) -> Fault | None:
    """Anthropic's prompt-too-long error, passed through by Vertex."""
    return anthropic_wire.context_fault(prompt, limit, max_tokens)
