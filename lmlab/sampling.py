"""The math of one next-token distribution (temperature, top-k, top-p, greedy), and what
is built on it: `generate`, which samples many tokens on a key/value cache;
`beam_search`; and `score`, the model's probability of each token of a text. `Stepper`,
which steps one token at a time, is in `stepper.py`.

Models are lmlab's `GPT` or a Hugging Face causal LM (e.g. `transformers.GPT2LMHeadModel`).
Every read of a model goes through `lmlab.reading` (its lock, eval mode, no autograd), and
sampling draws from generators of its own, never from the global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .adapt import context_length, device_of, display, token_ids
from .errors import ConfigError
from .model import GPT
from .reading import reading


def _check(temperature: float, top_k: int | None, top_p: float | None):
    if not temperature >= 0:
        raise ConfigError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k={top_k!r} must be a positive integer, or None for no limit")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p={top_p} must be in (0, 1], or None for no limit")


def _filters(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None):
    """The filters one after the other on logits [..., V]: (probabilities at the temperature,
    probabilities after top-k and top-p, tokens top-k removed, tokens top-p removed). The two
    masks are bool [..., V], or None when that filter is off; greedy returns no masks."""
    _check(temperature, top_k, top_p)
    logits = logits.float()
    if temperature == 0:
        out = torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        return out, out, None, None
    logits = logits / temperature
    tempered = probs = logits.softmax(-1)
    by_k = by_p = None
    if top_k is not None and top_k < logits.size(-1):
        # exactly k tokens: a stable sort breaks ties by the lower token id
        kept = torch.sort(logits, dim=-1, descending=True, stable=True).indices[..., :top_k]
        by_k = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, kept, False)
        probs = logits.masked_fill(by_k, float("-inf")).softmax(-1)
    if top_p is not None and top_p < 1:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ahead in the order
        by_p = torch.empty_like(order, dtype=torch.bool).scatter_(-1, order, before >= top_p)
        probs = probs.masked_fill(by_p, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return tempered, probs, by_k, by_p


def filter_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None) -> torch.Tensor:
    """Next-token probabilities [..., V] after temperature, top-k and top-p.

    temperature 0 is greedy: all mass on the most likely token. top-k keeps exactly k tokens
    (ties broken by the lower id); top-p then keeps the fewest most likely tokens whose mass
    reaches top_p (in the order of probability, ties by the lower id) and renormalises.
    Removed tokens get 0."""
    return _filters(logits, temperature, top_k, top_p)[1]


def _entropy(probs: torch.Tensor) -> float:
    """Entropy in nats of probabilities [V] (0 log 0 counts as 0)."""
    return float(torch.special.entr(probs.double()).sum())


def largest(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest of values [V], largest first, ties to the lower
    index: what a stable descending sort's first k give, without sorting all V."""
    k = min(k, values.numel())
    if k == 0:
        return values[:0], torch.zeros(0, dtype=torch.long)
    threshold = torch.topk(values, k, sorted=False).values.min()
    candidates = (values >= threshold).nonzero().squeeze(1)  # every tie at the k-th value too
    order = torch.sort(values[candidates], descending=True, stable=True).indices[:k]
    return values[candidates[order]], candidates[order]


def _rank(logits: torch.Tensor, token: int) -> int:
    """1 for the most likely token; ties go to the lower id."""
    ahead = logits > logits[token]
    ahead[:token] |= logits[:token] == logits[token]
    return int(ahead.sum()) + 1


@dataclass
class Distribution:
    """One next-token distribution, in the exchange format shared by views."""

    ids: list[int]  # token ids, most likely first (after filtering)
    tokens: list[str]  # display strings of those ids
    probs_raw: list[float]  # softmax of the logits at temperature 1
    probs: list[float]  # after temperature, top-k and top-p
    removed: list[int]  # ids whose probability the filters set to zero


@dataclass
class StepDistribution(Distribution):
    """A `Distribution` that also says what each filter did. Every list follows `ids`:
    the tokens the filters kept first, then those they removed, each part most likely first
    (by logit; ties by the lower id). `removed` lists the ids a filter removed, in that order;
    a kept token can still have probability 0 when a very low temperature underflows it."""

    probs_temp: list[float]  # softmax at the temperature, before top-k/top-p (greedy: one-hot)
    removed_by: dict[int, str]  # removed id -> "greedy", "top_k" or "top_p" (which filter)
    temperature: float
    top_k: int | None
    top_p: float | None

    @property
    def kept(self) -> list[int]:
        return self.ids[: len(self.ids) - len(self.removed)]

    @property
    def entropy(self) -> float:
        """Of the distribution sampled from (after the filters), in nats."""
        return _entropy(torch.tensor(self.probs))

    @property
    def entropy_raw(self) -> float:
        """Of the model's own distribution (temperature 1, no filter), in nats."""
        return _entropy(torch.tensor(self.probs_raw))


