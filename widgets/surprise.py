"""`TokenSurprise`: how surprised a model is by each token of a text.

The text is a row of token chips (`tokens.js`, shared with the stepper): the first token
plain (it is only read), each other one tinted by the probability the model gave it
having read the tokens before it, green when expected, red when surprising. Hover shows
that probability, its rank, the surprise in nats and the model's top tokens there; the
stats line gives the text's cross-entropy and perplexity: the training loss is exactly
this average surprise. Editing the text recomputes; with `trainer=`, so does training
(every `every` steps).
"""

from __future__ import annotations

import math

import ipywidgets as W

from lmlab.adapt import context_length
from lmlab.passes import cached_pass
from lmlab.sampling import score_logits

from ._view import View, message_html, model_and_tokenizer
from .stepper import TokenChips


class TokenSurprise(View, W.VBox):
    """TokenSurprise(model, tokenizer, text), or TokenSurprise(trainer=trainer, text=text)
    to watch the surprise fall as the model trains."""

    def __init__(self, model=None, tokenizer=None, text: str = "", *, trainer=None,
                 every: int = 50, alternatives: int = 5):
        model, tokenizer = model_and_tokenizer("TokenSurprise", model, tokenizer, trainer)
        W.VBox.__init__(self)
        self._init_view([trainer] if trainer is not None else [])
        self.model, self.tokenizer, self.trainer = model, tokenizer, trainer
        self.every, self.alternatives = every, alternatives
        self.score = None  # the last good `lmlab.sampling.Score`
        self.text_box = W.Textarea(value=text, continuous_update=False, placeholder="text to score",
                                   layout=W.Layout(width="100%", height="3.2em"))
        self.chips = TokenChips(clickable=False)
        self.stats = W.HTML()
        self.status = W.HTML()
        self.children = [self.text_box, self.chips, self.stats, self.status]
        self.add_class("lmlab-surprise")
        self.text_box.observe(self.guarded(lambda _: self.update()), "value")
        if trainer is not None:
            self._follow(trainer, every)
        self.update()

    def update(self, text: str | None = None) -> None:
        """Score `text` (default: the text box's) and redraw. Bad text is reported in the
        status line and the last good view stays; a text longer than the model reads is
        scored over its first context + 1 tokens, with a notice."""
        ids = self._read_text(text)
        if ids is None:
            return
        notice = ""
        context = context_length(self.model)
        if context is not None and len(ids) > context + 1:
            notice = (f"the text is {len(ids)} tokens long; the model reads {context} at once, "
                      f"so the first {context + 1} are scored")
            ids = ids[: context + 1]
        if len(ids) < 2:
            self._show("type at least two tokens: the first is only read, each later one is "
                       "predicted from those before it", "notice")
            return
        found = cached_pass(self.model, ids[:-1], self.tokenizer)  # row i predicts ids[i + 1]
        self.score = score_logits(found.logits, ids, self.tokenizer, alternatives=self.alternatives)
        self._show(notice, "notice")
        self.redraw(force=True)

    def _draw(self) -> None:
        s = self.score
        if s is None:
            return
        chips = [{"text": s.tokens[0], "prob": None}]
        for i, prob in enumerate(s.probs):
            surprise = -math.log(prob) if prob > 0 else math.inf
            chips.append({"text": s.tokens[i + 1], "prob": prob, "rank": s.ranks[i],
                          "alternatives": s.alternatives[i],
                          "note": f"surprise {surprise:.2f} nats; perplexity so far "
                                  f"{s.running_perplexity[i]:.2f}"})
        with self.hold_sync():
            self.chips.chips = chips
            n = len(s.probs)
            self.stats.value = (
                f"<span class='lmlab-stats'>{n} token{'s' if n != 1 else ''} predicted · "
                f"cross-entropy {s.cross_entropy:.3f} nats a token (the loss) · perplexity "
                f"{s.perplexity:.2f} · <span style='background:#82f0b4'>&nbsp;expected&nbsp;</span>"
                f" <span style='background:#fac8c8'>&nbsp;surprising&nbsp;</span></span>")

    def _static_html(self) -> str:
        """The chips, tinted by probability, the stats and the status line."""
        return self.chips.to_html() + self.stats.value + self.status.value

    def _show(self, message: str, kind: str) -> None:
        self.status.value = message_html(message, kind) if message else ""
