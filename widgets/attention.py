"""`AttentionExplorer`: every layer and head of a model's attention on a text.

The overview (`HeadGrid`, a canvas) shows all heads as small images; the selected head
is drawn big (`AttentionMatrix`, a canvas too) with the tokens on both axes; a token in
focus lights up its row (what it attends to) and column (what attends to it), with the model's top next-token
predictions at that position; the per-head summary (`HeadTable`) sorts and selects;
knocking a head out shows the change in the text's loss and in the predictions. With
a trainer, the view follows training every `every` steps.

Every read of the model goes through `lmlab.reading` (the trainer's lock, eval mode),
so an explorer never tears a training step or draws from training's random stream.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import plotly.io
import torch

from lmlab import interpret
from lmlab import passes
from lmlab.files import atomic_write

from . import images
from ._view import View, message_html, model_and_tokenizer
from .matrix import AttentionMatrix
from .heads import HeadGrid
from .table import HeadTable

HOVER_TOKENS = 160  # up to this many tokens, hovering names both tokens; beyond, positions
SUMMARY_COLUMNS = [["layer", "layer"], ["head", "head"], ["entropy", "entropy"],
                   ["previous_token", "previous token"], ["first_token", "first token"],
                   ["induction", "induction"]]
ABLATION_MODES = {"zero": "output set to zero", "mean": "output replaced by its mean over the text"}


def _label(i: int, token: str) -> str:
    return f"{i}:{token}"


class AttentionExplorer(View, W.VBox):
    """AttentionExplorer(model, tokenizer, text), or AttentionExplorer(trainer=..., text=...)
    to follow a training run (refreshed every `every` steps)."""

    def __init__(self, model=None, tokenizer=None, text: str = "", *, trainer=None,
                 every: int = 50, thumbnail: int = 48, ablation: str = "zero"):
        model, tokenizer = model_and_tokenizer("AttentionExplorer", model, tokenizer, trainer)
        if ablation not in ABLATION_MODES:
            raise ValueError(f"ablation={ablation!r}; choose one of {sorted(ABLATION_MODES)}")
        W.VBox.__init__(self)
        self._init_view([trainer] if trainer is not None else [])
        self.model, self.tokenizer, self.trainer = model, tokenizer, trainer
        self.every, self.thumbnail = every, thumbnail
        self.attention = self.pass_ = None  # the Attention drawn, and the Pass it is from
        self.summary: list[dict] = []
        self._selecting = False

        self.text_box = W.Textarea(value=text, continuous_update=False, placeholder="text to look at",
                                   layout=W.Layout(width="100%", height="3.2em"))
        self.layer_box = W.Dropdown(description="layer", layout=W.Layout(width="130px"),
                                    style={"description_width": "40px"})
        self.head_box = W.Dropdown(description="head", layout=W.Layout(width="130px"),
                                   style={"description_width": "40px"})
        self.focus_box = W.Dropdown(description="token", layout=W.Layout(width="220px"),
                                    style={"description_width": "40px"})
        self.knock_button = W.ToggleButton(description="Knock out this head", icon="ban",
                                           layout=W.Layout(width="auto"),
                                           tooltip="switch the selected head off: " + ABLATION_MODES[ablation])
        self.mode_box = W.Dropdown(options=[(f"{k}: {v}", k) for k, v in ABLATION_MODES.items()],
                                   value=ablation, layout=W.Layout(width="330px"))
        self.status = W.HTML()
        self.grid = HeadGrid(cell=max(20, min(72, 400 // max(1, model.config.n_head))))
        self.matrix = AttentionMatrix()
        self.predictions = W.HTML(layout=W.Layout(width="300px"))
        self.table = HeadTable(columns=SUMMARY_COLUMNS)

        top = W.HBox([self.layer_box, self.head_box, self.focus_box, self.knock_button, self.mode_box],
                     layout=W.Layout(flex_flow="row wrap", align_items="center"))
        views = W.HBox([self.grid, self.matrix],
                       layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))
        lower = W.HBox([self.predictions, self.table],
                       layout=W.Layout(flex_flow="row wrap", align_items="flex-start", grid_gap="24px"))
        self.children = [self.text_box, top, self.status, views, lower]
        self.add_class("lmlab-attention")

        self.text_box.observe(self.guarded(lambda _: self.update()), "value")
        self.layer_box.observe(self.guarded(lambda _: self._select_from_boxes()), "value")
        self.head_box.observe(self.guarded(lambda _: self._select_from_boxes()), "value")
        self.focus_box.observe(self.guarded(lambda _: self._draw_focus()), "value")
        self.matrix.observe(self.guarded(self._on_matrix_click), "focus")
        self.grid.observe(self.guarded(lambda c: self.select(*c["new"])), "selected")
        self.table.observe(self.guarded(lambda c: self.select(*c["new"])), "selected")
        self.table.observe(self.guarded(lambda _: self._draw_ablation()), "knocked_out")
        self.knock_button.observe(self.guarded(self._on_knock), "value")
        self.mode_box.observe(self.guarded(lambda _: self._draw_ablation()), "value")
        if trainer is not None:
            self._follow(trainer, every)
        self.update()

    # ---- the engine's side ------------------------------------------------------------

    def update(self, text: str | None = None) -> None:
        """Show the attention of `text` (default: the text box's) and redraw it all. The
        model runs once per text and weights version (`lmlab.passes`): a text seen before
        on the same weights is drawn from the kept pass. Bad text is reported in the status
        line; the last good view stays."""
        text = self.text_box.value if text is None else text
        if text != self.text_box.value:
            self.text_box.value = text  # observed: comes back here
            return
        try:
            found = passes.cached_pass(self.model, text, self.tokenizer)
            induction = passes.cached_induction(self.model)  # text-independent
        except Exception as e:
            self.show_error(e)
            return
        self.pass_, self.attention = found, found.attention_view()
        self.summary = [{**row, "induction": float(induction[row["layer"], row["head"]])}
                        for row in found.summary]
        self._show("", "")
        self.redraw(force=True)

    # ---- drawing -----------------------------------------------------------------------

    def _draw(self) -> None:
        a = self.attention
        if a is None:
            return
        L, H, T = a.n_layer, a.n_head, len(a.tokens)
        with self.hold_sync():
            self.layer_box.options = list(range(L))
            self.head_box.options = list(range(H))
            focus = self.focus_box.value
            self.focus_box.options = [("none", -1)] + [(_label(i, t), i) for i, t in enumerate(a.tokens)]
            self.focus_box.value = focus if focus is not None and focus < T else -1
            size = min(T, self.thumbnail)
            step = f" (step {self.trainer.step_count})" if self.trainer is not None else ""
            self.grid.set_images(interpret.head_thumbnails(a, size),
                                 title=f"all heads, {T} tokens{step}: click one")
            self._selecting = True
            try:
                self.layer_box.value, self.head_box.value = self.selected
            finally:
                self._selecting = False
            self.table.rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                               for r in self.summary]
        self._draw_head()
        self._draw_focus()

    def select(self, layer: int, head: int) -> None:
        """Show head `head` of layer `layer` in the big view (and mark it everywhere)."""
        a = self.attention
        if a is None or self._selecting:  # the echoes of our own changes below
            return
        if not (0 <= layer < a.n_layer and 0 <= head < a.n_head):
            raise ValueError(f"there is no head {head} in layer {layer}: the model has "
                             f"{a.n_layer} layers of {a.n_head} heads")
        self._selecting = True
        try:  # every view shows the same head; no half-updated (layer, old head) in between
            for widget in (self.grid, self.table):
                if list(widget.selected) != [layer, head]:
                    widget.selected = [layer, head]
            self.layer_box.value, self.head_box.value = layer, head
        finally:
            self._selecting = False
        self._draw_head()
        self._draw_ablation()

    def _select_from_boxes(self) -> None:
        if self.layer_box.value is not None and self.head_box.value is not None:
            self.select(self.layer_box.value, self.head_box.value)

    @property
    def selected(self) -> tuple[int, int]:
        layer, head = self.grid.selected
        return layer, head

    def _draw_head(self) -> None:
        """Send the selected head's matrix (the matrix sends its tokens only when they changed)."""
        a = self.attention
        layer, head = self.selected
        self.matrix.set_matrix(a.head(layer, head), a.tokens,
                                  title=f"layer {layer}, head {head} (grey: masked, the future)")

    def _draw_focus(self) -> None:
        a = self.attention
        if a is None:
            return
        p = self.focus_box.value
        self._draw_ablation()  # first: the predictions repaint without waiting for the outline
        self.matrix.focus = p if p is not None and p >= 0 else -1

    def _on_matrix_click(self, change) -> None:
        """A click on a row of the matrix focuses its query token."""
        if self.attention is not None and change["new"] != self.focus_box.value:
            self.focus_box.value = change["new"]

    # ---- ablation and predictions --------------------------------------------------------

    def _on_knock(self, change) -> None:
        head = list(self.selected)
        off = [h for h in self.table.knocked_out if list(h) != head]
        self.table.knocked_out = off + [head] if change["new"] else off  # observed: redraws

    def knocked_out(self) -> list[tuple[int, int]]:
        return [tuple(h) for h in self.table.knocked_out]

    def _draw_ablation(self) -> None:
        """The predictions at the focused token, from the kept pass; with heads knocked
        out, beside those of one ablated pass (kept too, per set of heads)."""
        a, found = self.attention, self.pass_
        if a is None:
            return
        off = self.knocked_out()
        self.knock_button.value = tuple(self.selected) in off
        mode = self.mode_box.value
        p = self.focus_box.value
        position = p if p is not None and p >= 0 else len(a.ids) - 1
        before = found.predictions(position, self.tokenizer)
        parts = []
        after = None
        if off:
            ablated = passes.cached_ablation(self.model, a.ids, off, mode)
            after = ablated.logits[position].softmax(-1)
            loss, ablated_loss = found.loss(), ablated.loss()
            names = ", ".join(f"L{layer}H{head}" for layer, head in off)
            parts.append(f"<div><b>knocked out</b> {html.escape(names)} ({ABLATION_MODES[mode]}): "
                         f"loss on this text {loss:.4f} → {ablated_loss:.4f} "
                         f"({ablated_loss - loss:+.4f})</div>")
        parts.append(_bars(before, after, a.tokens[position], position))
        self.predictions.value = "".join(parts)

    # ---- pictures for slides ---------------------------------------------------------------

    def to_png(self, path, what: str = "head", pixels: int = 512) -> Path:
        """Write the selected head ("head", about `pixels` a side) or the overview of all
        heads ("grid") as a PNG: the matrix alone, in the view's colours (grey: masked),
        no axes. For a labelled picture use the matrix's Save PNG button."""
        a = self.attention
        if a is None:
            raise ValueError("there is no attention to draw yet: give the explorer a text")
        if what == "head":
            values = (a.head(*self.selected).float() * 255).round().to(torch.uint8)
            rgb = images.head_image(values, pixels)
        elif what == "grid":
            rgb = images.grid_image(self.grid.images(), self.grid.cell)
        else:
            raise ValueError(f"what={what!r}; choose 'head' or 'grid'")
        with atomic_write(path) as tmp:
            tmp.write_bytes(images.png(rgb))
        return Path(path)

    def to_html(self, path) -> Path:
        """Write a self-contained HTML page of the current view: the overview of all heads,
        the selected head as an interactive plotly heatmap (plotly.js inlined, so it
        renders with the network off), the next-token predictions and the summary table."""
        a = self._attention_drawn()
        figure = plotly.io.to_html(self._head_figure(a), include_plotlyjs=True, full_html=False)
        text = html.escape(self.text_box.value)
        page = (f'<!doctype html><html><head><meta charset="utf-8"><title>lmlab attention: {text}'
                f"</title><style>{SNAPSHOT_CSS}</style></head><body>"
                f"<h2>Attention on <q>{text}</q></h2>"
                f'<div class="lmlab-snapshot">{self._grid_figure(a)}{figure}</div>'
                f"{self.predictions.value}{self._summary_table()}</body></html>")
        with atomic_write(path) as tmp:
            tmp.write_text(page, encoding="utf-8")
        return Path(path)

    def _head_figure(self, a) -> go.Figure:
        """The selected head as a plotly heatmap (for the HTML snapshot): tokens on both
        axes, hover naming both and the weight, the focused token outlined."""
        layer, head = self.selected
        matrix = np.round(a.head(layer, head).float().numpy(), 3)
        T = matrix.shape[0]
        z = matrix.astype(object)  # None is JSON's null (NaN is not): a gap, drawn grey
        z[np.triu_indices(T, 1)] = None  # the masked future
        labels = [_label(i, t) for i, t in enumerate(a.tokens)]  # unique: a category each
        every = max(1, math.ceil(T / 32))
        ticks = dict(tickmode="array", tickvals=labels[::every], ticktext=a.tokens[::every],
                     tickangle=0, type="category", showgrid=False, zeroline=False, constrain="domain")
        p = self.focus_box.value
        shapes = []
        if p is not None and p >= 0:
            line = dict(color="#e4572e", width=2)
            shapes = [dict(type="rect", x0=-0.5, x1=p + 0.5, y0=p - 0.5, y1=p + 0.5, line=line),
                      dict(type="rect", x0=p - 0.5, x1=p + 0.5, y0=p - 0.5, y1=T - 0.5, line=line)]
        figure = go.Figure(go.Heatmap(z=z, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1,
                                      hoverongaps=False, colorbar=dict(title="attention", thickness=12),
                                      hovertemplate="%{y} → %{x}<br>attention %{z:.3f}<extra></extra>"))
        figure.update_layout(width=540, height=520, autosize=False, margin=dict(l=70, r=10, t=40, b=70),
                             plot_bgcolor="#e2e2e2", shapes=shapes,
                             title=f"layer {layer}, head {head} (grey: masked, the future)",
                             xaxis=dict(title="key (attended to)", **ticks),
                             yaxis=dict(title="query (attending)", autorange="reversed", scaleanchor="x",
                                        **ticks))
        return figure

    def _static_html(self) -> str:
        """The overview and the selected head as PNG pictures, the head's tokens, the
        predictions and the summary table (no plotly.js: a few kB, not megabytes)."""
        a = self._attention_drawn()
        layer, head = self.selected
        T = len(a.tokens)
        values = (a.head(layer, head).float() * 255).round().to(torch.uint8)
        picture = base64.b64encode(images.png(images.head_image(values, min(320, 8 * T)))).decode()
        tokens = " ".join(f"<code>{html.escape(_label(i, t), quote=False)}</code>"
                          for i, t in enumerate(a.tokens[:HOVER_TOKENS]))
        return (f"<b>Attention on <q>{html.escape(self.text_box.value)}</q></b>{self.status.value}"
                f'<div style="display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start">'
                f"{self._grid_figure(a)}<figure><img alt=\"layer {layer}, head {head}\" "
                f'style="image-rendering:pixelated" src="data:image/png;base64,{picture}">'
                f"<figcaption>layer {layer}, head {head}: row q attends to column k (grey: masked, "
                f"the future)</figcaption></figure></div><div style='font-size:12px'>tokens: {tokens}"
                f"</div>{self.predictions.value}{self._summary_table()}")

    def _attention_drawn(self):
        if self.attention is None:
            raise ValueError("there is no attention to show yet: give the explorer a text")
        return self.attention

    def _grid_figure(self, a) -> str:
        layer, head = self.selected
        grid = base64.b64encode(images.png(images.grid_image(self.grid.images(), self.grid.cell,
                                                             selected=(layer, head)))).decode()
        return (f'<figure><img alt="every head, layers down, heads across" style="image-rendering:'
                f'pixelated" src="data:image/png;base64,{grid}"><figcaption>every head, layers down '
                f"(0 to {a.n_layer - 1}), heads across (0 to {a.n_head - 1}); outlined: layer "
                f"{layer}, head {head}</figcaption></figure>")

    def _summary_table(self) -> str:
        layer, head = self.selected
        off = set(self.knocked_out())
        columns = [c for c, _ in SUMMARY_COLUMNS]
        header = "".join(f"<th>{html.escape(label)}</th>" for _, label in SUMMARY_COLUMNS)
        rows = "".join(
            ("<tr class=\"lmlab-selected\">" if (r["layer"], r["head"]) == (layer, head) else "<tr>")
            + "".join(f"<td>{_cell(r[c])}</td>" for c in columns)
            + f"<td>{'yes' if (r['layer'], r['head']) in off else ''}</td></tr>"
            for r in self.summary)
        return f'<table class="lmlab-table"><tr>{header}<th>knocked out</th></tr>{rows}</table>'

    def _controls(self) -> list:
        return [self.text_box, self.layer_box, self.head_box, self.focus_box, self.knock_button,
                self.mode_box]

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind)


