"""`LogitLensView`: what every layer of a model would predict next, as a heatmap.

Rows are the L + 1 residual streams of `lmlab.interpret.logit_lens` ("embeddings", then
after "block 0" ... "block L-1", the last row being the model's own prediction), drawn
bottom to top as the stream flows; columns are the input tokens (positions). Each cell is
labelled with that row's likeliest next token after reading up to its column, and coloured
by that token's probability, or (the toggle) by the probability the row gives the token
that does come next in the text. Hovering a cell lists the row's top-k tokens there. Editing
the text recomputes; with `trainer=`, so does training (every `every` steps). A plotly
heatmap in a `FigureWidget`; the engine computes everything.
"""

from __future__ import annotations

import html

import ipywidgets as W
import plotly.graph_objects as go

from lmlab.adapt import context_length, display
from lmlab.errors import ConfigError
from lmlab.interpret import lens_of_streams
from lmlab.passes import cached_pass
from lmlab.reading import reading

from ._view import View, message_html, model_and_tokenizer

COLOURS = {"top": "top prediction", "true": "the true next token"}
SCALES = {"top": ((247, 251, 255), (8, 48, 107)),  # plotly's Blues, ends
          "true": ((247, 252, 245), (0, 68, 27))}  # plotly's Greens, ends
LABEL_CHARS = 6  # a cell shows at most this many characters of its token (hover: all)


def _short(token: str) -> str:
    return token if len(token) <= LABEL_CHARS else token[: LABEL_CHARS - 1] + "…"


def _plotly_text(text: str) -> str:
    """A token as plain text inside plotly's hover labels (which read a few HTML tags)."""
    return html.escape(text, quote=False)


def _rgb(p: float, scale: str) -> str:
    lo, hi = SCALES[scale]
    return "rgb({},{},{})".format(*(round(a + (b - a) * p) for a, b in zip(lo, hi)))


