"""`RunComparison`: several runs' loss curves on one chart, live."""

from __future__ import annotations


import ipywidgets as W

from ._view import REFRESH_S, View, message_html
from .chart import LineChart, line
from .dashboard import MAX_POINTS, LossCurves

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf")


class RunComparison(View, W.VBox):
    """Overlay the smoothed training loss (solid) and validation loss (dashed, markers)
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
        self.trainers, self.labels = trainers, list(labels)
        self.curves = [LossCurves(max_points) for _ in trainers]
        self.x_axis = W.ToggleButtons(options=["steps", "tokens"],
                                      value="tokens" if x == "tokens" else "steps")
        self.chart = LineChart(title="loss by run", y_label="cross-entropy (nats/token)",
                               height=380, _dom_classes=("lmlab-compare-chart",))
        self.status = W.HTML("", _dom_classes=("lmlab-error",))
        self.x_axis.observe(lambda _: self.redraw(force=True), "value")
        super().__init__([self.x_axis, self.chart, self.status], _dom_classes=("lmlab-compare",))
        self._init_view(trainers, refresh)
        for t in trainers:
            self._watch(t, "step", "_tick")
            self._watch(t, "end", "_redraw_now")
            self._watch(t, "reset", "_on_reset")
        self.redraw(force=True)

    def _on_reset(self, trainer, _):
        self.curves[self.trainers.index(trainer)].reset()  # its history was replaced
        self.redraw(force=True)

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind)

    def _redraw_now(self, trainer, _):
        self.redraw(force=True)
        self.refresh_snapshot()

    def _static_html(self) -> str:
        """The chart as SVG, and the status line."""
        return self.chart.svg(max_points=200) + self.status.value

    def _draw(self):
        x = "step" if self.x_axis.value == "steps" else "tokens"
        series = []
        for t, c, label, colour in zip(self.trainers, self.curves, self.labels, COLOURS * 4):
            c.catch_up(t.history)
            s = c.series(x)
            series.append(line(f"{label} train", *s["train_smooth"], colour))
            series.append(line(f"{label} val", *s["val"], colour, width=1, dash=True,
                               markers=True))
        with self.chart.hold_sync():
            self.chart.set_lines(series)
            self.chart.x_label = "tokens seen" if x == "tokens" else "step"

    def run(self, steps: int | None = None):
        """Train the runs one after another, blocking, the chart updating live."""
        for t in self.trainers:
            t.run(steps, progress=False)
        self.redraw(force=True)
