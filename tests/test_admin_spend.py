"""``GET /admin/spend``: every request the proxy served or refused is a row (who, route,
model, tokens, cost, status), summed by key, team, org, model or day over a time range,
admin only, shared through ``server.database``."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.observe.spend import UNSAVED_MAX_ROWS, SpendRecords
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from waiting import eventually

MASTER = "sk-master-spend"
MSG: Any = [{"role": "user", "content": "what is the capital of France"}]


def _cfg(url: str, db: Path) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
    return {
        "model_list": [
            {**dep, "model_name": "small", "model": "sim-small"},
            {**dep, "model_name": "big", "model": "sim-big", "input_cost_per_mtok": 10.0},
        ],
        "server": {"master_key": MASTER, "database": str(db)},
    }


def _get(base: str, query: str, key: str = MASTER) -> tuple[int, Any]:
    req = urllib.request.Request(f"{base}/admin/spend?{query}")
    req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_spend_by_team_model_and_time(mock: MockServer, tmp_path: Path) -> None:
    gw = Gateway.from_config(_cfg(mock.url, tmp_path / "rg.db"))
    search, _ = gw.keys.create(KeySpec(team="search", org="acme"))
    ads, ads_rec = gw.keys.create(KeySpec(team="ads", org="acme", models=["small"]))
    started = time.time()
    with ServerThread(create_app(gw)) as srv:
        for key, model, n in ((search, "small", 3), (search, "big", 2), (ads, "small", 4)):
            with openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0) as c:
                for _ in range(n):
                    assert c.chat.completions.create(model=model, messages=MSG).usage
        with (
            openai.OpenAI(base_url=srv.url + "/v1", api_key=ads, max_retries=0) as c,
            pytest.raises(openai.NotFoundError),  # out of the key's scope: as if missing
        ):
            c.chat.completions.create(model="big", messages=MSG)
        status, by_team = _get(srv.url, "group_by=team")
        assert status == 200
        teams = {r["group"]: r for r in by_team["data"]}
        assert teams["search"]["requests"] == 5 and teams["search"]["errors"] == 0
        assert teams["ads"]["requests"] == 5 and teams["ads"]["errors"] == 1
        status, by_model = _get(srv.url, "group_by=model&org=acme")
        models = {r["group"]: r for r in by_model["data"]}
        assert models["small"]["requests"] == 7 and models["big"]["requests"] == 2
        # Each model's cost is its tokens at its own prices, and the sums add up.
        for name, price_in in (("small", 1.0), ("big", 10.0)):
            m = models[name]
            want = (m["prompt_tokens"] * price_in + m["completion_tokens"] * 2.0) / 1e6
            assert m["cost_usd"] == pytest.approx(want, rel=1e-6) and want > 0
        total = sum(r["cost_usd"] for r in by_model["data"] if r["group"] is not None)
        assert total == pytest.approx(sum(r["cost_usd"] for r in by_team["data"]), rel=1e-9)
        _, one_key = _get(srv.url, f"group_by=model&key_id={ads_rec.key_id}")
        assert [r["group"] for r in one_key["data"] if r["group"]] == ["small"]
        _, later = _get(srv.url, f"group_by=team&start={started + 3600}")
        assert later["data"] == []
        _, iso = _get(srv.url, "group_by=day&start=2000-01-01")
        assert sum(r["requests"] for r in iso["data"]) == 10
        # Admin only, and bad queries are 400s that say why.
        assert _get(srv.url, "group_by=team", key=search)[0] == 403
        status, bad = _get(srv.url, "group_by=prompt")
        assert status == 400 and "group_by" in bad["error"]["message"]
        assert _get(srv.url, "group_by=team&start=yesterday")[0] == 400
        assert _get(srv.url, "group_by=team&colour=red")[0] == 400


def test_rows_survive_a_restart_in_the_server_database(tmp_path: Path) -> None:
    db = tmp_path / "rg.db"
    first = SpendRecords(db)
    row = {"ts": time.time(), "request_id": "r1", "team": "t", "model": "m",
           "prompt_tokens": 3, "completion_tokens": 4, "cost_usd": 0.5, "status": 200}  # fmt: skip
    first.record(row)
    first.close()
    again = SpendRecords(db)
    try:
        (row,) = again.sums(group_by="team")
        assert row == {"group": "t", "requests": 1, "errors": 0, "prompt_tokens": 3,
                       "completion_tokens": 4, "cost_usd": 0.5}  # fmt: skip
    finally:
        again.close()


def test_a_busy_database_delays_rows_but_never_stops_the_writer(tmp_path: Path) -> None:
    """Another writer holding the shared file past SQLite's busy timeout (a budget
    spend-log compaction of a long log) made the insert raise and the writer thread die:
    no request was recorded again. The rows now wait and are written once the file is
    free."""
    db = tmp_path / "rg.db"
    records = SpendRecords(db, linger=0.0)
    records._db.execute("PRAGMA busy_timeout = 20")  # not 5 s: the test need not wait
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's long write
    records.record({"ts": time.time(), "request_id": "r1", "status": 200})

    def tried() -> None:
        assert getattr(records, "_failing", False) or not records._writer.is_alive()

    eventually(tried)
    assert records._writer.is_alive()
    other.execute("COMMIT")
    records.record({"ts": time.time(), "request_id": "r2", "status": 200})
    records.flush()
    assert [r["requests"] for r in records.sums(group_by="day")] == [2]
    other.close()
    records.close()


def test_close_gives_up_on_a_busy_database_instead_of_retrying_forever(
    tmp_path: Path,
) -> None:
    """More rows queued than one batch when the database stays busy through ``close``: the
    writer retried its first batch once a second and never reached the stop, so it went on
    for the life of the process (on a closed connection, after close). It now gives up,
    logging the rows as not written, and ends."""
    db = tmp_path / "rg.db"
    records = SpendRecords(db, linger=60.0)  # the rows gather: more than one batch
    records._db.execute("PRAGMA busy_timeout = 20")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # held until after close
    for i in range(1_500):
        records.record({"ts": time.time(), "request_id": f"r{i}", "status": 200})
    records.close()
    assert not records._writer.is_alive()
    other.execute("ROLLBACK")
    other.close()


def test_rows_are_written_where_sqlite_allows_999_variables_a_statement() -> None:
    """On an SQLite that allows 999 variables a statement (before 3.32, unless built with
    more) a batch of 63 rows or more (16 columns each) was refused, put back and retried
    for good: no request was recorded again."""
    records = SpendRecords(":memory:", linger=60.0)  # the rows gather: one batch
    records._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    now = time.time()
    for i in range(100):
        records.record({"ts": now, "request_id": f"r{i}", "status": 200})
    records.flush()
    assert [r["requests"] for r in records.sums(group_by="day")] == [100]
    records.close()


def test_the_writer_lets_the_event_loop_run_within_a_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch is built and inserted in chunks with a pause between two: a writer sharing
    a CPU with the event loop that went through a whole batch at once (0.5 ms for the 100
    rows of 50 ms at 2,000 requests a second) kept the requests arriving meanwhile waiting,
    most of a proxy's slowest percent. Every row is still written, in one transaction."""
    from routeguard.observe import spend

    pauses = 0

    def pause() -> None:
        nonlocal pauses
        pauses += 1

    monkeypatch.setattr(spend, "pause", pause)
    records = SpendRecords(":memory:", linger=60.0)  # the rows gather: one batch
    statements: list[str] = []
    records._db.set_trace_callback(statements.append)
    now = time.time()
    for i in range(100):
        records.record({"ts": now, "request_id": f"r{i}", "status": 200})
    records.flush()
    assert [r["requests"] for r in records.sums(group_by="day")] == [100]
    inserts = [q for q in statements if q.startswith("INSERT")]
    assert len(inserts) == 7 and statements.count("BEGIN") == 1  # 16 rows a statement
    assert pauses == 6 + 6  # between the chunks of 16 built, and between the statements
    records.close()


