"""`AttentionExplorer`: every layer and head of a model's attention on a text.

The overview (`HeadGrid`, a canvas) shows all heads as small images; the selected head
is drawn big (`AttentionMatrix`, a canvas too) with the tokens on both axes; a token in
focus lights up its row (what it attends to) and column (what attends to it), with the model's top next-token
predictions at that position; the per-head summary (`HeadTable`) sorts and selects;
knocking a head out shows the change in the text's loss and in the predictions. Beside
the predictions, the selected head's direct effect on the top one (`lmlab.attribution`);
in a section opened on request, the head's QK and OV circuits (`lmlab.circuits`). All of
it is read from the text's kept pass (`lmlab.passes`): selecting a head or focusing a
token runs no model. With a trainer, the view follows training every `every` steps.

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

from lmlab import attribution, circuits, interpret
from lmlab import passes
from lmlab.errors import LmlabError
from lmlab.files import atomic_write
from lmlab.reading import reading, weights_version

from . import images
from ._view import View, message_html, model_and_tokenizer
from .bars_html import DOWN, UP, attribution_html, signed_bars
from .matrix import AttentionMatrix
from .heads import HeadGrid
from .table import HeadTable

HOVER_TOKENS = 160  # up to this many tokens, hovering names both tokens; beyond, positions
SUMMARY_COLUMNS = [["layer", "layer"], ["head", "head"], ["entropy", "entropy"],
                   ["previous_token", "previous token"], ["first_token", "first token"],
                   ["induction", "induction"]]
ABLATION_MODES = {"zero": "output set to zero", "mean": "output replaced by its mean over the text"}
OV_SOURCES = 64  # the OV table follows at most this many of the text's distinct tokens
CIRCUITS_TITLE = "This head's circuits: where it looks (QK) and what it writes (OV)"


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
        self._selecting = self._keying = False
        # what the panels show, from the engine: the direct effect (None: not lmlab's GPT, or
        # the weights changed), the QK breakdown and the OV circuit (None until the section opens)
        self.attribution = self.qk = self.ov = None
        self._shown = {}  # panel -> what its engine result was computed for (a cache key)

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
        self.direct_effect = W.HTML(layout=W.Layout(max_width="480px"))
        self.table = HeadTable(columns=SUMMARY_COLUMNS)
        self.key_box = W.Dropdown(description="key", layout=W.Layout(width="220px"),
                                  style={"description_width": "40px"},
                                  tooltip="the key position whose score the QK breakdown splits")
        self.circuits_note, self.qk_view, self.ov_view = W.HTML(), W.HTML(), W.HTML()
        self._keys = W.HBox([self.key_box, W.HTML(f"<span style='{_SMALL}'>the key whose score is split "
                                                  "below (at first, the one this head attends to most "
                                                  "from the focused token)</span>")],
                            layout=W.Layout(align_items="center", grid_gap="8px"))
        self.circuits = W.Accordion(children=[W.VBox([self.circuits_note, self._keys, self.qk_view,
                                                      self.ov_view])],
                                    titles=(CIRCUITS_TITLE,), selected_index=None)
        self.circuits.add_class("lmlab-circuits")

        top = W.HBox([self.layer_box, self.head_box, self.focus_box, self.knock_button, self.mode_box],
                     layout=W.Layout(flex_flow="row wrap", align_items="center"))
        views = W.HBox([self.grid, self.matrix],
                       layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))
        lower = W.HBox([self.predictions, self.direct_effect, self.table],
                       layout=W.Layout(flex_flow="row wrap", align_items="flex-start", grid_gap="24px"))
        self.children = [self.text_box, top, self.status, views, lower, self.circuits]
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
        self.circuits.observe(self.guarded(lambda _: self._draw_circuits()), "selected_index")
        self.key_box.observe(self.guarded(lambda _: self._keying or self._draw_qk()), "value")
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
            shown = self.shown_step if self.shown_step is not None else \
                self.trainer.step_count if self.trainer is not None else None
            step = f" (step {shown})" if shown is not None else ""
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
        self._draw_direct()
        self._draw_circuits()

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
        self._draw_direct()
        self._draw_circuits()

    def _position(self) -> int:
        """The focused token's position, or the last one when none is focused."""
        p = self.focus_box.value
        return p if p is not None and p >= 0 else len(self.attention.ids) - 1

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
        position = self._position()
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

    # ---- the selected head: its direct effect and its circuits ----------------------------

    def _draw_direct(self) -> None:
        """The selected head's direct effect on logit(top) - logit(runner-up) at the focused
        position, from the kept pass's parts: one attribution per position (every head's
        effect at once), so a head switch only picks another number out of it."""
        found = self.pass_
        if found is None:
            return
        p = self._position()
        if self.attribution is None or self._shown.get("direct") != (found, p):
            self.attribution = None
            top = found.predictions(p, self.tokenizer, 2)
            try:
                with reading(self.model):
                    if found.version != weights_version(self.model):
                        self.direct_effect.value = _note("Direct effect", _STALE)
                        return
                    self.attribution = attribution.attribute(
                        self.model, attribution.parts_of_pass(found), p, top.ids[0],
                        top.ids[1] if len(top.ids) > 1 else None, self.tokenizer)
            except LmlabError as e:  # e.g. a Hugging Face model: its pass keeps no head outputs
                self.direct_effect.value = _note("Direct effect", str(e))
                return
            self._shown["direct"] = (found, p)
        self.direct_effect.value = _direct_html(self.attribution, *self.selected, self.attention.tokens[p])

    def _draw_circuits(self) -> None:
        """The selected head's QK breakdown (for the focused query and, by default, the key
        it attends to most) and OV circuit; nothing while the section is closed."""
        a = self.attention
        if a is None or self.circuits.selected_index is None:
            return
        layer, head = self.selected
        q = self._position()
        try:
            self._read_ov(layer, head)
        except LmlabError as e:  # the model is not lmlab's GPT: neither circuit can be read
            self.qk = self.ov = None
            self.circuits_note.value = _note("Circuits", str(e))
            self.circuits_note.layout.display = None
            self._keys.layout.display = "none"
            self.qk_view.value = self.ov_view.value = ""
            return
        self.circuits_note.value = ""
        self.circuits_note.layout.display = "none"
        self._keys.layout.display = None
        self._keying = True
        try:  # one QK breakdown below, not one per option set
            self.key_box.options = [(_label(i, t), i) for i, t in enumerate(a.tokens[:q + 1])]
            self.key_box.value = int(a.head(layer, head)[q, :q + 1].float().argmax())
        finally:
            self._keying = False
        self._draw_qk()
        row = a.head(layer, head)[q].float()
        looked = {}  # token id -> attention from the query to the positions holding it
        for i, token in enumerate(a.ids[:q + 1]):
            looked[token] = looked.get(token, 0.0) + float(row[i])
        self.ov_view.value = _ov_html(self.ov, looked, _label(q, a.tokens[q]),
                                      mlps=not self.model.config.attn_only,
                                      distinct=len(set(a.ids)))

    def _read_ov(self, layer: int, head: int) -> None:
        """`self.ov`: the OV circuit on the text's first OV_SOURCES distinct tokens, kept until
        the head, the text or the weights change (a focus change only reorders its table)."""
        sources = list(dict.fromkeys(self.attention.ids))[:OV_SOURCES]
        key = (layer, head, weights_version(self.model), tuple(sources))
        if self.ov is None or self._shown.get("ov") != key:
            self.ov = None
            self.ov = circuits.ov_circuit(self.model, layer, head, sources, self.tokenizer)
            self._shown["ov"] = key

    def _draw_qk(self) -> None:
        """The score of the focused query against the chosen key, split into its parts."""
        a, found = self.attention, self.pass_
        if a is None or self.circuits.selected_index is None or self.key_box.value is None:
            return
        layer, head = self.selected
        q, k = self._position(), self.key_box.value
        if self.qk is not None and self._shown.get("qk") == (found, layer, head, q, k):
            return  # a redraw of the same text (the focus box's echo): already shown
        self.qk = None
        if found.version != weights_version(self.model):  # its activations are of older weights
            self.qk_view.value = _note("Where this head looks (QK)", _STALE)
            return
        self.qk = circuits.qk_breakdown(self.model, found.ids, layer, head, q, k, self.tokenizer,
                                        parts=attribution.parts_of_pass(found))
        self._shown["qk"] = (found, layer, head, q, k)
        self.qk_view.value = _qk_html(self.qk, a.tokens, float(a.head(layer, head)[q, k]))

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
        renders with the network off), the next-token predictions, the selected head's direct
        effect (and its circuits, where their section is open) and the summary table."""
        a = self._attention_drawn()
        figure = plotly.io.to_html(self._head_figure(a), include_plotlyjs=True, full_html=False)
        text = html.escape(self.text_box.value)
        page = (f'<!doctype html><html><head><meta charset="utf-8"><title>lmlab attention: {text}'
                f"</title><style>{SNAPSHOT_CSS}</style></head><body>"
                f"<h2>Attention on <q>{text}</q></h2>"
                f'<div class="lmlab-snapshot">{self._grid_figure(a)}{figure}</div>'
                f"{self.predictions.value}{self._explained()}{self._summary_table()}</body></html>")
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
        predictions, the head's direct effect (and its circuits, where their section is open)
        and the summary table (no plotly.js: tens of kB, not megabytes)."""
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
                f"</div>{self.predictions.value}{self._explained()}{self._summary_table()}")

    def _explained(self) -> str:
        """The direct effect, and the circuits where their section is open, as shown."""
        shown = f"<div style='margin-top:12px'>{self.direct_effect.value}</div>"
        if self.circuits.selected_index is not None:
            shown += (f"<h3 style='font:600 14px sans-serif'>{html.escape(CIRCUITS_TITLE)}</h3>"
                      f"{self.circuits_note.value}{self.qk_view.value}{self.ov_view.value}")
        return shown

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


