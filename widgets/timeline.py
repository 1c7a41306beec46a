"""`TimelineView`: one slider over a run's snapshots (`lmlab.Timeline`) that every linked
view follows, the loss curve with the step shown marked, every head's scores over
training as a heads × steps heatmap under it, a token's probability over training, and
each layer's update-to-weight ratio.

    timeline = lmlab.Timeline(trainer)
    TimelineView(timeline, views=[dashboard, explorer, lens, embeddings, stepper])

Moving the slider to step k turns "live" off and redraws each linked view from snapshot k
(`View.show_step`); "live" shows the trainer's model again and keeps the slider at the
newest snapshot while training runs. The heatmap and the charts share one linear step
axis from 0 to the last step, with the same margins, so a head's change and the loss's
bump line up by eye.
"""

from __future__ import annotations

import html
import math

import ipywidgets as W

from lmlab.errors import ConfigError
from lmlab.health import TARGET
from lmlab.history import smooth
from lmlab.timeline import METRICS

from ._view import REFRESH_S, View, message_html
from .chart import LineChart, line, mark

CURSOR = "#e4572e"  # the step shown, as the views' orange
CROSSING = "#7b3294"  # a head reaching the threshold
LAYER_COLOURS = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
LABELS = {"induction": "induction", "previous_token": "previous token", "first_token": "first token",
          "entropy": "entropy (nats)"}
MAX_COLUMNS = 120  # snapshots drawn in the heatmap (evenly chosen beyond)
MAX_CROSSINGS = 8  # marks of heads crossing the threshold on the loss curve
MARGIN = (56, 12)  # the charts' plot margins, left and right (chart.js)


def _colour(t: float) -> str:
    """0..1 -> white to dark blue, the attention colours of `images.colour`."""
    t = min(1.0, max(0.0, t)) if math.isfinite(t) else 0.0
    return "#%02x%02x%02x" % (round(255 - 227 * t), round(255 - 196 * t), round(255 - 120 * t))


