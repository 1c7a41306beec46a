"""`TrainingDashboard`: start, pause, step, reset and roll back a trainer, and watch it
learn: live loss and learning-rate charts, status, and the trainer's own samples."""

from __future__ import annotations

import html
import math

import ipywidgets as W

from lmlab.errors import LmlabError, TrainingError
from lmlab.history import downsample, smooth
from lmlab.model import PRESETS
from lmlab.train import Trainer

from ._view import REFRESH_S, View, in_words, message_html
from .chart import LineChart, line, mark

MAX_POINTS = 1000  # per curve, however long the run
# the engine's setting names as the boxes label them (errors are shown in these words)
WORDS = {"learning_rate": "learning rate", "batch_size": "batch size", "max_steps": "max steps",
         "n_layer": "layers", "n_head": "heads", "n_embd": "width", "block_size": "context",
         "every": "sample every"}
BLOCKING_TIP = ("training runs in this cell (dashboard.run()), which blocks the kernel: stop it "
                "with the kernel's interrupt (the ■ button, or I I)")


def _fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class LossCurves:
    """Accumulates History rows into chart series: raw and smoothed train loss,
    validation loss and learning rate, each downsampled to at most `max_points`."""

    def __init__(self, max_points: int = MAX_POINTS, smoothing: float = 0.9):
        self.max_points = max_points
        self.smoothing = smoothing
        self.reset()

    def reset(self):
        self.rows: list[dict] = []
        self.smoothed: list = []
        self.val_rows: list[dict] = []
        self._ema = None

    def catch_up(self, history) -> None:
        """Add the rows `history` gained since the last call (all of them after a reset
        or a rollback shortened it)."""
        if len(history) < len(self.rows):
            self.reset()
        self.add(history.rows(len(self.rows)))

    def add(self, rows: list[dict]):
        values, self._ema = smooth([r["train_loss"] for r in rows], self.smoothing, self._ema)
        self.rows.extend(rows)
        self.smoothed.extend(values)
        self.val_rows.extend(r for r in rows if r["val_loss"] is not None)

    def series(self, x: str = "step") -> dict[str, tuple[list, list]]:
        """name -> (xs, ys) for train_raw, train_smooth, val and lr."""
        rows = self.rows
        idx = downsample(len(rows), self.max_points)
        xs = [rows[i][x] for i in idx]
        val_rows = self.val_rows
        vidx = downsample(len(val_rows), self.max_points)
        return {
            "train_raw": (xs, [rows[i]["train_loss"] for i in idx]),
            "train_smooth": (xs, [self.smoothed[i] for i in idx]),
            "val": ([val_rows[i][x] for i in vidx], [val_rows[i]["val_loss"] for i in vidx]),
            "lr": (xs, [rows[i]["lr"] for i in idx]),
        }


def _button(label, icon, cls, tip):
    return W.Button(description=label, icon=icon, tooltip=tip, layout=W.Layout(width="auto"),
                    _dom_classes=("lmlab-btn", cls))


def _box(value, label, cls, tip, width="170px"):
    return W.Text(str(value), description=label, tooltip=tip, continuous_update=False,
                  style={"description_width": "initial"}, layout=W.Layout(width=width),
                  _dom_classes=(cls,))


def _wrap(children, align_items="center"):
    """A row that wraps onto the next line when the notebook is narrow."""
    return W.Box(children, layout=W.Layout(display="flex", flex_flow="row wrap",
                                           align_items=align_items, width="100%"))