_STALE = ("the model's weights have changed since this text was read; this shows again when the "
          "explorer reads it next (every few steps while it follows training, or when the text changes)")
_SMALL = "font:12px sans-serif;color:#555;margin:2px 0 6px"
_OWN = " style='background:#d9ecd0'"  # a token the OV circuit copies
_TABLE = "font:12px sans-serif;border-collapse:collapse"


def _q(token: str) -> str:
    """A display token quoted as Python would (a quote token stays readable), escaped for
    an HTML element's text."""
    return html.escape(repr(token), quote=False)


def _note(what: str, message: str) -> str:
    return (f"<div class='lmlab-note' style='font:12px sans-serif;color:#345;max-width:460px'>"
            f"<b>{html.escape(what)}</b>: {html.escape(message, quote=False)}</div>")


def _direct_html(a: attribution.Attribution, layer: int, head: int, focused: str) -> str:
    """One head's direct effect in words (its rank among all parts by size, either sign),
    then the largest parts of the attribution `a` (`attribution_html`)."""
    part = f"L{layer}H{head}"
    order = [r["part"] for r in a.top(len(a.rows()))]
    versus = f" over the runner-up {_q(a.other_token)}" if a.other is not None else ""
    title = (f"{part}'s direct effect on predicting {_q(a.target_token)} after {_q(focused)}: "
             f"{float(a.heads[layer, head]):+.2f} logits{versus} (rank {order.index(part) + 1} of "
             f"{len(order)} parts)")
    explain = (f"How much this head's output, read straight by the unembedding, favours "
               f"{_q(a.target_token)}{' over ' + _q(a.other_token) if a.other is not None else ''} here "
               "(from the model's own pass: knocking heads out does not change it).")
    return (f"<div class='lmlab-direct'><div style='font:600 13px sans-serif'>{title}</div>"
            f"<div style='{_SMALL}'>{explain}</div>{attribution_html(a, 8)}</div>")


