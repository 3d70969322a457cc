"""Small charts as inline SVG, drawn on the server: a pure function from a series to markup.

No script and no inline style (the console's Content-Security-Policy allows neither): shapes take
presentation attributes and classes from the console's stylesheet.
"""

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart"]


def _number(value: float) -> str:
    """A value as a chart label: whole numbers plain, small ones with one decimal."""
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.1f}"


def bar_chart(values: Sequence[float], *, title: str, width: int = 320, height: int = 72) -> str:
    """A bar per value (oldest first), scaled to the largest, with the title and the peak as text.

    Negative values count as zero; an empty or all-zero series draws a flat baseline.
    """
    points = [max(0.0, float(v)) for v in values]
    peak = max(points, default=0.0)
    label = escape(title, quote=True)
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{label}, peak {_number(peak)}">',
        f"<title>{label}</title>",
        f'<line class="chart-base" x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}"/>',
    ]
    if points and peak > 0:
        slot = width / len(points)
        bar = max(1.0, slot * 0.8)
        for index, value in enumerate(points):
            if value <= 0:
                continue
            tall = max(1.0, (height - 14) * value / peak)
            x = index * slot + (slot - bar) / 2
            parts.append(
                f'<rect class="chart-bar" x="{x:.2f}" y="{height - 1 - tall:.2f}"'
                f' width="{bar:.2f}" height="{tall:.2f}"/>'
            )
    parts.append(
        f'<text class="chart-peak" x="{width - 2}" y="10" text-anchor="end">peak {_number(peak)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
