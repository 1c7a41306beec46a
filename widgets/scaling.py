"""`ScalingLab`: train a family of model sizes one after another and watch how the loss
falls with size: each run's loss curve live, then the final losses against parameters
on log-log axes with the fitted power law L(N) = a·N^(−α) + c and its equation, and the
loss against training compute with its lower envelope (the compute-efficient frontier).

The runs are a `lmlab.scaling.SweepPlan`: with `out=` each finished run is saved, and a
sweep started again reads it back instead of training it again. Start trains through the
same run control as the dashboard's Start (between cells, at full speed); Stop ends the
run in progress after its step, and Start continues it.
"""

from __future__ import annotations

import html
import math

import ipywidgets as W
import numpy as np

from lmlab.errors import ConfigError, LmlabError
from lmlab.scaling import (DEFAULT_SIZES, DEFAULT_TOKENS, SweepPlan, compute_frontier, default_offset,
                           fit_power_law, tokens_per_step, training_flops)

from ._view import REFRESH_S, View, message_html
from .chart import LineChart, line
from .dashboard import LossCurves

# small models light, large ones dark: one hue from pale to deep
RAMP = ("#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")


def _colour(i: int, n: int) -> str:
    return RAMP[round(i * (len(RAMP) - 1) / max(1, n - 1))]


