"""The chart is a pure function from a series to SVG: bars scaled to the peak, text escaped, no
script or inline style (the console's CSP allows neither)."""

import re
import xml.etree.ElementTree as ET

from gateway.console.charts import bar_chart

SVG = "{http://www.w3.org/2000/svg}"


def bars(svg: str) -> list[float]:
    chart = ET.fromstring(svg)  # noqa: S314 - made by the test
    return [float(rect.get("height", "0")) for rect in chart.iter(f"{SVG}rect")]


def test_bars_are_scaled_to_the_peak() -> None:
    svg = bar_chart([1, 2, 4], title="Deliveries", height=74)
    heights = bars(svg)
    assert len(heights) == 3
    assert heights[2] == 60.0  # the peak fills the height less the label's room
    assert heights[0] == 15.0 and heights[1] == 30.0
    assert "peak 4" in svg


def test_zero_and_negative_values_draw_no_bar() -> None:
    assert bars(bar_chart([0, -3, 0], title="Failures")) == []
    assert bars(bar_chart([], title="Failures")) == []
    assert "peak 0" in bar_chart([], title="Failures")


def test_the_title_is_escaped_and_nothing_executes() -> None:
    svg = bar_chart([1], title='<script>alert(1)</script>" onload="x')
    ET.fromstring(svg)  # noqa: S314 - well-formed
    assert "<script>" not in svg and 'onload="x' not in svg
    assert "&lt;script&gt;" in svg
    assert not re.search(r"\sstyle=", svg)


def test_fractions_read_with_one_decimal() -> None:
    assert "peak 0.5" in bar_chart([0.25, 0.5], title="Lag")
    assert "peak 1,200" in bar_chart([1200], title="Events")
