"""``routeguard bench --update PATH``: generated blocks between ``<!-- bench:NAME begin/end -->``
markers are replaced in place, every byte outside them kept; bad markers are refused.

The runs here are synthetic reports (or one tiny quick suite), so no timing is asserted: only
where the figures land and that the caption names the CPU.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from routeguard.bench import cli, page, proxy
from routeguard.bench.report import Report, Row
from routeguard.bench.suite import Options
from routeguard.cli import main as rg_main

ROOT = Path(__file__).resolve().parent.parent
CPU = "Test CPU 9000 (family 1 model 2 stepping 3)"
BEFORE = "# Title\n\nProse with `code` and ünïcödé; trailing spaces   \n\nIntro:\n"
AFTER = "\nMore prose.\n\n## Next\n\nlast line without a newline"


def report(
    quick: bool = True, suites: list[str] | None = None, rows: list[Row] | None = None
) -> Report:
    """A finished run on a named machine, no suite actually run."""
    return Report(
        quick=quick,
        cpu=CPU,
        simd="avx2",
        cores=2,
        suites=list(cli.SUITES) if suites is None else suites,
        rows=rows or [Row("budget", "reserve+settle, core.Ledger", 0.5, 2.0, "a dict ledger")],
        started="2026-12-06T04:00:00+00:00",
    )


def framed(name: str, inner: str) -> str:
    return f"{BEFORE}<!-- bench:{name} begin -->\n{inner}<!-- bench:{name} end -->\n{AFTER}"


def outside(text: str, name: str) -> tuple[str, str]:
    """The text before the begin marker's line end and from the end marker on."""
    begin = text.index(f"<!-- bench:{name} begin -->\n") + len(f"<!-- bench:{name} begin -->\n")
    return text[:begin], text[text.index(f"<!-- bench:{name} end -->") :]


def test_the_block_is_replaced_and_the_rest_kept_byte_for_byte() -> None:
    old = framed("quick", "| stale | table |\n|---|---|\n| 1 | 2 |\n\nold caption\n")
    new, done = page.replace_blocks(old, page.fills(report(), list(cli.SUITES)))
    assert done == ["quick"]
    assert outside(new, "quick") == outside(old, "quick")
    assert new.startswith(BEFORE) and new.endswith(AFTER)
    inner = new[len(outside(new, "quick")[0]) : new.index("<!-- bench:quick end -->")]
    assert inner == report().markdown()
    assert "stale" not in new
    assert f"CPU: {CPU}, SIMD avx2, 2 cores" in inner  # the CPU/date line is inside the block
    assert "2026-12-06" in inner
    again, _ = page.replace_blocks(new, page.fills(report(), list(cli.SUITES)))
    assert again == new  # idempotent


def test_crlf_pages_keep_their_line_endings() -> None:
    old = framed("quick", "x\n").replace("\n", "\r\n")
    new, _ = page.replace_blocks(old, page.fills(report(), list(cli.SUITES)))
    assert "\n" not in new.replace("\r\n", "")
    assert outside(new.replace("\r\n", "\n"), "quick") == outside(
        old.replace("\r\n", "\n"), "quick"
    )


def test_update_page_keeps_crlf_on_disk(tmp_path: Path) -> None:
    doc = tmp_path / "page.md"
    old = framed("quick", "x\n").replace("\n", "\r\n").encode()
    doc.write_bytes(old)
    assert page.update_page(doc, report(), list(cli.SUITES)) == ["quick"]
    new = doc.read_bytes()
    head = old[: old.index(b"<!-- bench:quick begin -->")]
    tail = old[old.index(b"<!-- bench:quick end -->") :]
    assert new.startswith(head) and new.endswith(tail)
    assert b"\n" not in new.replace(b"\r\n", b"")


