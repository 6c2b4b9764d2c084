"""Identity: did:key encoding, and signed delegation chains that can only narrow."""

from __future__ import annotations

import msgspec
import pytest

from routeguard.enforce import Guard, PolicyEngine
from routeguard.enforce.identity import (
    AgentIdentity,
    DelegationChain,
    b58decode,
    b58encode,
    did_from_public_key,
    public_key_from_did,
    verify_chain,
)
from routeguard.errors import (
    BrokenDelegation,
    DelegationError,
    DelegationExpired,
    DelegationWidened,
    ForgedDelegation,
    PolicyError,
)

NOW = 1_767_268_800.0

# The did:key spec's first Ed25519 test vector (w3c-ccg did-method-key): the public key with
# multicodec prefix 0xed01, base58btc.
SPEC_DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
GUARD_POLICY = """
rules:
  - id: reads
    effect: allow
    action: {tool: ["read_*"]}
"""


def test_base58_round_trip_and_leading_zeros() -> None:
    for data in (b"", b"\0", b"\0\0\x01", b"hello world", bytes(range(256))):
        assert b58decode(b58encode(data)) == data
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
    with pytest.raises(ValueError):
        b58decode("0OIl")


def test_did_key_format() -> None:
    me = AgentIdentity.from_seed(bytes(32))
    assert me.did.startswith("did:key:z6Mk")  # 0xed01 prefix encodes to 6Mk
    assert did_from_public_key(public_key_from_did(me.did)) == me.did
    key = public_key_from_did(SPEC_DID)
    assert did_from_public_key(key) == SPEC_DID
    with pytest.raises(BrokenDelegation):
        public_key_from_did("did:web:example.com")
    with pytest.raises(BrokenDelegation):
        public_key_from_did("did:key:z" + b58encode(b"\x12\x00" + bytes(32)))  # not ed25519


def chain3() -> tuple[AgentIdentity, AgentIdentity, AgentIdentity, DelegationChain]:
    user, agent, sub = AgentIdentity.generate(), AgentIdentity.generate(), AgentIdentity.generate()
    c1 = user.delegate(agent, ["read_*", "send_email"], expires_at=NOW + 3600,
                       trust_ceiling=0.9, max_depth=1, now=NOW)  # fmt: skip
    c2 = agent.delegate(sub, ["read_file"], expires_at=NOW + 600, trust_ceiling=0.6,
                        parent=c1, now=NOW)  # fmt: skip
    return user, agent, sub, c2


def test_valid_chain_verifies_and_narrows() -> None:
    user, _agent, sub, chain = chain3()
    v = verify_chain(chain, roots=[user.did], agent=sub.did, now=NOW)
    assert v.tools == ("read_file",)
    assert v.trust_ceiling == 0.6
    assert v.expires_at == NOW + 600
    assert v.depth == 1
    assert v.root == user.did and v.agent == sub.did
    again = DelegationChain.from_json(chain.to_json())
    assert again.verify(roots=[user.did], agent=sub.did, now=NOW) == v


def test_forged_signature_is_rejected() -> None:
    user, _agent, sub, chain = chain3()
    link = chain.links[1]
    bad_sig = bytes.fromhex(link.signature)
    forged = msgspec.structs.replace(
        link, signature=bytes([bad_sig[0] ^ 1]).hex() + link.signature[2:]
    )
    with pytest.raises(ForgedDelegation, match="link 1"):
        verify_chain([chain.links[0], forged], roots=[user.did], agent=sub.did, now=NOW)
    # A body edited after signing (widened tools) fails the signature too.
    body = msgspec.structs.replace(link.body, tools=("*",))
    with pytest.raises(ForgedDelegation):
        verify_chain(
            [chain.links[0], msgspec.structs.replace(link, body=body)],
            roots=[user.did],
            agent=sub.did,
            now=NOW,
        )
    # A link re-signed by someone else than the issuer it names.
    mallory = AgentIdentity.generate()
    resigned = msgspec.structs.replace(link, signature=mallory.sign(link.body.encode()).hex())
    with pytest.raises(ForgedDelegation):
        verify_chain([chain.links[0], resigned], roots=[user.did], agent=sub.did, now=NOW)


def test_expired_link_is_rejected() -> None:
    user, _agent, sub, chain = chain3()
    with pytest.raises(DelegationExpired, match="link 1"):
        verify_chain(chain, roots=[user.did], agent=sub.did, now=NOW + 601)
    with pytest.raises(DelegationExpired, match="link 0"):
        verify_chain(chain, roots=[user.did], agent=sub.did, now=NOW + 3601)


