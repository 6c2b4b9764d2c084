"""Virtual keys end to end: the admin API creates, scopes, rotates and revokes keys; the
proxy lets only usable keys through; only keyed hashes are stored."""

from __future__ import annotations

import hmac
import json
import os
import sqlite3
import stat
import time
from functools import partial
from pathlib import Path
from typing import Any

import anthropic
import msgspec
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from litellm_proxy import call
from routeguard._native import core
from routeguard.budget import keys as keys_module
from routeguard.budget.keys import KeySpec, KeyStore, KeyStoreUnavailable
from routeguard.budget.spendlog import SpendLog
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-test"
MSG: Any = [{"role": "user", "content": "hi"}]


def _cfg(url: str, db: Path | None = None, master: str | None = MASTER) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k"}
    server: dict[str, Any] = {}
    if master:
        server["master_key"] = master
    if db:
        server["database"] = str(db)
    return {
        "model_list": [{**dep, "model_name": "a", "model": "m-a"},
                       {**dep, "model_name": "b", "model": "m-b"}],
        "server": server,
    }  # fmt: skip


_admin = partial(call, key=MASTER)


def _client(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


def test_key_lifecycle_through_the_admin_api(mock: MockServer, tmp_path: Path) -> None:
    gw = Gateway.from_config(_cfg(mock.url, tmp_path / "rg.db"))
    with ServerThread(create_app(gw)) as srv:
        spec = {"name": "ci", "team": "t1", "org": "o1", "models": ["a"]}
        status, made = _admin(srv.url, "POST", "/admin/keys", spec)
        assert status == 201 and made["key"].startswith("sk-rg-")
        key, key_id = made["key"], made["key_id"]
        assert made["key_hint"].endswith(key[-4:]) and "digest" not in made

        with _client(srv.url, key) as c:
            assert c.chat.completions.create(model="a", messages=MSG).choices
            with pytest.raises(openai.NotFoundError):  # out of scope: as if missing
                c.chat.completions.create(model="b", messages=MSG)
            assert [m.id for m in c.models.list()] == ["a"]
        with anthropic.Anthropic(base_url=srv.url, api_key=key, max_retries=0) as a:
            assert a.messages.create(model="a", max_tokens=5, messages=MSG).content

        # A key is not the master key: the admin API refuses it.
        assert _admin(srv.url, "GET", "/admin/keys", key=key)[0] == 403
        status, listing = _admin(srv.url, "GET", "/admin/keys")
        assert status == 200 and [k["key_id"] for k in listing["data"]] == [key_id]

        status, updated = _admin(srv.url, "PATCH", f"/admin/keys/{key_id}", {"models": ["a", "b"]})
        assert status == 200 and updated["models"] == ["a", "b"]
        with _client(srv.url, key) as c:
            assert c.chat.completions.create(model="b", messages=MSG).choices

        status, rotated = _admin(srv.url, "POST", f"/admin/keys/{key_id}/rotate")
        new_key = rotated["key"]
        assert status == 200 and new_key != key
        with _client(srv.url, key) as c, pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model="a", messages=MSG)
        with _client(srv.url, new_key) as c:
            assert c.chat.completions.create(model="a", messages=MSG).choices

        assert _admin(srv.url, "DELETE", f"/admin/keys/{key_id}")[0] == 200
        with _client(srv.url, new_key) as c, pytest.raises(openai.AuthenticationError) as info:
            c.chat.completions.create(model="a", messages=MSG)
        assert "revoked" in str(info.value)
        assert _admin(srv.url, "GET", "/admin/keys/key_nope")[0] == 404
        assert _admin(srv.url, "POST", "/admin/keys", {"rpm": 0})[0] == 400
        assert _admin(srv.url, "POST", "/admin/keys", {"colour": "red"})[0] == 400
    gw.keys.close()
    # Only keyed hashes reach the disk.
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key.encode() not in raw and new_key.encode() not in raw
    assert key_id.encode() in raw


