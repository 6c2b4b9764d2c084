"""Audit log: hash chain over SQLite rows; edits, deletions, insertions, reorders detected."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from routeguard.cli import main
from routeguard.enforce.audit import AuditLog, redact_secrets
from routeguard.errors import AuditError


@pytest.fixture(autouse=True)
def audit_key(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every log here is keyed through the environment, as a deployment would be."""
    key = tmp_path_factory.mktemp("keys") / "audit.key"
    key.write_bytes(os.urandom(32).hex().encode())
    monkeypatch.setenv("ROUTEGUARD_AUDIT_KEY_FILE", str(key))
    monkeypatch.delenv("ROUTEGUARD_AUDIT_KEY", raising=False)
    return key


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
    report = AuditLog.open_existing(p).verify()
    assert not report.ok and report.first_bad == 3 and "edited" in report.reason
    assert main(["audit", "verify", str(p)]) == 1
    assert "tampered at row 3" in capsys.readouterr().err


def test_edit_with_a_recomputed_unkeyed_hash_is_detected(tmp_path: Path) -> None:
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
    report = AuditLog.open_existing(p).verify()
    assert not report.ok and report.first_bad == 2 and "unkeyed row after keyed" in report.reason


def test_deleted_row_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "a.db"
    filled(p).close()
    with raw(p) as db:
        db.execute("DELETE FROM audit WHERE seq = 2")
    report = AuditLog.open_existing(p).verify()
    assert not report.ok and report.first_bad == 3 and "missing" in report.reason


def test_inserted_row_is_detected(tmp_path: Path) -> None:
    from routeguard.enforce.audit import row_mac

    p = tmp_path / "a.db"
    filled(p).close()
    with raw(p) as db:  # make room after row 2, then insert a row with a correct own hash
        db.execute("UPDATE audit SET seq = seq + 1000 WHERE seq >= 3")
        db.execute("UPDATE audit SET seq = seq - 999 WHERE seq >= 1000")
        prev = db.execute("SELECT hash FROM audit WHERE seq = 2").fetchone()[0]
        body = '{"effect":"allow","tool":"forged"}'
        db.execute("INSERT INTO audit (seq, body, prev_hash, hash) VALUES (3, ?, ?, ?)",
                   (body, prev, row_mac(b"a guessed key...", prev, 3, body)))  # fmt: skip
    report = AuditLog.open_existing(p).verify()
    assert not report.ok and report.first_bad == 3 and "without the key" in report.reason


def test_reordered_rows_are_detected(tmp_path: Path) -> None:
    p = tmp_path / "a.db"
    filled(p).close()
    with raw(p) as db:
        r2 = db.execute("SELECT body, prev_hash, hash FROM audit WHERE seq = 2").fetchone()
        r3 = db.execute("SELECT body, prev_hash, hash FROM audit WHERE seq = 3").fetchone()
        db.execute("UPDATE audit SET body=?, prev_hash=?, hash=? WHERE seq = 2", r3)
        db.execute("UPDATE audit SET body=?, prev_hash=?, hash=? WHERE seq = 3", r2)
    report = AuditLog.open_existing(p).verify()
    assert not report.ok and report.first_bad == 2


def test_truncation_is_detected_with_an_anchor(tmp_path: Path) -> None:
    p = tmp_path / "a.db"
    log = filled(p)
    anchor = log.head()
    assert anchor[0] == 5
    log.close()
    with raw(p) as db:
        db.execute("DELETE FROM audit WHERE seq = 5")
    report = AuditLog.open_existing(p, checkpoint=tmp_path / "none").verify(anchor=anchor)
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


def _decisions(path: Path) -> None:
    log = AuditLog(path)
    for i, effect in enumerate(["allow", "deny", "allow", "deny", "allow"]):
        log.append({"tool": "send_money", "args": {"amount": i}, "effect": effect, "ts": float(i)})
    log.close()