SNAPSHOT_CSS = """
body { font: 14px sans-serif; margin: 24px; }
.lmlab-snapshot { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.lmlab-snapshot img { image-rendering: pixelated; }
.lmlab-table { border-collapse: collapse; margin-top: 16px; }
.lmlab-table td, .lmlab-table th { padding: 2px 8px; text-align: right; }
.lmlab-table tr.lmlab-selected { background: #fde3dc; }
"""


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def _bars(before, after: torch.Tensor | None, token: str, position: int) -> str:
    """Top next-token predictions after `position`, as bars (and beside them, with heads
    knocked out, the probabilities [V] `after`)."""
    rows = []
    for tid, text, prob in zip(before.ids, before.tokens, before.probs):
        bar = (f'<span style="display:inline-block;height:10px;width:{prob * 160:.0f}px;'
               f'background:#1c5d99"></span>')
        other = ""
        if after is not None:
            q = float(after[tid])
            other = (f'<span style="display:inline-block;height:10px;width:{q * 160:.0f}px;'
                     f'background:#e4572e;margin-left:4px"></span> {q:.3f}')
        rows.append(f"<tr><td><code>{html.escape(text)}</code></td><td>{prob:.3f}</td>"
                    f"<td>{bar}{other}</td></tr>")
    legend = " (blue: the model; red: with the heads knocked out)" if after is not None else ""
    return (f'<div class="lmlab-predictions"><b>next token after position {position} '
            f"(<code>{html.escape(token)}</code>)</b>{legend}"
            f"<table>{''.join(rows)}</table></div>")