def test_widened_delegation_is_rejected_at_signing_and_at_verification() -> None:
    user, agent, sub = AgentIdentity.generate(), AgentIdentity.generate(), AgentIdentity.generate()
    c1 = user.delegate(agent, ["read_*"], expires_at=NOW + 100, trust_ceiling=0.5, max_depth=2,
                       now=NOW)  # fmt: skip
    for kwargs, what in [
        ({"tools": ["read_file", "send_email"]}, "send_email"),
        ({"tools": ["read_file"], "expires_at": NOW + 200}, "expires after"),
        ({"tools": ["read_file"], "trust_ceiling": 0.9}, "trust ceiling"),
        ({"tools": ["read_file"], "max_depth": 2}, "hop"),
    ]:
        args = {"expires_at": NOW + 50, "trust_ceiling": 0.5, **kwargs}
        with pytest.raises(DelegationWidened, match=what):
            agent.delegate(sub, parent=c1, now=NOW, **args)  # type: ignore[arg-type]
    # A widened link signed directly (bypassing delegate()) is caught by verification.
    from routeguard.enforce.identity import Delegation, _Body

    body = _Body(agent.did, sub.did, ("*",), NOW + 50, 0.5, 0, 2, c1.links[0].digest())
    wide = Delegation(body=body, signature=agent.sign(body.encode()).hex())
    with pytest.raises(DelegationWidened, match="tools"):
        verify_chain([c1.links[0], wide], roots=[user.did], agent=sub.did, now=NOW)
    # No further hop allowed.
    c0 = user.delegate(agent, ["read_*"], expires_at=NOW + 100, now=NOW)
    with pytest.raises(DelegationWidened, match="no further delegation"):
        agent.delegate(sub, ["read_file"], expires_at=NOW + 50, parent=c0, now=NOW)


def test_broken_links_are_rejected() -> None:
    user, agent, sub, chain = chain3()
    l0, l1 = chain.links
    with pytest.raises(BrokenDelegation, match="not a trusted root"):
        verify_chain(chain, roots=[agent.did], agent=sub.did, now=NOW)
    with pytest.raises(BrokenDelegation, match="delegates to"):
        verify_chain(chain, roots=[user.did], agent=agent.did, now=NOW)
    with pytest.raises(BrokenDelegation, match="first link"):
        verify_chain([l1, l0], roots=[agent.did], agent=agent.did, now=NOW)  # reordered
    with pytest.raises(BrokenDelegation, match="previous link"):
        verify_chain([l0, l1, l1], roots=[user.did], agent=sub.did, now=NOW)  # a link repeated
    other = user.delegate(sub, ["read_*"], expires_at=NOW + 100, max_depth=1, now=NOW)
    with pytest.raises(BrokenDelegation, match="previous link delegates"):
        verify_chain([other.links[0], l1], roots=[user.did], agent=sub.did, now=NOW)  # spliced
    with pytest.raises(BrokenDelegation, match="empty"):
        verify_chain([], roots=[user.did], agent=sub.did, now=NOW)
    with pytest.raises(BrokenDelegation, match="malformed"):
        DelegationChain.from_json(b'{"links": [{"body": 1}]}')
    with pytest.raises(BrokenDelegation, match="extend"):
        sub.delegate(user, ["read_file"], expires_at=NOW + 10, parent=chain3()[3], now=NOW)


def test_errors_sit_in_the_hierarchy() -> None:
    assert issubclass(ForgedDelegation, DelegationError)
    assert issubclass(DelegationError, PolicyError)
    with pytest.raises(DelegationError, match="expiry"):
        AgentIdentity.generate().delegate(AgentIdentity.generate(), ["x"])


def test_private_key_is_stored_only_encrypted() -> None:
    me = AgentIdentity.generate()
    pem = me.to_pem(b"pw")
    assert b"ENCRYPTED" in pem
    assert AgentIdentity.from_pem(pem, b"pw").did == me.did
    with pytest.raises(DelegationError, match="cannot load"):
        AgentIdentity.from_pem(pem, b"wrong")


def test_no_trusted_roots_refuses_a_self_signed_chain() -> None:
    """Item 10: with no roots configured, a chain anyone signed for themselves granting
    ``*`` used to verify; now delegation is refused with a clear error."""
    mallory, agent = AgentIdentity.generate(), AgentIdentity.generate()
    chain = mallory.delegate(agent, ["*"], ttl=3600)
    for roots in (None, [], ()):
        with pytest.raises(BrokenDelegation, match="no trusted roots are configured"):
            verify_chain(chain, roots=roots, agent=agent.did)
    with pytest.raises(BrokenDelegation, match="no trusted roots"):
        chain.verify(agent=agent.did)
    engine = PolicyEngine.from_yaml(GUARD_POLICY)
    with pytest.raises(BrokenDelegation, match="no trusted roots"):
        Guard(engine, agent=agent, delegation=chain)
    # A root given as one string is one root (not a set of its characters).
    assert verify_chain(chain, roots=mallory.did, agent=agent.did).tools == ("*",)


def test_the_chain_must_end_at_the_acting_agent() -> None:
    """Item 10: a chain for another did used to be accepted for a plain agent id such as
    ``helper-str``; the chain's final audience must now be the acting agent's did."""
    user, helper = AgentIdentity.generate(), AgentIdentity.generate()
    chain = user.delegate(helper, ["read_*"], ttl=3600)
    for agent in (None, "helper-str", helper.did.removeprefix("did:key:")):
        with pytest.raises(BrokenDelegation, match=r"is not .*did:key"):
            verify_chain(chain, roots=[user.did], agent=agent)
    with pytest.raises(BrokenDelegation, match="not to the acting agent"):
        verify_chain(chain, roots=[user.did], agent=AgentIdentity.generate().did)
    engine = PolicyEngine.from_yaml(GUARD_POLICY)
    with pytest.raises(BrokenDelegation, match="did:key"):
        Guard(engine, agent="helper-str", delegation=chain, roots=[user.did])
    with pytest.raises(BrokenDelegation, match="not to the acting agent"):
        Guard(engine, agent=AgentIdentity.generate(), delegation=chain, roots=[user.did])
    g = Guard(engine, agent=helper, delegation=chain, roots=[user.did])
    assert g.delegation is not None and g.delegation.agent == helper.did
    assert g.check("read_file").allowed
