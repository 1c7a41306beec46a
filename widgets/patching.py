"""`PatchingView`: activation patching (`lmlab.patching`) as three heatmaps, and what each
patched run predicts, one click away.

Two texts of the same length, a clean one and a corrupted one (the "swap a token" helper
makes one from the other). Patch runs the grid, `lmlab.patching.Patcher`, one batch at a
time: in a notebook as an asyncio task on the kernel's own event loop, yielding between
batches (the run control the trainer uses, `lmlab.runcontrol`), so other cells and clicks
run meanwhile and Stop takes effect after the batch in progress; in a script, blocking.
The grid is redrawn as it fills, at most four times a second; cells not run stay grey.

The heatmaps (`PatchGrid`, one canvas each, `patching.js`) show the restored fraction of
the metric, 1 = the clean run's, 0 = the corrupted run's: residual stream and MLP outputs
layer x position, heads layer x head. All cells' top-k predictions travel with the grid
(at GPT-2's shape over 32 tokens, about 76 kB), so a click on a cell shows them in the page
without asking the kernel.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import ipywidgets as W
import numpy as np
import torch
import traitlets

from lmlab.adapt import display, token_ids
from lmlab.errors import ConfigError, LmlabError, TokenizerError
from lmlab.files import atomic_write
from lmlab.patching import Patcher
from lmlab.runcontrol import RunControl, remember_main_loop

from ._canvas import HERE, CanvasView, esm
from ._view import View, message_html, model_and_tokenizer

TITLES = {"resid_pre": "residual stream, entering each block (layer × position)",
          "heads": "attention heads, output at every position (layer × head)",
          "mlps": "MLP outputs (layer × position)"}
POSITIVE, NEGATIVE, ZERO, NOT_RUN = (28, 93, 153), (198, 40, 40), (247, 247, 247), (200, 200, 200)
_NOTHING_YET = ("<div class='lmlab-patching-caption' style='font:12px sans-serif;color:#345'>No grid yet: "
                "press Patch to run it.</div>")
TYPED = {"\u2423": " ", "\u21b5": "\n", "\u2192": "\t", "\u240d": "\r"}  # ␣ ↵ → ␍ as shown, typed back


def colour(value: float) -> tuple[int, int, int]:
    """The restored fraction's colour, as `patching.js` draws it: white at 0, blue towards 1
    (the clean run), red towards -1; clamped there. Not run (nan): grey."""
    if math.isnan(value):
        return NOT_RUN
    t = max(-1.0, min(1.0, value))
    end = POSITIVE if t >= 0 else NEGATIVE
    return tuple(round(z + (e - z) * abs(t)) for z, e in zip(ZERO, end))


def typed(text: str) -> str:
    """A token as typed in a box, with the view's visible whitespace (␣ ↵ → ␍) read back."""
    return "".join(TYPED.get(ch, ch) for ch in text)