class LogitLensView(View, W.VBox):
    """LogitLensView(model, tokenizer, text, k=5), or LogitLensView(trainer=..., text=...) to
    follow a training run (read again every `every` steps).

    `model`: lmlab's `GPT` or a Hugging Face GPT-2 (`GPT2LMHeadModel`); `k`: predictions per
    cell listed on hover; `columns`: at most this many positions are drawn (the last ones,
    with a notice); `colour`: "top" (the top prediction's probability) or "true" (the
    probability of the token that comes next in the text).

    State: `lens` is the last good `lmlab.interpret.LogitLens` (rows [L + 1], positions [T],
    top_probs [L + 1, T, k], next_probs [L + 1, T - 1]) of the tokens read (a text longer
    than the model's context is read over its last `context` tokens); `first` is the
    position of the first column drawn; `figure.data[0]` holds the heatmap: z [L + 1, shown]
    probabilities (None where no next token is known), text the top tokens."""

    def __init__(self, model=None, tokenizer=None, text: str = "", k: int = 5, *, trainer=None,
                 every: int = 50, columns: int = 64, colour: str = "top"):
        model, tokenizer = model_and_tokenizer("LogitLensView", model, tokenizer, trainer)
        vocab = model.config.vocab_size
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
            raise ConfigError(f"k={k!r} must be a whole number from 1 to the vocabulary size {vocab}")
        if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
            raise ConfigError(f"columns={columns!r} must be a whole number of at least 1")
        if colour not in COLOURS:
            raise ConfigError(f"colour={colour!r}; choose 'top' (the top prediction's probability) "
                              "or 'true' (the probability of the token that comes next)")
        W.VBox.__init__(self)
        self._init_view([trainer] if trainer is not None else [])
        self.model, self.tokenizer, self.trainer = model, tokenizer, trainer
        self.k, self.columns, self.every = k, columns, every
        self.lens = None
        self.first = 0
        self._token = display(tokenizer)  # id -> display string
        self.text_box = W.Textarea(value=text, continuous_update=False,
                                   placeholder="text to read through the layers",
                                   layout=W.Layout(width="100%", height="3.2em"))
        self.colour_box = W.ToggleButtons(options=[(label, key) for key, label in COLOURS.items()],
                                          value=colour, description="colour by:",
                                          style={"description_width": "70px", "button_width": "150px"},
                                          tooltips=["the probability of each cell's top prediction",
                                                    "the probability each row gives the token that "
                                                    "comes next in the text"])
        self.caption = W.HTML()
        self.status = W.HTML()
        self.figure = go.FigureWidget(layout=go.Layout(
            autosize=False, margin=dict(l=90, r=10, t=30, b=60), plot_bgcolor="#eee",
            xaxis=dict(title="input token (position)", showgrid=False, zeroline=False),
            yaxis=dict(showgrid=False, zeroline=False),
            hoverlabel=dict(font=dict(family="monospace", size=12), align="left")))
        self.figure.add_heatmap(z=[[0]], zmin=0, zmax=1, xgap=1, ygap=1, hoverongaps=False,
                                texttemplate="%{text}", textfont=dict(size=11),
                                colorbar=dict(thickness=12))
        self.children = [self.text_box, self.colour_box, self.status, self.caption,
                         W.Box([self.figure], layout=W.Layout(overflow="auto", max_width="100%"))]
        self.add_class("lmlab-lens")
        self.text_box.observe(self.guarded(lambda _: self.update()), "value")
        self.colour_box.observe(self.guarded(lambda _: self.redraw(force=True)), "value")
        if trainer is not None:
            self._follow(trainer, every)
        self.update()

    @property
    def colour(self) -> str:
        return self.colour_box.value

    def update(self, text: str | None = None) -> None:
        """Read `text` (default: the text box's) through every layer and redraw. Bad text
        is reported in the status line and the last good view stays."""
        ids = self._read_text(text)
        if ids is None:
            return
        notices = []
        context = context_length(self.model)
        if context is not None and len(ids) > context:
            notices.append(f"the text is {len(ids)} tokens long; the model reads {context} at once, "
                           f"so the lens reads the last {context}")
            ids = ids[-context:]
        found = cached_pass(self.model, ids, self.tokenizer)  # shared with the other views
        with reading(self.model):
            lens = lens_of_streams(self.model, found.streams, ids, self.tokenizer, k=self.k)
        T = len(lens.ids)
        self.lens, self.first = lens, max(0, T - self.columns)
        if self.first:
            notices.append(f"showing the last {self.columns} of {T} positions "
                           f"(LogitLensView(..., columns=N) shows more)")
        self._show("; ".join(notices), "notice")
        self.redraw(force=True)

    # ---- drawing -------------------------------------------------------------------------

    def _cells(self):
        """(z, labels, hover) for the drawn columns: lists [L + 1][shown]."""
        lens, s = self.lens, self.first
        T = len(lens.ids)
        rows = len(lens.labels)
        top = lens.top_probs.tolist()
        top_ids = lens.top_ids.tolist()
        nxt = lens.next_probs.tolist()
        show = self._token
        z, labels, hover = [], [], []
        for r in range(rows):
            zr, lr, hr = [], [], []
            for j in range(s, T):
                if self.colour == "top":
                    zr.append(top[r][j][0])
                else:
                    zr.append(nxt[r][j] if j < T - 1 else None)
                lr.append(_plotly_text(_short(lens.top_tokens[r][j])))
                lines = [f"<b>{lens.labels[r]}</b>, after position {j} "
                         f"<b>{_plotly_text(lens.tokens[j])}</b>", f"top {len(top[r][j])}:"]
                lines += [f"  {p:.3f}  {_plotly_text(show(i))}" for i, p in zip(top_ids[r][j], top[r][j])]
                if j < T - 1:
                    lines.append(f"next in the text: {_plotly_text(lens.tokens[j + 1])} "
                                 f"({nxt[r][j]:.3f})")
                hr.append("<br>".join(lines))
            z.append(zr)
            labels.append(lr)
            hover.append(hr)
        return z, labels, hover

    def _draw(self) -> None:
        lens = self.lens
        if lens is None:
            return
        s, T = self.first, len(lens.ids)
        rows = len(lens.labels)
        z, labels, hover = self._cells()
        widest = max(len(t) for row in labels for t in row) if labels else 1
        cell = max(30, min(64, 8 * widest + 12))
        shown = T - s
        width = 110 + shown * cell + 70
        height = 100 + rows * 30
        positions = list(range(s, T))
        scale = "Blues" if self.colour == "top" else "Greens"
        title = "p(top prediction)" if self.colour == "top" else "p(true next)"
        trace = self.figure.data[0]
        with self.figure.batch_update():
            trace.z = z
            trace.x = positions
            trace.y = list(range(rows))
            trace.text = labels
            trace.customdata = hover
            trace.hovertemplate = "%{customdata}<extra></extra>"
            trace.colorscale = scale
            trace.colorbar.title = title
            self.figure.layout.width, self.figure.layout.height = width, height
            self.figure.layout.xaxis.update(tickmode="array", tickvals=positions, tickangle=0,
                                            ticktext=[_plotly_text(_short(lens.tokens[j])) for j in positions])
            self.figure.layout.yaxis.update(tickmode="array", tickvals=list(range(rows)),
                                            ticktext=lens.labels)
        step = f" · step {self.trainer.step_count}" if self.trainer is not None else ""
        by = ("its probability" if self.colour == "top"
              else "the probability of the token that does come next")
        self.caption.value = (
            f"<div class='lmlab-lens-caption' style='font:12px sans-serif;color:#333'>"
            f"{rows} rows (the embeddings, then the output of each of {lens.n_layer} blocks) × {shown} "
            f"positions{step}. Each cell: the token that row would predict next after reading up to "
            f"its column, coloured by {by}; "
            f"the top row is the model's own prediction. Hover for the top {self.k}.</div>")

    def _static_html(self) -> str:
        """The lens as a table (top row first, as drawn), cells coloured as in the live
        view, the top-k on hover (title), with the caption and the status line."""
        lens = self.lens
        if lens is None:  # nothing read yet: what went wrong
            return self.status.value or message_html("there is nothing to show yet: give the lens a text",
                                                     "notice")
        z, _, _ = self._cells()
        s, T = self.first, len(lens.ids)
        top, top_ids = lens.top_probs.tolist(), lens.top_ids.tolist()
        head = "".join(f"<th title='position {j}'>{html.escape(lens.tokens[j], quote=False)}</th>"
                       for j in range(s, T))
        body = []
        for r in reversed(range(len(lens.labels))):
            cells = []
            for c, j in enumerate(range(s, T)):
                p = z[r][c]
                style = "background:#eee" if p is None else f"background:{_rgb(p, self.colour)}" + (
                    ";color:#fff" if p > 0.55 else "")
                tip = "; ".join(f"{html.escape(self._token(i))} {q:.3f}"
                                for i, q in zip(top_ids[r][j], top[r][j]))
                cells.append(f"<td style='{style}' title='{tip}'>"
                             f"{html.escape(_short(lens.top_tokens[r][j]), quote=False)}</td>")
            body.append(f"<tr><th style='text-align:right'>{lens.labels[r]}</th>{''.join(cells)}</tr>")
        return (f"<b>Logit lens on <q>{html.escape(self.text_box.value[:200])}</q></b>{self.status.value}"
                f"{self.caption.value}<div style='overflow-x:auto'><table class='lmlab-lens-table' "
                f"style='border-collapse:collapse;font:11px monospace;text-align:center'>"
                f"{''.join(body)}<tr><th></th>{head}</tr></table></div>")

    def _controls(self) -> list:
        return [self.text_box, self.colour_box]

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind) if message else ""
