"""`TokenizerPlayground`: one text read by several tokenizers, side by side.

Each tokenizer is a row: its name, its token count and characters per token, and the
text as token chips (`playground.js`), colours cycling so every boundary shows,
whitespace made visible, the id on hover. A BPE row has a slider that replays its
merges: at n the chips are the text's tokens after the first n merges (0: one per
byte), and the label names merge n. Editing the text recomputes every row; a tokenizer
that cannot read it says so in its own row while the others go on.
"""

from __future__ import annotations

import html
import math
import pathlib

import anywidget
import ipywidgets as W
import traitlets

from lmlab.tokenizers import (BPETokenizer, CharTokenizer, GPT2Tokenizer, Tokenization, byte_level_bytes,
                              bytes_text, compare_tokenizers)

from ._view import View, message_html

HERE = pathlib.Path(__file__).parent
PALETTE = ("#cfe3f7", "#fbd9b8", "#d3f0cf", "#ecd6f2")  # chip colours, cycling (playground.css)
ACCEPTED = ("a list of tokenizers or a {name: tokenizer} dict; each an lmlab tokenizer "
            "(CharTokenizer, BPETokenizer, GPT2Tokenizer) or any object with encode(text) -> ids "
            "and decode(ids) -> text")


class TokenRow(anywidget.AnyWidget):
    """`chips`: dicts with text (display string) and title (hover: the id); `stats`: the
    counts next to `name`; `error`: why this tokenizer could not read the text."""

    _esm = HERE / "playground.js"
    _css = HERE / "playground.css"
    name = traitlets.Unicode().tag(sync=True)
    chips = traitlets.List(traitlets.Dict()).tag(sync=True)
    stats = traitlets.Unicode().tag(sync=True)
    error = traitlets.Unicode().tag(sync=True)


class TokenizerPlayground(View, W.VBox):
    """TokenizerPlayground(text, tokenizers=[...] or {name: tokenizer}).

    `rows`, `sliders` (BPE rows only) and `merge_labels` are keyed by tokenizer name;
    `results` holds the last good `Tokenization` of each (all merges applied)."""

    def __init__(self, text: str = "", tokenizers=None):
        if not isinstance(text, str):
            raise TypeError(f"the text must be a str, not {type(text).__name__}")
        self.tokenizers = _named(tokenizers)
        W.VBox.__init__(self)
        self._init_view([])  # no trainer: only the shared error handling and close()
        self.text = text
        self.results: dict[str, Tokenization] = {}
        self.text_box = W.Textarea(value=text, continuous_update=False, placeholder="text to tokenize",
                                   layout=W.Layout(width="100%", height="3.2em"))
        self.rows, self.sliders, self.merge_labels = {}, {}, {}
        parts = []
        for name, tok in self.tokenizers.items():
            self.rows[name] = TokenRow(name=name)
            parts.append(self.rows[name])
            if _replays(tok):
                merges = len(tok.merges)
                self.sliders[name] = W.IntSlider(
                    value=merges, min=0, max=merges, description="merges", continuous_update=True,
                    style={"description_width": "60px"}, layout=W.Layout(width="420px"))
                self.merge_labels[name] = W.HTML()
                self.sliders[name].observe(self.guarded(lambda _: self.redraw(force=True)), "value")
                parts.append(W.HBox([self.sliders[name], self.merge_labels[name]],
                                    layout=W.Layout(flex_flow="row wrap", align_items="center")))
        self.summary = W.HTML()
        self.status = W.HTML()
        self.children = [self.text_box, *parts, self.summary, self.status]
        self.add_class("lmlab-playground")
        self.text_box.observe(self.guarded(lambda _: self.update()), "value")
        self.update()

    def update(self, text: str | None = None) -> None:
        """Read `text` (default: the text box's) with every tokenizer and redraw. Empty
        text is reported and the last good view stays."""
        if text is not None and text != self.text_box.value:
            self.text_box.value = text  # observed: comes back here
            return
        text = self.text_box.value
        if not text:
            self._show("the text is empty: type something to tokenize", "error")
            return
        self.text = text
        self.results = {r.name: r for r in compare_tokenizers(text, self.tokenizers)}
        self._show("", "")
        self.redraw(force=True)

    def row_view(self, name: str) -> tuple[list[dict], str, str]:
        """(chips, stats, merge label) of row `name` as drawn now: for a BPE row, the
        text's tokens after the slider's number of merges."""
        result, tok = self.results[name], self.tokenizers[name]
        if result.error:
            return [], "", ""
        chips = [{"text": t, "title": f"id {i}"} for t, i in zip(result.tokens, result.ids)]
        stats = _stats(result.count, result.chars_per_token)
        slider = self.sliders.get(name)
        if slider is None:
            return chips, stats, ""
        n = slider.value
        if n == 0:
            label = "no merges: one token per byte of the text (UTF-8)"
        else:
            label = f"{tok.merge_text(n)}  ·  {n} of {slider.max} merges applied"
        if n < slider.max:
            pieces = tok.tokenize_with_merges(self.text, n)
            chips = [{"text": bytes_text(byte_level_bytes(p)), "title": f"id {tok.token_id(p)}"}
                     for p in pieces]
            stats = (f"after {n} of {slider.max} merges: "
                     f"{_stats(len(pieces), len(self.text) / len(pieces))} "
                     f"(all merges: {result.count})")
        label = f"<span class='lmlab-merge' style='white-space:pre'>{html.escape(label, quote=False)}</span>"
        return chips, stats, label

    def _draw(self) -> None:
        with self.hold_sync():
            for name, row in self.rows.items():
                chips, stats, label = self.row_view(name)
                row.chips, row.stats, row.error = chips, stats, self.results[name].error
                if name in self.merge_labels:
                    self.merge_labels[name].value = label
            self.summary.value = self._summary_html()

    def _summary_html(self) -> str:
        cells = "".join(
            f"<tr><td>{html.escape(name)}</td>"
            + ("<td colspan=2>cannot read this text</td>" if r.error else
               f"<td>{r.count}</td><td>{r.chars_per_token:.2f}</td>") + "</tr>"
            for name, r in self.results.items())
        return ("<table class='lmlab-stats' style='font:12px sans-serif;border-spacing:10px 0'>"
                "<tr><th align=left>tokenizer</th><th>tokens</th><th>characters a token</th></tr>"
                f"{cells}</table>")

    def to_html(self) -> str:
        """The rows as they are drawn now, as a static HTML snippet (for a saved notebook
        or a slide: no JavaScript needed)."""
        rows = []
        for name in self.results:
            chips, stats, label = self.row_view(name)
            error = self.results[name].error
            spans = "".join(
                f"<span title='{html.escape(c['title'])}' style='background:{PALETTE[i % len(PALETTE)]};"
                f"padding:1px 1px;border-radius:3px'>{html.escape(c['text'], quote=False)}</span>"
                for i, c in enumerate(chips))
            rows.append(
                f"<div class='lmlab-token-row' style='margin:4px 0'><div style='font:13px sans-serif'>"
                f"<b>{html.escape(name)}</b> <span style='color:#444'>{html.escape(stats)}</span></div>"
                + (f"<div style='color:#c00;font:13px sans-serif'>{html.escape(error)}</div>" if error else
                   f"<div class='lmlab-chips' data-chips='{len(chips)}' style='font:14px monospace;"
                   f"line-height:1.9;white-space:pre-wrap'>{spans}</div>")
                + (f"<div style='font:13px monospace;color:#333'>{label}</div>" if label else "")
                + "</div>")
        return f"<div class='lmlab-playground'>{''.join(rows)}</div>"

    def _static_html(self) -> str:
        return self.to_html() + self.summary.value + self.status.value

    def _controls(self) -> list:
        return [self.text_box, *self.sliders.values()]

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind) if message else ""


