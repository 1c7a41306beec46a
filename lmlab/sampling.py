"""The math of one next-token distribution (temperature, top-k, top-p, greedy) and
`generate`, which samples many tokens on a key/value cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError
from .reading import reading


def _check(temperature: float, top_k: int | None, top_p: float | None):
    if not temperature >= 0:
        raise ConfigError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k={top_k!r} must be a positive integer, or None for no limit")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p={top_p} must be in (0, 1], or None for no limit")


def filter_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None) -> torch.Tensor:
    """Next-token probabilities [..., V] after temperature, top-k and top-p.

    temperature 0 is greedy: all mass on the most likely token. Removed tokens get 0.
    """
    _check(temperature, top_k, top_p)
    logits = logits.float()
    if temperature == 0:
        out = torch.zeros_like(logits)
        return out.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        # exactly k tokens: a stable sort breaks ties by the lower token id
        kept = torch.sort(logits, dim=-1, descending=True, stable=True).indices[..., :top_k]
        drop = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, kept, False)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)
    if top_p is not None and top_p < 1:
        sorted_probs, order = probs.sort(-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of strictly more likely tokens
        sorted_drop = before >= top_p
        drop = torch.empty_like(sorted_drop).scatter_(-1, order, sorted_drop)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


@dataclass
class Distribution:
    """One next-token distribution, in the exchange format shared by views."""

    ids: list[int]  # token ids, most likely first (after filtering)
    tokens: list[str]  # display strings of those ids
    probs_raw: list[float]  # softmax of the logits at temperature 1
    probs: list[float]  # after temperature, top-k and top-p
    removed: list[int]  # ids whose probability the filters set to zero


def next_token_distribution(model, tokenizer, ids: list[int], temperature: float = 1.0,
                            top_k: int | None = None, top_p: float | None = None) -> Distribution:
    """The model's distribution for the token after `ids`, before and after filtering.
    Read through `reading(model)`: eval mode, between training steps."""
    with reading(model):
        logits = model(torch.tensor([ids], device=model.device)).logits[0, -1]
    raw = logits.float().softmax(-1)
    probs = filter_probs(logits, temperature, top_k, top_p)
    order = torch.argsort(probs * 2 + raw, descending=True).tolist()  # kept first, by mass
    removed = [i for i in order if probs[i] == 0]
    return Distribution(order, [tokenizer.token_text(i) for i in order],
                        raw[order].tolist(), probs[order].tolist(), removed)


@torch.no_grad()
def generate(model, ids, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, generator: torch.Generator | None = None) -> list[int]:
    """Sample `max_new_tokens` tokens after `ids` (a non-empty list of ints); return only the
    new ones. One position per step on a key/value cache; once the context is longer than
    block_size, each step sees the last block_size tokens, as a model without a cache would."""
    _check(temperature, top_k, top_p)
    if not len(ids):
        raise ConfigError("generation needs a prompt of at least one token")
    was_training = model.training
    model.eval()
    block = model.config.block_size
    context = list(ids)[-block:]
    cache = model.new_cache()
    logits = model(torch.tensor([context], device=model.device), cache=cache).logits[0, -1]
    out = []
    try:
        for _ in range(max_new_tokens):
            probs = filter_probs(logits, temperature, top_k, top_p)
            nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
            out.append(nxt)
            if len(out) == max_new_tokens:
                break
            context.append(nxt)
            if cache.length < block:
                step = torch.tensor([[nxt]], device=model.device)
            else:  # the window slides: recompute the last block_size tokens
                context = context[-block:]
                cache = model.new_cache()
                step = torch.tensor([context], device=model.device)
            logits = model(step, cache=cache).logits[0, -1]
    finally:
        model.train(was_training)
    return out