def _distribution(logits: torch.Tensor, display, temperature, top_k, top_p) -> StepDistribution:
    tempered, probs, by_k, by_p = _filters(logits, temperature, top_k, top_p)
    logits = logits.detach().float().cpu()
    raw = logits.softmax(-1)
    why = torch.zeros(logits.shape, dtype=torch.uint8)  # 0 kept, 1 greedy, 2 top-k, 3 top-p
    if temperature == 0:
        why[probs.cpu() == 0] = 1
    else:
        if by_p is not None:
            why[by_p.cpu()] = 3
        if by_k is not None:
            why[by_k.cpu()] = 2  # top-k runs first: it removed these
    by_logit = torch.sort(logits, descending=True, stable=True).indices
    ordered = by_logit[torch.sort((why[by_logit] > 0).to(torch.uint8), stable=True).indices]
    order = ordered.tolist()
    n_kept = int((why == 0).sum())
    labels = {1: "greedy", 2: "top_k", 3: "top_p"}
    why_list = why.tolist()
    return StepDistribution(
        ids=order, tokens=[display(i) for i in order], probs_raw=raw[ordered].tolist(),
        probs=probs.cpu()[ordered].tolist(), removed=order[n_kept:],
        probs_temp=tempered.cpu()[ordered].tolist(),
        removed_by={i: labels[why_list[i]] for i in order[n_kept:]},
        temperature=temperature, top_k=top_k, top_p=top_p)


