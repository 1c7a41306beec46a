"""`SamplingStepper`: generation one token at a time, every knob live.

The text is a row of token chips (`tokens.js`): the prompt plain, each generated token
tinted by the probability the model gave it. What a click on a chip does is chosen on the
widget ("a click on a token: rewind | explain"): rewind goes back to just before it;
explain shows which heads and MLPs pushed that token up against the runner-up of its step
(`lmlab.attribution`, on one kept pass of the text: `lmlab.passes`). The
next-token candidates are bars (`bars.js`): kept tokens in colour, those top-k or top-p
removed in grey, the model's own probability marked; a click takes that token next.
Sliders re-filter the kept logits at once (`Stepper.set`, no model call). A token chosen
where another was taken before keeps the old continuation as a branch.
"""

from __future__ import annotations

import html
import math
import pathlib

import anywidget
import ipywidgets as W
import traitlets

from lmlab import passes
from lmlab.attribution import Attribution, attribute, parts_of_pass
from lmlab.errors import ConfigError
from lmlab.reading import reading
from lmlab.stepper import Stepper

from ._view import View, message_html
from .bars_html import attribution_html

HERE = pathlib.Path(__file__).parent
GREEDY_TOKENS = 100  # "Greedy to end" takes this many tokens (fewer if the context ends)
EXPLAIN_PARTS = 10  # the panel's "top parts" bars
OUTLINE = "outline:2px solid #1c5d99;outline-offset:1px"  # the explained chip (as stepper.css draws it)
# the "why this token?" panel, styled inline so that the static snapshot looks the same
PANEL = "border:1px solid #dde3ea;border-radius:4px;padding:2px 8px 6px;margin:4px 0 8px"
TITLE = "font:600 13px sans-serif;margin:4px 0"
CODE = "background:#eef2f7;padding:0 3px;border-radius:3px"


class TokenChips(anywidget.AnyWidget):
    """`chips`: dicts with text, prob (None for a plain chip), rank, sampled (False: chosen
    by hand), alternatives [[text, prob], ...], runner_up [text, prob] (the likeliest other
    token), note (one more line on hover); `clicked`: {index, n}, set by a click when
    `clickable`: on a tinted chip, and with `action` "explain" on a plain one too (the hover
    text says what a click does); `explained`: the outlined chip's index (-1: none)."""

    _esm = HERE / "tokens.js"
    _css = HERE / "stepper.css"
    chips = traitlets.List(traitlets.Dict()).tag(sync=True)
    clickable = traitlets.Bool(True).tag(sync=True)
    clicked = traitlets.Dict().tag(sync=True)
    action = traitlets.Unicode("rewind").tag(sync=True)  # "rewind" or "explain"
    explained = traitlets.Int(-1).tag(sync=True)

    def to_html(self) -> str:
        """The chips as static spans, tinted as `tokens.js` tints them, the probability
        and rank on hover."""
        spans = []
        for i, chip in enumerate(self.chips):
            text = html.escape(chip["text"], quote=False)
            p = chip["prob"]
            if p is None:
                spans.append(f"<span style='color:#555'>{text}</span>")
                continue
            tint = f"rgb({round(250 - 120 * p)},{round(200 + 40 * p)},{round(200 - 40 * p)})"
            outline = f";{OUTLINE}" if i == self.explained else ""
            spans.append(f"<span title='probability {p:.3f}, rank {chip['rank']}' style='background:"
                         f"{tint};padding:1px 1px;border-radius:3px{outline}'>{text}</span>")
        return (f"<div class='lmlab-chips' data-chips='{len(self.chips)}' style='font:14px monospace;"
                f"line-height:1.9;white-space:pre-wrap'>{''.join(spans)}</div>")


class CandidateBars(anywidget.AnyWidget):
    """`rows`: dicts with id, text, prob (drawn with), raw (the model's), removed_by (None,
    "greedy", "top_k" or "top_p"); `picked`: {id, n}, set by a click."""

    _esm = HERE / "bars.js"
    _css = HERE / "stepper.css"
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    picked = traitlets.Dict().tag(sync=True)

    def to_html(self) -> str:
        """The rows as a static table of bars: kept tokens blue, removed ones grey."""
        top = max([1e-9] + [max(r["prob"], r["raw"]) for r in self.rows])
        cells = "".join(
            f"<tr><td><code>{html.escape(r['text'], quote=False)}</code></td><td><span style='display:"
            f"inline-block;height:10px;width:{160 * r['prob'] / top:.0f}px;background:"
            f"{'#c8c8c8' if r['removed_by'] else '#1c5d99'}'></span></td>"
            f"<td>{r['removed_by'] or format(r['prob'], '.3f')}</td><td>{r['raw']:.3f}</td></tr>"
            for r in self.rows)
        return ("<table class='lmlab-bars' style='font:12px sans-serif'><tr><th>next token</th>"
                f"<th>drawn with</th><th></th><th>the model</th></tr>{cells}</table>")