def _si(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def _shape(model: dict) -> str:
    return f"{model['n_layer']}×{model['n_embd']}"


class ScalingLab(View, W.VBox):
    """ScalingLab(corpus, sizes, tokens_per_run=... | compute_budget=..., out="sweep.json").

    corpus, sizes, budgets, out, train, block_size, eval_batches: as `lmlab.scaling.sweep`
        (sizes default to `DEFAULT_SIZES`, the budget to `DEFAULT_TOKENS` tokens per run);
        or `plan=` a `SweepPlan` made beforehand.
    offset: the irreducible loss c of the fit, in nats per token, fixed a priori (the
        points of one sweep cannot pin it down); default `default_offset` of the corpus's
        tokenizer (Shannon's ~1 bit per character for characters, else 0). The slider
        changes it; "fit c too" fits it from the points instead.

    `run()` trains in the cell, blocking (scripts, notebook tests); the Start button trains
    between cells. `results` is the `Sweep` of the finished runs, `fit` the last fit.
    """

    def __init__(self, corpus="shakespeare", sizes=None, *, tokens_per_run: int | None = None,
                 compute_budget: float | None = None, out=None, train=None, block_size: int = 64,
                 eval_batches: int = 100, offset: float | None = None, plan: SweepPlan | None = None,
                 refresh: float = REFRESH_S):
        if plan is None:
            if tokens_per_run is None and compute_budget is None:
                tokens_per_run = DEFAULT_TOKENS
            plan = SweepPlan(corpus, DEFAULT_SIZES if sizes is None else sizes,
                             tokens_per_run=tokens_per_run, compute_budget=compute_budget, out=out,
                             train=train, block_size=block_size, eval_batches=eval_batches)
        self.plan = plan
        self.trainer = None  # the run in progress (or stopped), else None
        self.index = None  # its place in the plan
        self.fit = None  # the last `PowerLaw` drawn
        self._chain = False  # Start: begin the next run when one finishes
        self._syncing = False  # the view itself is moving the offset slider: not a user's move
        self._fit_drawn = None  # (N, L, fit c too, c) of the fit drawn last
        n = len(plan)
        self.curves = [LossCurves(500) for _ in range(n)]
        for i, run in enumerate(plan.runs):
            if run is not None:
                self.curves[i].add(run["history"])
        if offset is None:
            offset = default_offset(plan.dataset.tokenizer)

        self.start_button = W.Button(description="Start", icon="play", button_style="success",
                                     tooltip="train the runs not finished yet, one after another",
                                     _dom_classes=("lmlab-start",))
        self.stop_button = W.Button(description="Stop", icon="stop",
                                    tooltip="stop after the step in progress; Start continues",
                                    _dom_classes=("lmlab-stop",))
        self.progress = W.HTML(_dom_classes=("lmlab-scaling-progress",))
        self.status = W.HTML(_dom_classes=("lmlab-error",))
        self.curve_chart = LineChart(title="training loss of each size", x_label="tokens seen",
                                     y_label="loss (nats/token)", height=300,
                                     _dom_classes=("lmlab-scaling-curves",))
        self.fit_chart = LineChart(title="final validation loss",
                                   x_label="non-embedding parameters N", y_label="loss (nats/token)",
                                   log_x=True, log_y=True, height=300,
                                   _dom_classes=("lmlab-scaling-fit",))
        self.compute_chart = LineChart(title="loss against training compute",
                                       x_label="compute C = 6·N·D (FLOPs)", y_label="loss (nats/token)",
                                       log_x=True, log_y=True, height=300,
                                       _dom_classes=("lmlab-scaling-compute",))
        self.offset_slider = W.FloatSlider(value=offset, min=0.0, max=3.0, step=0.01,
                                           description="offset c", readout_format=".2f",
                                           continuous_update=False,
                                           style={"description_width": "initial"},
                                           _dom_classes=("lmlab-offset",))
        self.fit_offset = W.Checkbox(value=False, description="fit c too", indent=False,
                                     _dom_classes=("lmlab-fit-offset",))
        self.equation = W.HTML(_dom_classes=("lmlab-equation",))
        self.table = W.HTML(_dom_classes=("lmlab-scaling-table",))

        self.start_button.on_click(self.guarded(lambda _: self.start()))
        self.stop_button.on_click(self.guarded(lambda _: self.stop()))
        for control in (self.offset_slider, self.fit_offset):
            control.observe(self.guarded(self._on_fit_control), "value")
        half = W.Layout(width="50%")
        super().__init__([
            W.HBox([self.start_button, self.stop_button, self.progress],
                   layout=W.Layout(align_items="center")),
            self.status, self.curve_chart,
            W.HBox([W.Box([self.fit_chart], layout=half), W.Box([self.compute_chart], layout=half)]),
            W.HBox([self.offset_slider, self.fit_offset], layout=W.Layout(align_items="center")),
            self.equation, self.table,
        ], _dom_classes=("lmlab-scaling",))
        # a cell run again: the older lab writing to the same file stops (see `retire`)
        path = plan.path.resolve() if plan.path is not None else None
        self._init_view([], refresh, key=str(path) if path else None, subject=f"writing to {path}")
        self.redraw(force=True)

    def _on_fit_control(self, _) -> None:
        if not self._syncing:
            self._refresh()

    # ---- running ---------------------------------------------------------------------------

    def _controls(self) -> list:
        return [self.start_button, self.stop_button, self.offset_slider, self.fit_offset]

    def _stop_training(self) -> None:
        self._chain = False
        if self.trainer is not None and self.trainer.is_alive and self.trainer.driver != "blocking":
            self.trainer.stop(wait=False)

    def retire(self, why: str) -> None:
        """Stop the size in training (it is this lab's own) and stop updating."""
        self._stop_training()
        super().retire(why)

    def close(self):
        """Stop the size in training and detach; the last snapshot stays."""
        self._stop_training()
        super().close()

    @property
    def results(self):
        """The finished runs (`lmlab.scaling.Sweep`), in the order of the sizes."""
        return self.plan.results()

    def _begin(self) -> bool:
        """Make the trainer of the next missing run and watch it; False when none is left."""
        i = self.plan.next_missing()
        if i is None:
            self.trainer = self.index = None
            return False
        self._unwatch()  # the previous run's trainer
        self.trainer, self.index = self.plan.trainer(i), i
        self.curves[i].reset()
        self._watch(self.trainer, "step", "_tick")
        self._watch(self.trainer, "end", "_on_end")
        self._watch(self.trainer, "error", "_on_failure")
        return True

    def _trained(self) -> bool:
        """Whether the size in training has taken all its steps (a Stop during its last step
        leaves it "stopped" at max_steps: trained all the same)."""
        return self.trainer.step_count >= self.trainer.config.max_steps

    def _finish(self) -> None:
        self.curves[self.index].catch_up(self.trainer.history)
        self.plan.record(self.index, self.trainer)
        self._unwatch()
        self.trainer = self.index = None

    def start(self) -> None:
        """Train the missing runs one after another in the background (a stopped run
        continues where it stopped)."""
        if self.trainer is not None and self.trainer.is_alive:
            raise LmlabError("the sweep is already training; Stop first")
        if self.trainer is None and not self._begin():
            raise LmlabError("every size is trained: the sweep is complete")
        self._show("", "error")
        if self._trained():  # stopped during its last step: record it and go on
            self._chain = True
            self._on_end(self.trainer, "stopped")
            return
        self._chain = True
        self.trainer.start()
        self._refresh()

    def stop(self) -> None:
        """Stop after the step in progress; Start continues the same run."""
        self._chain = False
        if self.trainer is not None:
            self.trainer.stop()
        self._refresh()

    def run(self):
        """Train the missing runs in this cell, blocking, with the same live view; returns
        `results`. The kernel's interrupt stops after the step in progress."""
        self._chain = False
        while self.trainer is not None or self._begin():
            if not self._trained():
                self.trainer.run(progress=False)
            if not self._trained():
                break
            self._finish()
            self._refresh()
        self._refresh()
        self.refresh_snapshot()
        return self.results

    def _on_end(self, trainer, state) -> None:
        if trainer is not self.trainer:
            return
        if not self._trained():
            self._chain = False
            self._show(f"stopped during size {self.index + 1} at step {trainer.step_count}; Start "
                       "continues it", "notice")
            self._refresh()
            return
        if not self._chain:  # run() records it itself
            return
        self._finish()
        if self._begin():
            self.trainer.start()
        else:
            self._chain = False
            self.refresh_snapshot()
        self._refresh()

    def _on_failure(self, trainer, error) -> None:
        self._chain = False
        self._show(f"size {self.index + 1} failed: {error}", "error")
        self._refresh()

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind)

    def _refresh(self) -> None:
        """Redraw now; a failure is shown in the view, never raised into the sweep."""
        try:
            self.redraw(force=True)
        except Exception as e:
            self._show(f"this view failed to update: {type(e).__name__}: {e}. Training goes on.",
                       "view-error")

    # ---- drawing ---------------------------------------------------------------------------

    def _draw(self) -> None:
        plan, n = self.plan, len(self.plan)
        if self.trainer is not None:
            self.curves[self.index].catch_up(self.trainer.history)
        curves, compute = [], []
        for i, c in enumerate(self.curves):
            if not c.rows:
                continue
            colour = _colour(i, n)
            label = f"{_shape(plan.configs[i].to_dict())} ({_si(plan.params[i])})"
            tokens, loss = c.series("tokens")["train_smooth"]
            curves.append(line(label, tokens, loss, colour))
            flops = [training_flops(plan.params[i], t) for t in tokens]
            compute.append(line("", flops, loss, colour, width=1.5))
        frontier = compute_frontier([(ln["x"], ln["y"]) for ln in compute])
        if frontier is not None:
            compute.append(line("frontier", *frontier, "#111", width=1.5, dash=True))
        self.curve_chart.set_lines(curves)
        self.compute_chart.set_lines(compute)
        self._draw_fit()
        self._draw_progress()
        self.table.value = self._table()

    def _draw_fit(self) -> None:
        runs = [r for r in self.plan.runs if r is not None]
        N = [r["params_non_embedding"] for r in runs]
        L = [r["val_loss"] for r in runs]
        free = self.fit_offset.value
        self.offset_slider.disabled = free
        if L:
            self._syncing = True  # a lower max can move the value: not a user's change
            try:
                self.offset_slider.max = max(0.01, round(min(L) - 0.01, 2))
            finally:
                self._syncing = False
        drawn = (tuple(N), tuple(L), free, self.offset_slider.value)
        if drawn == self._fit_drawn:  # no run finished and no control moved: nothing to refit
            return
        self._fit_drawn = drawn
        lines = [line("runs", N, L, "#08519c", markers=True, opacity=0)]
        self.fit = None
        note = ""
        try:
            if len(runs) >= (3 if free else 2):
                self.fit = fit_power_law(N, L, c=None if free else self.offset_slider.value)
        except ConfigError as e:
            note = str(e)
        if self.fit is not None:
            grid = np.logspace(math.log10(min(N) / 2), math.log10(max(N) * 10), 40)
            lines.append(line("fit", grid.tolist(), self.fit.predict(grid).tolist(), "#d62728"))
            if self.fit.c > 0:
                pure = self.fit.pure
                lines.append(line("c = 0", grid.tolist(),
                                  pure.predict(grid).tolist(), "#888", width=1, dash=True))
        self.fit_chart.set_lines(lines)
        self.equation.value = self._equation(runs, note)

    def _equation(self, runs, note: str) -> str:
        f = self.fit
        if f is None:
            need = 3 if self.fit_offset.value else 2
            return (f"<i>{html.escape(note)}</i>" if note else
                    f"<i>the fit appears once {need} sizes are trained ({len(runs)} so far)</i>")
        how = ("c fitted from the points" if self.fit_offset.value else "c fixed a priori")
        c_part = f"{f.c:.2f}" + (f" ± {f.c_err:.2f}" if f.c_err and math.isfinite(f.c_err) else "")
        alpha = f"{f.alpha:.3f}" + (f" ± {f.alpha_err:.3f}" if math.isfinite(f.alpha_err) else "")
        big = max(r["params_non_embedding"] for r in runs) * 10
        text = (f"<b>L(N) = {f.a:.3g} · N<sup>−{f.alpha:.3f}</sup> + {c_part}</b> ({how}): "
                f"α = {alpha}; predicts L = {f.predict(big):.3f} at N = {_si(big)} (10× the largest). "
                f"Pure power law (c = 0): α = {f.pure.alpha:.3f} ± {f.pure.alpha_err:.3f}.")
        if self.fit_offset.value and f.c == 0:
            text += (" <i>The best c is 0: these points show no floor, so c cannot be pinned down "
                     "from them; fix it a priori.</i>")
        return text

    def _draw_progress(self) -> None:
        done = sum(r is not None for r in self.plan.runs)
        n = len(self.plan)
        parts = [f"<b>{done} of {n} sizes trained</b>"]
        t = self.trainer
        if t is not None:
            parts.append(f"size {self.index + 1} ({_shape(self.plan.configs[self.index].to_dict())}): "
                         f"step {t.step_count} / {t.config.max_steps}, {t.state}")
        self.progress.value = '<span style="padding-left:12px">' + " · ".join(parts) + "</span>"
        alive = t is not None and t.is_alive
        blocking = alive and t.driver == "blocking"
        self.start_button.disabled = alive or done == n
        self.stop_button.disabled = not alive or blocking

    def _table(self) -> str:
        head = "<tr>" + "".join(f'<th style="padding:1px 10px;text-align:left">{h}</th>' for h in (
            "size (layers×width)", "N (non-embedding)", "tokens D", "compute C", "val loss", "time",
            "")) + "</tr>"
        rows = []
        for i, config in enumerate(self.plan.configs):
            run = self.plan.runs[i]
            cells = [_shape(config.to_dict()), f"{self.plan.params[i]:,}"]
            if run is None:
                cfg = self.plan.train_configs[i]
                alive = i == self.index and self.trainer is not None and self.trainer.is_alive
                state = "training" if alive else "stopped" if i == self.index else "to train"
                cells += [f"{cfg.max_steps * tokens_per_step(cfg, config.block_size):,}",
                          "", "", "", state]
            else:
                cells += [f"{run['tokens']:,}", f"{run['flops']:.2e}", f"{run['val_loss']:.4f}",
                          f"{run['wall_time']:.0f} s", f"from {self.plan.path.name}" if run["reused"]
                          and self.plan.path is not None else ""]
            rows.append("<tr>" + "".join(f'<td style="padding:1px 10px">{html.escape(str(c))}</td>'
                                         for c in cells) + "</tr>")
        return ('<table class="lmlab-table" style="border-collapse:collapse;font-size:12px">'
                f"{head}{''.join(rows)}</table>")

    def _static_html(self) -> str:
        """Progress, the three charts as SVG, the equation and the table, as drawn."""
        return (f"<div>{self.progress.value}</div>{self.status.value}{self.curve_chart.svg()}<br>"
                f"{self.fit_chart.svg(width=480)}{self.compute_chart.svg(width=480)}"
                f"<div>{self.equation.value}</div>{self.table.value}")