class TrainingDashboard(View, W.VBox):
    """Controls, live charts, status and samples for a `Trainer`.

    In a notebook, Start trains on the kernel's event loop between cells, at full
    speed; the notebook stays usable and clicks act after the step in progress. The
    view redraws at most every `refresh` seconds; every number comes from the trainer.
    """

    def __init__(self, trainer: Trainer, *, prompt: str | None = None, sample_every: int = 250,
                 sample_tokens: int = 80, refresh: float = REFRESH_S,
                 max_points: int = MAX_POINTS):
        trainer.set_sampling(prompt=prompt, every=sample_every, tokens=sample_tokens)
        self.trainer = trainer
        self.curves = LossCurves(max_points)
        self._last_state = None
        self._mirroring = False
        cfg = trainer.config

        self.start_button = _button("Start", "play", "lmlab-start",
                                    "train in the background; the notebook stays usable")
        self.pause_button = _button("Pause", "pause", "lmlab-pause", "pause / resume after this step")
        self.stop_button = _button("Stop", "stop", "lmlab-stop", "stop after this step")
        self.step_button = _button("Step", "step-forward", "lmlab-step-once", "one training step")
        self.reset_button = _button("Reset", "refresh", "lmlab-reset",
                                    "fresh weights (model settings below), history cleared")
        self.back_button = _button("Back", "undo", "lmlab-back",
                                   "return to the weights of the last healthy evaluation")
        self.lr_input = _box(cfg.learning_rate, "learning rate", "lmlab-lr",
                             "peak learning rate; the schedule ends at a tenth of it")
        self.batch_input = _box(cfg.batch_size, "batch size", "lmlab-batch", "sequences per step")
        self.steps_input = _box(cfg.max_steps, "max steps", "lmlab-max-steps", "train until this step")
        self.sample_every_input = _box(sample_every, "sample every", "lmlab-sample-every",
                                       "steps between samples (0: never)")
        self.prompt_input = _box(trainer.sampling.prompt, "prompt", "lmlab-prompt",
                                 "the samples continue this text", width="220px")
        mc = trainer.model.config
        small = W.Layout(width="150px")
        wide = {"description_width": "initial"}
        self.preset_input = W.Dropdown(options=["custom", *PRESETS], value="custom",
                                       description="model", style=wide, layout=small)
        self.layers_input = W.BoundedIntText(mc.n_layer, min=1, max=48, description="layers",
                                             style=wide, layout=small)
        self.heads_input = W.BoundedIntText(mc.n_head, min=1, max=64, description="heads",
                                            style=wide, layout=small)
        self.width_input = W.BoundedIntText(mc.n_embd, min=1, max=4096, description="width",
                                            style=wide, layout=small)
        self.context_input = W.BoundedIntText(mc.block_size, min=1, max=4096,
                                              description="context", style=wide, layout=small)
        self.x_axis = W.ToggleButtons(options=["steps", "tokens"], value="steps",
                                      style={"button_width": "64px"})
        self.log_y = W.Checkbox(False, description="log y", indent=False,
                                layout=W.Layout(width="80px"))

        self.loss_chart = LineChart(title="loss", x_label="step",
                                    y_label="cross-entropy (nats/token)", height=300,
                                    _dom_classes=("lmlab-loss-chart",))
        self.lr_chart = LineChart(title="learning rate", x_label="step", height=170,
                                  _dom_classes=("lmlab-lr-chart",))

        self.progress = W.FloatProgress(0, min=0, max=1, layout=W.Layout(width="auto"),
                                        _dom_classes=("lmlab-progress",))
        self.counter = W.HTML(_dom_classes=("lmlab-step-counter",))
        self.stats = W.HTML(_dom_classes=("lmlab-stats",))
        self.state_label = W.HTML(_dom_classes=("lmlab-state",))
        self.error = W.HTML("", _dom_classes=("lmlab-error",))
        self.samples = W.HTML("", _dom_classes=("lmlab-samples",),
                              layout=W.Layout(max_height="420px", overflow="auto"))

        for button, handler in ((self.start_button, self._on_start),
                                (self.pause_button, self._on_pause),
                                (self.stop_button, self._on_stop),
                                (self.step_button, self._on_step_once),
                                (self.reset_button, self._on_reset),
                                (self.back_button, self._on_back)):
            button.on_click(self.guarded(handler))
        for box in (self.lr_input, self.batch_input, self.steps_input):
            box.observe(self.guarded(self._on_setting), "value")
        self.sample_every_input.observe(self.guarded(self._on_sampling), "value")
        self.prompt_input.observe(self.guarded(self._on_sampling), "value")
        self.preset_input.observe(self.guarded(self._on_preset), "value")
        self.x_axis.observe(lambda _: self._on_axis(), "value")
        self.log_y.observe(lambda _: self.redraw(force=True), "value")

        controls = _wrap([self.start_button, self.pause_button, self.stop_button,
                          self.step_button, self.reset_button, self.back_button, self.state_label])
        settings = _wrap([self.lr_input, self.batch_input, self.steps_input,
                          self.sample_every_input, self.prompt_input])
        model_row = _wrap([self.preset_input, self.layers_input, self.heads_input,
                           self.width_input, self.context_input])
        status = W.VBox([_wrap([self.counter, self.stats]), self.progress, self.error])
        charts = W.VBox([_wrap([W.Label("x axis"), self.x_axis, self.log_y]),
                         self.loss_chart, self.lr_chart],
                        layout=W.Layout(flex="1 1 440px", min_width="0"))
        right = W.VBox([W.HTML("<b>samples</b> (newest first)"), self.samples],
                       layout=W.Layout(flex="1 1 260px", min_width="0", padding="0 0 0 10px"))
        super().__init__([controls, settings, W.Accordion([model_row], titles=("new model",)),
                          status, _wrap([charts, right], align_items="flex-start")],
                         _dom_classes=("lmlab-dashboard",), layout=W.Layout(max_width="100%"))
        self._tips = {b.description: b.tooltip for b in self._controls()}
        self._tips["Resume"] = self._tips["Pause"]
        self._init_view([trainer], refresh)
        for event in ("step", "eval"):
            self._watch(trainer, event, "_tick")
        self._watch(trainer, "sample", "_on_sample")
        self._watch(trainer, "end", "_on_end")
        self._watch(trainer, "error", "_on_failure")
        self._watch(trainer, "reset", "_on_trainer_reset")
        self._watch(trainer, "config", "_on_config")
        self._draw_samples()
        self.redraw(force=True)

    def _controls(self):
        return [self.start_button, self.pause_button, self.stop_button, self.step_button,
                self.reset_button, self.back_button]

    def _show(self, message: str, kind: str) -> None:
        self._message_kind = kind
        self.error.value = message_html(message, kind)

    def clear_error(self, keep_view_errors: bool = False):
        if not (keep_view_errors and getattr(self, "_message_kind", "") == "view-error"):
            self.error.value = ""

    # ---- trainer events ------------------------------------------------------------------

    def _on_sample(self, trainer, sample):
        self._draw_samples()

    def _on_end(self, trainer, state):
        self.redraw(force=True)
        self.refresh_snapshot()

    def _on_failure(self, trainer, error):
        self.redraw(force=True)
        self._show(self._failure_message(error), "error")
        self.refresh_snapshot()

    def _on_trainer_reset(self, trainer, _):
        """New weights (reset, rollback, restore, from a cell or here): the model boxes show
        the model's shape, the curves start again."""
        mc = trainer.model.config
        self._mirroring = True
        try:
            self.layers_input.value, self.heads_input.value = mc.n_layer, mc.n_head
            self.width_input.value, self.context_input.value = mc.n_embd, mc.block_size
        finally:
            self._mirroring = False
        self.curves.reset()
        self._draw_samples()
        self.redraw(force=True)

    def _failure_message(self, error) -> str:
        back = self.trainer.rollback_point
        undo = (f"Click “{self._back_label()}” to return to the last healthy weights, or Reset "
                "for fresh ones" if back else "Click Reset for fresh weights")
        if isinstance(error, TrainingError):
            return f"Training diverged ({error.what}). {undo}; then try a lower learning rate."
        return f"Training stopped at step {self.trainer.step_count}: {type(error).__name__}: " \
               f"{error}. {undo}."

    def _draw_samples(self):
        samples = list(self.trainer.samples)[::-1][:20]
        if not samples:
            every = self.trainer.sampling.every
            self.samples.value = (f"<i>a sample every {every} steps appears here</i>" if every
                                  else "<i>samples are off (sample every 0)</i>")
            return
        self.samples.value = "".join(
            f'<div class="lmlab-sample"><b>step {s["step"]}</b>'
            f'<pre style="margin:2px 0 8px;white-space:pre-wrap"><b>{html.escape(s["prompt"])}</b>'
            f'{html.escape(s["text"])}</pre></div>' for s in samples)

    # ---- settings ---------------------------------------------------------------------------

    def _settings(self):
        """(box, setting, type, example) of each training setting the dashboard shows."""
        return ((self.lr_input, "learning_rate", float, 0.001),
                (self.batch_input, "batch_size", int, 12),
                (self.steps_input, "max_steps", int, 2000))

    def _on_config(self, trainer, changed):
        """The trainer's settings changed (from a cell, a restore, a rollback, this view):
        the boxes show them."""
        self._mirror()
        self.redraw(force=True)

    def _mirror(self):
        """Every box shows the trainer's value: the trainer is the one owner of a setting."""
        t = self.trainer
        self._mirroring = True
        try:
            for box, name, _, _ in self._settings():
                box.value = str(getattr(t.config, name))
            self.sample_every_input.value = str(t.sampling.every)
            self.prompt_input.value = t.sampling.prompt
        finally:
            self._mirroring = False

    def _on_setting(self, change):
        """An edit goes straight to `update_config`; what it refuses is shown in the
        engine's words (said as the boxes say them) and the box shows the setting again."""
        if self._mirroring:
            return
        box, name, kind, example = next(s for s in self._settings() if s[0] is change["owner"])
        text = box.value.strip()
        try:
            try:
                value = kind(text)
            except ValueError:
                word = "a number" if kind is float else "a whole number"
                raise LmlabError(f"{box.description} {text!r} is not {word}; type e.g. {example}") \
                    from None
            if value == getattr(self.trainer.config, name):
                return
            changes = {name: value}
            if name == "learning_rate":
                changes["min_lr"] = None  # the schedule ends at a tenth of the typed rate
            self.trainer.update_config(**changes)
        except LmlabError as e:
            self._mirror()
            raise LmlabError(in_words(str(e), WORDS)) from None
        self.clear_error()

    def _on_sampling(self, change):
        if self._mirroring:
            return
        every = self.sample_every_input.value.strip()
        try:
            try:
                steps = int(every)
            except ValueError:
                raise LmlabError(f"sample every {every!r} is not a whole number of steps (0: never); "
                                 "type e.g. 250") from None
            try:
                self.trainer.set_sampling(prompt=self.prompt_input.value, every=steps)
            except LmlabError as e:
                raise LmlabError(f"prompt {self.prompt_input.value!r}: {in_words(str(e), WORDS)}") \
                    from None
        except LmlabError:
            self._mirror()
            raise
        self.clear_error()
        self._draw_samples()

    # ---- buttons ------------------------------------------------------------------------------

    def _engine(self, call, *args, **kwargs):
        """`call(...)`, its refusal said in the dashboard's words."""
        try:
            return call(*args, **kwargs)
        except LmlabError as e:
            if isinstance(e, TrainingError):
                raise
            raise LmlabError(in_words(str(e), WORDS)) from None

    def _on_start(self, _=None):
        self.clear_error()
        self._engine(self.trainer.start)
        self.redraw(force=True)

    def _on_pause(self, _=None):
        if self.trainer.can_resume:
            self.trainer.resume()
        else:
            self.trainer.pause()
        self.redraw(force=True)

    def _on_stop(self, _=None):
        self.trainer.stop()
        self.redraw(force=True)

    def _on_step_once(self, _=None):
        self.clear_error()
        try:
            self._engine(self.trainer.step)
        except TrainingError as e:
            raise LmlabError(self._failure_message(e)) from None
        finally:
            self.redraw(force=True)

    def _on_back(self, _=None):
        if self.trainer.is_alive:
            raise LmlabError("press Stop first: going back replaces the weights being trained")
        self.trainer.rollback()  # its "config" event shows the rate of that step in the box
        self.clear_error()
        self.redraw(force=True)

    def _on_reset(self, _=None):
        """Fresh weights with the model settings shown, same training settings, same trainer.
        The trainer checks the new model first, so a bad one leaves a run going."""
        t = self.trainer
        shape = dict(n_layer=self.layers_input.value, n_head=self.heads_input.value,
                     n_embd=self.width_input.value, block_size=self.context_input.value)
        self._engine(t.check_reset, **shape)
        if t.can_stop:
            t.stop()
        self._engine(t.reset, **shape)
        self.clear_error()
        self.redraw(force=True)

    def _on_preset(self, change):
        if change["new"] == "custom":
            return
        p = PRESETS[change["new"]]
        self.layers_input.value, self.heads_input.value = p["n_layer"], p["n_head"]
        self.width_input.value, self.context_input.value = p["n_embd"], p["block_size"]

    def _back_label(self) -> str:
        point = self.trainer.rollback_point
        return f"Back to step {point[0]} (val loss {point[1]:.3f})" if point else "Back"

    def _sync_buttons(self):
        t = self.trainer
        state = t.state
        if state != self._last_state and self._last_state is not None and t.error is None:
            self.clear_error(keep_view_errors=True)  # a stale error goes when the state changes
        self._last_state = state
        blocking = t.is_alive and t.driver == "blocking"
        paused = t.can_resume
        self.pause_button.description = "Resume" if paused else "Pause"
        self.pause_button.icon = "play" if paused else "pause"
        self.pause_button.disabled = blocking or not (t.can_pause or t.can_resume)
        self.stop_button.disabled = blocking or not t.can_stop
        self.start_button.disabled = blocking or not t.can_start
        self.step_button.disabled = blocking or not t.can_step
        self.reset_button.disabled = blocking
        point = t.rollback_point
        self.back_button.description = self._back_label()
        useful = point and (point[0] < t.step_count or t.error is not None)
        self.back_button.layout.display = "" if useful else "none"
        self.back_button.disabled = blocking or not t.can_change
        for button in self._controls():
            button.tooltip = BLOCKING_TIP if blocking else self._tips[button.description.split()[0]]
        shown = "training in this cell" if blocking else state
        colour = {"running": "#2ca02c", "paused": "#ff7f0e", "failed": "#c00"}.get(state, "#555")
        self.state_label.value = (f'<span class="lmlab-state-value" title="{html.escape(BLOCKING_TIP)}"'
                                  if blocking else '<span class="lmlab-state-value"') + \
            f' style="color:{colour};font-weight:bold;padding-left:8px">{shown}</span>'
        if blocking:
            self._show("Training in this cell: the buttons wait until it ends. To stop early, "
                       "interrupt the kernel (the ■ button, or I I); it stops after the step in "
                       "progress.", "notice")

    # ---- drawing ---------------------------------------------------------------------------------

    def _on_axis(self) -> None:
        if self.shown_step is not None:
            self.show_step(self.trainer, None, self.shown_step)
        self.redraw(force=True)

    def _draw(self):
        """Charts, status and buttons from the trainer (`redraw` calls it, throttled)."""
        self.curves.catch_up(self.trainer.history)
        x = "step" if self.x_axis.value == "steps" else "tokens"
        s = self.curves.series(x)
        x_label = "tokens seen" if x == "tokens" else "step"
        with self.loss_chart.hold_sync():
            self.loss_chart.set_lines([
                line("train (raw)", *s["train_raw"], "#1f77b4", width=1, opacity=0.3),
                line("train (smoothed)", *s["train_smooth"], "#1f77b4"),
                line("validation", *s["val"], "#d62728", markers=True),
            ])
            self.loss_chart.x_label = x_label
            self.loss_chart.log_y = self.log_y.value
        with self.lr_chart.hold_sync():
            self.lr_chart.set_lines([line("", *s["lr"], "#2ca02c")])
            self.lr_chart.x_label = x_label
        self._draw_status()
        self._sync_buttons()

    def _draw_status(self):
        t = self.trainer
        last = t.history.last()
        step, total = t.step_count, t.config.max_steps
        self.counter.value = (f'<b>step <span class="lmlab-step-value">{step}</span>'
                              f' / {total}</b>')
        self.progress.value = min(1.0, step / total)
        if last is None:
            self.stats.value = ""
            return
        recent = [r["tokens_per_s"] for r in self.curves.rows[-20:]]
        tps = len(recent) / sum(1 / v for v in recent)  # harmonic mean: tokens over time
        tokens_left = (total - step) * t.config.tokens_per_step(t.dataset.block_size, t.world_size)
        eta = tokens_left / tps if step < total else 0
        val = t.last_eval["val_loss"] if t.last_eval else None
        parts = [f"loss {last['train_loss']:.4f}",
                 f"val {val:.4f}" if val is not None else "val –",
                 f"{tps:,.0f} tokens/s", f"elapsed {_fmt_time(t.wall_time)}",
                 f"ETA {_fmt_time(eta)}"]
        self.stats.value = ('<span style="padding-left:12px">'
                            + " · ".join(parts) + "</span>")

    def show_step(self, trainer, model, step) -> None:
        """Mark training step `step` on the loss curve (None: no mark, live)."""
        self.shown_step = step
        self.loss_chart.marks = [] if step is None else [mark(self._x_of(step), "#e4572e", f"step {step}")]

    def _x_of(self, step: int) -> float:
        if self.x_axis.value == "steps":
            return step
        rows = [r for r in self.trainer.history.rows() if r["step"] == step]
        return rows[0]["tokens"] if rows else 0

    def _static_html(self) -> str:
        """Status, the loss and learning-rate charts as SVG, and the samples, as drawn."""
        return (f"<div>{self.counter.value}{self.stats.value}{self.state_label.value}</div>"
                f"{self.error.value}{self.loss_chart.svg()}<br>{self.lr_chart.svg()}"
                f"<div><b>samples</b> (newest first){self.samples.value}</div>")

    # ---- blocking use -------------------------------------------------------------------------

    def run(self, steps: int | None = None):
        """Train until done in this cell, blocking, with the same live view (scripts,
        notebook tests). The kernel reads no clicks meanwhile, so the buttons show as
        inactive; the kernel's interrupt stops training after the step in progress."""
        self.clear_error()
        self._last_draw = 0.0  # the first step redraws: the buttons show as inactive at once
        try:
            return self.trainer.run(steps, progress=False)
        finally:
            self.redraw(force=True)
