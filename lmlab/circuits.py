"""One head's two circuits: where it looks (QK) and what it writes (OV).

QK: head h of block l scores query position q against key position k as
    score = (ln_1(x_q) W_Q + b_Q) · (ln_1(x_k) W_K + b_K) / √D,
x the residual stream entering block l. Each stream is a sum of parts (the embeddings and
every earlier head, attention bias and MLP: `attribution.stream_parts`); with ln_1's scale
frozen from the stream itself, the score is a sum over (query part, key part) pairs plus the
norm's and projections' biases ("bias" on either side). `qk_breakdown` returns that matrix:
its sum is the head's score before the softmax.

OV: what the head writes when it attends to a source token s. `ov_circuit` follows the
direct path: the token's own embedding through block l's ln_1, the head's W_V (and b_V)
and its slice of W_O, then the unembedding (the final norm's centring and γ: its scale
does not change a row's ranking). It leaves out the position embedding and what earlier
layers add at the source, so it describes an attention-only model's heads (where the
embedding is most of what a value reads) and is an approximation elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import passes
from .adapt import context_length, display, token_ids
from .attribution import Parts, frozen_norm, parts_of_pass, read_parts, stream_parts
from .errors import ConfigError
from .model import GPT
from .reading import reading, weights_version


def _head(model, layer, head) -> None:
    if not isinstance(model, GPT):
        raise ConfigError(f"head circuits read lmlab's GPT, not a {type(model).__name__}")
    c = model.config
    for name, value, n in (("layer", layer, c.n_layer), ("head", head, c.n_head)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
            raise ConfigError(f"{name}={value!r} must be a whole number from 0 to {n - 1}")


def _qkv(model, layer: int, head: int):
    """Head `head` of block `layer`: (W_Q, W_K, W_V) [C, D] each and (b_Q, b_K, b_V) [D] each."""
    c = model.config
    D = c.n_embd // c.n_head
    attn = model.transformer.h[layer].attn.c_attn
    weight = attn.weight.detach().float().cpu()  # [3C, C]
    bias = attn.bias.detach().float().cpu() if attn.bias is not None else torch.zeros(3 * c.n_embd)
    rows = [slice(i * c.n_embd + head * D, i * c.n_embd + (head + 1) * D) for i in range(3)]
    return [weight[r].t() for r in rows], [bias[r] for r in rows]


@dataclass(eq=False)
class QKBreakdown:
    """Head (layer, head)'s score of `query` against `key`, before the softmax, as the sum of
    `matrix` [Nq + 1, Nk + 1]: row i is query part i, column j key part j, the last row and
    column the biases ("bias")."""

    layer: int
    head: int
    query: int
    key: int
    labels: list[str]  # the parts of each stream, then "bias"
    matrix: torch.Tensor  # float32 [N + 1, N + 1]
    score: float  # the model's own score (q · k / √D)

    @property
    def by_query(self) -> torch.Tensor:
        """[N + 1]: each query part's share of the score (summed over the key parts)."""
        return self.matrix.sum(1)

    @property
    def by_key(self) -> torch.Tensor:
        """[N + 1]: each key part's share of the score."""
        return self.matrix.sum(0)

    def top(self, k: int = 10) -> list[dict]:
        """The k (query part, key part) pairs of largest share (either sign), largest first."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r} must be a whole number of at least 1")
        flat = self.matrix.flatten()
        order = flat.abs().argsort(descending=True)[:k]
        n = self.matrix.size(1)
        return [dict(query_part=self.labels[int(i) // n], key_part=self.labels[int(i) % n],
                     share=float(flat[i])) for i in order]


def _parts(model, ids: list[int]) -> Parts:
    kept = passes.kept_pass(model, ids)
    if kept is not None and kept.version == weights_version(model) and kept.z is not None:
        return parts_of_pass(kept)
    return read_parts(model, ids)


def qk_breakdown(model, text_or_ids, layer: int, head: int, query: int, key: int,
                 tokenizer=None, parts: Parts | None = None) -> QKBreakdown:
    """Head (layer, head)'s score of position `query` against `key` (key ≤ query: a causal
    head sees no later key) on a text or ids, broken into its parts (see the module). It
    reads `parts` (a view's pass: `attribution.parts_of_pass`) where given, else the pass a
    view keeps for this text on these weights, else runs one forward."""
    _head(model, layer, head)
    ids = token_ids(model, text_or_ids, tokenizer, context_length(model))
    T = len(ids)
    for name, value in (("query", query), ("key", key)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < T:
            raise ConfigError(f"{name}={value!r} must be a position from 0 to {T - 1}")
    if key > query:
        raise ConfigError(f"key={key} comes after query={query}: a causal head only looks back (key ≤ query)")
    if parts is not None and list(parts.ids) != ids:
        raise ConfigError("parts= holds another text than the one given; pass the parts of this text")
    with reading(model):
        parts = parts if parts is not None else _parts(model, ids)
        (w_q, w_k, _), (b_q, b_k, _) = _qkv(model, layer, head)
        ln = model.transformer.h[layer].ln_1
        beta = ln.bias.detach().float().cpu() if ln.bias is not None else torch.zeros(model.config.n_embd)
        sides = []
        for position, w, b in ((query, w_q, b_q), (key, w_k, b_k)):
            labels, stack = stream_parts(model, parts, layer, position)
            whole = stack.sum(0)
            sides.append(torch.cat([frozen_norm(stack, whole, ln) @ w, (beta @ w + b)[None]]))  # [N + 1, D]
            actual = ln(whole.to(ln.weight)).float().cpu() @ w + b
            sides.append(actual)
    q_parts, q, k_parts, k = sides
    scale = 1 / math.sqrt(q.numel())
    return QKBreakdown(layer=layer, head=head, query=query, key=key, labels=labels + ["bias"],
                       matrix=(q_parts @ k_parts.t()) * scale, score=float(q @ k) * scale)


@dataclass(eq=False)
class OVCircuit:
    """What head (layer, head) writes to the logits when it attends to each source token:
    the k tokens it raises most, per source. Shapes: S sources, k kept."""

    layer: int
    head: int
    sources: list[int]
    source_tokens: list[str]
    top_ids: torch.Tensor  # int64 [S, k]
    top_logits: torch.Tensor  # float32 [S, k]: direct logit change per unit of attention
    top_tokens: list[list[str]]  # [S][k]

    @property
    def copying(self) -> float:
        """The fraction of sources whose own token is the one the head raises most (1.0: a
        pure copying head, as an induction head's OV circuit is)."""
        return float((self.top_ids[:, 0] == torch.tensor(self.sources)).float().mean())

    def rows(self) -> list[dict]:
        return [dict(source=s, writes=tokens, logits=[round(float(v), 3) for v in logits])
                for s, tokens, logits in zip(self.source_tokens, self.top_tokens, self.top_logits)]


def ov_circuit(model, layer: int, head: int, sources=None, tokenizer=None, k: int = 5) -> OVCircuit:
    """The OV circuit of head (layer, head) on `sources`: token ids, a text (its distinct
    tokens, with `tokenizer`), or None for the whole vocabulary (up to 4,096 tokens; name
    the sources beyond that). See the module for the path it follows."""
    _head(model, layer, head)
    vocab = model.config.vocab_size
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
        raise ConfigError(f"k={k!r} must be a whole number from 1 to the vocabulary size {vocab}")
    if sources is None:
        if vocab > 4096:
            raise ConfigError(f"the vocabulary has {vocab} tokens, too many to show at once; pass "
                              "sources= (ids, or a text whose tokens to follow)")
        sources = list(range(vocab))
    elif isinstance(sources, str):
        sources = list(dict.fromkeys(token_ids(model, sources, tokenizer)))
    else:
        sources = token_ids(model, list(sources))
    if not sources:
        raise ConfigError("sources is empty; pass at least one token")
    c = model.config
    D = c.n_embd // c.n_head
    show = display(tokenizer)
    with reading(model):
        (_, _, w_v), (_, _, b_v) = _qkv(model, layer, head)
        block = model.transformer.h[layer]
        w_o = block.attn.c_proj.weight.detach().float().cpu()[:, head * D:(head + 1) * D].t()  # [D, C]
        embedded = model.transformer.wte.weight.detach()[torch.tensor(sources, device=model.device)]
        values = block.ln_1(embedded).float().cpu() @ w_v + b_v  # [S, D]
        out = values @ w_o
        gamma = model.transformer.ln_f.weight.detach().float().cpu()
        logits = ((out - out.mean(-1, keepdim=True)) * gamma) @ model.lm_head.weight.detach().float().cpu().t()
    top = logits.topk(k, dim=-1)
    return OVCircuit(layer=layer, head=head, sources=sources, source_tokens=[show(s) for s in sources],
                     top_ids=top.indices, top_logits=top.values,
                     top_tokens=[[show(int(i)) for i in row] for row in top.indices])