def test_keys_survive_a_restart_and_expire(mock: MockServer, tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    gw = Gateway.from_config(_cfg(mock.url, db))
    key, _ = gw.keys.create(KeySpec(name="persisted"))
    expired, _ = gw.keys.create(KeySpec(expires_at=time.time() - 1))
    gw.keys.close()
    gw2 = Gateway.from_config(_cfg(mock.url, db))
    with ServerThread(create_app(gw2)) as srv:
        with _client(srv.url, key) as c:
            assert c.chat.completions.create(model="a", messages=MSG).choices
        with _client(srv.url, expired) as c, pytest.raises(openai.AuthenticationError) as info:
            c.chat.completions.create(model="a", messages=MSG)
        assert "expired" in str(info.value)
        status, made = _admin(srv.url, "POST", "/key/generate",
                              {"user_id": "u1", "team_id": "t9", "max_budget": 5})  # fmt: skip
        assert status == 200 and made["user"] == "u1" and made["team"] == "t9"
    gw2.keys.close()


def test_without_master_key_only_virtual_keys_pass(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url, master=None))
    with ServerThread(create_app(gw)) as srv:
        with _client(srv.url, "anything") as c:  # no keys yet: open
            assert c.chat.completions.create(model="a", messages=MSG).choices
        key, _ = gw.keys.create(KeySpec())
        with _client(srv.url, "anything") as c, pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model="a", messages=MSG)
        with _client(srv.url, key) as c:
            assert c.chat.completions.create(model="a", messages=MSG).choices
        assert _admin(srv.url, "GET", "/admin/keys", key=key)[0] == 403


def test_store_hashes_with_its_secret(tmp_path: Path) -> None:
    a = KeyStore(tmp_path / "a.db", secret="s1")
    token, rec = a.create()
    assert a.authenticate(token).key_id == rec.key_id
    b = KeyStore(tmp_path / "a.db", secret="s2")  # wrong secret: digests differ
    with pytest.raises(Exception, match="invalid API key"):
        b.authenticate(token)
    a.close()
    b.close()


@settings(max_examples=200, deadline=None)
@given(secret=st.binary(min_size=0, max_size=150), token=st.text(max_size=300))
def test_key_digests_are_hmac_sha256_of_the_key(secret: bytes, token: str) -> None:
    """The native digest is byte for byte Python's ``hmac.digest(secret, key, "sha256")``,
    which wrote the digests of existing databases (secrets past a hash block included)."""
    digest = core.KeyDigest(secret)
    assert digest.hex(token) == hmac.digest(secret, token.encode(), "sha256").hex()


def test_a_key_stored_with_a_python_digest_still_authenticates(tmp_path: Path) -> None:
    """A record written before the native digest (its digest made by Python's hmac) is found,
    and a store whose secret changes (a Redis store adopting another instance's) hashes with
    the new one."""
    store = KeyStore(tmp_path / "a.db", secret="old-secret")
    token, rec = store.create()
    assert rec.digest == hmac.digest(b"old-secret", token.encode(), "sha256").hex()
    assert store.authenticate(token).key_id == rec.key_id
    store._secret = b"new-secret"
    assert store._digest(token) == hmac.digest(b"new-secret", token.encode(), "sha256").hex()
    store.close()


