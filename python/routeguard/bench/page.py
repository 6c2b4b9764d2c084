"""Generated blocks in Markdown pages: ``routeguard bench --update PATH`` replaces the text
between ``<!-- bench:NAME begin -->`` and ``<!-- bench:NAME end -->`` with what this run
measured, leaving every byte outside the markers as it was.

Blocks: ``quick`` and ``full`` (the whole table of a quick or full run of every suite, as
``--markdown`` writes it) and ``proxy`` (the README's headline table: added p50 per proxy,
from a full run of the ``proxy`` suite). A run fills the blocks it can and leaves the others;
a page with no markers, unbalanced or unknown markers, or no block this run can fill is
refused (:class:`PageError`) and left untouched.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from routeguard._version import __version__
from routeguard.bench.report import Report

BLOCKS: dict[str, str] = {
    "quick": "the whole table of a --quick run of every suite",
    "full": "the whole table of a full run of every suite",
    "proxy": "added p50 per proxy (a full run of the proxy suite)",
}
_TIMES = "\N{MULTIPLICATION SIGN}"
_MARKER = re.compile(r"^[ \t]*<!--\s*bench:([A-Za-z0-9_-]+)\s+(begin|end)\s*-->[ \t]*$")


class PageError(ValueError):
    """A page whose generated blocks cannot be updated; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Block:
    """One marked block: its name and the line numbers (0-based) of its two markers."""

    name: str
    begin: int
    end: int


def find_blocks(text: str, where: str = "page") -> list[Block]:
    """The marked blocks of ``text``, in order; :class:`PageError` when there are none, or a
    marker is unbalanced, nested, repeated or names an unknown block."""
    blocks: list[Block] = []
    open_: tuple[str, int] | None = None
    for i, line in enumerate(text.splitlines()):
        m = _MARKER.match(line)
        if m is None:
            if line.lstrip().startswith("<!-- bench:"):  # mentions in prose are not markers
                raise PageError(f"{where}:{i + 1}: malformed marker {line.strip()!r}; "
                                "write <!-- bench:NAME begin --> on a line of its own")  # fmt: skip
            continue
        name, kind = m.group(1), m.group(2)
        if name not in BLOCKS:
            raise PageError(
                f"{where}:{i + 1}: unknown block 'bench:{name}'; known: {', '.join(BLOCKS)}"
            )
        if kind == "begin":
            if open_ is not None:
                raise PageError(
                    f"{where}:{i + 1}: 'bench:{name} begin' inside 'bench:{open_[0]}' "
                    f"(opened on line {open_[1] + 1}), which has no end"
                )
            if any(b.name == name for b in blocks):
                raise PageError(f"{where}:{i + 1}: a second 'bench:{name}' block")
            open_ = (name, i)
        else:
            if open_ is None or open_[0] != name:
                raise PageError(f"{where}:{i + 1}: 'bench:{name} end' without a matching begin")
            blocks.append(Block(name, open_[1], i))
            open_ = None
    if open_ is not None:
        raise PageError(
            f"{where}:{open_[1] + 1}: 'bench:{open_[0]} begin' has no 'bench:{open_[0]} end'"
        )
    if not blocks:
        raise PageError(f"{where}: no <!-- bench:NAME begin --> ... <!-- bench:NAME end --> "
                        f"markers (blocks: {', '.join(BLOCKS)})")  # fmt: skip
    return blocks


def check_page(text: str, can: set[str], where: str = "page") -> list[Block]:
    """The marked blocks of ``text`` (:func:`find_blocks`); :class:`PageError` also when none
    of them is in ``can``, the blocks the run fills."""
    blocks = find_blocks(text, where)
    if not can & {b.name for b in blocks}:
        has = ", ".join(f"bench:{b.name}" for b in blocks)
        raise PageError(f"{where}: this run fills no block of the page (it has {has}; the "
                        f"run can fill {', '.join(sorted(can)) or 'none of them'})")  # fmt: skip
    return blocks


def replace_blocks(text: str, fills: dict[str, str], where: str = "page") -> tuple[str, list[str]]:
    """``text`` with each marked block named in ``fills`` replaced by its fill (right between
    the marker lines: an HTML comment line ends its block in CommonMark and Python-Markdown
    alike) and the names replaced; every byte outside the replaced blocks is kept. Raises
    :class:`PageError` when the markers are bad or no block of the page is in ``fills``."""
    blocks = check_page(text, set(fills), where)
    todo = [b for b in blocks if b.name in fills]
    lines = text.splitlines(keepends=True)
    for b in reversed(todo):  # from the end, so earlier line numbers stay valid
        eol = "\r\n" if lines[b.begin].endswith("\r\n") else "\n"
        body = fills[b.name].rstrip("\n").replace("\n", eol)
        lines[b.begin + 1 : b.end] = [body + eol]
    return "".join(lines), [b.name for b in todo]