def _largest(labels: list[str], values: torch.Tensor, k: int) -> list[tuple[str, float]]:
    """The k (label, value) of largest |value|, largest first."""
    order = values.abs().argsort(descending=True)[:k]
    return [(labels[int(i)], float(values[i])) for i in order]


def _qk_html(b: circuits.QKBreakdown, tokens: list[str], weight: float) -> str:
    """A QK breakdown: the score and weight, then the query parts', the key parts' and the
    (query part, key part) pairs' largest shares."""
    query, key = f"{b.query} {_q(tokens[b.query])}", f"{b.key} {_q(tokens[b.key])}"
    title = f"Where L{b.layer}H{b.head} looks (QK): query {query} scoring key {key}"
    facts = (f"score before the softmax {b.score:+.3f}, attention weight {weight:.3f} (the softmax "
             f"of query {b.query}'s scores over keys 0 to {b.query}). Each position's stream is a sum "
             "of parts (the embeddings, every earlier head, attention bias and MLP); the score splits "
             "into a share for each (query part, key part) pair, plus the biases, and the shares sum "
             f"to the score: {float(b.matrix.sum()):+.3f}.")
    sides = (signed_bars(_largest(b.labels, b.by_query, 5), f"query side: the parts of {b.query}'s stream")
             + signed_bars(_largest(b.labels, b.by_key, 5), f"key side: the parts of {b.key}'s stream"))
    return (f"<div class='lmlab-qk'><div style='font:600 13px sans-serif'>{title}</div>"
            f"<div style='{_SMALL};max-width:760px'>{html.escape(facts, quote=False)}</div>"
            f"<div style='display:flex;gap:24px;flex-wrap:wrap'>{sides}{_pairs_html(b.top(6))}</div></div>")