def distribution(logits: torch.Tensor, tokenizer=None, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None) -> StepDistribution:
    """The next-token distribution of logits [V] before and after each filter: temperature,
    then top-k, then top-p (as `filter_probs`). temperature 0 is greedy: every token but the
    argmax is removed by "greedy". A top_k of at least the vocabulary, or a top_p of 1, removes
    nothing. Display strings come from `tokenizer` (the ids as text without one)."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 1:
        raise ConfigError("logits must be a 1-D tensor [vocab_size]: the scores of one position "
                          "(e.g. model(idx).logits[0, -1])")
    return _distribution(logits, display(tokenizer), temperature, top_k, top_p)


def divergence(p: torch.Tensor, q: torch.Tensor) -> dict:
    """Between two next-token distributions p, q (probabilities [V]): total variation
    ½·Σ|p − q| (0: the same, 1: no token in common) and KL(p‖q) = Σ p·log(p/q), KL(q‖p),
    in nats (inf where one gives a token the other rules out)."""
    p, q = p.double(), q.double()
    kl = (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum()
    back = (torch.special.xlogy(q, q) - torch.special.xlogy(q, p)).sum()
    return {"tv": float(0.5 * (p - q).abs().sum()), "kl": float(kl), "kl_back": float(back)}


def next_token_distribution(model, tokenizer, ids: list[int], temperature: float = 1.0,
                            top_k: int | None = None, top_p: float | None = None) -> Distribution:
    """The model's distribution for the token after `ids`, before and after filtering.
    Read through `reading(model)`: eval mode, between training steps."""
    with reading(model):
        logits = model(torch.tensor([ids], device=model.device)).logits[0, -1]
    return distribution_of_logits(logits, tokenizer, temperature, top_k, top_p)


def distribution_of_logits(logits: torch.Tensor, tokenizer, temperature: float = 1.0,
                           top_k: int | None = None, top_p: float | None = None) -> Distribution:
    """`next_token_distribution` from logits [V] already computed."""
    raw = logits.float().softmax(-1)
    probs = filter_probs(logits, temperature, top_k, top_p)
    order = torch.argsort(probs * 2 + raw, descending=True).tolist()  # kept first, by mass
    removed = [i for i in order if probs[i] == 0]
    return Distribution(order, [tokenizer.token_text(i) for i in order],
                        raw[order].tolist(), probs[order].tolist(), removed)


# ---- reading a sequence position by position ----------------------------------------------


def _logits(model, idx: torch.Tensor) -> torch.Tensor:
    """idx [B, T] -> logits [B, T, V], without a cache, for GPT or a Hugging Face model."""
    if isinstance(model, GPT):
        return model(idx).logits
    return model(input_ids=idx, use_cache=False).logits


class _Window:
    """What a model has read of one sequence, to read it one position at a time.

    The main cache holds the keys and values of ids[:length]. While the sequence fits the
    context, each new position is one step on that cache. Past the context, each position
    re-reads the last `context` tokens on a scratch cache, as a model without a cache would,
    and the main cache keeps the first `context` tokens: going back below the context only
    shortens `length`. Callers hold `reading(model)`."""

    def __init__(self, model):
        self.model = model
        self.context = context_length(model)  # None: no limit
        self.length = 0
        self._cache = self._scratch = None

    def read(self, ids: list[int]) -> torch.Tensor:
        """Logits [V] of the position after `ids`, whose first `length` tokens are cached."""
        if self.context is not None and len(ids) > self.context:
            return self._forward(ids[-self.context:], scratch=True)
        logits = self._forward(ids[self.length:], scratch=False)
        self.length = len(ids)
        return logits

    def read_all(self, ids: list[int]) -> torch.Tensor:
        """Logits [T, V] of every position of `ids` (at most `context` of them), read
        afresh in one pass; the main cache then holds them all."""
        self.length = 0
        if isinstance(self.model, GPT):
            cache = self._cache = self._cache or self.model.new_cache()
            cache.length = 0
            logits = self.model(torch.tensor([ids], device=device_of(self.model)), cache=cache).logits[0]
        else:
            out = self.model(input_ids=torch.tensor([ids], device=device_of(self.model)), use_cache=True)
            self._cache, logits = out.past_key_values, out.logits[0]
        self.length = len(ids)
        return logits

    def truncate(self, n: int) -> None:
        """Forget the cached positions from n on."""
        self.length = min(self.length, n)

    def _forward(self, chunk: list[int], scratch: bool) -> torch.Tensor:
        model = self.model
        idx = torch.tensor([chunk], device=device_of(model))
        if isinstance(model, GPT):
            name = "_scratch" if scratch else "_cache"
            cache = getattr(self, name) or model.new_cache()
            setattr(self, name, cache)
            cache.length = 0 if scratch else self.length
            return model(idx, cache=cache).logits[0, -1]
        if scratch:
            return model(input_ids=idx, use_cache=False).logits[0, -1]
        cache = self._cache if self.length else None
        if cache is not None and cache.get_seq_length() > self.length:
            cache.crop(self.length - cache.get_seq_length())  # negative: how many to drop
        out = model(input_ids=idx, past_key_values=cache, use_cache=True)
        self._cache = out.past_key_values
        return out.logits[0, -1]


def _draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def generate(model, ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, generator: torch.Generator | None = None, *,
             seed: int | None = None) -> list[int]:
    """Sample `max_new_tokens` tokens after `ids` (a non-empty list of ints); return only the
    new ones. One position per step on a key/value cache; once the context is longer than
    the model's context (block_size), each step sees the last block_size tokens, as a model
    without a cache would.

    Draws from `generator`, else from one seeded with `seed`, else from fresh entropy;
    never from the global RNG. Same generator state, settings and model -> same tokens, the
    same as `Stepper(..., seed=seed).step()` repeated. The whole generation is one read
    (`reading(model)`): a training step waits for it."""
    _check(temperature, top_k, top_p)
    if generator is not None and seed is not None:
        raise ConfigError("give generate a generator or a seed, not both")
    tokens = [int(i) for i in ids]
    if not tokens:
        raise ConfigError("generation needs a prompt of at least one token")
    window = _Window(model)
    if window.context is not None:
        tokens = tokens[-window.context:]
    out = []
    with reading(model, seed) as own:
        generator = generator if generator is not None else own
        logits = window.read(tokens)
        for _ in range(max_new_tokens):
            nxt = _draw(filter_probs(logits, temperature, top_k, top_p), generator)
            out.append(nxt)
            if len(out) == max_new_tokens:
                break
            tokens.append(nxt)
            logits = window.read(tokens)
    return out


# ---- the stepper --------------------------------------------------------------------------


def beam_search(model, ids_or_text, beams: int = 4, length: int = 20,
                tokenizer=None) -> list[tuple[list[int], float]]:
    """The `beams` most likely continuations of `length` tokens that beam search finds after
    a prompt (a text, encoded with `tokenizer`, or token ids), best first, each as (its new
    token ids, its total log-probability in nats under the model: temperature 1, no filter).
    Ties go to the earlier beam, then the lower id, so beams=1 is greedy decoding.

    Each step re-reads every beam's last block_size tokens (no cache): simple, and fast
    enough for short searches. The whole search is one read (`reading(model)`)."""
    for name, value in (("beams", beams), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a positive integer")
    prompt = token_ids(model, ids_or_text, tokenizer)
    context = context_length(model)
    seqs = torch.tensor([prompt])  # [B, T]
    scores = torch.zeros(1, dtype=torch.float64)  # [B]
    with reading(model):
        for _ in range(length):
            window = seqs if context is None else seqs[:, -context:]
            logits = _logits(model, window.to(device_of(model)))[:, -1].float()
            total = scores[:, None] + logits.log_softmax(-1).double().cpu()  # [B, V]
            best = torch.sort(total.flatten(), descending=True, stable=True).indices[:beams]
            beam, token = best // total.size(1), best % total.size(1)
            seqs = torch.cat([seqs[beam], token[:, None]], dim=1)
            scores = total.flatten()[best]
    return [(s[len(prompt):].tolist(), float(v)) for s, v in zip(seqs, scores)]


@dataclass
class Score:
    """How well the model predicts a text: for each token after the first, the model's
    probability of it having read the tokens before it, and running totals (nats)."""

    ids: list[int]  # the text's tokens
    tokens: list[str]  # their display strings
    probs: list[float]  # probs[i]: the model's probability of ids[i + 1] after ids[: i + 1]
    ranks: list[int]  # its rank among the predictions: 1 = most likely (ties by lower id)
    running_cross_entropy: list[float]  # mean of -log probs[: i + 1], nats
    running_perplexity: list[float]  # exp of running_cross_entropy
    log_prob: float  # sum of log probs, nats
    cross_entropy: float  # mean of -log probs, nats
    perplexity: float  # exp(cross_entropy)
    alternatives: list[list[tuple[str, float]]]  # [i]: the model's top tokens where ids[i + 1] came


def score(model, tokenizer, text, alternatives: int = 5) -> Score:
    """The model's probability of each token of `text` (or a list of token ids) after the
    first, with running cross-entropy and perplexity, and its `alternatives` most likely
    tokens at each position (display string, probability). One forward through
    `reading(model)`: a text longer than the context plus one token is refused, not slid
    over."""
    ids = token_ids(model, text, tokenizer)
    if len(ids) < 2:
        raise ConfigError(f"the text is {len(ids)} token(s) long; scoring needs at least 2 "
                          "(the first is only read, the others are predicted)")
    context = context_length(model)
    if context is not None and len(ids) > context + 1:
        raise ConfigError(f"the text is {len(ids)} tokens long, but this model reads at most "
                          f"{context} at once, so it can score at most {context + 1}; shorten it")
    with reading(model):
        logits = _logits(model, torch.tensor([ids[:-1]], device=device_of(model)))[0]
    return score_logits(logits, ids, tokenizer, alternatives)


def score_logits(logits: torch.Tensor, ids: list[int], tokenizer=None, alternatives: int = 5) -> Score:
    """`score` from logits already computed: logits [T - 1, V] of a forward of ids[:-1]
    (row i predicts ids[i + 1]), e.g. a kept pass's (`lmlab.passes`)."""
    logits = logits.float().cpu()
    if logits.size(0) != len(ids) - 1:
        raise ConfigError(f"{logits.size(0)} rows of logits cannot score {len(ids)} tokens: give "
                          "the logits of a forward of every token but the last")
    target = torch.tensor(ids[1:])
    log_probs = logits.log_softmax(-1).gather(1, target[:, None])[:, 0].double()  # [T]
    picked = logits.gather(1, target[:, None])
    lower_id = torch.arange(logits.size(1)) < target[:, None]
    ranks = ((logits > picked) | (logits == picked) & lower_id).sum(1) + 1  # ties: lower id first
    running = -log_probs.cumsum(0) / torch.arange(1, len(log_probs) + 1)
    show = display(tokenizer)
    total = float(log_probs.sum())
    top = torch.sort(logits.softmax(-1), dim=-1, descending=True, stable=True)  # ties: lower id
    k = min(alternatives, logits.size(1))
    alts = [[(show(int(i)), float(p)) for p, i in zip(values[:k], indices[:k])]
            for values, indices in zip(top.values, top.indices)]
    return Score(ids, [show(i) for i in ids], log_probs.exp().tolist(), ranks.tolist(),
                 running.tolist(), running.exp().tolist(), total, -total / len(log_probs),
                 math.exp(-total / len(log_probs)), alts)


def __getattr__(name: str):
    """`from lmlab.sampling import Stepper` (and Step, Branch), deprecated: they moved to
    `lmlab.stepper`. This alias goes in the next release."""
    if name in ("Stepper", "Step", "Branch"):
        import warnings

        from . import stepper

        warnings.warn(f"lmlab.sampling.{name} is now lmlab.stepper.{name}; import it from there "
                      "(this alias goes in the next release)", DeprecationWarning, stacklevel=2)
        return getattr(stepper, name)
    raise AttributeError(f"module 'lmlab.sampling' has no attribute {name!r}")
