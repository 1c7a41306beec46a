"""`EmbeddingMap`: a model's token (or position) embeddings on their principal components.

Each token is a point labelled with its text, placed by its embedding's first two (or
three) principal components (`lmlab.interpret.embedding_projection`); the axis titles say
how much of the variance each one holds. Hover names the token's nearest neighbours by
cosine similarity in the full embedding space (the map is only a shadow of it). Colouring
by character class (vowels, consonants, digits, upper case, punctuation and space) shows
the structure a model learns; with `trainer=`, the map is read again every `every` steps,
so it moves as the model learns.
"""

from __future__ import annotations

import html
import unicodedata

import ipywidgets as W
import plotly.graph_objects as go
import plotly.io

from lmlab import interpret
from lmlab.files import atomic_write

from ._view import View, message_html

MAX_POINTS = 2000  # beyond this many tokens (e.g. GPT-2's 50257) only the first are mapped
MAX_LABELS = 400  # beyond this many points, labels only on hover
WEBGL_ABOVE = 1000  # 2-D maps of more points are drawn with WebGL (Scattergl)
NEIGHBOURS = 5
CLASSES = {"vowel": "#d62728", "consonant": "#1f77b4", "upper case": "#9467bd", "digit": "#2ca02c",
           "punctuation/space": "#7f7f7f", "other": "#ff7f0e"}
COLOURS = {"character class": "class", "token id / position": "index", "one colour": "none"}
VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
WHITESPACE = " \t\n\r\u2423\u21b5\u2192\u240d"  # and lmlab's visible marks of it: ␣ ↵ → ␍


def character_class(token: str) -> str:
    """The class of a token's display string (one of CLASSES), decided by its first
    character that is not whitespace: "␣the" is a consonant, "␣" punctuation/space.
    Vowels and consonants are lower case (accents ignored); other scripts' letters
    and the rest are "other"."""
    text = token.lstrip(WHITESPACE)
    if not text:
        return "punctuation/space"
    ch = text[0]
    if ch.isdigit():
        return "digit"
    if ch.isupper():
        return "upper case"
    if ch.isalpha():
        base = unicodedata.normalize("NFD", ch)[0]
        if base in "aeiou":
            return "vowel"
        return "consonant" if "a" <= base <= "z" else "other"
    return "punctuation/space" if unicodedata.category(ch)[0] in "PSZ" else "other"