def test_only_the_blocks_the_run_fills_are_touched() -> None:
    text = BEFORE + "<!-- bench:full begin -->\nkept\n<!-- bench:full end -->\n"
    text += "<!-- bench:quick begin -->\nold\n<!-- bench:quick end -->\n" + AFTER
    new, done = page.replace_blocks(text, page.fills(report(), list(cli.SUITES)))
    assert done == ["quick"]
    assert "<!-- bench:full begin -->\nkept\n<!-- bench:full end -->\n" in new
    assert "\nold\n" not in new


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (BEFORE + AFTER, "no <!-- bench:NAME begin -->"),
        (BEFORE + "<!-- bench:quick begin -->\nx\n" + AFTER, "has no 'bench:quick end'"),
        (BEFORE + "x\n<!-- bench:quick end -->\n" + AFTER, "without a matching begin"),
        (framed("quick", "<!-- bench:proxy begin -->\n"), "inside 'bench:quick'"),
        (framed("quick", "") + framed("quick", ""), "a second 'bench:quick'"),
        (framed("quik", ""), "unknown block 'bench:quik'"),
        (BEFORE + "<!-- bench:quick begin --> text\n" + AFTER, "malformed marker"),
        (
            BEFORE + "<!-- bench:quick begin -->\nx\n<!-- bench:proxy end -->\n",
            "without a matching",
        ),
    ],
    ids=["missing", "no-end", "no-begin", "nested", "repeated", "unknown", "inline", "crossed"],
)
def test_bad_markers_are_refused(text: str, says: str) -> None:
    with pytest.raises(page.PageError, match=re.escape(says)):
        page.replace_blocks(text, page.fills(report(), list(cli.SUITES)))


def test_a_partial_run_fills_no_whole_table_block() -> None:
    partial = report(suites=["budget"])
    assert page.fills(partial, list(cli.SUITES)) == {}
    with pytest.raises(page.PageError, match="fills no block"):
        page.replace_blocks(framed("quick", "x\n"), page.fills(partial, list(cli.SUITES)))
    assert page.fillable(["budget"], True, list(cli.SUITES)) == set()
    assert page.fillable(list(cli.SUITES), True, list(cli.SUITES)) == {"quick"}
    assert page.fillable(["proxy"], False, list(cli.SUITES)) == {"proxy"}
    assert page.fillable(["proxy"], True, list(cli.SUITES)) == set()  # not from a quick run


