"""`LineChart`: a small anywidget front end (`chart.js`) for live line charts.

Plotly's FigureWidget sends its updates as messages that a reloaded page never
receives, so its live charts came back blank after a browser reload. Here every line
is a synced trait: a reload or a second tab draws the whole curve from the kernel's
state. Plotly stays for static figures.
"""

from __future__ import annotations

import math
import pathlib

import anywidget
import traitlets

HERE = pathlib.Path(__file__).parent


def _round(values, digits: int = 6) -> list:
    """Floats to `digits` significant digits (smaller messages); non-finite -> None."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            out.append(None)
        elif isinstance(v, float):
            out.append(float(f"{v:.{digits}g}"))
        else:
            out.append(v)
    return out


def line(name: str, x, y, color: str, width: float = 2, dash: bool = False,
         markers: bool = False, opacity: float = 1.0) -> dict:
    """One series for `LineChart.series`: x and y lists of equal length."""
    return {"name": name, "x": _round(x), "y": _round(y), "color": color, "width": width,
            "dash": dash, "markers": markers, "opacity": opacity}


class LineChart(anywidget.AnyWidget):
    """Line chart as wide as its container, `height` pixels tall; y on a log scale with
    `log_y`. `series` is a list of `line(...)` dicts."""

    _esm = HERE / "chart.js"
    _css = HERE / "chart.css"
    series = traitlets.List(traitlets.Dict()).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    x_label = traitlets.Unicode("").tag(sync=True)
    y_label = traitlets.Unicode("").tag(sync=True)
    log_y = traitlets.Bool(False).tag(sync=True)
    height = traitlets.Int(300).tag(sync=True)