class TimelineView(View, W.VBox):
    """The timeline of `timeline`'s trainer, linking `views` (any of the dashboard, the
    attention explorer, logit lens, embeddings map, sampling stepper, model comparison).

    metric, threshold: the head score drawn (one of METRICS) and the value whose first
                       crossing is marked on the loss curve (entropy: falling to it)
    context, token:    a text and the next token whose probability over training is drawn
    """

    def __init__(self, timeline, views=(), *, metric: str = "induction", threshold: float = 0.5,
                 context: str = "", token: str = "", refresh: float = REFRESH_S):
        if metric not in METRICS:
            raise ConfigError(f"metric={metric!r}; choose one of {list(METRICS)}")
        W.VBox.__init__(self)
        self.timeline, self.trainer = timeline, timeline.trainer
        self._init_view([self.trainer], refresh)
        self.views: list = []
        self.step: int | None = None  # the snapshot shown; None: live
        self.emergence = None
        self._moving = False
        self._probability: tuple | None = None  # (steps, probabilities) of the context and token

        self.live = W.ToggleButton(value=True, description="live", icon="circle",
                                   tooltip="follow the newest step; off while you scrub",
                                   layout=W.Layout(width="80px"))
        self.slider = W.IntSlider(0, min=0, max=0, readout=False, continuous_update=False,
                                  description="step", style={"description_width": "36px"},
                                  layout=W.Layout(width="min(640px, 100%)"))
        self.slider.add_class("lmlab-timeline-slider")
        self.label = W.HTML(_dom_classes=("lmlab-timeline-label",))
        self.status = W.HTML()
        self.loss_chart = LineChart(title="loss over training", x_label="step",
                                    y_label="cross-entropy (nats/token)", height=230,
                                    _dom_classes=("lmlab-timeline-loss",))
        self.metric_box = W.Dropdown(options=[(LABELS[m], m) for m in METRICS], value=metric,
                                     description="head score", style={"description_width": "70px"},
                                     layout=W.Layout(width="240px"))
        self.threshold_box = W.FloatText(threshold, description="mark at", step=0.05,
                                         style={"description_width": "50px"}, layout=W.Layout(width="140px"))
        self.heatmap = W.HTML(_dom_classes=("lmlab-timeline-heatmap",), layout=W.Layout(width="100%"))
        self.context_box = W.Text(context, description="after", placeholder="e.g. Q",
                                  continuous_update=False, style={"description_width": "40px"},
                                  layout=W.Layout(width="260px"))
        self.token_box = W.Text(token, description="next", placeholder="e.g. u", continuous_update=False,
                                style={"description_width": "40px"}, layout=W.Layout(width="160px"))
        self.probability_chart = LineChart(title="probability of the next token over training",
                                           x_label="step", height=170,
                                           _dom_classes=("lmlab-timeline-probability",))
        self.health_chart = LineChart(title="update-to-weight ratio per layer (~1e-3 is healthy)",
                                      x_label="step", log_y=True, height=170,
                                      _dom_classes=("lmlab-timeline-health",))
        self.health_note = W.HTML()

        self.children = [
            W.HBox([self.live, self.slider, self.label], layout=W.Layout(align_items="center",
                                                                        flex_flow="row wrap")),
            self.status, self.loss_chart,
            W.HBox([self.metric_box, self.threshold_box]), self.heatmap,
            W.HBox([self.context_box, self.token_box]), self.probability_chart,
            self.health_chart, self.health_note,
        ]
        self.add_class("lmlab-timeline")

        self.slider.observe(self.guarded(self._on_slider), "value")
        self.live.observe(self.guarded(lambda c: self._moving or self.show(None if c["new"] else
                                                                           self._newest())), "value")
        self.metric_box.observe(self.guarded(lambda _: self._draw_scores()), "value")
        self.threshold_box.observe(self.guarded(lambda _: self._draw_scores()), "value")
        self.context_box.observe(self.guarded(lambda _: self._read_probability()), "value")
        self.token_box.observe(self.guarded(lambda _: self._read_probability()), "value")
        for event in ("step", "eval", "reset"):
            self._watch(self.trainer, event, "_tick")
        for view in views:
            self.link(view)
        self._read_probability()
        self.redraw(force=True)

    def _controls(self) -> list:
        return [self.live, self.slider, self.metric_box, self.threshold_box, self.context_box,
                self.token_box]

    # ---- the views it moves -------------------------------------------------------------

    def link(self, view) -> None:
        """Let the slider move `view` too (drawn at the step shown now)."""
        if not hasattr(view, "show_step"):
            raise ConfigError(f"{type(view).__name__} cannot follow a timeline: link lmlab's views "
                              "(dashboard, explorer, lens, embeddings map, stepper, model comparison)")
        model = getattr(view, "model", None)
        if model is not None and getattr(model, "config", None) != self.trainer.model.config:
            raise ConfigError(f"this {type(view).__name__} shows a model of another shape than the "
                              "timeline's trainer; link views of that trainer's model")
        self.views.append(view)
        if self.step is not None:
            self._move(view, self.timeline.model_at(self.step), self.step)

    def _move(self, view, model, step) -> None:
        try:
            view.show_step(self.trainer, model, step)
        except Exception as e:  # shown in that view; the others still move
            view.show_error(e)

    def show(self, step: int | None) -> None:
        """Show the snapshot nearest `step` in every linked view (None: live, the trainer's
        model as it is now)."""
        if step is not None:
            step = self.timeline.nearest(step)
        model = self.trainer.model if step is None else self.timeline.model_at(step)
        self.step = step
        for view in list(self.views):
            if not getattr(view, "closed", False):
                self._move(view, model, step)
        self._moving = True
        try:
            self.live.value = step is None
            if step is not None:
                self.slider.value = self.timeline.steps.index(step)
        finally:
            self._moving = False
        self._draw_frame()

    def _newest(self) -> int:
        return self.timeline.steps[-1]

    def _on_slider(self, change) -> None:
        if self._moving:
            return
        steps = self.timeline.steps
        self.show(steps[min(change["new"], len(steps) - 1)])

    # ---- drawing ------------------------------------------------------------------------

    def _x_range(self) -> list[float]:
        rows = self.trainer.history.rows()
        last = max(self._newest(), rows[-1]["step"] if rows else 0, 1)
        return [0.0, float(last)]

    def _draw(self) -> None:
        """New snapshots: the slider's range (kept at the newest while live), the scores of
        the new snapshots, every chart."""
        steps = self.timeline.steps
        self._moving = True
        try:
            self.slider.max = len(steps) - 1
            if self.step is None:
                self.slider.value = len(steps) - 1
            elif self.step in steps:
                self.slider.value = steps.index(self.step)
        finally:
            self._moving = False
        if self.step is not None and self.step not in steps:  # thinned or reset away
            self.show(self.timeline.nearest(self.step))
            return
        self.emergence = self.timeline.scores()
        if self._probability is not None:
            self._read_probability(redraw=False)
        self._draw_scores()

    def _draw_scores(self) -> None:
        if self.emergence is None:
            return
        x_range = self._x_range()
        rows = self.trainer.history.rows()
        train, _ = smooth([r["train_loss"] for r in rows], 0.9)
        val = [(r["step"], r["val_loss"]) for r in rows if r["val_loss"] is not None]
        with self.loss_chart.hold_sync():
            self.loss_chart.x_range = x_range
            self.loss_chart.set_lines([
                line("train (smoothed)", [r["step"] for r in rows], train, "#1f77b4"),
                line("validation", [s for s, _ in val], [v for _, v in val], "#ff7f0e", markers=True),
            ])
        series = self.timeline.health.series() if self.timeline.health else {}
        with self.health_chart.hold_sync():
            self.health_chart.x_range = x_range
            self.health_chart.set_lines(
                [line(layer, s, v, LAYER_COLOURS[i % len(LAYER_COLOURS)], width=1.5)
                 for i, (layer, (s, v)) in enumerate(series.items())]
                + [line("", x_range, [TARGET, TARGET], "#999", width=1, dash=True)])
        warnings = self.timeline.health.warnings() if self.timeline.health else []
        self.health_note.value = message_html("\n".join(warnings), "notice") if warnings else ""
        self._draw_frame()

    def _crossings(self) -> list[tuple]:
        try:
            threshold = float(self.threshold_box.value)
        except (TypeError, ValueError):
            return []
        return self.emergence.first_crossing(self.metric_box.value, threshold)

    def _draw_frame(self) -> None:
        """What a move changes: the marks of the step shown, the heatmap's cursor, the label."""
        if self.emergence is None:
            return
        steps = self.timeline.steps
        shown = self.step if self.step is not None else steps[-1]
        cursor = mark(shown, CURSOR, f"step {shown}" if self.step is not None else "live", width=2)
        crossings = [mark(step, CROSSING, f"L{layer}H{head}", dash=True, row=1 + i % 3)
                     for i, (layer, head, step) in enumerate(self._crossings()[:MAX_CROSSINGS])]
        self.loss_chart.marks = crossings + [cursor]
        self.health_chart.marks = [cursor]
        self.probability_chart.marks = [cursor] if self._probability else []
        self.heatmap.value = self._heatmap_html(shown)
        rows = [r for r in self.trainer.history.rows() if r["step"] == shown]
        loss = f" · train loss {rows[0]['train_loss']:.3f}" if rows else ""
        where = "live: the model now" if self.step is None else "the model as it was"
        self.label.value = (f"<b>step {shown}</b> of {self.trainer.step_count} · {where} · "
                            f"snapshot {steps.index(shown) + 1} of {len(steps)}{loss}")

    def _heatmap_html(self, shown: int) -> str:
        em, metric = self.emergence, self.metric_box.value
        values = em.scores[metric]  # [n, L, H]
        n, L, H = values.shape
        top = float(values.max()) if metric == "entropy" else 1.0
        lo, hi = self._x_range()
        picked = sorted({round(i * (n - 1) / (MAX_COLUMNS - 1)) for i in range(MAX_COLUMNS)}) \
            if n > MAX_COLUMNS else list(range(n))
        ends = [em.steps[j] for j in picked[1:]] + [hi]
        crossed = {(layer, head): step for layer, head, step in self._crossings()}
        left, right = MARGIN
        parts = [f'<div class="lmlab-heatmap" style="position:relative;margin:0 {right}px 0 {left}px;'
                 f'font:10px sans-serif">']
        for layer in range(L):
            for head in range(H):
                name = f"L{layer}H{head}"
                at = crossed.get((layer, head))
                tip = f"{name}: first reaches the mark at step {at}" if at is not None else name
                parts.append(f'<div class="row" title="{tip}" style="position:relative;height:10px;'
                             f'margin-bottom:1px;background:#f4f4f4"><span style="position:absolute;'
                             f'right:100%;padding-right:4px;line-height:10px;color:#555">{name}</span>')
                for j, end in zip(picked, ends):
                    start = em.steps[j]
                    v = float(values[j, layer, head])
                    t = (1 - v / top) if metric == "entropy" and top > 0 else v / top
                    a, w = (start - lo) / (hi - lo) * 100, max(0.15, (end - start) / (hi - lo) * 100)
                    parts.append(f'<i style="position:absolute;left:{a:.2f}%;width:{w:.2f}%;height:10px;'
                                 f'background:{_colour(t)}" title="{name} step {start}: {v:.3f}"></i>')
                parts.append("</div>")
        x = (shown - lo) / (hi - lo) * 100
        parts.append(f'<div class="lmlab-heatmap-cursor" data-step="{shown}" style="position:absolute;'
                     f'top:0;bottom:0;left:{x:.2f}%;width:2px;background:{CURSOR}"></div></div>')
        what = "darker: lower entropy" if metric == "entropy" else "darker: closer to 1"
        parts.append(f'<div style="font:11px sans-serif;color:#555;margin:2px 0 0 {left}px">'
                     f'{html.escape(LABELS[metric])} of every head (rows) at every snapshot '
                     f'({what}); the orange line is the step shown</div>')
        return "".join(parts)

    def _read_probability(self, redraw: bool = True) -> None:
        context, token = self.context_box.value, self.token_box.value
        if not context or not token:
            self._probability = None
            self.probability_chart.set_lines([])
            return
        tokenizer = self.trainer.dataset.tokenizer
        ids = tokenizer.encode(token)
        if len(ids) != 1:
            raise ConfigError(f"{token!r} is {len(ids)} tokens for this tokenizer; give one token "
                              "as the next one")
        steps, p = self.timeline.probability(tokenizer.encode(context), ids[0])
        self._probability = (steps, p)
        with self.probability_chart.hold_sync():
            self.probability_chart.title = f"P({token!r} next after {context[-30:]!r}) over training"
            self.probability_chart.x_range = self._x_range()
            self.probability_chart.set_lines([line("", steps, p, "#2ca02c", markers=True)])
        if redraw:
            self._draw_frame()

    # ---- errors and the static snapshot -----------------------------------------------------

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind)

    def _static_html(self) -> str:
        """The frame shown now (not every frame): the step, the charts and the heatmap."""
        parts = [f"<div>{self.label.value}</div>", self.status.value, self.loss_chart.svg(),
                 self.heatmap.value]
        if self._probability:
            parts.append(self.probability_chart.svg())
        parts += [self.health_chart.svg(), self.health_note.value]
        return "".join(parts)