class PatchGrid(CanvasView):
    """The heatmaps and the clicked cell's predictions. `data` holds, for each kind in
    `kinds` (of width W in `widths`: T positions or H heads) one after the other,
    little-endian: the restored fraction float32 [L, W] (nan: not run), the top-k
    probabilities float32 [L, W, k] and the tokens uint32 [L, W, k] as indices into `vocab`
    (their display strings). `selected` is [kind, layer, index] ([] for none), set by a
    click in the page or by `PatchingView.select`."""

    _esm = esm("patching.js")
    _css = HERE / "patching.css"
    kinds = traitlets.List(traitlets.Unicode()).tag(sync=True)
    widths = traitlets.List(traitlets.Int()).tag(sync=True)
    n_layer = traitlets.Int(0).tag(sync=True)
    k = traitlets.Int(0).tag(sync=True)
    vocab = traitlets.List(traitlets.Unicode()).tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)  # the clean text's T tokens
    corrupted = traitlets.List(traitlets.Unicode()).tag(sync=True)  # the corrupted text's
    position = traitlets.Int(-1).tag(sync=True)  # where the metric is read
    answer = traitlets.Unicode("").tag(sync=True)
    wrong = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.List(default_value=[]).tag(sync=True)

    def set_result(self, result) -> None:
        """Show a `lmlab.patching.Patching` (complete or not)."""
        kinds = list(result.grids)
        ids = torch.cat([result.top_ids[kind].flatten() for kind in kinds])
        unique, index = torch.unique(ids, return_inverse=True)
        show = display(result.tokenizer)
        parts, at = [], 0
        for kind in kinds:
            grid, probs = result.grids[kind], result.top_probs[kind]
            n = probs.numel()
            parts += [grid.numpy().astype("<f4").tobytes(), probs.numpy().astype("<f4").tobytes(),
                      index[at:at + n].numpy().astype("<u4").tobytes()]
            at += n
        vocab = [show(int(i)) for i in unique]
        with self.hold_sync():
            self._put(b"".join(parts))
            self.kinds, self.widths = kinds, [result.grids[kind].size(1) for kind in kinds]
            self.n_layer, self.k = result.grids[kinds[0]].size(0), result.top_ids[kinds[0]].size(2)
            if list(self.vocab) != vocab:
                self.vocab = vocab
            self.tokens, self.corrupted = result.clean_tokens, result.corrupted_tokens
            self.position, self.answer, self.wrong = result.position, result.answer_token, result.wrong_token
            if self.selected and self.selected[0] not in kinds:
                self.selected = []

    def _section(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What was sent for `kind`: values [L, W], probabilities [L, W, k], vocab indices [L, W, k]."""
        raw, at, L, k = self._raw(), 0, self.n_layer, self.k
        for name, width in zip(self.kinds, self.widths):
            n = L * width
            values = np.frombuffer(raw, "<f4", n, at).reshape(L, width)
            probs = np.frombuffer(raw, "<f4", n * k, at + 4 * n).reshape(L, width, k)
            index = np.frombuffer(raw, "<u4", n * k, at + 4 * n * (1 + k)).reshape(L, width, k)
            if name == kind:
                return values, probs, index
            at += 4 * n * (1 + 2 * k)
        raise KeyError(f"no {kind!r} grid is shown; these are: {list(self.kinds)}")

    def values(self, kind: str) -> torch.Tensor:
        """The restored fraction shown for `kind`, float32 [L, W] (nan: not run)."""
        return torch.from_numpy(self._section(kind)[0].copy())

    def predictions(self, kind: str, layer: int, index: int) -> list[tuple[str, float]]:
        """What a click on that cell lists, decoded from what was sent: [(token, probability)]
        ([] for a cell not run)."""
        values, probs, tokens = self._section(kind)
        if math.isnan(values[layer, index]):
            return []
        return [(self.vocab[t], float(p)) for t, p in zip(tokens[layer, index], probs[layer, index])]


def _button(label: str, icon: str, cls: str, tip: str) -> W.Button:
    return W.Button(description=label, icon=icon, tooltip=tip, layout=W.Layout(width="auto"),
                    _dom_classes=("lmlab-btn", cls))


class PatchingView(View, W.VBox):
    """PatchingView(model, tokenizer, clean, corrupted), or PatchingView(trainer=..., clean=...,
    corrupted=...) for a trainer's model. Nothing runs until Patch (or `run()`).

    `answer`, `wrong`: the metric's two tokens (one-token texts or ids; default: what the
    clean and the corrupted text predict at `position`); `k`: predictions kept per cell.
    State: `result`, the `lmlab.patching.Patching` drawn (filling in while it runs; None
    before the first run); `selected`, the cell shown, (kind, layer, index) or None.

    One grid runs at a time: Patch is disabled while one runs, and `run()` then refuses in
    words (press Stop first). Every Patch starts a fresh grid from the boxes' texts."""

    def __init__(self, model=None, tokenizer=None, clean: str = "", corrupted: str = "", *, trainer=None,
                 answer=None, wrong=None, position: int = -1, k: int = 10):
        model, tokenizer = model_and_tokenizer("PatchingView", model, tokenizer, trainer)
        W.VBox.__init__(self)
        self._init_view([])  # reads the trainer's model, subscribes to nothing
        remember_main_loop()  # a Patch clicked on a subshell thread then runs on this loop
        self.model, self.tokenizer, self.trainer = model, tokenizer, trainer
        self.position, self.k = position, k
        self.patcher: Patcher | None = None
        self.result = None
        self._batches = iter(())
        self._control = RunControl(self._step, self._finished, self._ended)

        wide = {"description_width": "80px"}
        text = dict(continuous_update=False, style=wide, layout=W.Layout(width="100%", height="3.2em"))
        self.clean_box = W.Textarea(clean, description="clean", placeholder="the clean text", **text)
        self.corrupted_box = W.Textarea(corrupted, description="corrupted",
                                        placeholder="the same length, a token or a few changed", **text)
        self.swap_box = W.Dropdown(description="swap token", style=wide, layout=W.Layout(width="260px"))
        self.replacement_box = W.Text(placeholder="for this token (␣ for a space)", continuous_update=False,
                                      layout=W.Layout(width="200px"))
        self.swap_button = _button("Swap", "exchange", "lmlab-swap",
                                   "corrupted = the clean text with that one token replaced")
        self.answer_box = W.Text(_box_text(answer, tokenizer), description="answer", style=wide,
                                 placeholder="default: the clean prediction", continuous_update=False,
                                 layout=W.Layout(width="290px"))
        self.wrong_box = W.Text(_box_text(wrong, tokenizer), description="wrong", style=wide,
                                placeholder="default: the corrupted prediction", continuous_update=False,
                                layout=W.Layout(width="290px"))
        self.patch_button = _button("Patch", "play", "lmlab-patch",
                                    "run the grid; the notebook stays usable while it runs")
        self.stop_button = _button("Stop", "stop", "lmlab-patch-stop", "stop after the batch in progress")
        self.stop_button.disabled = True
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", bar_style="info",
                                      layout=W.Layout(width="220px", display="none"),
                                      _dom_classes=("lmlab-patch-progress",))
        self.status = W.HTML()
        self.caption = W.HTML(_NOTHING_YET)
        self.grid = PatchGrid()

        def row(*children):
            return W.HBox(children, layout=W.Layout(flex_flow="row wrap", align_items="center"))

        self.children = [self.clean_box, self.corrupted_box,
                         row(self.swap_box, self.replacement_box, self.swap_button),
                         row(self.answer_box, self.wrong_box, self.patch_button, self.stop_button,
                             self.progress),
                         self.status, self.caption, self.grid]
        self.add_class("lmlab-patching")

        self.clean_box.observe(self.guarded(lambda _: self._read_clean()), "value")
        self.swap_button.on_click(self.guarded(lambda _: self.swap()))
        self.patch_button.on_click(self.guarded(lambda _: self.run()))
        self.stop_button.on_click(self.guarded(lambda _: self.stop()))
        self._read_clean()

    # ---- the texts --------------------------------------------------------------------------

    def _read_clean(self) -> None:
        """The swap helper's positions: the clean text's tokens."""
        if not self.clean_box.value:
            self.swap_box.options = []
            return
        try:
            ids = token_ids(self.model, self.clean_box.value, self.tokenizer)
        except Exception as e:
            self.swap_box.options = []
            self.show_error(e)
            return
        show = display(self.tokenizer)
        keep = self.swap_box.value
        self.swap_box.options = [(f"{i}: {show(t)}", i) for i, t in enumerate(ids)]
        self.swap_box.value = keep if keep is not None and keep < len(ids) else 0

    def swap(self, position: int | None = None, token: str | None = None) -> str:
        """Write the corrupted text: the clean one with the token at `position` (default: the
        dropdown's) replaced by the one-token text `token` (default: the box's; ␣ for a
        space). Returns it."""
        position = self.swap_box.value if position is None else position
        token = self.replacement_box.value if token is None else token
        if not token:
            return self.corrupted_box.value
        ids = token_ids(self.model, self.clean_box.value, self.tokenizer)
        if position is None or not 0 <= position < len(ids):
            raise ConfigError(f"position {position} is outside the clean text's {len(ids)} tokens")
        new = self.tokenizer.encode(typed(token))
        if len(new) != 1:
            raise TokenizerError(f"{token!r} is {len(new)} tokens, not one: a swap replaces one token by one")
        text = self.tokenizer.decode(ids[:position] + new + ids[position + 1:])
        if len(self.tokenizer.encode(text)) != len(ids):
            raise TokenizerError(f"with {token!r} at position {position} the text reads as "
                                 f"{len(self.tokenizer.encode(text))} tokens, not {len(ids)} (it merges "
                                 "with its neighbours); try another token")
        self.corrupted_box.value = text
        self._show("", "")
        return text

    # ---- running ----------------------------------------------------------------------------

    def run(self, block: bool | None = None):
        """Patch every cell for the boxes' texts and tokens. In a notebook (a running event
        loop) it runs in the background, on the kernel's loop, between cells, and returns at
        once (`await view.wait()` waits); `block=True`, or a script, runs it here. Returns the
        `Patching` that fills in. A bad input raises the engine's error (and shows it)."""
        if self._control.is_alive:
            raise LmlabError(f"a grid is running ({self.patcher.done} of {self.patcher.total} batches): "
                             "press Stop first, or wait for it to finish")
        try:
            patcher = Patcher(self.model, self.clean_box.value, self.corrupted_box.value, self.tokenizer,
                              answer=_token(self.answer_box.value), wrong=_token(self.wrong_box.value),
                              position=self.position, k=self.k)
        except Exception as e:  # shown here too when run() is called from a cell
            self.show_error(e)
            raise
        self.patcher, self.result, self._batches = patcher, patcher.result, patcher.steps()
        self._show("", "")
        self.progress.max, self.progress.value = patcher.total, 0
        self.progress.description = f"0 / {patcher.total}"
        self.progress.layout.display = ""
        self.patch_button.disabled, self.stop_button.disabled = True, False
        self.redraw(force=True)
        if not block:
            try:
                self._control.start("loop")
                return self.result
            except LmlabError:  # no event loop runs here (a script): run on this thread
                pass
        self._control.run_blocking()
        if self._control.error is not None:
            raise self._control.error
        return self.result

    def stop(self) -> None:
        """Stop after the batch in progress; the cells run so far stay drawn."""
        self._control.stop(wait=False)

    async def wait(self) -> None:
        """`await view.wait()`: the end of the grid in progress, without blocking the loop."""
        await self._control.wait()

    @property
    def running(self) -> bool:
        return self._control.is_alive

    def _step(self) -> None:
        next(self._batches, None)  # one batch; past the last, the generator marks the grid complete
        self.progress.value = self.patcher.done
        self.progress.description = f"{self.patcher.done} / {self.patcher.total}"
        self._tick()

    def _finished(self) -> bool:
        return self.result is not None and self.result.complete

    def _ended(self, state: str, error) -> None:
        """The run control's end of a run (on its driver's thread)."""
        try:
            self.progress.layout.display = "none"
            self.patch_button.disabled, self.stop_button.disabled = False, True
            self.redraw(force=True)
            p = self.patcher
            if state == "failed":
                self.show_error(error)
            elif state == "stopped":
                self._show(f"stopped after {p.done} of {p.total} batches: grey cells were not run "
                           "(Patch runs the grid again)", "notice")
            self.refresh_snapshot()
        except Exception as e:  # the run has ended whatever the view does
            self.show_error(e)

    # ---- the cells --------------------------------------------------------------------------

    def select(self, kind: str, layer: int, index: int) -> list[tuple[str, float]]:
        """Show cell (layer, position or head) of `kind` ("resid_pre", "heads", "mlps"), as a
        click on it does; returns its predictions (`Patching.predictions`)."""
        if self.result is None:
            raise ConfigError("there is no grid yet: press Patch first")
        found = self.result.predictions(kind, layer, index)  # the engine checks the cell
        self.grid.selected = [kind, int(layer), int(index)]
        return found

    @property
    def selected(self) -> tuple[str, int, int] | None:
        """The cell shown (clicked in the page or `select`ed): (kind, layer, index) or None."""
        return tuple(self.grid.selected) if self.grid.selected else None

    # ---- drawing ----------------------------------------------------------------------------

    def _draw(self) -> None:
        r = self.result
        if r is None:
            return
        self.grid.set_result(r)
        self.caption.value = _caption(r, self.patcher)

    def _static_html(self) -> str:
        """The grids as HTML tables in the live view's colours (the value in each cell and
        its hover), the metric, and the selected cell's predictions."""
        r = self.result
        head = (f"<b>Activation patching</b>: clean <q>{html.escape(self.clean_box.value)}</q>, corrupted "
                f"<q>{html.escape(self.corrupted_box.value)}</q>{self.status.value}")
        if r is None:
            return head + _NOTHING_YET
        tables = "".join(_table(r, kind) for kind in r.grids)
        detail = ""
        if self.selected is not None and self.selected[0] in r.grids:
            kind, layer, index = self.selected
            found = r.predictions(kind, layer, index)
            rows = "".join(f"<tr><td><code>{html.escape(t)}</code></td><td>{_prob(p)}</td></tr>"
                           for t, p in found)
            detail = (f"<div class='lmlab-patching-detail'><b>{html.escape(_cell_name(r, kind, layer, index))}"
                      f"</b>: restored {float(r.grids[kind][layer, index]):.3f}; the patched run predicts"
                      f"<table>{rows}</table></div>")
        return (f"{head}{_caption(r, self.patcher)}<div style='display:flex;flex-wrap:wrap;gap:18px;"
                f"align-items:flex-start'>{tables}</div>{detail}")

    def to_html(self, path) -> Path:
        """Write the static snapshot as a self-contained HTML page (nothing loaded)."""
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>lmlab activation patching"
                f"</title></head><body style='font:14px sans-serif;margin:24px'>{self._static_html()}"
                "</body></html>")
        with atomic_write(path) as tmp:
            tmp.write_text(page, encoding="utf-8")
        return Path(path)

    def _controls(self) -> list:
        return [self.clean_box, self.corrupted_box, self.swap_box, self.replacement_box, self.swap_button,
                self.answer_box, self.wrong_box, self.patch_button, self.stop_button]

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind) if message else ""

    def close(self):
        if getattr(self, "_control", None) is not None and self._control.can_stop:
            self._control.stop(wait=False)
        super().close()


