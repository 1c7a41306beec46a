"""`TrainingDashboard`: start, pause, step and reset a trainer and watch it learn."""

from __future__ import annotations

import html
import math
import threading
import time

import ipywidgets as W
import plotly.graph_objects as go

from lmlab.errors import LmlabError
from lmlab.history import downsample, smooth
from lmlab.model import GPT, PRESETS
from lmlab.train import Trainer

MAX_POINTS = 1000  # per curve, however long the run
REFRESH_S = 0.25  # at most four redraws a second


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


def loss_figure(height: int = 320, width: int = 620) -> go.FigureWidget:
    fig = go.FigureWidget(layout=dict(
        height=height, width=width, margin=dict(l=50, r=10, t=30, b=40), title="loss",
        xaxis_title="step", yaxis_title="cross-entropy (nats/token)",
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"), template="plotly_white"))
    fig.add_scatter(name="train (raw)", mode="lines", line=dict(width=1, color="#1f77b4"),
                    opacity=0.3)
    fig.add_scatter(name="train (smoothed)", mode="lines", line=dict(width=2, color="#1f77b4"))
    fig.add_scatter(name="validation", mode="lines+markers", line=dict(width=2, color="#d62728"))
    return fig


class TrainingDashboard(W.VBox):
    """Controls, live loss and learning-rate charts, status and samples for a `Trainer`.

    Training runs on the trainer's thread: the notebook stays usable. Charts redraw
    at most every `refresh` seconds from the accumulated history, in one batch.
    """

    def __init__(self, trainer: Trainer, *, prompt: str | None = None, sample_every: int = 250,
                 sample_tokens: int = 80, refresh: float = REFRESH_S,
                 max_points: int = MAX_POINTS):
        self.trainer = trainer
        self.prompt = prompt if prompt is not None else trainer.dataset.tokenizer.decode(
            trainer.dataset.train_ids[:1].tolist())
        self.sample_tokens = sample_tokens
        self.refresh = refresh
        self.curves = LossCurves(max_points)
        self._draw_lock = threading.Lock()
        self._last_draw = 0.0
        self._samples: list[tuple[int, str, str]] = []  # (step, prompt, prompt + sample)

        btn = lambda label, icon, cls, tip: W.Button(  # noqa: E731
            description=label, icon=icon, tooltip=tip, layout=W.Layout(width="auto"),
            _dom_classes=("lmlab-btn", cls))
        self.start_button = btn("Start", "play", "lmlab-start", "train on a background thread")
        self.pause_button = btn("Pause", "pause", "lmlab-pause", "pause / resume after this step")
        self.stop_button = btn("Stop", "stop", "lmlab-stop", "stop after this step")
        self.step_button = btn("Step", "step-forward", "lmlab-step-once", "one optimisation step")
        self.reset_button = btn("Reset", "refresh", "lmlab-reset",
                                "fresh weights (model settings below), history cleared")
        cfg = trainer.config
        small = W.Layout(width="200px")
        wide = {"description_width": "initial"}
        self.lr_input = W.Text(str(cfg.learning_rate), description="learning rate", style=wide,
                               layout=small, continuous_update=False,
                               _dom_classes=("lmlab-lr",))
        self.batch_input = W.Text(str(cfg.batch_size), description="batch size", style=wide, layout=small,
                                  continuous_update=False, _dom_classes=("lmlab-batch",))
        self.steps_input = W.Text(str(cfg.max_steps), description="max steps", style=wide, layout=small,
                                  continuous_update=False, _dom_classes=("lmlab-max-steps",))
        self.sample_every_input = W.Text(str(sample_every), description="sample every", style=wide,
                                         layout=small, continuous_update=False,
                                         _dom_classes=("lmlab-sample-every",))
        mc = trainer.model.config
        self.preset_input = W.Dropdown(options=["custom", *PRESETS], value="custom",
                                       description="model", style=wide, layout=small)
        self.layers_input = W.BoundedIntText(mc.n_layer, min=1, max=48, description="layers", style=wide,
                                             layout=small)
        self.heads_input = W.BoundedIntText(mc.n_head, min=1, max=64, description="heads", style=wide,
                                            layout=small)
        self.width_input = W.BoundedIntText(mc.n_embd, min=1, max=4096, description="width", style=wide,
                                            layout=small)
        self.context_input = W.BoundedIntText(mc.block_size, min=1, max=4096,
                                              description="context", style=wide, layout=small)
        self.x_axis = W.ToggleButtons(options=["steps", "tokens"], value="steps",
                                      style={"button_width": "70px"})
        self.log_y = W.Checkbox(False, description="log y", indent=False,
                                layout=W.Layout(width="80px"))

        self.loss_fig = loss_figure()
        self.lr_fig = go.FigureWidget(layout=dict(
            height=170, width=620, margin=dict(l=50, r=10, t=30, b=30), title="learning rate",
            template="plotly_white", showlegend=False))
        self.lr_fig.add_scatter(mode="lines", line=dict(width=2, color="#2ca02c"))

        self.progress = W.FloatProgress(0, min=0, max=1, layout=W.Layout(width="100%"),
                                        _dom_classes=("lmlab-progress",))
        self.counter = W.HTML(_dom_classes=("lmlab-step-counter",))
        self.stats = W.HTML(_dom_classes=("lmlab-stats",))
        self.state_label = W.HTML(_dom_classes=("lmlab-state",))
        self.error = W.HTML("", _dom_classes=("lmlab-error",))
        self.samples = W.HTML("<i>samples appear here as the model trains</i>",
                              _dom_classes=("lmlab-samples",),
                              layout=W.Layout(max_height="260px", overflow="auto"))

        self.start_button.on_click(self._guard(self._on_start))
        self.pause_button.on_click(self._guard(self._on_pause))
        self.stop_button.on_click(self._guard(self._on_stop))
        self.step_button.on_click(self._guard(self._on_step_once))
        self.reset_button.on_click(self._guard(self._on_reset))
        for box in (self.lr_input, self.batch_input, self.steps_input, self.sample_every_input):
            box.observe(self._guard(self._on_setting), "value")
        self.preset_input.observe(self._guard(self._on_preset), "value")
        self.x_axis.observe(lambda _: self.redraw(force=True), "value")
        self.log_y.observe(self._guard(self._on_log_y), "value")

        controls = W.HBox([self.start_button, self.pause_button, self.stop_button,
                           self.step_button, self.reset_button, self.state_label])
        settings = W.HBox([self.lr_input, self.batch_input, self.steps_input,
                           self.sample_every_input])
        model_row = W.HBox([self.preset_input, self.layers_input, self.heads_input,
                            self.width_input, self.context_input])
        status = W.VBox([W.HBox([self.counter, self.stats]), self.progress, self.error])
        chart_opts = W.HBox([W.Label("x axis"), self.x_axis, self.log_y])
        right = W.VBox([W.HTML("<b>samples</b> (newest first)"), self.samples],
                       layout=W.Layout(flex="1 1 300px", padding="0 0 0 10px"))
        charts = W.VBox([chart_opts, self.loss_fig, self.lr_fig],
                        layout=W.Layout(flex="0 0 630px"))
        super().__init__([controls, settings, W.Accordion([model_row], titles=("new model",)),
                          status, W.HBox([charts, right])],
                         _dom_classes=("lmlab-dashboard",))
        self._attach(trainer)
        self.redraw(force=True)

    # ---- wiring ----------------------------------------------------------------------

    def _attach(self, trainer: Trainer):
        self.trainer = trainer
        trainer.on_step(self._on_trainer_step)
        trainer.on_end(self._on_trainer_end)
        trainer.on_error(self._on_trainer_error)
        self.curves.reset()
        self.curves.add(trainer.history.rows())

    def _detach(self):
        for event, fn in (("step", self._on_trainer_step), ("end", self._on_trainer_end),
                          ("error", self._on_trainer_error)):
            self.trainer.off(event, fn)

    def _guard(self, handler):
        """Run a UI handler; an error is shown in the status line, never raised."""
        def run(*args):
            try:
                handler(*args)
            except Exception as e:  # the widget must stay usable
                self.show_error(e)
        return run

    def show_error(self, error):
        message = str(error) if isinstance(error, LmlabError) else f"{type(error).__name__}: {error}"
        self.error.value = (f'<div style="color:#c00;white-space:pre-wrap">'
                            f'{html.escape(message, quote=False)}</div>')

    def clear_error(self):
        self.error.value = ""

    # ---- trainer events (on the trainer's thread) --------------------------------------

    def _on_trainer_step(self, trainer, row):
        every = self._sample_every()
        if every and row["step"] % every == 0:
            self._take_sample(row["step"])
        if time.monotonic() - self._last_draw >= self.refresh:
            self.redraw()

    def _on_trainer_end(self, trainer, state):
        self.redraw(force=True)

    def _on_trainer_error(self, trainer, error):
        self.show_error(error)
        self.redraw(force=True)

    def _take_sample(self, step: int):
        text = self.trainer.sample(self.prompt, self.sample_tokens, temperature=0.8,
                                   seed=step)
        self._samples.insert(0, (step, self.prompt, text))
        del self._samples[20:]
        self.samples.value = "".join(
            f'<div class="lmlab-sample"><b>step {s}</b>'
            f'<pre style="margin:2px 0 8px;white-space:pre-wrap"><b>{html.escape(p)}</b>'
            f'{html.escape(t[len(p):])}</pre></div>'
            for s, p, t in self._samples)

    def _sample_every(self) -> int:
        try:
            return max(0, int(self.sample_every_input.value))
        except ValueError:
            return 0

    # ---- buttons (on the kernel's thread) -------------------------------------------------

    def _apply_settings(self):
        """Read the setting boxes into the trainer's config; raise a clear error if bad."""
        changes = {}
        for name, box, kind in (("learning_rate", self.lr_input, float),
                                ("batch_size", self.batch_input, int),
                                ("max_steps", self.steps_input, int)):
            text = box.value.strip()
            try:
                value = kind(text)
            except ValueError:
                raise LmlabError(
                    f"{box.description} {text!r} is not {'a number' if kind is float else 'a whole number'}"
                    f"; type e.g. {getattr(self.trainer.config, name)}") from None
            if value != getattr(self.trainer.config, name):
                changes[name] = value
        if changes:
            self.trainer.update_config(**changes)
        every = self.sample_every_input.value.strip()
        if not every.isdigit():
            raise LmlabError(f"sample every {every!r} must be a whole number of steps (0: never)")

    def _on_setting(self, change):
        if self.trainer.is_alive:
            self.show_error("training is running: press Stop to change its settings "
                            "(they apply at the next Start)")
            return
        self._apply_settings()
        self.clear_error()
        self.redraw(force=True)

    def _on_start(self, _=None):
        self._apply_settings()
        self.clear_error()
        self.trainer.start()
        self._sync_buttons()

    def _on_pause(self, _=None):
        if self.trainer.state == "paused":
            self.trainer.resume()
        else:
            self.trainer.pause()
        self._sync_buttons()

    def _on_stop(self, _=None):
        self.trainer.stop()
        self.redraw(force=True)

    def _on_step_once(self, _=None):
        if self.trainer.is_alive:
            raise LmlabError("Step works when training is stopped or finished; press Stop first")
        self._apply_settings()
        self.clear_error()
        self.trainer.step()
        self.redraw(force=True)

    def _on_reset(self, _=None):
        """Fresh weights with the model settings shown, same training settings."""
        old = self.trainer
        old.stop()
        config = old.model.config.replace(
            n_layer=self.layers_input.value, n_head=self.heads_input.value,
            n_embd=self.width_input.value, block_size=self.context_input.value)
        dataset = old.dataset
        if config.block_size != dataset.block_size:
            dataset = type(dataset)(dataset.tokenizer.decode(
                dataset.train_ids.tolist() + dataset.val_ids.tolist()), dataset.tokenizer,
                block_size=config.block_size,
                val_fraction=len(dataset.val_ids) / len(dataset), device=dataset.device)
        trainer = Trainer(GPT(config), dataset, old.config)
        self._detach()
        self._attach(trainer)
        self._apply_settings()
        self._samples.clear()
        self.samples.value = "<i>samples appear here as the model trains</i>"
        self.clear_error()
        self.redraw(force=True)

    def _on_preset(self, change):
        if change["new"] == "custom":
            return
        p = PRESETS[change["new"]]
        self.layers_input.value, self.heads_input.value = p["n_layer"], p["n_head"]
        self.width_input.value, self.context_input.value = p["n_embd"], p["block_size"]

    def _on_log_y(self, change):
        self.loss_fig.layout.yaxis.type = "log" if change["new"] else "linear"

    def _sync_buttons(self):
        state = self.trainer.state
        self.pause_button.description = "Resume" if state == "paused" else "Pause"
        self.pause_button.icon = "play" if state == "paused" else "pause"
        self.pause_button.disabled = state not in ("running", "paused")
        self.stop_button.disabled = state not in ("running", "paused")
        self.start_button.disabled = state in ("running", "paused")
        self.step_button.disabled = state in ("running", "paused")
        colour = {"running": "#2ca02c", "paused": "#ff7f0e", "failed": "#c00"}.get(state, "#555")
        self.state_label.value = (f'<span class="lmlab-state-value" style="color:{colour};'
                                  f'font-weight:bold;padding-left:8px">{state}</span>')

    # ---- drawing -------------------------------------------------------------------------

    def redraw(self, force: bool = False):
        """Bring charts and status up to date with the trainer's history."""
        if not self._draw_lock.acquire(blocking=force):
            return  # another thread is drawing
        try:
            self._last_draw = time.monotonic()
            t = self.trainer
            self.curves.add(t.history.rows(len(self.curves.rows)))
            x = "step" if self.x_axis.value == "steps" else "tokens"
            s = self.curves.series(x)
            with self.loss_fig.batch_update():
                for trace, key in zip(self.loss_fig.data, ("train_raw", "train_smooth", "val")):
                    trace.x, trace.y = s[key]
                self.loss_fig.layout.xaxis.title.text = "tokens seen" if x == "tokens" else "step"
            with self.lr_fig.batch_update():
                self.lr_fig.data[0].x, self.lr_fig.data[0].y = s["lr"]
            self._draw_status()
            self._sync_buttons()
        finally:
            self._draw_lock.release()

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
        tokens_left = (total - step) * t.config.batch_size * t.dataset.block_size
        eta = tokens_left / tps if step < total else 0
        val = t.last_eval["val_loss"] if t.last_eval else None
        parts = [f"loss {last['train_loss']:.4f}",
                 f"val {val:.4f}" if val is not None else "val –",
                 f"{tps:,.0f} tokens/s", f"elapsed {_fmt_time(t.wall_time)}",
                 f"ETA {_fmt_time(eta)}"]
        self.stats.value = ('<span style="padding-left:12px">'
                            + " · ".join(parts) + "</span>")

    # ---- blocking use ----------------------------------------------------------------------

    def run(self, steps: int | None = None):
        """Train until done on this thread, blocking the cell, with the same live updates
        (for scripts and notebook tests; faster than Start's background thread). Ctrl-C
        stops after the step in progress."""
        self._apply_settings()
        self.clear_error()
        try:
            return self.trainer.run(steps, progress=False)
        finally:
            self.redraw(force=True)
