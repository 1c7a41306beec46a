"""`LineChart`: a small anywidget front end (`chart.js`) for live line charts.

Plotly's FigureWidget sends its updates as messages that a reloaded page never
receives, so its live charts came back blank after a browser reload. Here every line
is synced state: a reload or a second tab draws the whole curve from the kernel's
state. The points travel as one binary float32 buffer (no JSON encoding of numbers),
the style of each line as JSON. Plotly stays for static figures.
"""

from __future__ import annotations

import math
import pathlib

import anywidget
import numpy as np
import traitlets

HERE = pathlib.Path(__file__).parent


def line(name: str, x, y, color: str, width: float = 2, dash: bool = False,
         markers: bool = False, opacity: float = 1.0) -> dict:
    """One line for `LineChart.set_lines`: x and y sequences of equal length (None or a
    non-finite y leaves a gap)."""
    return {"name": name, "x": x, "y": y, "color": color, "width": width, "dash": dash,
            "markers": markers, "opacity": opacity}


def _floats(values) -> np.ndarray:
    return np.fromiter((math.nan if v is None else v for v in values), np.float32)


class LineChart(anywidget.AnyWidget):
    """Line chart as wide as its container, `height` pixels tall; y on a log scale with
    `log_y`. Set its lines with `set_lines([line(...), ...])`."""

    _esm = HERE / "chart.js"
    _css = HERE / "chart.css"
    series = traitlets.List(traitlets.Dict()).tag(sync=True)  # style and point count n of each line
    data = traitlets.Bytes(b"").tag(sync=True)  # float32: x of line 0, y of line 0, x of line 1, ...
    title = traitlets.Unicode("").tag(sync=True)
    x_label = traitlets.Unicode("").tag(sync=True)
    y_label = traitlets.Unicode("").tag(sync=True)
    log_y = traitlets.Bool(False).tag(sync=True)
    height = traitlets.Int(300).tag(sync=True)

    def set_lines(self, lines: list[dict]) -> None:
        meta, chunks = [], []
        for ln in lines:
            x, y = _floats(ln["x"]), _floats(ln["y"])
            if len(x) != len(y):
                raise ValueError(f"line {ln['name']!r} has {len(x)} x values but {len(y)} y values")
            meta.append({k: v for k, v in ln.items() if k not in ("x", "y")} | {"n": len(x)})
            chunks += [x, y]
        with self.hold_sync():
            self.series = meta
            self.data = np.concatenate(chunks).tobytes() if chunks else b""

    def lines(self) -> list[dict]:
        """The lines as drawn: style, and x and y as lists (NaN for gaps)."""
        values = np.frombuffer(self.data, np.float32)
        out, at = [], 0
        for meta in self.series:
            n = meta["n"]
            out.append(meta | {"x": values[at:at + n].tolist(), "y": values[at + n:at + 2 * n].tolist()})
            at += 2 * n
        return out
