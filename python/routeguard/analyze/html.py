"""The HTML report of ``routeguard analyze``: one self-contained page (inline CSS and SVG).

Data flow: an :class:`~routeguard.analyze.analysis.Analysis` -> a summary table of every
route -> one section per route (recommendation and reasons, cache hit rate / false-hit risk
per threshold, the largest near-duplicate clusters, the router-score histogram, the
routing savings curve) -> the recommended config block. Every piece of log text is escaped.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from routeguard.analyze import svg
from routeguard.analyze.analysis import Analysis, RouteReport

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}pre{background:#f6f6f6;
padding:10px;overflow:auto}.v{font-weight:600}.charts{display:flex;flex-wrap:wrap;gap:12px}
section{border-top:2px solid #ccc;margin-top:24px}.muted{color:#777}
"""


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _share(x: float | None) -> str:
    return "" if x is None else _pct(x)


def _money(x: float) -> str:
    return f"${x * 1000:.4f}"


def _short(text: str, n: int = 110) -> str:
    text = " ".join(text.split())
    return escape(text if len(text) <= n else text[: n - 1] + "…")


def render(a: Analysis) -> str:
    """The report page as a string."""
    t = a.totals()
    head = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>routeguard analyze: {escape(a.source)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Traffic analysis: {escape(a.source)}</h1>",
        f"<p>{a.requests} requests in {len(a.routes)} routes"
        + (f"; {a.skipped} bad lines skipped" if a.skipped else "")
        + f". Estimated cost per 1k requests: {_money(t['baseline_cost_per_request'])} as logged"
        f" &rarr; {_money(t['recommended_cost_per_request'])} with the recommended config "
        f"({_pct(t['savings'])} saved; estimated cache hit rate {_pct(t['cache_hit_rate'])}).</p>",
    ]
    if a.problems:
        head.append(
            "<details><summary>skipped lines</summary><ul>"
            + "".join(f"<li>{escape(p)}</li>" for p in a.problems)
            + "</ul></details>"
        )
    rows = "".join(
        f"<tr><td class='l'>{escape(r.route)}</td><td>{r.requests}</td>"
        f"<td>{_pct(r.repetition.exact_hit_rate)}</td>"
        f"<td>{_pct(r.recommendation.hit_rate)}</td>"
        f"<td>{_share(r.recommendation.strong_share)}</td>"
        f"<td>{_money(r.recommendation.baseline_cost_per_request)}</td>"
        f"<td>{_money(r.recommendation.est_cost_per_request)}</td>"
        f"<td class='l v'>{escape(r.recommendation.verdict)}</td></tr>"
        for r in a.routes
    )
    body = [
        "<table><tr><th class='l'>route</th><th>requests</th><th>exact repeats</th>"
        "<th>est. hit rate</th><th>strong share</th><th>cost / 1k (logged)</th>"
        "<th>cost / 1k (recommended)</th><th class='l'>recommendation</th></tr>"
        + rows
        + "</table>",
        *(_route(r) for r in a.routes),
        "<section><h2>Recommended config</h2><pre>" + escape(a.config_yaml()) + "</pre>",
        "<p class='muted'>Estimates. Hit rates replay the log through an unbounded cache with "
        "no expiry, partitioned as the gateway does (tenant, route, parameters, earlier turns), "
        "with the hit verifier on. False-hit risk: the share of served semantic hits whose "
        "prompts differ by one content word; without the verifier: the share of "
        "near-duplicates differing in a decisive detail (verifier refusals included). "
        "Routing quality is the learned router's own estimate of the gain of the strong "
        "model (trained on MMLU outcomes; retrain on your labels with "
        "<code>routeguard router train</code>).</p></section>",
    ]
    return "".join([*head, *body, "</body></html>"])


