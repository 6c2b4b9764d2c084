"""``routeguard bench`` end to end in quick mode: the JSON schema and the Markdown caption.

Timings are noisy on shared machines, so nothing here asserts a time or a ratio's size: only
that every row carries positive figures for ours, the peer and their ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