def _rewrite(path: Path, seq: int, old: str, new: str) -> None:
    """What someone who can write the file does: edit a row, then recompute every hash after
    it the only way they can, without the key (the sha256 chain of the old format)."""
    from routeguard.enforce.audit import GENESIS, row_hash

    with raw(path) as db:
        rows = db.execute("SELECT seq, body FROM audit ORDER BY seq").fetchall()
        prev = GENESIS
        for s, body in rows:
            if s == seq:
                body = body.replace(old, new)
            h = row_hash(prev, s, body)
            db.execute(
                "UPDATE audit SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (body, prev, h, s),
            )
            prev = h


def test_rewritten_row_with_recomputed_chain_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 11: a denied row changed to allowed, every later hash recomputed: `audit verify`
    used to exit 0; the keyed chain makes it exit 1."""
    p = tmp_path / "a.db"
    _decisions(p)
    _rewrite(p, 2, '"effect":"deny"', '"effect":"allow"')
    assert main(["audit", "verify", str(p)]) == 1
    # Every row now carries a valid unkeyed hash, but the signed checkpoint names row 5's
    # keyed hash.
    assert "tampered at row 5: row 5 differs from the checkpoint" in capsys.readouterr().err
    # Rehashed with a guessed key instead: still caught.
    from routeguard.enforce.audit import GENESIS, row_mac

    q = tmp_path / "b.db"
    _decisions(q)
    with raw(q) as db:
        prev = GENESIS
        for s, body in db.execute("SELECT seq, body FROM audit ORDER BY seq").fetchall():
            body = body.replace('"effect":"deny"', '"effect":"allow"')
            h = row_mac(b"guessed-key-0123456789", prev, s, body)
            db.execute(
                "UPDATE audit SET body=?, prev_hash=?, hash=? WHERE seq=?", (body, prev, h, s)
            )
            prev = h
    report = AuditLog.open_existing(q).verify()
    assert not report.ok and report.first_bad == 1 and "without the key" in report.reason
    assert main(["audit", "verify", str(q)]) == 1


def test_deleting_the_newest_rows_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 11: deleting the newest rows leaves a valid shorter chain; `audit verify` used to
    exit 0. The signed checkpoint names the newest row, so it exits 1."""
    p = tmp_path / "a.db"
    _decisions(p)
    assert main(["audit", "verify", str(p)]) == 0
    before = capsys.readouterr().out
    with raw(p) as db:
        db.execute("DELETE FROM audit WHERE seq >= 4")
    assert main(["audit", "verify", str(p)]) == 1
    assert "row 5, which is gone (log truncated)" in capsys.readouterr().err
    assert "keyed hash chain intact, checkpoint at row 5 present" in before
    # The gateway does not silently start over on a truncated log either.
    with pytest.raises(AuditError, match="row 5, named by its checkpoint, is gone"):
        AuditLog(p)
    # Nor does emptying it, or deleting the database and starting a new one, go unnoticed.
    with raw(p) as db:
        db.execute("DELETE FROM audit")
    assert main(["audit", "verify", str(p)]) == 1


def test_the_checkpoint_cannot_be_deleted_or_forged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    p = tmp_path / "a.db"
    _decisions(p)
    cp = Path(str(p) + ".checkpoint")
    saved = json.loads(cp.read_text())
    with raw(p) as db:
        db.execute("DELETE FROM audit WHERE seq = 5")
        row4 = db.execute("SELECT hash FROM audit WHERE seq = 4").fetchone()[0]
    cp.write_text(json.dumps({**saved, "seq": 4, "hash": row4}))  # point it at the new head
    assert main(["audit", "verify", str(p)]) == 1
    assert "checkpoint's HMAC does not verify" in capsys.readouterr().err
    cp.unlink()
    assert main(["audit", "verify", str(p)]) == 1
    assert "checkpoint is missing" in capsys.readouterr().err
    cp.write_text("{not json")
    assert main(["audit", "verify", str(p)]) == 1
    assert "malformed" in capsys.readouterr().err