class EmbeddingMap(View, W.VBox):
    """EmbeddingMap(model, tokenizer), or EmbeddingMap(trainer=trainer) to watch the map
    form as the model trains (read again every `every` steps). which: "tokens" or
    "positions"; dims: 2 or 3."""

    def __init__(self, model=None, tokenizer=None, *, trainer=None, which: str = "tokens",
                 dims: int = 2, every: int = 50):
        if trainer is not None:
            model = trainer.model if model is None else model
            tokenizer = tokenizer or trainer.dataset.tokenizer
        if model is None:
            raise TypeError("EmbeddingMap(model, tokenizer) or EmbeddingMap(trainer=trainer)")
        W.VBox.__init__(self)
        self._init_view([trainer] if trainer is not None else [])
        self.model, self.tokenizer, self.trainer, self.every = model, tokenizer, trainer, every
        self.which, self.dims = "tokens", 2  # what the map shows; changed by `update`
        self.projection = None  # the last good `lmlab.interpret.Projection`
        self.neighbours = None  # (rows [N, k], cosine similarities [N, k]) in embedding space

        self.which_box = W.Dropdown(options=list(interpret.EMBEDDINGS), description="show",
                                    layout=W.Layout(width="170px"), style={"description_width": "40px"})
        self.dims_box = W.ToggleButtons(options=[("2-D", 2), ("3-D", 3)],
                                        style={"button_width": "48px"}, tooltips=["flat", "turn it around"])
        self.colour_box = W.Dropdown(options=list(COLOURS.items()), description="colour by",
                                     layout=W.Layout(width="260px"), style={"description_width": "70px"})
        self.status = W.HTML()
        self.figure = go.FigureWidget(layout=go.Layout(
            width=760, height=620, autosize=False, margin=dict(l=60, r=20, t=50, b=50),
            plot_bgcolor="#f7f7f7", hovermode="closest", legend=dict(itemsizing="constant")))
        controls = W.HBox([self.which_box, self.dims_box, self.colour_box],
                          layout=W.Layout(flex_flow="row wrap", align_items="center", grid_gap="12px"))
        self.children = [controls, self.status, self.figure]
        self.add_class("lmlab-embeddings")

        self.which_box.observe(self.guarded(lambda c: c["new"] != self.which and self.update(which=c["new"])),
                               "value")
        self.dims_box.observe(self.guarded(lambda c: c["new"] != self.dims and self.update(dims=c["new"])),
                              "value")
        self.colour_box.observe(self.guarded(lambda _: self.redraw(force=True)), "value")
        if trainer is not None:
            self._follow(trainer, every)
        if not self.update(which, dims):  # a bad choice: say so, and show the token map
            failed = self.status.value
            if self.update("tokens", 2):
                self.status.value = failed

    # ---- the engine's side ------------------------------------------------------------

    def update(self, which: str | None = None, dims: int | None = None) -> bool:
        """Read the embeddings (default: the ones shown) and redraw. A bad choice is shown
        in the status line, the last good map and its controls stay; returns whether the
        map was read."""
        which = self.which if which is None else which
        dims = self.dims if dims is None else dims
        try:
            p = interpret.embedding_projection(self.model, self.tokenizer, which, dims, limit=MAX_POINTS)
            neighbours = interpret.neighbour_table(p.matrix, NEIGHBOURS)
        except Exception as e:
            self.show_error(e)
            self._sync_controls()
            return False
        self.which, self.dims, self.projection, self.neighbours = which, dims, p, neighbours
        self._sync_controls()
        self.redraw(force=True)
        return True

    def _sync_controls(self) -> None:
        """Controls show what is drawn (their observers ignore what is already shown)."""
        self.which_box.value, self.dims_box.value = self.which, self.dims

    # ---- drawing -----------------------------------------------------------------------

    def _traces(self) -> list[dict]:
        """One trace per character class, or one for all points coloured by row."""
        p = self.projection
        n = len(p.labels)
        colour = self.colour_box.value
        if colour == "class" and p.which == "tokens":
            classes = [character_class(t) for t in p.labels]
            groups = [(name, dict(color=c), [i for i in range(n) if classes[i] == name])
                      for name, c in CLASSES.items()]
            groups = [g for g in groups if g[2]]
        elif colour == "none":
            groups = [(p.which, dict(color="#1c5d99"), list(range(n)))]
        else:  # by row: token id, or position
            title = "position" if p.which == "positions" else "token id"
            groups = [(p.which, dict(color=list(range(n)), colorscale="Viridis",
                                     colorbar=dict(title=title, thickness=12)), list(range(n)))]
        rows, sims = self.neighbours
        esc = [html.escape(t, quote=False) for t in p.labels]  # plotly reads labels as HTML
        hover = [f"<b>{esc[i]}</b>{'' if p.which == 'positions' else f' (id {i})'}<br>"
                 "nearest by cosine similarity:<br>"
                 + "<br>".join(f"  {esc[j]}  {s:.2f}" for j, s in zip(rows[i].tolist(), sims[i].tolist()))
                 for i in range(n)]
        xyz = p.coords.numpy()
        mode = "markers+text" if n <= MAX_LABELS else "markers"
        traces = []
        for name, marker, members in groups:
            trace = dict(name=name, mode=mode, marker=dict(size=5 if p.dims == 3 else 7, **marker),
                         text=[esc[i] for i in members], hovertext=[hover[i] for i in members],
                         hovertemplate="%{hovertext}<extra></extra>", textposition="top center",
                         textfont=dict(size=11 if n <= 100 else 9),
                         x=xyz[members, 0], y=xyz[members, 1])
            if p.dims == 3:
                trace.update(type="scatter3d", z=xyz[members, 2])
            else:
                trace.update(type="scattergl" if n > WEBGL_ABOVE else "scatter")
            traces.append(trace)
        return traces

    def _draw(self) -> None:
        p = self.projection
        if p is None:
            return
        traces = self._traces()
        same = [(t.type, t.name) for t in self.figure.data] == [(t["type"], t["name"]) for t in traces]
        titles = [f"PC{i + 1} ({float(v):.0%} of variance)" for i, v in enumerate(p.explained)]
        step = f", step {self.trainer.step_count}" if self.trainer is not None else ""
        what = "token" if p.which == "tokens" else "position"
        title = f"{what} embeddings on their top {p.dims} principal components{step}"
        with self.figure.batch_update():
            if same:  # the same traces moved (training): update them in place
                for trace, new in zip(self.figure.data, traces):
                    trace.update({k: v for k, v in new.items() if k != "type"})
            else:  # a new view (its zoom and camera reset): new traces
                self.figure.data = []
                self.figure.add_traces([dict(t) for t in traces])
                self.figure.layout.scene.camera.eye = dict(x=1.4, y=1.4, z=0.9)
            layout = self.figure.layout
            layout.title = title
            layout.showlegend = len(traces) > 1
            layout.uirevision = f"{p.which} {p.dims}"  # refreshes keep what the user zoomed and turned
            if p.dims == 3:
                layout.scene.update(xaxis_title=titles[0], yaxis_title=titles[1], zaxis_title=titles[2],
                                    aspectmode="data")
            else:
                layout.xaxis.update(title=titles[0], zeroline=False)
                layout.yaxis.update(title=titles[1], zeroline=False, scaleanchor="x")
        self._show(self._notice(), "notice")

    def _notice(self) -> str:
        p = self.projection
        notes = []
        if len(p.labels) < p.total:
            notes.append(f"the first {len(p.labels)} of {p.total} {p.which} are mapped")
        if len(p.labels) > MAX_LABELS:
            notes.append("hover over a point to see its label")
        if p.which == "positions" and self.colour_box.value == "class":
            notes.append("positions have no character class: coloured by position")
        return "; ".join(notes)

    # ---- a picture for slides ----------------------------------------------------------

    def to_html(self, path=None) -> str:
        """The current map as an HTML snippet, plotly.js inlined (so it renders with the
        network off, and still turns and hovers); with `path`, also written there as a
        page."""
        if self.projection is None:
            raise ValueError("there is no map to save yet")
        snippet = plotly.io.to_html(go.Figure(self.figure), include_plotlyjs=True, full_html=False)
        if path is not None:
            with atomic_write(path) as tmp:
                tmp.write_text('<!doctype html><html><head><meta charset="utf-8"><title>lmlab '
                               f"{self.which} embeddings</title></head><body>{snippet}</body></html>",
                               encoding="utf-8")
        return snippet

    def _static_html(self) -> str:
        """The map as inline SVG (tens of kB; `to_html` inlines plotly.js, megabytes): the
        first two components, points coloured and labelled as drawn, and the status."""
        p = self.projection
        if p is None:
            return self.status.value
        size, pad = 560, 40
        xy = p.coords[:, :2].tolist()
        xs, ys = [v[0] for v in xy], [v[1] for v in xy]
        x0, y0 = min(xs), min(ys)
        scale = (size - 2 * pad) / (max(max(xs) - x0, max(ys) - y0) or 1.0)  # both axes, as drawn
        parts, legend = [], []
        for trace in self._traces():
            colours = trace["marker"]["color"]
            if isinstance(colours, str):
                legend.append(f'<span style="color:{colours}">● {html.escape(trace["name"])}</span>')
            for i, (x, y) in enumerate(zip(trace["x"].tolist(), trace["y"].tolist())):
                fill = colours if isinstance(colours, str) else _viridis(colours[i] / max(1, len(xs) - 1))
                cx, cy = pad + (x - x0) * scale, size - pad - (y - y0) * scale
                parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{fill}"/>')
                if trace["mode"] == "markers+text":
                    parts.append(f'<text x="{cx:.1f}" y="{cy - 5:.1f}" text-anchor="middle">'
                                 f'{trace["text"][i]}</text>')
        titles = [f"PC{i + 1} ({float(v):.0%} of variance)" for i, v in enumerate(p.explained)]
        note = " (the first two of three components)" if p.dims == 3 else ""
        return (f"<b>{html.escape(str(self.figure.layout.title.text or ''))}</b>{note}{self.status.value}"
                f"<div style='font:12px sans-serif'>{' '.join(legend)}</div>"
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} '
                f'{size}" style="font:10px sans-serif;max-width:100%;background:#f7f7f7">{"".join(parts)}'
                f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle">{titles[0]}</text>'
                f'<text transform="translate(12,{size / 2}) rotate(-90)" text-anchor="middle">{titles[1]}'
                "</text></svg>")

    def _controls(self) -> list:
        return [self.which_box, self.dims_box, self.colour_box]

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind)



def _viridis(t: float) -> str:
    """A colour of the Viridis scale at t in [0, 1]."""
    at = min(max(t, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(at), len(VIRIDIS) - 2)
    rgb = [round(a + (b - a) * (at - i)) for a, b in zip(VIRIDIS[i], VIRIDIS[i + 1])]
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"