def test_a_count_past_64_bits_does_not_stop_the_writer() -> None:
    """An upstream's usage reaching 2**63 tokens (any int the proxy passed on) made the
    insert raise OverflowError, which is no sqlite3.Error: the writer thread died and no
    request was recorded again. Such a count is stored as NULL; the row is kept."""
    records = SpendRecords(":memory:", linger=60.0)
    now = time.time()
    records.record({"ts": now, "request_id": "r1", "prompt_tokens": 10**20, "status": 200})
    records.record({"ts": now, "request_id": "r2", "prompt_tokens": 3, "status": 200})
    records.flush()
    assert records._writer.is_alive()
    ((requests, tokens),) = records._db.execute(
        "SELECT COUNT(*), SUM(prompt_tokens) FROM request_spend"
    ).fetchall()
    assert (requests, tokens) == (2, 3)
    records.close()


def test_a_store_without_a_database_keeps_only_the_newest_rows(
    mock: MockServer, tmp_path: Path
) -> None:
    """Without ``server.database`` the rows are capped (newest kept) as they are written,
    not only by age: the embedded default must not grow by its whole request history."""
    store = SpendRecords(":memory:", linger=0, max_rows=20)
    now = time.time()
    for i in range(100):
        store.record({"ts": now - 100 + i, "model": f"m{i:03d}", "cost_usd": 0.001})
        if i % 7 == 0:
            store.flush()  # several batches, as requests arrive
    store.flush()
    kept = {r["group"] for r in store.sums(group_by="model", limit=1000)}
    assert 20 <= len(kept) <= 22  # a trim each time a tenth of max_rows was written
    assert {f"m{i:03d}" for i in range(80, 100)} <= kept
    store.close()
    cfg = _cfg(mock.url, tmp_path / "rg.db")
    for server, cap in (({}, UNSAVED_MAX_ROWS), (cfg["server"], None)):  # the proxy's own
        app = create_app(Gateway.from_config({**cfg, "server": server}))
        try:
            assert app.spend._max_rows == cap
        finally:
            app.spend.close()
