"""Agent identity: Ed25519 keys, ``did:key`` identifiers and signed delegation chains.

An :class:`AgentIdentity` holds an Ed25519 private key; its ``did`` is the ``did:key`` form of
the public key (multicodec ``ed25519-pub`` = varint 0xed → bytes ``ed 01``, then the 32 key
bytes, base58btc-encoded with the multibase prefix ``z``), so anyone can check a signature from
the identifier alone. A principal (a human's or an organisation's key) delegates to an agent
with a signed :class:`Delegation`; that agent may delegate on to a sub-agent, and so on. A
:class:`DelegationChain` is the list of links from the root. Each link names its issuer and
audience, the tools it grants (globs), its expiry, a trust ceiling, how many further hops it
allows, its depth and the hash of its parent link, and is signed by its issuer over a
canonical JSON encoding of all of that. :func:`verify_chain` needs the trusted root dids and
the acting agent's did (no roots, or a chain for another agent, is refused), walks the chain
and raises the first problem: :class:`~routeguard.errors.ForgedDelegation` (a signature that
does not verify), :class:`~routeguard.errors.DelegationExpired`,
:class:`~routeguard.errors.DelegationWidened` (a link asking for more tools, time, trust or
depth than its parent) or :class:`~routeguard.errors.BrokenDelegation` (links that do not
connect). Its result, a
:class:`VerifiedDelegation`, is what the guard uses: the agent's did, the tools (a sandbox
ceiling), the expiry, the trust ceiling and the delegation depth (``Principal.delegation_depth``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from routeguard.enforce.sandbox import Grant, tools_cover
from routeguard.errors import (
    BrokenDelegation,
    DelegationError,
    DelegationExpired,
    DelegationWidened,
    ForgedDelegation,
)

__all__ = [
    "AgentIdentity",
    "Delegation",
    "DelegationChain",
    "VerifiedDelegation",
    "b58decode",
    "b58encode",
    "did_from_public_key",
    "public_key_from_did",
    "verify_chain",
]

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_ED25519_PUB = b"\xed\x01"  # multicodec ed25519-pub (0xed) as an unsigned varint
_DID_PREFIX = "did:key:z"
_GENESIS = "0" * 64


def b58encode(data: bytes) -> str:
    """Base58btc (Bitcoin alphabet) encoding; leading zero bytes become ``1``s."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Decode base58btc; raises ``ValueError`` on a character outside the alphabet."""
    n = 0
    for c in text:
        i = _B58_INDEX.get(c)
        if i is None:
            raise ValueError(f"invalid base58 character {c!r}")
        n = n * 58 + i
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def did_from_public_key(key: Ed25519PublicKey) -> str:
    """The ``did:key`` identifier of an Ed25519 public key (``did:key:z6Mk...``)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _DID_PREFIX + b58encode(_ED25519_PUB + raw)


def public_key_from_did(did: str) -> Ed25519PublicKey:
    """The Ed25519 public key a ``did:key`` names; ``BrokenDelegation`` if it is not one."""
    if not isinstance(did, str) or not did.startswith(_DID_PREFIX):
        raise BrokenDelegation(f"not an Ed25519 did:key identifier: {did!r}")
    try:
        raw = b58decode(did[len(_DID_PREFIX) :])
    except ValueError as e:
        raise BrokenDelegation(f"malformed did:key {did!r}: {e}") from None
    if not raw.startswith(_ED25519_PUB) or len(raw) != 34:
        raise BrokenDelegation(f"did:key {did!r} is not an Ed25519 public key (multicodec 0xed)")
    return Ed25519PublicKey.from_public_bytes(raw[2:])


class AgentIdentity:
    """An Ed25519 key pair and its ``did:key``. The private key never leaves this object
    in plain text (:meth:`to_pem` encrypts it with a password)."""

    __slots__ = ("_key", "did")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.did = did_from_public_key(key.public_key())

    @classmethod
    def generate(cls) -> AgentIdentity:
        """A new random identity."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> AgentIdentity:
        """The identity of a 32-byte Ed25519 seed (deterministic; keep the seed secret)."""
        if len(seed) != 32:
            raise DelegationError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None) -> AgentIdentity:
        """Load a PKCS#8 PEM private key (as written by :meth:`to_pem`)."""
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as e:
            raise DelegationError(f"cannot load the private key: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise DelegationError("the PEM key is not an Ed25519 private key")
        return cls(key)

    def to_pem(self, password: bytes) -> bytes:
        """The private key as password-encrypted PKCS#8 PEM."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half."""
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature over ``data``."""
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"AgentIdentity({self.did!r})"

    def delegate(
        self,
        audience: str | AgentIdentity,
        tools: Iterable[str],
        *,
        ttl: float | None = None,
        expires_at: float | None = None,
        trust_ceiling: float = 1.0,
        max_depth: int = 0,
        parent: DelegationChain | None = None,
        now: float | None = None,
    ) -> DelegationChain:
        """Sign a delegation to ``audience`` and return the chain ending with it.

        Without ``parent`` this identity is the root. With one, this identity must be the
        parent chain's final audience, and the new link must narrow it (``DelegationWidened``
        otherwise). ``max_depth`` is how many further hops the audience may delegate.
        """
        t = time.time() if now is None else now
        if ttl is not None:
            expires_at = t + ttl
        if expires_at is None:
            raise DelegationError("a delegation needs an expiry (ttl or expires_at)")
        aud = audience.did if isinstance(audience, AgentIdentity) else audience
        public_key_from_did(aud)
        tools_t = tuple(sorted(Grant.of(tools).tools))
        links: tuple[Delegation, ...] = ()
        parent_hash, depth = _GENESIS, 1
        if parent is not None:
            links = parent.links
            last = links[-1]
            if last.audience != self.did:
                raise BrokenDelegation(
                    f"{self.did} cannot extend a chain delegated to {last.audience}"
                )
            parent_hash, depth = last.digest(), last.depth + 1
        body = _Body(self.did, aud, tools_t, float(expires_at), float(trust_ceiling),
                     int(max_depth), depth, parent_hash)  # fmt: skip
        link = Delegation(body=body, signature=self.sign(body.encode()).hex())
        if links:
            _check_narrows(links[-1], link, len(links))
        return DelegationChain((*links, link))


class _Body(msgspec.Struct, frozen=True, array_like=True):
    issuer: str
    audience: str
    tools: tuple[str, ...]
    expires_at: float
    trust_ceiling: float
    max_depth: int
    depth: int
    parent: str

    def encode(self) -> bytes:
        """The canonical bytes a signature covers (a fixed-order JSON array)."""
        return b"routeguard-delegation-v1:" + msgspec.json.encode(self)


class Delegation(msgspec.Struct, frozen=True):
    """One signed link: ``issuer`` grants ``audience`` the listed tools until ``expires_at``."""

    body: _Body
    signature: str  # hex

    @property
    def issuer(self) -> str:
        """The did that signed the link."""
        return self.body.issuer

    @property
    def audience(self) -> str:
        """The did the link delegates to."""
        return self.body.audience

    @property
    def tools(self) -> tuple[str, ...]:
        """The tool globs granted."""
        return self.body.tools

    @property
    def expires_at(self) -> float:
        """Unix seconds after which the link is void."""
        return self.body.expires_at

    @property
    def trust_ceiling(self) -> float:
        """The highest trust score the audience may be credited with."""
        return self.body.trust_ceiling

    @property
    def max_depth(self) -> int:
        """How many further hops the audience may delegate."""
        return self.body.max_depth

    @property
    def depth(self) -> int:
        """1 for a link signed by the root, 2 for the next, ..."""
        return self.body.depth

    def digest(self) -> str:
        """sha256 (hex) over the signed body and the signature: the next link's ``parent``."""
        return hashlib.sha256(self.body.encode() + bytes.fromhex(self.signature)).hexdigest()


