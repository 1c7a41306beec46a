"""`ModelComparison`: the same text through two (or more) models, side by side.

E.g. "pretrained" vs "fine-tuned": for a chosen position (a click on a token, or the
slider; default the last) each model's next-token bars (the stepper's view: its top-k
tokens with probabilities) and its attention heads summarised (`lmlab.interpret.head_summary`:
entropy, previous-token and induction score per layer × head, as small coloured grids), with
each model's loss on the text (`lmlab.sampling.score_logits`) and a line giving the total-variation
distance and the KL divergences between the models' next-token distributions at that
position. All of it comes from one pass per model and text (`lmlab.passes`): choosing a
position runs no model. Editing the text recomputes; with `trainers=`, so does training.
The models must share the tokenizer.
"""

from __future__ import annotations

import html
import math
import pathlib

import anywidget
import ipywidgets as W
import torch
import traitlets

from lmlab.adapt import context_length
from lmlab.errors import ConfigError
from lmlab.passes import cached_induction, cached_pass
from lmlab.sampling import distribution_of_logits, divergence, score_logits

from ._view import View, message_html

HERE = pathlib.Path(__file__).parent
MAX_TOKENS = 256  # a longer text is read over its last this many tokens (or the context)
METRICS = [("entropy", "entropy (nats)"), ("previous_token", "previous token"),
           ("induction", "induction")]
NUMBERS_UP_TO = 8  # head grids with at most this many heads a layer print their values


class TokenPicker(anywidget.AnyWidget):
    """`tokens`: display strings; `selected`: the chosen position, set by a click."""

    _esm = HERE / "model_compare.js"
    _css = HERE / "model_compare.css"
    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    selected = traitlets.Int(0).tag(sync=True)

    def to_html(self) -> str:
        """The tokens as static spans, the selected one outlined, the next one underlined."""
        s = self.selected
        spans = []
        for i, t in enumerate(self.tokens):
            style = ("background:#fde3dc;outline:2px solid #e4572e" if i == s else
                     "text-decoration:underline 2px #1c5d99" if i == s + 1 else
                     "color:#aaa" if i > s + 1 else "")
            spans.append(f"<span title='position {i}' style='{style}'>{html.escape(t, quote=False)}</span>")
        return (f"<div class='lmlab-picker' data-selected='{s}' style='font:14px monospace;"
                f"line-height:1.9;white-space:pre-wrap'>{''.join(spans)}</div>")


def _named(models, what: str) -> dict:
    if isinstance(models, dict):
        return {str(name): m for name, m in models.items()}
    if isinstance(models, (list, tuple)):
        return {f"model {i + 1}": m for i, m in enumerate(models)}
    raise TypeError(f"{what} must be a dict of name -> {what[:-1]} or a list of them, "
                    f"not a {type(models).__name__}")


def _colour(value: float, top: float) -> str:
    t = 0.0 if not top or value is None or math.isnan(value) else max(0.0, min(1.0, value / top))
    return f"rgb({round(255 - 227 * t)},{round(255 - 196 * t)},{round(255 - 120 * t)})"


def head_grids(summary, n_tokens: int) -> str:
    """A head summary as three small grids (entropy, previous token, induction), layers
    down, heads across, cells darker for larger values (entropy up to ln T, the others up
    to 1); values printed when there are few heads, always on hover."""
    layers = 1 + max(r["layer"] for r in summary)
    heads = 1 + max(r["head"] for r in summary)
    at = {(r["layer"], r["head"]): r for r in summary}
    grids = []
    for key, title in METRICS:
        top = math.log(n_tokens) if key == "entropy" else 1.0
        if at[(0, 0)][key] is None:  # no induction scores given
            continue
        rows = []
        for layer in range(layers):
            cells = []
            for head in range(heads):
                v = at[(layer, head)][key]
                dark = v is not None and not math.isnan(v) and top and v / top > 0.55
                text = "" if heads > NUMBERS_UP_TO or v is None else f"{v:.2f}"
                cells.append(f"<td title='layer {layer}, head {head}: {title} {v:.3f}' style='background:"
                             f"{_colour(v, top)};{'color:#fff;' if dark else ''}min-width:14px;height:14px'>"
                             f"{text}</td>")
            rows.append(f"<tr><th>L{layer}</th>{''.join(cells)}</tr>")
        header = "".join(f"<th>H{h}</th>" for h in range(heads))
        grids.append(f"<table class='lmlab-head-grid' data-metric='{key}' style='border-collapse:"
                     f"collapse;font:10px sans-serif;text-align:center'><caption style='font-size:11px'>"
                     f"{title}</caption><tr><th></th>{header}</tr>{''.join(rows)}</table>")
    return f"<div style='display:flex;gap:10px;flex-wrap:wrap'>{''.join(grids)}</div>"


