"""How AWS Bedrock spells a model: ``{publisher}.{model}-v{n}:{m}``, behind an optional
cross-region inference-profile geography (``us.``, ``eu.``, ``global.``...) and inside an
ARN (``arn:aws:bedrock:...:inference-profile/us.anthropic...``). Read by the Bedrock adapter
(which publisher's rules apply) and by :mod:`routeguard.pricing` (which list price)."""

from __future__ import annotations

# Cross-region inference profiles prefix the model id with a geography.
GEOGRAPHIES = frozenset({"us", "eu", "apac", "us-gov", "ca", "jp", "au", "global"})


def bedrock_model(model: str) -> tuple[str, str]:
    """(publisher, model id without ARN, geography or version suffix) of a Bedrock model id:
    ``("anthropic", "anthropic.claude-3-5-haiku-20241022-v1")`` for
    ``us.anthropic.claude-3-5-haiku-20241022-v1:0``; publisher "" when the id has none."""
    name = model.rsplit("/", 1)[-1]
    parts = name.split(".")
    if len(parts) > 2 and parts[0] in GEOGRAPHIES:
        parts = parts[1:]
    base = ".".join(parts)
    head, colon, version = base.rpartition(":")
    if colon and version.isdigit():
        base = head
    return (parts[0] if len(parts) > 1 else ""), base
