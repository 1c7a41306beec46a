"""`LineChart`: a small anywidget front end (`chart.js`) for live line charts.

Plotly's FigureWidget sends its updates as messages that a reloaded page never
receives, so its live charts came back blank after a browser reload. Here every line
is synced state: a reload or a second tab draws the whole curve from the kernel's
state. The points travel as one binary float32 buffer (no JSON encoding of numbers),
the style of each line as JSON. Plotly stays for static figures. `svg()` draws the chart
as it is now for a static snapshot, in Python (no script, no library).
"""

from __future__ import annotations

import html
import math
import pathlib

import anywidget
import numpy as np
import traitlets

from lmlab.history import downsample

HERE = pathlib.Path(__file__).parent


def line(name: str, x, y, color: str, width: float = 2, dash: bool = False,
         markers: bool = False, opacity: float = 1.0) -> dict:
    """One line for `LineChart.set_lines`: x and y sequences of equal length (None or a
    non-finite y leaves a gap)."""
    return {"name": name, "x": x, "y": y, "color": color, "width": width, "dash": dash,
            "markers": markers, "opacity": opacity}


def mark(x: float, color: str, label: str = "", dash: bool = False, width: float = 1.5,
         row: int = 0) -> dict:
    """One vertical mark for `LineChart.marks` at `x`, labelled at the top (on label row
    `row`, so that marks close together stay readable)."""
    return {"x": x, "color": color, "label": label, "dash": dash, "width": width, "row": row}


def _floats(values) -> np.ndarray:
    return np.fromiter((math.nan if v is None else v for v in values), np.float32)


class LineChart(anywidget.AnyWidget):
    """Line chart as wide as its container, `height` pixels tall; y (x) on a log scale with
    `log_y` (`log_x`). Set its lines with `set_lines([line(...), ...])`."""

    _esm = HERE / "chart.js"
    _css = HERE / "chart.css"
    series = traitlets.List(traitlets.Dict()).tag(sync=True)  # style and point count n of each line
    data = traitlets.Bytes(b"").tag(sync=True)  # float32: x of line 0, y of line 0, x of line 1, ...
    title = traitlets.Unicode("").tag(sync=True)
    x_label = traitlets.Unicode("").tag(sync=True)
    y_label = traitlets.Unicode("").tag(sync=True)
    log_y = traitlets.Bool(False).tag(sync=True)
    log_x = traitlets.Bool(False).tag(sync=True)
    height = traitlets.Int(300).tag(sync=True)
    marks = traitlets.List(traitlets.Dict()).tag(sync=True)  # vertical lines: see `mark`
    x_range = traitlets.List(traitlets.Float()).tag(sync=True)  # [lo, hi], or [] for the data's

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

    def svg(self, width: int = 640, max_points: int = 300) -> str:
        """The chart as it is now as inline SVG (a few kB): each line at most
        `max_points` points, the axes' ends labelled, a legend of the named lines."""
        left, right, top, bottom = 56, 12, 26, 36  # chart.js's margins
        height = self.height
        w, h = width - left - right, height - top - bottom
        lines = self.lines()
        pts = [(x, y) for ln in lines for x, y in zip(ln["x"], ln["y"])
               if math.isfinite(x) and math.isfinite(y) and (y > 0 or not self.log_y)
               and (x > 0 or not self.log_x)]
        ty = math.log10 if self.log_y else float
        tx = math.log10 if self.log_x else float
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                 f'viewBox="0 0 {width} {height}" style="font:11px sans-serif;max-width:100%">',
                 f'<text x="{left}" y="16" font-weight="bold">{html.escape(self.title)}</text>',
                 f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/>',
                 f'<text x="{left + w / 2}" y="{height - 4}" text-anchor="middle">'
                 f'{html.escape(self.x_label)}</text>',
                 f'<text transform="translate(12,{top + h / 2}) rotate(-90)" text-anchor="middle">'
                 f'{html.escape(self.y_label)}</text>']
        if not pts:
            parts.append(f'<text x="{left + w / 2}" y="{top + h / 2}" text-anchor="middle" '
                         'fill="#888">no points yet</text></svg>')
            return "".join(parts)
        x0, x1 = min(tx(p[0]) for p in pts), max(tx(p[0]) for p in pts)
        if len(self.x_range) == 2 and (not self.log_x or min(self.x_range) > 0):
            x0, x1 = tx(self.x_range[0]), tx(self.x_range[1])
        y0, y1 = min(ty(p[1]) for p in pts), max(ty(p[1]) for p in pts)
        x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

        def sx(x):
            return f"{left + (tx(x) - x0) / (x1 - x0) * w:.1f}"

        def sy(y):
            return f"{top + h - (ty(y) - y0) / (y1 - y0) * h:.1f}"

        for x, anchor in ((x0, "start"), (x1, "end")):
            x = 10 ** x if self.log_x else x
            parts.append(f'<text x="{sx(x)}" y="{top + h + 13}" text-anchor="{anchor}">{x:.4g}</text>')
        for y in (y0, y1):
            value = 10 ** y if self.log_y else y
            parts.append(f'<text x="{left - 4}" y="{sy(value)}" text-anchor="end" '
                         f'dominant-baseline="middle">{value:.3g}</text>')
        legend = 0
        for ln in lines:
            style = (f'stroke="{ln["color"]}" stroke-width="{ln["width"]}" opacity="{ln["opacity"]}"'
                     + (' stroke-dasharray="6 4"' if ln["dash"] else ""))
            keep = [(ln["x"][i], ln["y"][i]) for i in downsample(len(ln["x"]), max_points)]
            path, pen = [], "M"
            for x, y in keep:
                if not (math.isfinite(x) and math.isfinite(y)) or (self.log_y and y <= 0) \
                        or (self.log_x and x <= 0):
                    pen = "M"  # a gap
                    continue
                path.append(f"{pen}{sx(x)} {sy(y)}")
                pen = "L"
            if path:
                parts.append(f'<path d="{"".join(path)}" fill="none" {style}/>')
            if ln["markers"]:
                parts += [f'<circle cx="{sx(x)}" cy="{sy(y)}" r="2.5" fill="{ln["color"]}"/>'
                          for x, y in keep if math.isfinite(x) and math.isfinite(y)
                          and (y > 0 or not self.log_y) and (x > 0 or not self.log_x)]
            if ln["name"]:
                y = top + 12 + 14 * legend
                parts.append(f'<line x1="{left + w - 150}" x2="{left + w - 134}" y1="{y - 4}" y2="{y - 4}" '
                             f'{style}/><text x="{left + w - 128}" y="{y}">{html.escape(ln["name"])}</text>')
                legend += 1
        for m in self.marks:
            if (m["x"] > 0 or not self.log_x) and x0 <= tx(m["x"]) <= x1:
                dash = ' stroke-dasharray="3 3"' if m["dash"] else ""
                parts.append(f'<line x1="{sx(m["x"])}" x2="{sx(m["x"])}" y1="{top}" y2="{top + h}" '
                             f'stroke="{m["color"]}" stroke-width="{m["width"]}"{dash}/>')
                if m["label"]:
                    parts.append(f'<text x="{float(sx(m["x"])) + 3:.1f}" y="{top + 10 + 11 * m["row"]}" '
                                 f'fill="{m["color"]}">{html.escape(m["label"])}</text>')
        parts.append("</svg>")
        return "".join(parts)