def _pairs_html(pairs: list[dict]) -> str:
    """The largest (query part, key part) shares as a table with signed bars."""
    top = max((abs(p["share"]) for p in pairs), default=0.0) or 1.0
    rows = "".join(
        f"<tr><td>{html.escape(p['query_part'])}</td><td>{html.escape(p['key_part'])}</td>"
        f"<td><span style='display:inline-block;height:10px;width:{60 * abs(p['share']) / top:.0f}px;"
        f"background:{UP if p['share'] >= 0 else DOWN}'></span></td><td>{p['share']:+.3f}</td></tr>"
        for p in pairs)
    return ("<div><div style='font:600 12px sans-serif;margin:2px 0 4px'>the largest pairs</div>"
            f"<table cellpadding='3' style='{_TABLE};font-family:monospace'><tr><th>query part</th>"
            f"<th>key part</th><th></th><th>share</th></tr>{rows}</table></div>")


def _ov_html(ov: circuits.OVCircuit, looked: dict[int, float], query: str, mlps: bool, distinct: int) -> str:
    """The OV circuit as a table, one row a source token, most attended to from `query`
    first (`looked`: token id -> attention), its own token marked where the head raises it."""
    n = len(ov.sources)
    which = f"the first {n} of the text's {distinct} distinct tokens"
    if n == distinct:
        which = f"the text's {n} distinct tokens"
    title = (f"What L{ov.layer}H{ov.head} writes (OV): copying {ov.copying:.0%} of {which} "
             "(the token it raises most when it attends to one is that token itself)")
    note = (f"<div style='{_SMALL}'>This model has MLPs: this is the direct path only (a token's own "
            "embedding through this head to the logits), an approximation.</div>" if mlps else "")
    rows = []
    for i in sorted(range(n), key=lambda i: -looked.get(ov.sources[i], 0.0)):
        source = ov.sources[i]
        writes = "".join(
            f"<span style='margin-right:12px;white-space:nowrap'><code{_OWN if int(t) == source else ''}>"
            f"{html.escape(text)}</code> {float(v):+.3f}</span>"
            for t, text, v in zip(ov.top_ids[i], ov.top_tokens[i], ov.top_logits[i]))
        rows.append(f"<tr><td><code>{html.escape(ov.source_tokens[i])}</code></td>"
                    f"<td>{looked.get(source, 0.0):.3f}</td><td style='text-align:left'>{writes}</td></tr>")
    header = (f"<tr><th>token</th><th>attention from {html.escape(query)}</th><th style='text-align:left'>"
              "the tokens it raises most (logits per unit of attention; green: the token itself)</th></tr>")
    return (f"<div class='lmlab-ov' style='margin-top:10px'><div style='font:600 13px sans-serif'>"
            f"{html.escape(title, quote=False)}</div>{note}<div style='max-height:240px;overflow-y:auto'>"
            f"<table cellpadding='3' style='{_TABLE}'>{header}{''.join(rows)}</table>"
            "</div></div>")