@pytest.mark.parametrize(
    "text",
    [BEFORE + AFTER, BEFORE + "<!-- bench:quick begin -->\nx\n" + AFTER, framed("full", "x\n")],
    ids=["missing", "unbalanced", "no-block-for-a-quick-run"],
)
def test_the_cli_refuses_before_running_and_leaves_the_page(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "page.md"
    doc.write_text(text, encoding="utf-8")
    assert rg_main(cli_args(["--quick", "--update", str(doc)])) == 2
    assert doc.read_text(encoding="utf-8") == text
    err = capsys.readouterr().err
    assert f"--update {doc}" in err and "routeguard bench" in err


def test_update_pages_writes_good_pages_and_fails_on_bad_ones(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(framed("quick", "x\n"), encoding="utf-8")
    bad.write_text(BEFORE + AFTER, encoding="utf-8")
    good.chmod(0o640)
    assert cli.update_pages([good, bad], report()) == 2
    assert cli.update_pages([good], report()) == 0
    assert report().markdown() in good.read_text(encoding="utf-8")
    assert good.stat().st_mode & 0o777 == 0o640
    assert bad.read_text(encoding="utf-8") == BEFORE + AFTER
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.md", "good.md"]  # no temp left


def test_a_real_quick_run_updates_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "SUITES", {"budget": cli.SUITES["budget"]})  # "every suite"
    doc, md = tmp_path / "page.md", tmp_path / "fresh.md"
    doc.write_text(framed("quick", "old\n"), encoding="utf-8")
    assert rg_main(["bench", "--quick", "--update", str(doc), "--markdown", str(md)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert outside(text, "quick") == outside(framed("quick", "old\n"), "quick")
    assert "| budget | reserve+settle" in text and "old" not in text
    from routeguard.bench.report import cpu_model

    assert f"CPU: {cpu_model()}" in text
    assert md.read_text(encoding="utf-8").startswith("`routeguard bench`")  # a fresh file still


def cli_args(extra: list[str]) -> list[str]:
    return ["bench", "--suite", ",".join(cli.SUITES), *extra]


def proxy_rows(added: dict[tuple[str, int], float], rps: float = 100.0) -> list[Row]:
    """The proxy suite's rows (via :func:`proxy.run`), for results whose added p50 over
    ``direct`` is ``added`` ms per (target, concurrency)."""
    levels = sorted({c for _, c in added})
    names = ["direct", *dict.fromkeys(n for n, _ in added)]

    @contextmanager
    def targets(*_: Any, **__: Any) -> Any:
        yield {n: ("http://unused", "k") for n in names}

    def measure(found: Any, lv: list[int], *_: Any, **__: Any) -> dict[Any, proxy.Result]:
        assert lv == levels
        out = {}
        for c in levels:
            out[("direct", c)] = proxy.Result("direct", c, [0.001] * 9, 9 / rps)
            for n in names[1:]:
                lat = 0.001 + added[(n, c)] / 1000
                out[(n, c)] = proxy.Result(n, c, [lat] * 9, 9 / (rps / (1 + added[(n, c)])))
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(proxy, "targets", targets)
    mp.setattr(proxy, "measure", measure)
    try:
        return proxy.run(Options(quick=False, litellm=False))
    finally:
        mp.undo()


def readme_proxy_table() -> tuple[list[str], dict[tuple[str, int], float]]:
    """The README's proxy block: its table lines and the added p50 figures in them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[
        readme.index("<!-- bench:proxy begin -->") : readme.index("<!-- bench:proxy end -->")
    ]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    keys = ["passthrough", "routeguard", "routeguard+key", "litellm"]
    added = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        for k, v in zip(keys, cells[1:], strict=True):
            added[(k, int(cells[0]))] = float(v)
    return lines, added


def test_the_proxy_suite_fills_the_readme_table_with_the_same_columns() -> None:
    lines, added = readme_proxy_table()
    rows = proxy_rows(added)
    for r in rows:
        r.detail["litellm_version"] = "1.108.7"
    table = page.proxy_table(report(quick=False, suites=["proxy"], rows=rows))
    assert table is not None
    assert [ln for ln in table.splitlines() if ln.startswith("|")] == lines
    assert f"CPU: {CPU}" in table.splitlines()[0] and "2026-12-06" in table.splitlines()[0]
    for c in (1, 10, 100):
        ratio = added[("litellm", c)] / added[("routeguard", c)]
        assert (
            f"{ratio:.1f}\N{MULTIPLICATION SIGN}" in table
        )  # LiteLLM's added p50 over routeguard's


def test_the_proxies_run_apart_from_the_load_and_the_caption_says_where(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(proxy.PIN_ENV, "1")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {7, 3, 5})
    assert proxy.placement() == ({3}, {5, 7})
    where = "proxies on CPU 3, load generator and upstream on CPU 5, 7"
    assert proxy.describe(proxy.placement()) == where
    names = ["passthrough", "routeguard", "routeguard+key"]
    added = {(n, c): 0.5 for n in names for c in (1, 10, 100)}
    table = page.proxy_table(report(quick=False, suites=["proxy"], rows=proxy_rows(added)))
    assert table is not None and f"1 worker each, {where}, one" in table.splitlines()[0]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2})  # one CPU: nothing to pin
    assert proxy.placement() is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv(proxy.PIN_ENV)  # not asked for
    assert proxy.placement() is None
    assert proxy.describe(None) == "every process on every CPU"


def test_without_litellm_the_proxy_table_says_so() -> None:
    names = ["passthrough", "routeguard", "routeguard+key"]
    added = {(n, c): 0.5 * (i + 1) for i, n in enumerate(names) for c in (1, 10, 100)}
    table = page.proxy_table(report(quick=False, suites=["proxy"], rows=proxy_rows(added)))
    assert table is not None
    assert (
        "| concurrency | bare uvicorn+aiohttp passthrough | routeguard | routeguard + virtual key |"
        in table
    )
    assert "LiteLLM was not in this run" in table
    assert page.proxy_table(report()) is None  # no proxy rows
    readme = "<!-- bench:proxy begin -->\nold\n<!-- bench:proxy end -->\n"
    quick = report(quick=True, suites=["proxy"], rows=proxy_rows(added))
    with pytest.raises(page.PageError, match="fills no block"):  # a quick run keeps the README's
        page.replace_blocks(readme, page.fills(quick, list(cli.SUITES)))


def test_litellm_version_is_read_through_its_interpreter(tmp_path: Path) -> None:
    python, exe = tmp_path / "python", tmp_path / "litellm"
    python.write_text("#!/bin/sh\necho 9.8.7\n")
    python.chmod(0o755)
    exe.write_text(f"#!{python}\n")
    assert proxy.litellm_version(exe) == "9.8.7"
    assert proxy.litellm_version(tmp_path / "nope") is None


def test_the_shipped_pages_have_balanced_blocks() -> None:
    assert [b.name for b in page.find_blocks((ROOT / "docs" / "performance.md").read_text())] == [
        "quick"
    ]
    assert [b.name for b in page.find_blocks((ROOT / "README.md").read_text())] == ["proxy"]