def _box_text(token, tokenizer) -> str:
    """A constructor's answer or wrong (None, a one-token text or an id) as its box's text."""
    if token is None:
        return ""
    return token if isinstance(token, str) else display(tokenizer)(token)


def _token(text: str):
    """A box's token for the engine: None when blank (the default), else its text."""
    return typed(text) if text else None


def _prob(p: float) -> str:
    """A probability as the live view writes it: three decimals, two digits below 0.001."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _cell_name(r, kind: str, layer: int, index: int) -> str:
    if kind == "heads":
        return f"heads · layer {layer}, head {index}"
    return f"{kind} · layer {layer}, position {index} ({r.clean_tokens[index]})"


def _caption(r, patcher) -> str:
    done = "" if patcher is None or r.complete else f" ({patcher.done} of {patcher.total} batches run)"
    return (f"<div class='lmlab-patching-caption' style='font:12px sans-serif;color:#333;margin:4px 0'>"
            f"Metric: logit of <code>{html.escape(r.answer_token)}</code> minus <code>"
            f"{html.escape(r.wrong_token)}</code> at position {r.position} "
            f"(<code>{html.escape(r.clean_tokens[r.position])}</code>): clean {r.clean_metric:.3f}, "
            f"corrupted {r.corrupted_metric:.3f}. Each cell runs the corrupted text with one clean "
            f"activation put back: 1 restores the clean metric, 0 leaves the corrupted one{done}.</div>")


def _table(r, kind: str) -> str:
    grid = r.grids[kind]
    L, width = grid.shape
    differ = {i for i, (a, b) in enumerate(zip(r.clean_ids, r.corrupted_ids)) if a != b}
    if kind == "heads":
        labels = [f"H{h}" for h in range(width)]
    else:
        clean, corrupted = map(html.escape, r.clean_tokens), map(html.escape, r.corrupted_tokens)
        labels = [f"<b style='color:#d35400'>{a}→{b}</b>" if i in differ else a
                  for i, (a, b) in enumerate(zip(clean, corrupted))][:width]
    header = "".join(f"<th style='font-weight:normal;padding:0 2px'>{label}</th>" for label in labels)
    rows = []
    for layer in range(L):
        cells = []
        for i, value in enumerate(grid[layer].tolist()):
            rgb = colour(value)
            ink = ";color:#fff" if not math.isnan(value) and abs(value) > 0.6 else ""
            shown = "" if math.isnan(value) else f"{value:.2f}"
            tip = "not run" if math.isnan(value) else f"restored {value:.4f}"
            cells.append(f"<td style='background-color:rgb{rgb}{ink};padding:1px 3px' "
                         f"title='layer {layer}, {'head' if kind == 'heads' else 'position'} {i}: {tip}'>"
                         f"{shown}</td>")
        rows.append(f"<tr><th style='padding:0 4px'>L{layer}</th>{''.join(cells)}</tr>")
    return (f"<figure style='margin:0'><figcaption style='font:600 12px sans-serif'>{html.escape(TITLES[kind])}"
            f"</figcaption><table class='lmlab-patching-table' style='border-collapse:collapse;"
            f"font:10px monospace;text-align:center'>{''.join(rows)}<tr><th></th>{header}</tr></table>"
            "</figure>")