def fills(report: Report, every: list[str]) -> dict[str, str]:
    """The blocks ``report`` can fill, by name: ``quick``/``full`` when it ran every suite
    named in ``every`` (ran or skipped with its reason), ``proxy`` when it is a full run with
    proxy rows."""
    out: dict[str, str] = {}
    if set(every) <= set(report.suites):
        out["quick" if report.quick else "full"] = report.markdown()
    proxy = proxy_table(report)
    if proxy is not None and not report.quick:
        out["proxy"] = proxy
    return out


def fillable(names: list[str], quick: bool, every: list[str]) -> set[str]:
    """The blocks a run of the suites ``names`` can fill, told before it runs (what
    :func:`fills` gives, unless the proxy suite is skipped)."""
    out = {"quick" if quick else "full"} if set(every) <= set(names) else set()
    return out | ({"proxy"} if "proxy" in names and not quick else set())


def read_page(path: Path) -> str:
    """The page at ``path`` as it is on disk (line endings untranslated)."""
    with path.open(encoding="utf-8", newline="") as f:
        return f.read()


def update_page(path: Path, report: Report, every: list[str]) -> list[str]:
    """Replace the blocks of the page at ``path`` that ``report`` fills, atomically; the
    names replaced. Raises :class:`PageError` (the file untouched) when it cannot."""
    text = read_page(path)
    new, done = replace_blocks(text, fills(report, every), str(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(new)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return done


def proxy_table(report: Report) -> str | None:
    """The README's headline table from the proxy rows: added p50 over the upstream called
    directly, per concurrency and proxy, then LiteLLM's ratios when it ran; None without
    proxy rows."""
    added: dict[int, dict[str, float]] = {}
    rps: dict[int, dict[str, float]] = {}
    version = placement = ""
    for r in report.rows:
        targets = r.detail.get("targets") if r.suite == "proxy" else None
        if not targets:
            continue
        placement = placement or str(r.detail.get("placement", ""))
        c = int(r.detail["concurrency"])
        for side, name in zip(("ours", "peer"), targets, strict=True):
            added.setdefault(c, {})[name] = float(r.detail[side]["added_p50_ms"])
            rps.setdefault(c, {})[name] = float(r.detail[side]["rps"])
        version = version or str(r.detail.get("litellm_version", ""))
    if not added:
        return None
    levels = sorted(added)
    cols = [("passthrough", "bare uvicorn+aiohttp passthrough"), ("routeguard", "routeguard"),
            ("routeguard+key", "routeguard + virtual key"),
            ("litellm", f"LiteLLM {version}".rstrip())]  # fmt: skip
    cols = [(k, head) for k, head in cols if all(k in added[c] for c in levels)]
    mode = "quick mode" if report.quick else "full run"
    placed = f", {placement}" if placement else ""
    out = [
        f"`routeguard bench --suite proxy` {__version__}, {mode}, {report.started[:10]}: added "
        "p50 over calling the simulated upstream directly, ms (targets alternating round by "
        f"round, 1 worker each{placed}, one LiteLLM-format config). {report.machine()}.",
        "",
        "| concurrency | " + " | ".join(head for _, head in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    out += [f"| {c} | " + " | ".join(f"{added[c][k]:.3f}" for k, _ in cols) + " |" for c in levels]
    out.append("")
    if any(k == "litellm" for k, _ in cols):
        slower = " / ".join(
            f"{added[c]['litellm'] / max(added[c]['routeguard'], 1e-3):.1f}{_TIMES}" for c in levels
        )
        faster = " / ".join(
            f"{rps[c]['routeguard'] / rps[c]['litellm']:.1f}{_TIMES}" for c in levels
        )
        out.append(
            f"LiteLLM adds {slower} routeguard's p50 at concurrency "
            f"{' / '.join(map(str, levels))}; routeguard serves {faster} its throughput."
        )
    else:
        out.append("LiteLLM was not in this run (`--litellm PATH` adds it).")
    return "\n".join(out) + "\n"