class DelegationChain(msgspec.Struct, frozen=True):
    """Delegation links from the root issuer to the acting agent."""

    links: tuple[Delegation, ...]

    @property
    def root(self) -> str:
        """The did at the top of the chain."""
        return self.links[0].issuer if self.links else ""

    @property
    def agent(self) -> str:
        """The did the chain finally delegates to."""
        return self.links[-1].audience if self.links else ""

    def to_json(self) -> bytes:
        """The chain as JSON (to pass to a sub-agent or over the wire)."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> DelegationChain:
        """Parse a chain written by :meth:`to_json`; ``BrokenDelegation`` if malformed."""
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.ValidationError as e:
            raise BrokenDelegation(f"malformed delegation chain: {e}") from None
        except msgspec.DecodeError as e:
            raise BrokenDelegation(f"delegation chain is not valid JSON: {e}") from None

    def verify(
        self,
        *,
        roots: Iterable[str] | None = None,
        agent: str | None = None,
        now: float | None = None,
    ) -> VerifiedDelegation:
        """:func:`verify_chain` on this chain."""
        return verify_chain(self, roots=roots, agent=agent, now=now)


@dataclass(frozen=True, slots=True)
class VerifiedDelegation:
    """What a verified chain grants its final agent."""

    root: str
    agent: str
    tools: tuple[str, ...]
    expires_at: float
    trust_ceiling: float
    depth: int  # hops below the root's direct delegate (Principal.delegation_depth)

    def grant(self) -> Grant:
        """The chain's scope as a sandbox ceiling."""
        return Grant(frozenset(self.tools), self.expires_at)