class ModelComparison(View, W.VBox):
    """ModelComparison({"pretrained": a, "fine-tuned": b}, tokenizer, text), or a list of
    models (named "model 1", "model 2", ...), or trainers={"name": trainer, ...} to follow
    training runs (read again every `every` steps). `tokenizer` must be every model's
    (same vocabulary size, else ConfigError). `position`: the token after which the next
    token is compared (default: the last); `k`: bars per model; a text longer than
    `max_tokens` or than the shortest context is read over its last tokens, with a notice.

    State, after the last good reading: `ids`, `tokens` (the T tokens read); `position`;
    `scores[name]` (`lmlab.sampling.Score`: cross_entropy is the loss, nats a token);
    `summaries[name]` (`head_summary` rows: layer, head, entropy, previous_token,
    first_token, induction); `distributions[name]` (`Distribution` of the token after
    `position`, every id); `divergences[name]` for each model after the first, against the
    first: tv, kl (KL(first‖it)), kl_back (KL(it‖first)), in nats."""

    def __init__(self, models=None, tokenizer=None, text: str = "", *, position: int | None = None,
                 k: int = 10, trainers=None, every: int = 50, max_tokens: int = MAX_TOKENS):
        self.trainers = _named(trainers, "trainers") if trainers is not None else {}
        if models is None:
            if not self.trainers:
                raise TypeError("ModelComparison(models, tokenizer, text) or "
                                "ModelComparison(trainers={'a': t1, 'b': t2}, text=text)")
            models = {name: t.model for name, t in self.trainers.items()}
            tokenizer = tokenizer or next(iter(self.trainers.values())).dataset.tokenizer
        models = _named(models, "models")
        if self.trainers and set(self.trainers) != set(models):
            raise ConfigError(f"trainers are named {sorted(self.trainers)} but models "
                              f"{sorted(models)}; give the same names (or only trainers=)")
        if len(models) < 2:
            raise ConfigError(f"{len(models)} model given; a comparison needs at least two")
        if tokenizer is None:
            raise TypeError("ModelComparison needs the models' shared tokenizer: tokenizer=...")
        vocab = tokenizer.vocab_size
        differ = {name: m.config.vocab_size for name, m in models.items() if m.config.vocab_size != vocab}
        if differ:
            raise ConfigError(
                f"the models must share the tokenizer: it has {vocab} tokens, but "
                + ", ".join(f"{name!r} has {v}" for name, v in differ.items())
                + "; compare models trained with this tokenizer (fine-tune from the pretrained "
                  "model's vocabulary), or pass the tokenizer they were trained with")
        spoken = {name: t.dataset.tokenizer.to_dict() for name, t in self.trainers.items()}
        other = [name for name, tok in spoken.items() if tok != tokenizer.to_dict()]
        if other:  # the same size is not enough: the ids must stand for the same text
            raise ConfigError(f"the trainers {other} tokenize with another tokenizer than the one "
                              "given; compare runs trained with one tokenizer")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
            raise ConfigError(f"k={k!r} must be a whole number from 1 to the vocabulary size {vocab}")
        W.VBox.__init__(self)
        self._init_view(list(self.trainers.values()))
        self.models, self.tokenizer, self.k, self.every = models, tokenizer, k, every
        contexts = [c for c in map(context_length, models.values()) if c is not None]
        self.max_tokens = min([max_tokens] + contexts)
        self.ids: list[int] = []
        self.tokens: list[str] = []
        self.scores, self.summaries, self.distributions, self.divergences = {}, {}, {}, {}
        self._vectors: dict[str, torch.Tensor] = {}
        self._passes: dict = {}  # name -> the lmlab.passes.Pass of the text drawn
        self._wanted = position  # None: follow the end of the text
        self._syncing = False

        self.text_box = W.Textarea(value=text, continuous_update=False, placeholder="text to compare on",
                                   layout=W.Layout(width="100%", height="3.2em"))
        self.picker = TokenPicker()
        self.position_slider = W.IntSlider(value=0, min=0, max=1, description="position",
                                           continuous_update=False, style={"description_width": "60px"},
                                           layout=W.Layout(width="420px"))
        self.line = W.HTML()
        self.status = W.HTML()
        self.panels = {}
        for name in models:
            header, bars, heads = W.HTML(), W.HTML(), W.HTML()
            box = W.VBox([header, bars, heads], layout=W.Layout(
                flex="1 1 360px", padding="4px 8px", border="1px solid #ddd", margin="0 8px 8px 0"))
            box.add_class("lmlab-compare-model")
            self.panels[name] = {"header": header, "bars": bars, "heads": heads, "box": box}
        self.children = [self.text_box, self.picker, self.position_slider, self.status, self.line,
                         W.HBox([p["box"] for p in self.panels.values()],
                                layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))]
        self.add_class("lmlab-compare-models")
        self.text_box.observe(self.guarded(lambda _: self.update()), "value")
        self.position_slider.observe(self.guarded(self._on_slider), "value")
        self.picker.observe(self.guarded(lambda c: self.select(c["new"])), "selected")
        for trainer in self.trainers.values():
            self._follow(trainer, every)
        self.update()

    def show_step(self, trainer, model, step) -> None:
        """The panels of `trainer`'s runs read `model` (its weights at `step`); the other
        models stay as they are."""
        names = [name for name, t in self.trainers.items() if t is trainer]
        if not names:
            raise ConfigError("this comparison follows no run of the timeline's trainer; build "
                              "it with trainers={...} holding that trainer")
        for name in names:
            self.models[name] = model
        self.shown_step = step
        self.update()

    @property
    def position(self) -> int:
        return self.position_slider.value

    # ---- the engine's side ------------------------------------------------------------

    def update(self, text: str | None = None) -> None:
        """Read `text` (default: the text box's) with every model: losses, attention
        summaries, and the next-token distributions at the chosen position; redraw. Bad
        text is reported in the status line and the last good view stays."""
        ids = self._read_text(text, model=next(iter(self.models.values())))
        if ids is None:
            return
        notice = ""
        if len(ids) > self.max_tokens:
            notice = (f"the text is {len(ids)} tokens long; the comparison reads its last "
                      f"{self.max_tokens}")
            ids = ids[-self.max_tokens:]
        if len(ids) < 2:
            self._show("type at least two tokens: the loss predicts each token from those before it",
                       "notice")
            return
        scores, summaries, self._passes = {}, {}, {}
        for name, model in self.models.items():  # one pass per model and text (lmlab.passes)
            found = self._passes[name] = cached_pass(model, ids, self.tokenizer)
            scores[name] = score_logits(found.logits[:-1], ids, self.tokenizer)
            induction = cached_induction(model)
            summaries[name] = [{**row, "induction": float(induction[row["layer"], row["head"]])}
                               for row in found.summary]
        self.ids, self.tokens = ids, scores[next(iter(scores))].tokens
        self.scores, self.summaries = scores, summaries
        T = len(ids)
        wanted = T - 1 if self._wanted is None else min(self._wanted, T - 1)
        self._syncing = True
        try:
            with self.hold_sync():
                self.position_slider.max = T - 1
                self.position_slider.value = wanted
                self.picker.tokens = self.tokens
                self.picker.selected = wanted
        finally:
            self._syncing = False
        self._compare_at(wanted)
        self._show(notice, "notice")
        self.redraw(force=True)

    def select(self, position: int) -> None:
        """Compare the models' next token after the token at `position` (0..T-1)."""
        if not self.ids:
            return
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < len(self.ids):
            raise ConfigError(f"position={position!r} is outside the text's {len(self.ids)} tokens "
                              f"(0..{len(self.ids) - 1})")
        self.position_slider.value = position  # observed: comes back through _on_slider

    def _on_slider(self, change) -> None:
        if self._syncing or not self.ids:
            return
        p = change["new"]
        self.picker.selected = p
        self._wanted = None if p == len(self.ids) - 1 else p
        self._compare_at(p)
        self.redraw(force=True)

    def _compare_at(self, p: int) -> None:
        vocab = self.tokenizer.vocab_size
        distributions, vectors = {}, {}
        for name in self.models:
            d = distribution_of_logits(self._passes[name].logits[p], self.tokenizer)
            vectors[name] = torch.zeros(vocab).index_put_((torch.tensor(d.ids),), torch.tensor(d.probs_raw))
            distributions[name] = d
        reference = next(iter(vectors))
        self.distributions, self._vectors = distributions, vectors
        self.divergences = {name: divergence(vectors[reference], v)
                            for name, v in vectors.items() if name != reference}

    # ---- drawing -----------------------------------------------------------------------

    def _draw(self) -> None:
        if not self.ids:
            return
        p, T = self.position, len(self.ids)
        names = list(self.models)
        true_next = self.ids[p + 1] if p + 1 < T else None
        with self.hold_sync():
            self.line.value = self._line(p, true_next)
            for name in names:
                panel = self.panels[name]
                s = self.scores[name]
                trainer = self.trainers.get(name)
                step = f" · step {trainer.step_count}" if trainer is not None else ""
                panel["header"].value = (
                    f"<div class='lmlab-compare-header' style='font:13px sans-serif'><b>{html.escape(name)}"
                    f"</b>{step} · loss on this text <b>{s.cross_entropy:.3f}</b> nats a token "
                    f"(perplexity {s.perplexity:.2f})</div>")
                panel["bars"].value = self._bars(name, true_next)
                panel["heads"].value = (
                    "<div style='font:12px sans-serif;margin-top:6px'><b>attention heads</b> on this "
                    f"text</div>{head_grids(self.summaries[name], T)}")

    def _line(self, p: int, true_next: int | None) -> str:
        names = list(self.models)
        token = html.escape(self.tokens[p], quote=False)
        after = (f"the text goes on with <code>{html.escape(self.tokens[p + 1], quote=False)}</code>"
                 if true_next is not None else "the end of the text")
        parts = []
        for name, d in self.divergences.items():
            a, b = html.escape(names[0]), html.escape(name)
            parts.append(f"{a} vs {b}: total variation <b>{d['tv']:.3f}</b> · KL({a}‖{b}) "
                         f"<b>{d['kl']:.3f}</b> nats · KL({b}‖{a}) {d['kl_back']:.3f} nats")
        return (f"<div class='lmlab-compare-line' style='font:13px sans-serif'>Next token after "
                f"position {p} (<code>{token}</code>; {after}): {'<br>'.join(parts)} <span style='color:#777'>"
                f"(total variation: 0 the same distribution, 1 no token in common)</span></div>")

    def _bars(self, name: str, true_next: int | None) -> str:
        d = self.distributions[name]
        others = [n for n in self.models if n != name]
        rows = []
        top = max([1e-9] + [e.probs_raw[0] for e in self.distributions.values()])  # one scale for all
        for tid, text, prob in zip(d.ids[: self.k], d.tokens[: self.k], d.probs_raw[: self.k]):
            mark = " style='background:#e3f1e3'" if tid == true_next else ""
            other = "".join(f"<td style='color:#777'>{float(self._vectors[o][tid]):.3f}</td>" for o in others)
            rows.append(f"<tr class='lmlab-compare-bar'{mark} data-id='{tid}'><td><code>"
                        f"{html.escape(text, quote=False)}</code></td><td><span style='display:inline-block;"
                        f"height:10px;width:{150 * prob / top:.0f}px;background:#1c5d99'></span></td>"
                        f"<td>{prob:.3f}</td>{other}</tr>")
        header = "".join(f"<th style='color:#777'>{html.escape(o)}</th>" for o in others)
        note = ""
        if true_next is not None:
            rank = d.ids.index(true_next) + 1
            note = (f"<div style='font-size:12px'>the text's next token <code>"
                    f"{html.escape(self.tokens[self.position + 1], quote=False)}</code>: probability "
                    f"{d.probs_raw[rank - 1]:.3f}, rank {rank}{' (green row)' if rank <= self.k else ''}</div>")
        return (f"<table class='lmlab-compare-bars' style='font:12px sans-serif'><tr><th>next token</th>"
                f"<th>{html.escape(name)}</th><th></th>{header}</tr>{''.join(rows)}</table>{note}")

    def _static_html(self) -> str:
        """The tokens with the chosen position, the divergence line, and each model's
        loss, bars and head grids side by side."""
        if not self.ids:  # nothing read yet: what went wrong
            return self.status.value or message_html("there is nothing to compare yet: give the "
                                                     "comparison a text", "notice")
        panels = "".join(
            f"<div style='flex:1 1 360px;border:1px solid #ddd;padding:4px 8px'>{p['header'].value}"
            f"{p['bars'].value}{p['heads'].value}</div>" for p in self.panels.values())
        return (f"{self.picker.to_html()}{self.status.value}{self.line.value}"
                f"<div style='display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start'>{panels}</div>")

    def _controls(self) -> list:
        return [self.text_box, self.position_slider]

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind) if message else ""