def test_spend_writes_to_the_key_database_do_not_reload_every_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spend log shares the key store's SQLite file and commits on every request: the
    store must not re-read its whole key table after each of those (it did), and takes in
    what another process writes row by row (a new key, a rotation, a team), not by
    re-reading every key."""
    db = tmp_path / "keys.db"
    store = KeyStore(db)
    token, rec = store.create()
    log = SpendLog(db)  # its CREATE TABLE changes the schema: one reload, at start
    store.authenticate(token)
    loads: list[int] = []
    real_load = store._load
    monkeypatch.setattr(store, "_load", lambda: (loads.append(1), real_load())[1])
    for i in range(3):
        log.append(time.time(), f"req-{i}", ["key_x"], 5)
        assert log.flush()
        store.authenticate(token)
    other = KeyStore(db)  # another process
    token2, rec2 = other.create()
    other.put_entity("team/t1", b"{}")
    rotated, _ = other.rotate(rec.key_id)
    assert store.authenticate(token2).key_id == rec2.key_id
    assert store.entity("team/t1") == b"{}"
    assert store.authenticate(rotated).key_id == rec.key_id
    with pytest.raises(Exception, match="invalid API key"):
        store.authenticate(token)  # the old secret stopped working here too
    other.delete_entity("team/t1")
    assert store.entity("team/t1") is None
    assert loads == []
    log.close()
    other.close()
    store.close()


def test_a_look_while_the_change_mark_stands_asks_sqlite_nothing(tmp_path: Path) -> None:
    """Commits that are not key writes (the spend log's, on every request) leave the change
    mark alone, so a look between them runs no SQLite statement; a key write by another
    store (another process) changes the mark and counts on the very next look."""
    db = tmp_path / "keys.db"
    store, other = KeyStore(db), KeyStore(db)
    token, rec = other.create()
    log = SpendLog(db)
    assert store.authenticate(token).key_id == rec.key_id  # the first look is a full one
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    for i in range(20):
        log.append(time.time(), f"req-{i}", ["key_x"], 5)
        assert log.flush()
        assert store.authenticate(token).key_id == rec.key_id
    assert statements == []
    other.revoke(rec.key_id)
    with pytest.raises(Exception, match="revoked"):
        store.authenticate(token)
    assert statements  # the mark moved: that look asked SQLite
    log.close()
    other.close()
    store.close()


def test_a_writer_that_sets_no_change_mark_is_seen_by_the_next_full_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A raw SQL write (the sqlite3 shell) does not move the mark; the full look a store
    makes at least every FULL_LOOK_S takes it in, through the journal as any other."""
    db = tmp_path / "keys.db"
    store = KeyStore(db)
    token, rec = store.create()
    assert store.authenticate(token).key_id == rec.key_id
    with sqlite3.connect(db) as shell:
        shell.execute("DELETE FROM keys WHERE key_id = ?", (rec.key_id,))
    later = time.monotonic() + keys_module.FULL_LOOK_S
    monkeypatch.setattr(keys_module.time, "monotonic", lambda: later)
    with pytest.raises(Exception, match="invalid API key"):
        store.authenticate(token)
    store.close()


def test_without_a_change_mark_every_look_asks_sqlite(tmp_path: Path) -> None:
    """Where the mark file cannot be made, a raw SQL write counts on the next look."""
    db = tmp_path / "keys.db"
    (tmp_path / "keys.db-keymark").mkdir()  # the mark's name is taken: it cannot be made
    store = KeyStore(db)
    assert store._mark is None
    token, rec = store.create()
    assert store.authenticate(token).key_id == rec.key_id
    with sqlite3.connect(db) as shell:
        shell.execute("DELETE FROM keys WHERE key_id = ?", (rec.key_id,))
    with pytest.raises(Exception, match="invalid API key"):
        store.authenticate(token)
    store.close()


def _later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Move the stores' clock past FULL_LOOK_S: their next look is a full one."""
    later = time.monotonic() + keys_module.FULL_LOOK_S
    monkeypatch.setattr(keys_module.time, "monotonic", lambda: later)


def test_the_change_mark_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    """A mark path that is a symlink (someone who may write the directory made it, as in
    /tmp) is not followed: the store's writes must not land in the file it points at."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"important data\n")
    (tmp_path / "keys.db-keymark").symlink_to(victim)
    store = KeyStore(tmp_path / "keys.db")
    token, rec = store.create()
    store.revoke(rec.key_id)
    assert victim.read_bytes() == b"important data\n"
    with pytest.raises(Exception, match="revoked"):
        store.authenticate(token)
    store.close()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs chown")
def test_a_change_mark_made_by_another_user_is_not_trusted(tmp_path: Path) -> None:
    """A mark file another user made (and may truncate or rewrite at will) is not mapped:
    every look asks SQLite instead."""
    mark = tmp_path / "keys.db-keymark"
    mark.write_bytes(bytes(8))
    os.chown(mark, 65534, 65534)
    os.chmod(mark, 0o666)
    store = KeyStore(tmp_path / "keys.db")
    assert store._mark is None
    store.close()


def test_the_change_mark_takes_the_database_file_mode(tmp_path: Path) -> None:
    """A database its group may write gets a mark its group may write (as SQLite's -wal and
    -shm files do): otherwise a group member's `routeguard keys revoke` sets no mark."""
    db = tmp_path / "keys.db"
    sqlite3.connect(db).close()
    os.chmod(db, 0o660)
    store = KeyStore(db)
    assert stat.S_IMODE(os.stat(tmp_path / "keys.db-keymark").st_mode) == 0o660
    store.close()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs chown")
def test_a_change_mark_root_makes_belongs_to_the_database_owner(tmp_path: Path) -> None:
    """`routeguard keys` run as root on a service user's database makes the mark that user's
    (as SQLite does its -wal): else the server's workers could not open it for writing."""
    db = tmp_path / "keys.db"
    sqlite3.connect(db).close()
    os.chown(db, 65534, 65534)
    store = KeyStore(db)
    assert os.stat(tmp_path / "keys.db-keymark").st_uid == 65534
    store.close()


def test_a_revoke_through_a_symlink_to_the_database_counts_on_the_next_look(
    tmp_path: Path,
) -> None:
    """SQLite follows a symlink to the database (one -wal for both names); the mark must too,
    or a revoke by `routeguard keys` given the other name is missed by a running server."""
    db = tmp_path / "keys.db"
    server = KeyStore(db)
    token, rec = server.create()
    assert server.authenticate(token).key_id == rec.key_id
    (tmp_path / "current.db").symlink_to(db)
    cli = KeyStore(tmp_path / "current.db")
    cli.revoke(rec.key_id)
    with pytest.raises(Exception, match="revoked"):
        server.authenticate(token)
    cli.close()
    server.close()


def test_an_in_memory_store_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-memory store (":memory:", or "": a private temporary database) names no file:
    no mark is made for it in the working directory."""
    monkeypatch.chdir(tmp_path)
    for path in (":memory:", ""):
        store = KeyStore(path)
        store.create()
        store.close()
    assert list(tmp_path.iterdir()) == []


def test_a_closed_store_answers_unavailable(tmp_path: Path) -> None:
    """After close, a look fails closed as KeyStoreUnavailable (503), not a raw error."""
    store = KeyStore(tmp_path / "keys.db")
    token, _ = store.create()
    store.close()
    with pytest.raises(KeyStoreUnavailable):
        store.authenticate(token)


@pytest.mark.parametrize("schema_change", [False, True])
def test_a_change_that_cannot_be_taken_in_fails_every_look_until_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schema_change: bool
) -> None:
    """A commit whose rows cannot be read (a damaged row written by raw SQL) answers 503 on
    every look, not once: the revoke committed with it must never be skipped (whether the
    store takes it in through the journal or, the schema changed, by reading everything)."""
    db = tmp_path / "keys.db"
    store = KeyStore(db)
    token, rec = store.create()
    assert store.authenticate(token).key_id == rec.key_id
    revoked = msgspec.json.encode(msgspec.structs.replace(rec, revoked=True))
    with sqlite3.connect(db) as shell:
        if schema_change:
            shell.execute("CREATE TABLE notes (x)")
        shell.execute("INSERT INTO keys VALUES ('key_bad', 'not json')")
        shell.execute("UPDATE keys SET record = ? WHERE key_id = ?", (revoked, rec.key_id))
    _later(monkeypatch)
    for _ in range(2):
        with pytest.raises(KeyStoreUnavailable):
            store.authenticate(token)
    with sqlite3.connect(db) as shell:
        shell.execute("DELETE FROM keys WHERE key_id = 'key_bad'")
    with pytest.raises(Exception, match="revoked"):
        store.authenticate(token)
    store.close()


def test_a_replaced_change_mark_is_mapped_again_by_the_next_full_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mark file deleted or replaced (a restore, a cleanup) while a server runs: new
    processes mark the new file, so the server maps it again at its next full look rather
    than watching the old one for good."""
    db = tmp_path / "keys.db"
    server = KeyStore(db)
    token, rec = server.create()
    assert server.authenticate(token).key_id == rec.key_id
    (tmp_path / "keys.db-keymark").unlink()
    _later(monkeypatch)
    assert server.authenticate(token).key_id == rec.key_id  # the full look
    cli = KeyStore(db)  # `routeguard keys revoke`, after the mark was replaced
    cli.revoke(rec.key_id)
    with pytest.raises(Exception, match="revoked"):
        server.authenticate(token)
    cli.close()
    server.close()


def test_a_key_update_never_leaves_the_key_out_of_the_index(tmp_path: Path) -> None:
    """Authentication reads the digest index without the store's lock: while an update or
    a rotation is applied, the key (its current or its new secret) is in it at every step
    (it was popped, then put back: a request in between got a 401)."""

    class Watched(dict[str, Any]):
        """The index, counting the changes after which no secret of the key is in it."""

        def __init__(self, data: dict[str, Any], key_id: str) -> None:
            super().__init__(data)
            self.key_id = key_id
            self.gaps = 0

        def _check(self) -> None:
            if not any(r.key_id == self.key_id for r in self.values()):
                self.gaps += 1

        def __setitem__(self, k: str, v: Any) -> None:
            super().__setitem__(k, v)
            self._check()

        def pop(self, k: str, *default: Any) -> Any:  # type: ignore[override]
            out = super().pop(k, *default)
            self._check()
            return out

    store = KeyStore(tmp_path / "keys.db")
    _, rec = store.create()
    index = Watched(store._by_digest, rec.key_id)
    store._by_digest = index
    store.update(rec.key_id, {"rpm": 10})
    rotated, _ = store.rotate(rec.key_id)
    store.update(rec.key_id, {"rpm": 20})
    assert index.gaps == 0
    assert store.authenticate(rotated).spec.rpm == 20
    store.close()


def test_a_store_too_far_behind_the_journal_reloads_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries pruned past what a store saw, or more of them than one reload costs: it
    reads every key again, and misses nothing."""
    monkeypatch.setattr(keys_module, "_JOURNAL_KEEP", 3)
    monkeypatch.setattr(keys_module, "_CATCH_UP_MAX", 5)
    db = tmp_path / "keys.db"
    store, other = KeyStore(db), KeyStore(db)
    loads: list[int] = []
    real_load = store._load
    monkeypatch.setattr(store, "_load", lambda: (loads.append(1), real_load())[1])
    made = [other.create() for _ in range(2)]  # within the journal: caught up row by row
    assert all(store.authenticate(t).key_id == r.key_id for t, r in made)
    assert loads == []
    made = [other.create() for _ in range(4)]  # pruned past what the store saw
    assert all(store.authenticate(t).key_id == r.key_id for t, r in made)
    assert loads == [1]
    monkeypatch.setattr(keys_module, "_JOURNAL_KEEP", 100)
    made = [other.create() for _ in range(6)]  # more than _CATCH_UP_MAX behind
    assert all(store.authenticate(t).key_id == r.key_id for t, r in made)
    assert loads == [1, 1]
    other.close()
    store.close()


def test_keys_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from routeguard.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model_list:\n  - {model_name: a, type: openai, model: m}\n"
        f"server:\n  database: {tmp_path / 'k.db'}\n"
    )
    assert main(["keys", "--config", str(cfg), "create", "--team", "t", "--models", "a"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["key"].startswith("sk-rg-") and made["models"] == ["a"]
    assert main(["keys", "--config", str(cfg), "list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [k["key_id"] for k in listed] == [made["key_id"]] and "key" not in listed[0]
    upd = ["update", made["key_id"], "--max-budget", "2.5", "--rpm", "30"]
    upd += ["--budget-period", "daily"]
    assert main(["keys", "--config", str(cfg), *upd]) == 0
    updated = json.loads(capsys.readouterr().out)
    assert (updated["max_budget"], updated["rpm"], updated["budget_period"]) == (2.5, 30, "daily")
    assert updated["models"] == ["a"]  # untouched fields stay
    bad = ["update", made["key_id"], "--budget-period", "fortnightly"]
    assert main(["keys", "--config", str(cfg), *bad]) == 1
    assert "budget_period" in capsys.readouterr().err
    assert main(["keys", "--config", str(cfg), "revoke", made["key_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["revoked"] is True
    assert main(["keys", "--config", str(cfg), "rotate", "key_missing"]) == 1
    store = KeyStore(tmp_path / "k.db")
    with pytest.raises(Exception, match="revoked"):
        store.authenticate(made["key"])
    store.close()