def _check_narrows(parent: Delegation, child: Delegation, index: int) -> None:
    where = f"delegation link {index}"
    if parent.max_depth < 1:
        raise DelegationWidened(f"{where}: its parent allows no further delegation")
    if child.max_depth > parent.max_depth - 1:
        raise DelegationWidened(
            f"{where}: allows {child.max_depth} further hop(s), its parent only "
            f"{parent.max_depth - 1}"
        )
    extra = tools_cover(parent.tools, child.tools)
    if extra:
        raise DelegationWidened(
            f"{where}: grants tools its parent does not: {', '.join(extra)} "
            f"(parent grants: {', '.join(parent.tools) or 'nothing'})"
        )
    if child.expires_at > parent.expires_at:
        raise DelegationWidened(f"{where}: expires after its parent")
    if child.trust_ceiling > parent.trust_ceiling:
        raise DelegationWidened(
            f"{where}: trust ceiling {child.trust_ceiling} is above its parent's "
            f"{parent.trust_ceiling}"
        )


def _required_roots(roots: Iterable[str] | None) -> frozenset[str]:
    """The trusted root dids; refuses a missing or empty set (anyone could be a root)."""
    if isinstance(roots, str):
        roots = (roots,)
    root_set = frozenset(roots) if roots is not None else frozenset()
    if not root_set:
        raise BrokenDelegation(
            "delegation refused: no trusted roots are configured; pass roots=[did, ...] "
            "naming the principals allowed to start a delegation chain"
        )
    return root_set


def _check_agent(agent: str | None) -> None:
    """The acting agent must be named, by the did a chain can delegate to."""
    if agent is None:
        raise BrokenDelegation(
            "delegation refused: the acting agent is not identified by a did:key; an agent "
            "known only by a plain name cannot hold a delegation (give the agent as its "
            "AgentIdentity or did, and verify the chain with agent=<that did>)"
        )
    if not isinstance(agent, str) or not agent.startswith(_DID_PREFIX):
        raise BrokenDelegation(
            f"delegation refused: the acting agent {agent!r} is not a did:key, and a chain "
            "can only delegate to one; identify the agent by its AgentIdentity or did"
        )


def verify_chain(
    chain: DelegationChain | Sequence[Delegation],
    *,
    roots: Iterable[str] | None = None,
    agent: str | None = None,
    now: float | None = None,
) -> VerifiedDelegation:
    """Check every link of ``chain``; raise the first problem, or return what it grants.

    ``roots``: the dids trusted to start a chain; required (a chain anyone can sign for
    themselves proves nothing), so none or an empty list refuses the chain. ``agent``: the
    acting agent, which must be the chain's final audience; required too, and it must be a
    ``did:key`` (an agent known only by a plain name cannot hold a delegation).
    """
    links = chain.links if isinstance(chain, DelegationChain) else tuple(chain)
    root_set = _required_roots(roots)
    _check_agent(agent)
    if not links:
        raise BrokenDelegation("the delegation chain is empty")
    t = time.time() if now is None else now
    prev: Delegation | None = None
    for i, link in enumerate(links):
        where = f"delegation link {i}"
        b = link.body
        key = public_key_from_did(b.issuer)
        try:
            sig = bytes.fromhex(link.signature)
        except ValueError:
            raise ForgedDelegation(f"{where}: the signature is not hex") from None
        try:
            key.verify(sig, b.encode())
        except InvalidSignature:
            raise ForgedDelegation(
                f"{where}: the signature does not verify against issuer {b.issuer}"
            ) from None
        public_key_from_did(b.audience)
        if not all(math.isfinite(x) for x in (b.expires_at, b.trust_ceiling)):
            raise BrokenDelegation(f"{where}: expiry and trust ceiling must be finite numbers")
        if not 0.0 <= b.trust_ceiling <= 1.0:
            raise BrokenDelegation(f"{where}: trust ceiling {b.trust_ceiling} is not in [0, 1]")
        if prev is None:
            if b.issuer not in root_set:
                raise BrokenDelegation(f"{where}: issuer {b.issuer} is not a trusted root")
            if b.parent != _GENESIS or b.depth != 1:
                raise BrokenDelegation(f"{where}: the first link must have depth 1 and no parent")
        else:
            if b.issuer != prev.audience:
                raise BrokenDelegation(
                    f"{where}: issued by {b.issuer}, but the previous link delegates to "
                    f"{prev.audience}"
                )
            if b.parent != prev.digest() or b.depth != prev.depth + 1:
                raise BrokenDelegation(f"{where}: does not name the previous link as its parent")
            _check_narrows(prev, link, i)
        if t >= b.expires_at:
            raise DelegationExpired(f"{where}: expired at {b.expires_at:.0f} (now {t:.0f})")
        prev = link
    last = links[-1]
    if last.audience != agent:
        raise BrokenDelegation(
            f"the chain delegates to {last.audience}, not to the acting agent {agent}"
        )
    return VerifiedDelegation(
        root=links[0].issuer,
        agent=last.audience,
        tools=last.tools,
        expires_at=last.expires_at,
        trust_ceiling=min(lk.trust_ceiling for lk in links),
        depth=len(links) - 1,
    )
