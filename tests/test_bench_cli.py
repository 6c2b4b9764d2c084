"""``routeguard bench`` end to end in quick mode: the JSON schema and the Markdown caption.

Timings are noisy on shared machines, so nothing here asserts a time or a ratio's size: only
that every row carries positive figures for ours, the peer and their ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from routeguard.bench.report import cpu_model

EXE = Path(sys.executable).with_name("routeguard")


def test_quick_run_writes_json_and_markdown(tmp_path: Path) -> None:
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "routeguard.cli"]
    proc = subprocess.run(
        [*cmd, "bench", "--quick", "--suite", "gateway,budget,policy",
         "--json", str(out), "--markdown", str(md)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert isinstance(doc["cpu"], str) and doc["cpu"]
    assert isinstance(doc["simd"], str) and doc["simd"]
    assert doc["quick"] is True
    assert doc["skipped"] == {}
    assert {r["suite"] for r in doc["rows"]} == {"gateway", "budget", "policy"}
    for row in doc["rows"]:
        for key in ("ours", "peer", "ratio"):
            assert isinstance(row[key], float) and row[key] > 0, row
        assert row["peer_name"] and row["case"] and row["unit"]
    assert cpu_model() in md.read_text()
    assert cpu_model() in proc.stdout  # the printed table names the CPU too
    assert "[" in proc.stderr  # progress went to stderr


def test_unknown_suite_is_refused() -> None:
    from routeguard.cli import main

    assert main(["bench", "--suite", "nope"]) == 2


def test_litellm_is_found_by_option_or_env_else_left_out_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from routeguard.bench import proxy
    from routeguard.bench.suite import LITELLM_ENV

    exe = tmp_path / "litellm"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setattr(proxy, "litellm_executable", lambda: None)  # not importable here
    monkeypatch.delenv(LITELLM_ENV, raising=False)
    found, why = proxy.find_litellm(exe)
    assert found == exe and "--litellm" in why
    monkeypatch.setenv(LITELLM_ENV, str(exe))
    found, why = proxy.find_litellm()
    assert found == exe and LITELLM_ENV in why
    monkeypatch.setenv(LITELLM_ENV, str(tmp_path / "nope"))
    found, why = proxy.find_litellm()
    assert found is None and "not an executable file" in why
    monkeypatch.delenv(LITELLM_ENV)
    found, why = proxy.find_litellm()
    assert found is None
    assert "--litellm" in why and LITELLM_ENV in why and proxy.LITELLM_PIN in why


def test_the_proxy_benches_harness_reads_pins_and_code_trees(tmp_path: Path) -> None:
    from routeguard.bench import proxy

    assert proxy.pinned(None) == (None, None)
    assert proxy.pinned("0:1") == ({0}, {1})
    assert proxy.code_trees(tmp_path, []) == [("routeguard", str(tmp_path / "python"))]
    trees = proxy.code_trees(tmp_path, ["before=/x/python", "odd=/a=b"])
    assert trees[1:] == [("before", "/x/python"), ("odd", "/a=b")]


def test_the_simulated_upstream_starts_and_stops() -> None:
    import urllib.request

    from routeguard.bench import proxy

    proc, url = proxy.start_upstream()
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            assert r.status == 200
    finally:
        proxy.stop(proc)
    assert proc.poll() is not None