def _route(r: RouteReport) -> str:
    rep, cx, rec = r.repetition, r.complexity, r.recommendation
    out = [
        f"<section><h2>{escape(r.route)}</h2>",
        f"<p><span class='v'>{escape(rec.verdict)}</span>: "
        + "; ".join(escape(x) for x in rec.reasons)
        + "</p>",
        f"<p>{r.requests} requests ("
        + ", ".join(f"{escape(m)}: {n}" for m, n in sorted(r.models.items()))
        + f"); {rep.cacheable} cacheable, {rep.entries} distinct prompts in "
        f"{rep.partitions} partitions; exact repeats {_pct(rep.exact_hit_rate)}; "
        f"near-duplicate share {_pct(rep.near_duplicate_share)} (threshold "
        f"{rep.cluster_threshold:.2f}). Tools: {_pct(rec.signals.get('tools', 0.0))}, "
        f"sensitive: {_pct(rec.signals.get('sensitive', 0.0))}.</p>",
        "<div class='charts'>",
        svg.lines(
            [
                ("hit rate", [(x.threshold, x.hit_rate) for x in rep.rows]),
                ("false-hit risk", [(x.threshold, x.false_hit_risk) for x in rep.rows]),
                ("risk, no verifier", [(x.threshold, x.plain_risk) for x in rep.rows]),
            ],
            title="Estimated cache hit rate and false-hit risk",
            x_label="similarity threshold",
            y_label="share",
            y_max=1.0,
        ),
        svg.bars(
            cx.histogram,
            -1.0,
            1.0,
            title=f"Router scores ({cx.cheap} vs {cx.strong})",
            x_label="score (higher = needs the strong model)",
            y_label="requests",
        ),
        svg.lines(
            [
                ("quality kept", [(s, q) for s, q, _ in cx.curve]),
                (
                    "cost vs baseline",
                    [
                        (
                            s,
                            c / cx.baseline_cost_per_request
                            if cx.baseline_cost_per_request
                            else 0.0,
                        )
                        for s, _, c in cx.curve
                    ],
                ),
            ],
            title="Routing: estimated quality and cost by strong share",
            x_label="share of requests to the strong model",
            y_label="share",
        ),
        "</div>",
        "<table><tr><th>threshold</th><th>hit rate</th><th>semantic hits</th>"
        "<th>near-dups</th><th>refused</th><th>one-word</th><th>false-hit risk</th>"
        "<th>risk, no verifier</th></tr>",
    ]
    for x in rep.rows:
        mark = " class='v'" if rec.threshold is not None and x.threshold == rec.threshold else ""
        out.append(
            f"<tr{mark}><td>{x.threshold:.2f}</td><td>{_pct(x.hit_rate)}</td>"
            f"<td>{x.semantic_hits}</td><td>{x.candidates}</td><td>{x.refused}</td>"
            f"<td>{x.flagged}</td><td>{_pct(x.false_hit_risk)}</td>"
            f"<td>{_pct(x.plain_risk)}</td></tr>"
        )
    out.append("</table><table><tr><th>quality target</th><th>strong share</th>"
               "<th>cost / 1k</th><th>savings</th></tr>")  # fmt: skip
    for q in cx.targets:
        out.append(
            f"<tr><td>{_pct(q.quality)}</td><td>{_pct(q.strong_share)}</td>"
            f"<td>{_money(q.cost_per_request)}</td><td>{_pct(q.savings)}</td></tr>"
        )
    out.append("</table>")
    if rep.clusters:
        out.append(
            "<h3>Largest near-duplicate clusters</h3><table><tr><th>requests</th>"
            "<th>distinct</th><th class='l'>example (and variants)</th></tr>"
        )
        for c in rep.clusters:
            variants = "".join(f"<br><span class='muted'>{_short(o)}</span>" for o in c.others)
            out.append(
                f"<tr><td>{c.requests}</td><td>{c.distinct}</td>"
                f"<td class='l'>{_short(c.example)}{variants}</td></tr>"
            )
        out.append("</table>")
    out.append("<pre>" + escape(rec.yaml()) + "</pre></section>")
    return "".join(out)


def write(a: Analysis, path: str | Path) -> Path:
    """Write the report; returns its path."""
    p = Path(path)
    p.write_text(render(a), encoding="utf-8")
    return p