def test_a_file_log_needs_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "a.db"
    _decisions(p)
    monkeypatch.delenv("ROUTEGUARD_AUDIT_KEY_FILE")
    with pytest.raises(AuditError, match="needs a key kept outside the database"):
        AuditLog(tmp_path / "new.db")
    assert main(["audit", "verify", str(p)]) == 2
    assert "no audit key" in capsys.readouterr().err
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(os.urandom(32))
    assert main(["audit", "verify", str(p), "--key-file", str(wrong)]) == 1
    with pytest.raises(AuditError, match="wrong key, or forged"):
        AuditLog(p, key_file=wrong)
    monkeypatch.setenv("ROUTEGUARD_AUDIT_KEY", "short")
    with pytest.raises(AuditError, match="too short"):
        AuditLog(tmp_path / "c.db")
    monkeypatch.setenv("ROUTEGUARD_AUDIT_KEY", "x" * 32)
    assert AuditLog(tmp_path / "d.db").keyed
    assert AuditLog().verify().authenticated  # in memory: an ephemeral key


def test_a_legacy_log_stays_readable_and_is_keyed_from_its_next_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from routeguard.enforce.audit import GENESIS, row_hash

    p = tmp_path / "old.db"
    with raw(p) as db:  # a log written before keys existed
        db.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, body TEXT NOT NULL, "
                   "prev_hash TEXT NOT NULL, hash TEXT NOT NULL)")  # fmt: skip
        prev = GENESIS
        for s in (1, 2):
            body = f'{{"effect":"deny","tool":"t{s}"}}'
            h = row_hash(prev, s, body)
            db.execute("INSERT INTO audit VALUES (?, ?, ?, ?)", (s, body, prev, h))
            prev = h
    with AuditLog.open_existing(p) as old:
        assert [r["tool"] for r in old.records()] == ["t1", "t2"]
        report = old.verify()
    assert report.ok and not report.authenticated and "legacy" in report.reason
    assert main(["audit", "verify", str(p)]) == 3
    assert "NOT authenticated" in capsys.readouterr().err
    log = AuditLog(p)  # opened for writing with a key: continues with keyed rows
    log.append({"tool": "t3", "effect": "allow"})
    log.close()
    assert main(["audit", "verify", str(p)]) == 0
    _rewrite(p, 1, '"deny"', '"allow"')  # the unkeyed prefix is now fixed by row 3
    assert main(["audit", "verify", str(p)]) == 1


OLD_SECRET_VALUE = (  # the pattern as Python's `re` ran it: the reference for ordinary text
    r"\b(sk|pk|rk)-[A-Za-z0-9_-]{16,}|\bBearer\s+\S{8,}|\bgh[pousr]_[A-Za-z0-9]{20,}|"
    r"\bAKIA[0-9A-Z]{16}\b|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|"
    r"\b(?:\d[ -]?){13,19}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)


@pytest.mark.timeout(120)
def test_credential_masking_is_linear_and_unchanged_on_ordinary_text() -> None:
    """Arguments are attacker-influenced: the JWT branch backtracked quadratically on
    ``eyJ-`` repeated (32 KB took 0.4 s, a megabyte minutes, on every audited call)."""
    import re

    from routeguard._native import core
    from routeguard.enforce import audit

    assert isinstance(audit._SECRET_VALUE, core.Regex)
    old = re.compile(OLD_SECRET_VALUE)
    samples = [
        "token sk-live-abcdefghijklmnop1234 and Bearer abcdefgh12345 ok",
        "jwt eyJhbGciOiJI.eyJzdWIiOiIx.SflKxwRJSMeKKF2Q here",
        "card 4111 1111 1111 1111, ssn-less 12-34, ghp_" + "a" * 24 + " AKIA" + "B" * 16,
        "-----BEGIN RSA PRIVATE KEY----- é ü 4111-1111-1111-1111 end",
        "nothing secret at all, just 1234 and a Bearer",
    ]
    for text in samples:
        assert redact_secrets(text) == old.sub("[REDACTED]", text), text
    big = "eyJ-" * 250_000 + " sk-" + "x" * 20
    masked = redact_secrets({"note": big})["note"]
    assert masked.endswith(" [REDACTED]") and masked.startswith("eyJ-eyJ-")