class SamplingStepper(View, W.VBox):
    """SamplingStepper(model, tokenizer, prompt): step, choose, go back, branch, and turn
    temperature, top-k and top-p while watching the next-token distribution.

    "a click on a token" chooses what a click on a generated token's chip does: "rewind"
    (the default) goes back to just before it; "explain" outlines it and shows, under the
    chips, which heads, MLPs and embeddings pushed it up against the runner-up of its step
    (the model's likeliest other token there), as `explain(index)` does from a cell.
    """

    def __init__(self, model, tokenizer, prompt: str, *, seed: int = 0, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, candidates: int = 15):
        W.VBox.__init__(self)
        self._init_view([])  # no trainer: only the shared error handling and close()
        self.stepper = Stepper(model, tokenizer, prompt, seed=seed, temperature=temperature,
                               top_k=top_k, top_p=top_p)
        vocab = model.config.vocab_size
        self.prompt_box = W.Textarea(value=prompt, continuous_update=False,
                                     layout=W.Layout(width="100%", height="3.2em"))
        self.chips = TokenChips()
        self.bars = CandidateBars()
        slider = dict(continuous_update=True, style={"description_width": "90px"},
                      layout=W.Layout(width="330px"))
        self.temperature = W.FloatSlider(value=temperature, min=0, max=2, step=0.05,
                                         description="temperature", **slider)
        self.top_k = W.IntSlider(value=top_k or 0, min=0, max=vocab, description="top-k (0: off)",
                                 **slider)
        self.top_p = W.FloatSlider(value=top_p or 1.0, min=0.05, max=1, step=0.05,
                                   description="top-p", **slider)
        self.seed = W.IntText(value=seed, description="seed", style={"description_width": "40px"},
                              layout=W.Layout(width="150px"))
        self.candidates = W.IntSlider(value=candidates, min=5, max=min(50, vocab),
                                      description="candidates", **slider)
        button = dict(layout=W.Layout(width="auto"))
        self.step_button = W.Button(description="Step", icon="step-forward", **button)
        self.back_button = W.Button(description="Back", icon="step-backward", **button)
        self.reset_button = W.Button(description="Reset", icon="undo", **button)
        self.greedy_button = W.Button(description="Greedy to end", icon="fast-forward",
                                      tooltip=f"take the most likely token, {GREEDY_TOKENS} times",
                                      **button)
        self.play = W.Play(interval=400, max=10**6, description="play", layout=W.Layout(width="auto"))
        self.speed = W.IntSlider(value=400, min=50, max=2000, step=50, description="ms a step",
                                 **slider)
        self.branch_box = W.Dropdown(description="branches", options=[], layout=W.Layout(width="360px"))
        self.branch_button = W.Button(description="Show branch", **button)
        self.click_action = W.ToggleButtons(
            options=[("rewind", "rewind"), ("explain", "explain")], value="rewind",
            style={"button_width": "72px"}, layout=W.Layout(width="auto"),
            tooltips=["go back to just before the token", "which heads and MLPs pushed the token up "
                      "against the runner-up of its step"])
        self.why = W.HTML()  # the explained token's attribution ("" when none)
        self._explained: tuple | None = None  # (index, ids[:index + 1]) the panel shows
        self.stats = W.HTML()
        self.status = W.HTML()
        controls = W.HBox([self.step_button, self.play, self.back_button, self.reset_button,
                           self.greedy_button], layout=W.Layout(flex_flow="row wrap"))
        clicks = W.HBox([W.Label("a click on a token:"), self.click_action],
                        layout=W.Layout(align_items="center"))
        knobs = W.VBox([self.temperature, self.top_k, self.top_p, self.candidates, self.speed,
                        self.seed])
        self.children = [self.prompt_box, self.chips, clicks, controls, self.stats, self.status, self.why,
                         W.HBox([self.bars, knobs], layout=W.Layout(flex_flow="row wrap")),
                         W.HBox([self.branch_box, self.branch_button])]
        self.add_class("lmlab-stepper")

        self.step_button.on_click(self.guarded(lambda _: self.step()))
        self.back_button.on_click(self.guarded(lambda _: self.back()))
        self.reset_button.on_click(self.guarded(lambda _: self.reset()))
        self.greedy_button.on_click(self.guarded(lambda _: self.greedy()))
        self.branch_button.on_click(self.guarded(lambda _: self.show_branch()))
        self.prompt_box.observe(self.guarded(lambda c: self.reset(c["new"])), "value")
        self._mirroring = False
        for box, setting in ((self.temperature, "temperature"), (self.top_k, "top_k"),
                             (self.top_p, "top_p")):
            box.observe(self.guarded(lambda c, setting=setting: self._refilter(setting, c["new"])),
                        "value")
        self._subscriptions.append(self.stepper.on_settings(self._mirror))  # close() removes it
        self.candidates.observe(self.guarded(lambda _: self._draw_bars()), "value")
        self.seed.observe(self.guarded(lambda c: self._reseed(c["new"])), "value")
        self.speed.observe(lambda c: setattr(self.play, "interval", c["new"]), "value")
        self.play.observe(self.guarded(self._on_play), "value")
        self.chips.observe(self.guarded(self._on_chip), "clicked")
        self.click_action.observe(lambda c: setattr(self.chips, "action", c["new"]), "value")
        self.bars.observe(self.guarded(lambda c: self.step(c["new"]["id"])), "picked")
        self._show(self.stepper.notice or "", "notice")
        self._draw()

    # ---- actions --------------------------------------------------------------------------

    def step(self, token: int | None = None) -> None:
        """Take the next token: drawn from the filtered distribution, or `token`."""
        self.stepper.step(token)
        self._show("", "")
        self._draw()

    def back(self) -> None:
        if self.stepper.back() is None:
            self._show("nothing to undo: this is the prompt", "notice")
        self._draw()

    def rewind(self, index: int) -> None:
        """Go back to just before the token at chip `index` (a position in the text)."""
        while len(self.stepper.ids) > max(index, self.stepper.prompt_length):
            self.stepper.back()
        self._draw()

    def explain(self, index: int) -> Attribution:
        """Which parts of the model pushed the token at chip `index` (a position in the text,
        a generated token) up against the runner-up of its step: its direct logit attribution
        (`lmlab.attribution`) at the position before it, shown under the chips, the chip
        outlined. The first explain of a text runs one pass of it (`lmlab.passes`), later
        ones run no model. Returns the `Attribution`."""
        s = self.stepper
        i = index - s.prompt_length
        if not 0 <= index < len(s.ids):
            raise ConfigError(f"there is no token {index}: the text has {len(s.ids)} tokens "
                              f"(0..{len(s.ids) - 1})")
        if i < 0:
            raise ConfigError(f"token {index} ({s.tokens[index]!r}) is part of the prompt: the model did "
                              "not choose it, so there is no step to explain. Click a tinted token, "
                              "one the stepper generated")
        step = s.steps[i]
        other, other_text, other_prob = s.runner_up(i)
        ids, position = s.context_of(i)
        with reading(s.model):  # the pass and the weights it is projected on are one version
            kept = passes.cached_pass(s.model, ids)
            found = attribute(s.model, parts_of_pass(kept), position, step.id, other, s.tokenizer)
        code = f"<code style='{CODE}'>"
        title = (f"Why {code}{html.escape(step.text)}</code> ({step.prob_raw:.3g}) and not "
                 f"{code}{html.escape(other_text)}</code> ({other_prob:.3g})? Token {index}, "
                 f"predicted at position {index - 1}; the model's probabilities, before any filter")
        self.why.value = (f"<div class='lmlab-why' data-index='{index}' style='{PANEL}'>"
                          f"<div class='lmlab-why-title' style='{TITLE}'>{title}</div>"
                          f"{attribution_html(found, EXPLAIN_PARTS)}</div>")
        self._explained = (index, tuple(s.ids[: index + 1]))
        self.chips.explained = index
        self._show("", "")
        return found

    def _on_chip(self, change) -> None:
        index = change["new"]["index"]
        if self.click_action.value == "explain":
            self.explain(index)
        else:
            self.rewind(index)

    def reset(self, prompt: str | None = None) -> None:
        """Start again from `prompt` (default: the prompt box's)."""
        self.stepper.reset(self.prompt_box.value if prompt is None else prompt)
        self._show(self.stepper.notice or "", "notice")
        self._draw()

    def greedy(self, tokens: int = GREEDY_TOKENS) -> None:
        """The most likely token, `tokens` times; the settings stay as the sliders show them."""
        self.stepper.greedy(tokens)
        self._draw()

    def show_branch(self) -> None:
        if self.branch_box.value is None:
            self._show("no branch to show: choose another token at a past step first", "notice")
            return
        self.stepper.restore_branch(self.branch_box.value)
        self._draw()

    def _on_play(self, change) -> None:
        if change["new"] > 0:
            self.step()

    def _reseed(self, seed: int) -> None:
        self.stepper.seed = seed
        self.reset()

    def _refilter(self, setting: str, value) -> None:
        """A slider moved: that one setting goes to the stepper (0 turns top-k off, 1 top-p)."""
        if self._mirroring:
            return
        if setting == "top_k":
            value = value or None
        elif setting == "top_p":
            value = None if value >= 1 else value
        self.stepper.set(**{setting: value})  # a change comes back through _mirror, which redraws

    def _mirror(self, stepper) -> None:
        """The stepper's settings changed (a slider, or `stepper.set` in a cell): the
        sliders show them."""
        self._mirroring = True
        try:
            # a slider clamps what is out of its range: widen it to show the stepper's value
            self.temperature.max = max(self.temperature.max, stepper.temperature)
            self.temperature.value = stepper.temperature
            self.top_k.value = stepper.top_k or 0
            top_p = 1.0 if stepper.top_p is None else stepper.top_p
            self.top_p.min = min(self.top_p.min, top_p)
            self.top_p.value = top_p
        finally:
            self._mirroring = False
        self._draw_bars()

    def show_step(self, trainer, model, step) -> None:
        """The tokens taken so far, read again by `model` (see `Stepper.use_model`)."""
        self.stepper.use_model(model)
        self.shown_step = step
        self._explained = None
        self._draw()

    # ---- drawing --------------------------------------------------------------------------

    def _draw(self) -> None:
        s = self.stepper
        tokens = s.tokens
        chips = [{"text": t, "prob": None} for t in tokens[: s.prompt_length]]
        for i, step in enumerate(s.steps):
            chips.append({"text": step.text, "prob": step.prob_raw, "rank": step.rank,
                          "sampled": step.sampled, "alternatives": s.alternatives(i),
                          "runner_up": list(s.runner_up(i)[1:])})
        if self._explained is not None:  # the explained token, if still in the text, still holds
            index, before = self._explained
            if tuple(s.ids[: index + 1]) != before:
                self._explained, self.why.value = None, ""
        with self.hold_sync():
            self.chips.explained = -1 if self._explained is None else self._explained[0]
            self.chips.chips = chips
            self.branch_box.options = [(f"{b.position}: {b.text[:40]!r}", i)
                                       for i, b in enumerate(s.branches)]
            self.branch_box.value = len(s.branches) - 1 if s.branches else None  # the newest
            n = len(s.steps)
            ppl = "–" if math.isnan(s.perplexity) else f"{s.perplexity:.2f}"
            self.stats.value = (f"<span class='lmlab-stats'>{n} token{'s' if n != 1 else ''} "
                                f"generated · log-probability "
                                f"{s.log_prob:.2f} nats · perplexity {ppl} · "
                                f"{len(s.branches)} branch{'es' if len(s.branches) != 1 else ''}</span>")
        self._draw_bars()

    def _draw_bars(self) -> None:
        """The `candidates` likeliest tokens (the model's own probability), kept or removed."""
        d, n = self.stepper.distribution, self.candidates.value
        kept = len(d.ids) - len(d.removed)

        def leading(start: int, stop: int) -> range:
            # each part of d.ids (kept, removed) is in the model's order: its first n (and
            # any tied with the n-th) hold all of that part the top n can take
            end = min(start + n, stop)
            while end < stop and d.probs_raw[end] == d.probs_raw[end - 1]:
                end += 1
            return range(start, end)

        near = [*leading(0, kept), *leading(kept, len(d.ids))]
        top = sorted(near, key=lambda j: (-d.probs_raw[j], d.ids[j]))[:n]
        self.bars.rows = [{"id": d.ids[j], "text": d.tokens[j], "prob": d.probs[j], "raw": d.probs_raw[j],
                           "removed_by": d.removed_by.get(d.ids[j])} for j in top]

    def _static_html(self) -> str:
        """The text as chips, the stats, and the candidates for the next token."""
        return (self.chips.to_html() + self.stats.value + self.status.value + self.why.value
                + f"<div style='font:12px sans-serif'>temperature {self.stepper.temperature:g} · "
                  f"top-k {self.stepper.top_k or 'off'} · top-p {self.stepper.top_p or 'off'}</div>"
                + self.bars.to_html())

    # ---- errors -----------------------------------------------------------------------------

    def show_error(self, error) -> None:
        self.play.playing = False  # an error stops Play
        super().show_error(error)

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind) if message else ""
