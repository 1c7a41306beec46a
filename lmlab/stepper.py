"""`Stepper`: generation one token at a time, with undo and branches, on the model's
key/value cache: the state behind the sampling stepper (`widgets/stepper.py`). The
distribution math it draws from is in `sampling.py`."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from .adapt import context_length, display
from .errors import ConfigError, TokenizerError
from .reading import reading
from .sampling import (StepDistribution, _check, _distribution, _draw, _entropy, _filters, _rank,
                       _Window, largest)


@dataclass(frozen=True)
class Step:
    """One token the stepper took, and how likely it was."""

    position: int  # its index in Stepper.ids
    id: int
    text: str  # display string
    rank: int  # 1 = the model's most likely token (temperature 1, no filter); ties by lower id
    prob: float  # after temperature/top-k/top-p: its chance of being drawn (0 if filtered out)
    prob_raw: float  # the model's probability (temperature 1, no filter)
    log_prob: float  # natural log of prob_raw
    entropy: float  # nats, of the distribution sampled from (after the filters)
    entropy_raw: float  # nats, of the model's distribution
    sampled: bool  # False when the token was given to step(token=...)


@dataclass
class _Entry:
    """What back() needs to undo a step: the step, and the logits and generator state before it."""

    step: Step
    logits: torch.Tensor
    state: torch.Tensor
    top: list | None = None  # the model's top tokens here, [(id, probability), ...], once asked for
    settings: tuple = (1.0, None, None)  # the temperature, top_k and top_p it was taken at


@dataclass
class Branch:
    """A continuation the stepper left: the whole token list `ids` of that path, which
    leaves the path the stepper was on at index `position`; `text` decodes ids[position:]."""

    position: int
    ids: list[int]
    text: str
    _entries: list = field(repr=False, compare=False)  # one _Entry per generated token of `ids`
    _state: torch.Tensor = field(repr=False, compare=False)  # the generator state at its end
    _logits: torch.Tensor = field(repr=False, compare=False)  # the logits after its last token


class _Watch:
    """What `Stepper.on_settings` returns: `remove()` stops the watcher (idempotent)."""

    def __init__(self, watchers: list, fn):
        self.watchers, self.fn = watchers, fn

    def remove(self) -> None:
        if self.fn in self.watchers:
            self.watchers.remove(self.fn)


_KEEP = ...  # set(): a setting not given stays


class Stepper:
    """Generation one token at a time, with undo: the state behind the stepping widget.

    Holds the tokens so far (`ids`: the prompt's, then the generated ones), the model's key/
    value cache, the logits of the next position, the settings (temperature, top_k, top_p), a
    generator of its own seeded by `seed`, and one history entry per step (the logits and
    generator state before it, so a step costs V floats of memory), so `back()` restores the
    exact previous state without running the model, and `set()` re-filters the kept logits
    without running it either.

    With the same model, prompt, seed and settings, `step()` repeated draws the same tokens as
    `generate(model, ids, n, ..., seed=seed)`. Past the model's context each step reads the
    last block_size tokens, as `generate` does. Every forward goes through `reading(model)`,
    so a stepper on a training model reads between training steps (though the cache then
    mixes positions read before and after a step) and never draws from the global RNG.

    Branches: when a step takes another token than the one `back()` stepped over, the path
    left behind is kept in `branches` (as a `Branch`); `restore_branch(i)` goes back to it and
    keeps the path it leaves as a branch in turn. `reset()` forgets steps and branches.
    """

    def __init__(self, model, tokenizer, prompt, seed: int | None = 0, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None):
        _check(temperature, top_k, top_p)
        self.model = model
        self.tokenizer = tokenizer
        self.seed = secrets.randbits(63) if seed is None else seed
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self._window = _Window(model)  # refuses what is not a language model
        self._display = lru_cache(maxsize=None)(display(tokenizer))
        self._vocab = model.config.vocab_size
        self._names: list[str] | None = None  # every token's display string, made once
        self._watchers: list = []  # fn(stepper) after each change of the settings
        self.reset("" if prompt is None else prompt)

    # -- state ----------------------------------------------------------------------------

    def reset(self, prompt=None) -> None:
        """Start again from `prompt` (a text, or a list of token ids), or from the current
        prompt: no steps, no branches, the generator seeded by `seed` again. A prompt longer
        than the context keeps its last block_size tokens, and `notice` says so."""
        if prompt is None:
            ids, notice = self.ids[: self.prompt_length], self.notice
        else:
            ids, notice = self._encode(prompt), None
            context = self._window.context
            if context is not None and len(ids) > context:
                notice = (f"the prompt is {len(ids)} tokens long but the model reads at most "
                          f"{context}; only its last {context} tokens are kept")
                ids = ids[-context:]
        self._window.truncate(0)
        with reading(self.model):
            logits = self._window.read(ids)
        self.ids, self.prompt_length, self.notice, self.logits = ids, len(ids), notice, logits
        self._generator = torch.Generator().manual_seed(self.seed)
        self._history: list[_Entry] = []
        self._undone: list[_Entry] = []  # steps back() undid, the last undone on top
        self._tip: tuple | None = None  # (generator state, logits) where back() started
        self.branches: list[Branch] = []
        self._dist = None

    def use_model(self, model) -> None:
        """Read with `model` from now on, e.g. the weights of another step of the same run
        (`lmlab.Timeline.model_at`): the tokens taken stay and are read again, so each
        step's probabilities are the new model's; branches are forgotten, the generator
        goes on where it was. The model must have the same vocabulary."""
        if model.config.vocab_size != self._vocab:
            raise ConfigError(f"the new model has {model.config.vocab_size} tokens, this stepper's "
                              f"{self._vocab}: a stepper reads one vocabulary; make a new Stepper")
        self.model, self._window = model, _Window(model)
        if self._window.context is not None and len(self.ids) > self._window.context:
            taken, state = self.new_ids, self._generator.get_state()
            self.reset()  # past the context each position reads its own window: step again
            for token in taken:
                self.step(token)
            self._generator.set_state(state)
            return
        with reading(model):  # one pass reads every position
            logits = self._window.read_all(self.ids)
        for entry in self._history:
            p = entry.step.position
            _, probs, _, _ = _filters(logits[p - 1], *entry.settings)
            entry.step = self._describe(p, entry.step.id, logits[p - 1], probs, entry.step.sampled)
            entry.logits, entry.top = logits[p - 1], None
        self.logits, self._dist = logits[-1], None
        self._undone, self._tip, self.branches = [], None, []

    def _encode(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ConfigError("a text prompt needs a tokenizer to encode it: pass one, "
                                  "or give the prompt as a list of token ids")
            ids = self.tokenizer.encode(prompt)  # its own error names unknown characters
        else:
            ids = [int(i) for i in prompt]
        if not ids:
            raise ConfigError("the prompt is empty (0 tokens); give at least one token, "
                              "e.g. a newline '\\n'")
        for i in ids:
            self._check_id(i)
        return ids

    def _check_id(self, token) -> int:
        token = int(token)
        if not 0 <= token < self._vocab:
            raise TokenizerError(f"token id {token} is outside the model's vocabulary "
                                 f"(0..{self._vocab - 1}); was it encoded with the model's tokenizer?")
        return token

    @property
    def new_ids(self) -> list[int]:
        """The generated tokens."""
        return self.ids[self.prompt_length:]

    @property
    def text(self) -> str:
        """The prompt and the generated tokens, decoded."""
        if self.tokenizer is None:
            raise ConfigError("this stepper has no tokenizer to decode its tokens; read .ids")
        return self.tokenizer.decode(self.ids)

    @property
    def steps(self) -> list[Step]:
        """One record per generated token, in order."""
        return [entry.step for entry in self._history]

    @property
    def tokens(self) -> list[str]:
        """Display strings of `ids`, whitespace made visible."""
        return [self._display(i) for i in self.ids]

    def alternatives(self, index: int, k: int = 5) -> list[tuple[str, float]]:
        """The model's k most likely tokens (display string, probability at temperature 1,
        no filter) where the `index`-th generated token was taken."""
        return [(self._display(i), p) for i, p in self._top(index, k)]

    def runner_up(self, index: int) -> tuple[int, str, float]:
        """(id, display string, probability at temperature 1, no filter) of the model's
        likeliest token other than the one taken at the `index`-th generated step (ties to
        the lower id)."""
        taken = self._history[index].step.id
        found = [(i, p) for i, p in self._top(index, 2) if i != taken]
        if not found:
            raise ConfigError("the model's vocabulary has one token: no other token could have come next")
        token, p = found[0]
        return token, self._display(token), p

    def context_of(self, index: int) -> tuple[list[int], int]:
        """(ids, position): a text holding what the model read when it took the `index`-th
        generated token, and the position in it whose prediction that token was. While the
        token is within the context, the text is the whole of `ids` (up to the context), so one
        pass of it serves every such step; past it, the last block_size tokens before the token."""
        at = self.prompt_length + index  # the token's position in ids
        context = context_length(self.model)
        if context is None or at <= context:
            return self.ids[:context], at - 1
        return self.ids[at - context:at], context - 1

    def _top(self, index: int, k: int) -> list[tuple[int, float]]:
        entry = self._history[index]
        if entry.top is None or len(entry.top) < k:
            values, ids = largest(entry.logits.float().softmax(-1), k)
            entry.top = list(zip(ids.tolist(), values.tolist()))
        return entry.top[:k]

    @property
    def log_prob(self) -> float:
        """Total log-probability (nats) of the generated tokens under the model itself
        (temperature 1, no filter), whatever settings drew them; 0 before any step."""
        return math.fsum(entry.step.log_prob for entry in self._history)

    @property
    def perplexity(self) -> float:
        """The model's perplexity of the generated tokens, exp(-log_prob / n); nan before
        any step. Past the context, each token is conditioned on the last block_size tokens."""
        n = len(self._history)
        return math.exp(-self.log_prob / n) if n else math.nan

    @property
    def distribution(self) -> StepDistribution:
        """The distribution of the next token under the current settings."""
        if self._dist is None:
            if self._names is None:  # a distribution names the whole vocabulary
                self._names = [self._display(i) for i in range(self._vocab)]
            self._dist = _distribution(self.logits, self._names.__getitem__, self.temperature,
                                       self.top_k, self.top_p)
        return self._dist

    # -- moves ----------------------------------------------------------------------------

    def set(self, temperature=_KEEP, top_k=_KEEP, top_p=_KEEP) -> StepDistribution:
        """Change settings (those not given stay; None turns top_k/top_p off) and return the
        re-filtered distribution. The model is not run: the next position's logits are kept."""
        temperature = self.temperature if temperature is _KEEP else temperature
        top_k = self.top_k if top_k is _KEEP else top_k
        top_p = self.top_p if top_p is _KEEP else top_p
        _check(temperature, top_k, top_p)
        changed = (temperature, top_k, top_p) != (self.temperature, self.top_k, self.top_p)
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self._dist = None
        if changed:
            for fn in list(self._watchers):
                fn(self)
        return self.distribution

    def on_settings(self, fn) -> _Watch:
        """Call `fn(stepper)` after each change of temperature, top_k or top_p (`set`): a
        view mirrors the settings into its controls instead of keeping a copy. Returns a
        handle whose `remove()` stops it."""
        self._watchers.append(fn)
        return _Watch(self._watchers, fn)

    def step(self, token: int | None = None) -> Step:
        """Take one token: drawn from the current distribution with the stepper's generator,
        or `token` itself when given (the generator is then left as it is)."""
        return self._step(token, self.temperature, self.top_k, self.top_p)

    def _step(self, token, temperature, top_k, top_p) -> Step:
        logits, state = self.logits, self._generator.get_state()
        _, probs, _, _ = _filters(logits, temperature, top_k, top_p)
        if token is None:
            token, sampled = _draw(probs, self._generator), True
        else:
            token, sampled = self._check_id(token), False
        self.ids.append(token)
        try:
            with reading(self.model):
                next_logits = self._window.read(self.ids)
        except BaseException:
            self.ids.pop()
            self._window.truncate(len(self.ids))
            self._generator.set_state(state)
            raise
        step = self._describe(len(self.ids) - 1, token, logits, probs, sampled)
        if self._undone:
            if self._undone[-1].step.id == token:  # the path back() stepped over, again
                self._undone.pop()
            else:
                self.branches.append(self._leave(step.position))
        self._history.append(_Entry(step, logits, state, settings=(temperature, top_k, top_p)))
        self.logits, self._dist = next_logits, None
        return step

    def _describe(self, position: int, token: int, logits, probs, sampled: bool) -> Step:
        """The Step of `token` taken at `position` from `logits` [V] (`probs`: filtered)."""
        raw = logits.detach().float()
        log_raw = raw.log_softmax(-1)
        return Step(position=position, id=token, text=self._display(token),
                    rank=_rank(raw, token), prob=float(probs[token]),
                    prob_raw=math.exp(float(log_raw[token])), log_prob=float(log_raw[token]),
                    entropy=_entropy(probs), entropy_raw=float(-(log_raw.exp() * log_raw).sum()),
                    sampled=sampled)

    def greedy(self, n: int) -> list[Step]:
        """`n` steps at temperature 0, the most likely token each time, recorded as steps at
        temperature 0 are; the settings stay as they are (nothing saved and put back)."""
        return [self._step(None, 0.0, self.top_k, self.top_p) for _ in range(n)]

    def run(self, n: int) -> list[Step]:
        """`step()` n times."""
        return [self.step() for _ in range(n)]

    def back(self) -> Step | None:
        """Undo the last step, restoring the tokens, logits and generator state before it
        (no model call); returns the undone step, or None at the prompt."""
        if not self._history:
            return None
        entry = self._history.pop()
        if not self._undone:
            self._tip = (self._generator.get_state(), self.logits)
        self._undone.append(entry)
        self.ids.pop()
        self._window.truncate(len(self.ids))
        self.logits, self._dist = entry.logits, None
        self._generator.set_state(entry.state)
        return entry.step

    def _leave(self, position: int) -> Branch:
        """The path back() stepped over, from `position`, as a branch; forgets it here."""
        entries = self._history + self._undone[::-1]
        ids = self.ids[: self.prompt_length] + [e.step.id for e in entries]
        text = self.tokenizer.decode(ids[position:]) if self.tokenizer is not None else ""
        state, logits = self._tip
        self._undone, self._tip = [], None
        return Branch(position, ids, text, entries, state, logits)

    def restore_branch(self, i: int) -> None:
        """Go to branches[i]: step back to where the current path and it part, keep the
        current path from there as a branch (appended to `branches`), and take the branch's
        tokens with the distributions and generator state they had."""
        if not -len(self.branches) <= i < len(self.branches):
            raise ConfigError(f"there is no branch {i}; this stepper has {len(self.branches)}")
        branch = self.branches.pop(i)
        common = self.prompt_length
        while common < min(len(self.ids), len(branch.ids)) and self.ids[common] == branch.ids[common]:
            common += 1
        while len(self.ids) > common:
            self.back()
        if self._undone:
            self.branches.append(self._leave(common))
        context = self._window.context
        with reading(self.model):  # rebuild the cache within the context, as the steps did
            for entry in branch._entries[common - self.prompt_length:]:
                self.ids.append(entry.step.id)
                self._history.append(entry)
                if context is None or len(self.ids) <= context:
                    self._window.read(self.ids)
        self.logits, self._dist = branch._logits, None
        self._generator.set_state(branch._state)


# ---- beam search and scoring --------------------------------------------------------------
