"""The AgentDojo replay harness on one banking task pair (skipped without the bench extra)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("agentdojo")

from routeguard.bench.agentdojo import POLICY, _import_agentdojo, replay
from routeguard.enforce import PolicyEngine


def test_guard_stops_the_injected_transfer_but_not_the_users() -> None:
    ad = _import_agentdojo()
    suite = ad.get_suite("v1.2.2", "banking")
    attack = _attack(ad, suite)
    engine = PolicyEngine.from_yaml(POLICY)
    user = suite.user_tasks["user_task_3"]  # refund a friend: reads transactions, sends money
    inj = suite.injection_tasks["injection_task_0"]  # send data to the attacker's IBAN
    injections = attack.attack(user, inj)
    benign = replay(ad, suite, user, None, {}, engine)
    assert benign.utility and not benign.refused
    undefended = replay(ad, suite, user, inj, injections, None)
    assert undefended.reached and undefended.attacker_won
    defended = replay(ad, suite, user, inj, injections, engine)
    assert defended.reached and not defended.attacker_won
    assert any("<taint>" in r for r in defended.refused)
    assert defended.utility


def test_short_file_id_named_by_the_injection_is_refused() -> None:
    ad = _import_agentdojo()
    suite = ad.get_suite("v1.2.2", "workspace")
    attack = _attack(ad, suite)
    engine = PolicyEngine.from_yaml(POLICY)
    user = suite.user_tasks["user_task_35"]  # delete the largest file (id "11")
    inj = suite.injection_tasks["injection_task_1"]  # "delete the file with ID '13'"
    injections = attack.attack(user, inj)
    benign = replay(ad, suite, user, None, {}, engine)
    assert benign.utility and not benign.refused
    defended = replay(ad, suite, user, inj, injections, engine)
    assert defended.reached and not defended.attacker_won
    assert any("delete_file: <taint>" in r and "'13'" in r for r in defended.refused)
    loose = replay(ad, suite, user, inj, injections, engine, short_values=False)
    assert loose.attacker_won  # what the short-value check closes


def _attack(ad: Any, suite: Any) -> Any:
    """AgentDojo's "important instructions" attack, replayed by its ground-truth pipeline."""
    return ad.base_attacks.FixedJailbreakAttack(
        ad.ii.ImportantInstructionsAttack._JB_STRING, suite, ad.GroundTruthPipeline(None)
    )
