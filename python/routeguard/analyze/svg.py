"""Small inline SVG charts for the HTML report (no plotting library): bars and lines.

Each function takes plain numbers and returns one ``<svg>`` element as a string, with axes,
a few ticks and a legend; text is escaped. Sizes are in CSS pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

W, H = 420, 220
_L, _R, _T, _B = 48, 12, 16, 36  # margins
COLOURS = ("#3b6fb6", "#d0653b", "#4c9a5a", "#8a5cb0")


def _frame(title: str, x_label: str, y_label: str, body: list[str]) -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">',
        f'<text x="{W / 2}" y="11" font-size="11" text-anchor="middle">{escape(title)}</text>',
        f'<line x1="{_L}" y1="{H - _B}" x2="{W - _R}" y2="{H - _B}" stroke="#555"/>',
        f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{H - _B}" stroke="#555"/>',
        f'<text x="{(_L + W - _R) / 2}" y="{H - 4}" font-size="10" '
        f'text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="10" y="{(H - _B + _T) / 2}" font-size="10" text-anchor="middle" '
        f'transform="rotate(-90 10 {(H - _B + _T) / 2})">{escape(y_label)}</text>',
        *body,
        "</svg>",
    ]
    return "".join(parts)


def _sx(x: float, lo: float, hi: float) -> float:
    return _L + (x - lo) / (hi - lo or 1.0) * (W - _L - _R)


def _sy(y: float, lo: float, hi: float) -> float:
    return H - _B - (y - lo) / (hi - lo or 1.0) * (H - _B - _T)


def _ticks(lo: float, hi: float, n: int, fmt: str, axis: str) -> list[str]:
    out = []
    for i in range(n + 1):
        v = lo + (hi - lo) * i / n
        label = escape(format(v, fmt))
        if axis == "x":
            x = _sx(v, lo, hi)
            out.append(
                f'<text x="{x:.1f}" y="{H - _B + 12}" font-size="9" '
                f'text-anchor="middle">{label}</text>'
            )
        else:
            y = _sy(v, lo, hi)
            out.append(
                f'<text x="{_L - 4}" y="{y + 3:.1f}" font-size="9" text-anchor="end">{label}</text>'
                f'<line x1="{_L}" y1="{y:.1f}" x2="{W - _R}" y2="{y:.1f}" stroke="#eee"/>'
            )
    return out


def bars(
    counts: Sequence[float], lo: float, hi: float, *, title: str, x_label: str, y_label: str
) -> str:
    """A histogram: ``counts`` of equal-width bins spanning ``lo..hi``."""
    top = max(max(counts, default=0), 1)
    body = _ticks(0, top, 4, ".0f", "y") + _ticks(lo, hi, 4, ".1f", "x")
    width = (W - _L - _R) / max(len(counts), 1)
    for i, c in enumerate(counts):
        y = _sy(c, 0, top)
        body.append(
            f'<rect x="{_L + i * width + 1:.1f}" y="{y:.1f}" width="{max(width - 2, 1):.1f}" '
            f'height="{H - _B - y:.1f}" fill="{COLOURS[0]}"><title>{c:g}</title></rect>'
        )
    return _frame(title, x_label, y_label, body)


def lines(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_fmt: str = ".0%",
    y_max: float | None = None,
) -> str:
    """Line series ``(name, [(x, y), ...])`` on shared axes, with a legend."""
    xs = [x for _, pts in series for x, _ in pts] or [0.0, 1.0]
    ys = [y for _, pts in series for _, y in pts] or [0.0, 1.0]
    x_lo, x_hi = min(xs), max(xs)
    y_hi = y_max if y_max is not None else max(max(ys), 1e-12)
    body = _ticks(0.0, y_hi, 4, y_fmt, "y") + _ticks(x_lo, x_hi, 4, ".2f", "x")
    for k, (name, pts) in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{_sx(x, x_lo, x_hi):.1f},{_sy(y, 0.0, y_hi):.1f}"
            for i, (x, y) in enumerate(pts)
        )
        body.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            body.append(
                f'<circle cx="{_sx(x, x_lo, x_hi):.1f}" cy="{_sy(y, 0.0, y_hi):.1f}" r="2.5" '
                f'fill="{colour}"><title>{escape(name)}: {x:.2f}, '
                f"{escape(format(y, y_fmt))}</title></circle>"
            )
        ly = _T + 4 + 12 * k
        body.append(
            f'<rect x="{W - _R - 120}" y="{ly}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{W - _R - 106}" y="{ly + 4}" font-size="9">{escape(name)}</text>'
        )
    return _frame(title, x_label, y_label, body)
