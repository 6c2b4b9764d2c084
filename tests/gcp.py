"""Google service-account credentials for tests of the Vertex AI provider: a fresh RSA key,
registered (or not) with the simulated upstream's OAuth token endpoint, written as the JSON
key file Google hands out, whose ``token_uri`` points at the simulated endpoint."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from routeguard.mock import MockServer

PROJECT = "rg-test-project"


def service_account(
    mock: MockServer, directory: Path, *, trusted: bool = True, project: str = PROJECT
) -> Path:
    """A service-account key file for ``mock``'s token endpoint; ``trusted``: its public
    key is registered there (else every token request is refused as Google would)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    name = f"rg-{uuid.uuid4().hex[:12]}"
    email = f"{name}@{project}.iam.gserviceaccount.com"
    if trusted:
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        mock.app.oauth.register(email, public)
    info: dict[str, Any] = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": uuid.uuid4().hex,
        "private_key": private,
        "client_email": email,
        "client_id": str(uuid.uuid4().int)[:21],
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": mock.url + "/token",
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(info), encoding="utf-8")
    return path
