"""`RunComparison`: several runs' loss curves on one chart, live."""

from __future__ import annotations

import threading
import time

import ipywidgets as W
import plotly.graph_objects as go

from .dashboard import MAX_POINTS, REFRESH_S, LossCurves

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf")


class RunComparison(W.VBox):
    """Overlay the smoothed training loss (solid) and validation loss (dotted, markers)
    of several trainers, e.g. AdamW vs SGD, or three model sizes."""

    def __init__(self, trainers, labels=None, *, x: str = "step", refresh: float = REFRESH_S,
                 max_points: int = MAX_POINTS):
        trainers = list(trainers)
        if not trainers:
            raise ValueError("RunComparison needs at least one trainer")
        if labels is None:
            labels = [f"{t.model.num_params() / 1e6:.2f}M {t.config.optimizer} "
                      f"lr={t.config.learning_rate:g}" for t in trainers]
        if len(labels) != len(trainers):
            raise ValueError(f"{len(labels)} labels for {len(trainers)} trainers; give one each")
        self.trainers, self.labels, self.refresh = trainers, list(labels), refresh
        self.curves = [LossCurves(max_points) for _ in trainers]
        self.x_axis = W.ToggleButtons(options=["steps", "tokens"],
                                      value="tokens" if x == "tokens" else "steps")
        self.fig = go.FigureWidget(layout=dict(
            height=380, title="loss by run", template="plotly_white",
            xaxis_title=x, yaxis_title="cross-entropy (nats/token)",
            margin=dict(l=50, r=10, t=40, b=40)))
        for label, colour in zip(self.labels, COLOURS * 4):
            self.fig.add_scatter(name=f"{label} train", mode="lines", legendgroup=label,
                                 line=dict(color=colour, width=2))
            self.fig.add_scatter(name=f"{label} val", mode="lines+markers", legendgroup=label,
                                 line=dict(color=colour, width=1, dash="dot"))
        self._lock = threading.Lock()
        self._last = 0.0
        for t in trainers:
            t.on_step(self._on_step)
            t.on_end(lambda *_: self.redraw(force=True))
        self.x_axis.observe(lambda _: self.redraw(force=True), "value")
        super().__init__([self.x_axis, self.fig], _dom_classes=("lmlab-compare",))
        self.redraw(force=True)

    def _on_step(self, trainer, row):
        if time.monotonic() - self._last >= self.refresh:
            self.redraw()

    def redraw(self, force: bool = False):
        if not self._lock.acquire(blocking=force):
            return
        try:
            self._last = time.monotonic()
            x = "step" if self.x_axis.value == "steps" else "tokens"
            with self.fig.batch_update():
                for i, (t, c) in enumerate(zip(self.trainers, self.curves)):
                    c.add(t.history.rows(len(c.rows)))
                    s = c.series(x)
                    self.fig.data[2 * i].x, self.fig.data[2 * i].y = s["train_smooth"]
                    self.fig.data[2 * i + 1].x, self.fig.data[2 * i + 1].y = s["val"]
                self.fig.layout.xaxis.title.text = "tokens seen" if x == "tokens" else "step"
        finally:
            self._lock.release()

    def run(self, steps: int | None = None):
        """Train the runs one after another, blocking, the chart updating live."""
        for t in self.trainers:
            t.run(steps, progress=False)
        self.redraw(force=True)
