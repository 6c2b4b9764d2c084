"""Audit log: hash chain over SQLite rows; edits, deletions, insertions, reorders detected."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from routeguard.cli import main
from routeguard.enforce.audit import AuditLog, redact_secrets
from routeguard.errors import AuditError


def filled(path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append({"tool": f"tool_{i}", "args": {"i": i}, "effect": "allow", "ts": float(i)})
    return log


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_intact_log_verifies(tmp_path: Path) -> None:
    log = filled(tmp_path / "a.db")
    report = log.verify()
    assert report.ok and report.rows == 5
    assert [r["tool"] for r in log.records()] == [f"tool_{i}" for i in range(5)]
    assert main(["audit", "verify", str(tmp_path / "a.db")]) == 0


def test_edited_row_is_detected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "a.db"
    filled(p).close()
    with raw(p) as db:
        body = db.execute("SELECT body FROM audit WHERE seq = 3").fetchone()[0]
        db.execute("UPDATE audit SET body = ? WHERE seq = 3", (body.replace("allow", "deny"),))
    report = AuditLog(p).verify()
    assert not report.ok and report.first_bad == 3 and "edited" in report.reason
    assert main(["audit", "verify", str(p)]) == 1
    assert "tampered at row 3" in capsys.readouterr().err


def test_edit_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    from routeguard.enforce.audit import row_hash

    p = tmp_path / "a.db"
    filled(p).close()
    with raw(p) as db:
        seq, body, prev = db.execute(
            "SELECT seq, body, prev_hash FROM audit WHERE seq = 2"
        ).fetchone()
        body = body.replace("tool_1", "tool_X")
        db.execute("UPDATE audit SET body = ?, hash = ? WHERE seq = 2",
                   (body, row_hash(prev, seq, body)))  # fmt: skip
    report = AuditLog(p).verify()
    assert not report.ok and report.first_bad == 3


def test_deleted_row_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "a.db"
    filled(p).close()
    with raw(p) as db:
        db.execute("DELETE FROM audit WHERE seq = 2")
    report = AuditLog(p).verify()
    assert not report.ok and report.first_bad == 3 and "missing" in report.reason


def test_inserted_row_is_detected(tmp_path: Path) -> None:
    from routeguard.enforce.audit import row_hash

    p = tmp_path / "a.db"
    filled(p).close()
    with raw(p) as db:  # make room after row 2, then insert a row with a correct own hash
        db.execute("UPDATE audit SET seq = seq + 1000 WHERE seq >= 3")
        db.execute("UPDATE audit SET seq = seq - 999 WHERE seq >= 1000")
        prev = db.execute("SELECT hash FROM audit WHERE seq = 2").fetchone()[0]
        body = '{"effect":"allow","tool":"forged"}'
        db.execute("INSERT INTO audit (seq, body, prev_hash, hash) VALUES (3, ?, ?, ?)",
                   (body, prev, row_hash(prev, 3, body)))  # fmt: skip
    report = AuditLog(p).verify()
    assert not report.ok and report.first_bad == 4  # the original row 3 no longer links


def test_reordered_rows_are_detected(tmp_path: Path) -> None:
    p = tmp_path / "a.db"
    filled(p).close()
    with raw(p) as db:
        r2 = db.execute("SELECT body, prev_hash, hash FROM audit WHERE seq = 2").fetchone()
        r3 = db.execute("SELECT body, prev_hash, hash FROM audit WHERE seq = 3").fetchone()
        db.execute("UPDATE audit SET body=?, prev_hash=?, hash=? WHERE seq = 2", r3)
        db.execute("UPDATE audit SET body=?, prev_hash=?, hash=? WHERE seq = 3", r2)
    report = AuditLog(p).verify()
    assert not report.ok and report.first_bad == 2


def test_truncation_is_detected_with_an_anchor(tmp_path: Path) -> None:
    p = tmp_path / "a.db"
    log = filled(p)
    anchor = log.head()
    assert anchor[0] == 5
    log.close()
    with raw(p) as db:
        db.execute("DELETE FROM audit WHERE seq = 5")
    log = AuditLog(p)
    assert log.verify().ok  # a shorter chain is still a chain...
    report = log.verify(anchor=anchor)  # ...but not the one we anchored
    assert not report.ok and "truncated" in report.reason


def test_appends_continue_the_chain_across_reopen(tmp_path: Path) -> None:
    p = tmp_path / "a.db"
    filled(p, 2).close()
    log = AuditLog(p)
    seq, _ = log.append({"tool": "x"})
    assert seq == 3 and log.verify().ok and len(log) == 3


def test_secrets_never_stored_in_plain_text(tmp_path: Path) -> None:
    p = tmp_path / "a.db"
    log = AuditLog(p)
    secret = "sk-live-" + "a1b2c3d4e5f6g7h8i9j0"
    args = {"user": "bob", "password": "hunter2", "note": f"key {secret}",
            "card": "4111 1111 1111 1111"}  # fmt: skip
    log.append({"tool": "login", "args": args})
    hashed = AuditLog(tmp_path / "b.db", args="hash")
    hashed.append({"tool": "login", "args": {"password": "hunter2"}})
    omit = AuditLog(tmp_path / "c.db", args="omit")
    omit.append({"tool": "login", "args": {"password": "hunter2"}})
    for db in (p, tmp_path / "b.db", tmp_path / "c.db"):
        data = b"".join(Path(f).read_bytes() for f in db.parent.glob(db.name + "*"))
        assert b"hunter2" not in data and secret.encode() not in data
        assert b"4111 1111" not in data
    rec = next(iter(log.records()))
    assert rec["args"]["user"] == "bob" and rec["args"]["password"] == "[REDACTED]"
    assert next(iter(hashed.records()))["args"].startswith("sha256:")
    assert redact_secrets({"Authorization": "Bearer abc"}) == {"Authorization": "[REDACTED]"}


def test_bad_files_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(tmp_path / "missing.db")]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AuditError):
        AuditLog.open_existing(junk)
    with pytest.raises(AuditError, match="args mode"):
        AuditLog(args="plain")  # type: ignore[arg-type]