def _replays(tok) -> bool:
    return all(hasattr(tok, a) for a in ("merges", "tokenize_with_merges", "merge_text", "token_id"))


def _stats(count: int, chars_per_token: float) -> str:
    cpt = "–" if math.isnan(chars_per_token) else f"{chars_per_token:.2f}"
    return f"{count} token{'s' if count != 1 else ''} · {cpt} characters a token"


def _named(tokenizers) -> dict:
    """{name: tokenizer} from a dict, a list (named by kind) or one tokenizer; TypeError
    naming what is accepted for anything else."""
    if tokenizers is None:
        raise TypeError(f"TokenizerPlayground(text, tokenizers=...) needs tokenizers: {ACCEPTED}")
    if _is_tokenizer(tokenizers):
        tokenizers = [tokenizers]
    if isinstance(tokenizers, dict):
        named = {str(k): v for k, v in tokenizers.items()}
    elif isinstance(tokenizers, (list, tuple)):
        named = {}
        for i, tok in enumerate(tokenizers):
            if not _is_tokenizer(tok):
                raise TypeError(f"tokenizers[{i}] is a {type(tok).__name__}, not a tokenizer: "
                                f"pass {ACCEPTED}")
            name = _kind(tok)
            k = 2
            while name in named:
                name, k = f"{_kind(tok)} {k}", k + 1
            named[name] = tok
    else:
        raise TypeError(f"tokenizers must be {ACCEPTED}; got a {type(tokenizers).__name__}")
    if not named:
        raise TypeError(f"no tokenizers given: pass {ACCEPTED}")
    for name, tok in named.items():
        if not _is_tokenizer(tok):
            raise TypeError(f"{name!r} is a {type(tok).__name__}, not a tokenizer: pass {ACCEPTED}")
    return named


def _is_tokenizer(obj) -> bool:
    return callable(getattr(obj, "encode", None)) and callable(getattr(obj, "decode", None))


def _kind(tok) -> str:
    if isinstance(tok, CharTokenizer):
        return "characters"
    if isinstance(tok, BPETokenizer):
        return f"BPE ({tok.vocab_size})"
    if isinstance(tok, GPT2Tokenizer):
        return "GPT-2"
    return type(tok).__name__
