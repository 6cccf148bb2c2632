#!/usr/bin/env python3
"""Draws the ratios of a `Scripts/bench --json` file as an SVG bar chart (standard library only).

Usage: bench_chart.py BENCH.json OUT.svg

One bar per figure compared with a peer: ward's median over the peer's, on a log scale
(left of 1× ward is faster or smaller). A budget, where the row has one, is a tick on the bar;
a bar over its budget is red.
"""
import json
import math
import re
import sys
from html import escape
from typing import Any

LABEL_WIDTH, BAR_WIDTH, ROW_HEIGHT, TOP = 520, 420, 22, 58
LO, HI = math.log10(0.01), math.log10(100)


def x(ratio: float) -> float:
    """The horizontal position of `ratio` on the log axis, clamped to its ends."""
    v = min(max(math.log10(ratio), LO), HI)
    return LABEL_WIDTH + (v - LO) / (HI - LO) * BAR_WIDTH


def chart(data: dict[str, Any]) -> str:
    """The SVG of the rows of `data` (a `Scripts/bench --json` file) that have a ratio."""
    rows = [r for r in data["rows"] if r.get("ratio") is not None and r["ratio"] > 0]
    width, height = LABEL_WIDTH + BAR_WIDTH + 110, TOP + ROW_HEIGHT * len(rows) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="20" font-size="15" font-weight="bold">ward / peer, ratio of medians (log scale; left of 1× is better)</text>',
    ]
    subtitle = f"{data.get('iterations')} interleaved iterations, kernel {data.get('kernel')}, {data.get('cores')} cores"
    out.append(f'<text x="10" y="38" fill="#555">{escape(subtitle)}</text>')
    for tick in (0.01, 0.1, 0.4, 1, 2.5, 10, 100):
        tx = x(tick)
        out.append(f'<line x1="{tx:.1f}" y1="{TOP - 6}" x2="{tx:.1f}" y2="{height - 30}" stroke="{"#333" if tick == 1 else "#ddd"}"/>')
        out.append(f'<text x="{tx:.1f}" y="{height - 14}" text-anchor="middle" fill="#555">{tick:g}×</text>')
    for i, r in enumerate(rows):
        y = TOP + i * ROW_HEIGHT
        ratio = r["ratio"]
        missed = r.get("met") is False
        color = "#c62828" if missed else ("#2e7d32" if r.get("met") else "#607d8b")
        x1, x0 = x(ratio), x(1)
        left, w = min(x0, x1), max(abs(x1 - x0), 1.5)
        label = f'{r["figure"]} vs {r["peer"]}'
        out.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + 14}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<rect x="{left:.1f}" y="{y + 4}" width="{w:.1f}" height="{ROW_HEIGHT - 8}" fill="{color}"/>')
        budget = re.match(r"≤ ([0-9.]+)×", r.get("budget") or "")
        if budget:
            bx = x(float(budget.group(1)))
            out.append(f'<line x1="{bx:.1f}" y1="{y + 1}" x2="{bx:.1f}" y2="{y + ROW_HEIGHT - 1}" stroke="black" stroke-width="2"/>')
        out.append(f'<text x="{LABEL_WIDTH + BAR_WIDTH + 8}" y="{y + 14}" fill="{color}">{ratio:.2f}×{" MISSED" if missed else ""}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    with open(sys.argv[1]) as f:
        data = json.load(f)
    svg = chart(data)
    with open(sys.argv[2], "w") as f:
        f.write(svg)


if __name__ == "__main__":
    main()
