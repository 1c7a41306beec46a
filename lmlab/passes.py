"""One forward pass of one text, kept for the views that look at it.

A `Pass` holds what every view of a text draws: the logits, the attention of every head,
the residual streams (for the logit lens), the per-head summary. `cached_pass(model, ids)`
runs a text once per weights version (`lmlab.reading.weights_version`: a training step,
`load_state_dict` or a reset makes a new one) and hands the same `Pass` to every view that
asks again: selecting a head, focusing a token or opening a second view runs no model.
`cached_ablation` runs one ablated pass per set of knocked-out heads, and
`cached_induction` the induction probe once per weights version.

Memory: each model keeps its last `MAX_PASSES` passes and at most `MAX_BYTES` of them (the
newest always stays). A pass stores logits float32 [T, V], attention float16 [L, H, T, T]
and streams float32 [L + 1, T, C], and for lmlab's GPT each head's output z and each MLP's
output, float32 [L, T, C] each: GPT-2 small on 128 tokens is 25.7 + 4.7 + 5.0 + 9.4 MB.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from . import interpret
from .adapt import context_length, display, token_ids
from .errors import ConfigError
from .hooks import hooks
from .model import GPT
from .reading import reading, weights_version

MAX_PASSES = 4
MAX_BYTES = 512 * 2**20


@dataclass(eq=False)
class Pass:
    """One forward of `ids` on weights version `version`. Shapes: T tokens, V vocabulary,
    L blocks, H heads, C width; every tensor on the CPU."""

    ids: list[int]
    tokens: list[str]  # display strings, whitespace made visible
    version: int
    logits: torch.Tensor  # float32 [T, V]
    attention: torch.Tensor | None  # float16 [L, H, T, T], query rows, key columns (None: ablated passes)
    streams: torch.Tensor | None  # float32 [L + 1, T, C], before the final norm (None: ablated passes)
    summary: interpret.HeadTable | None = None  # scores of each head, from the float32 attention
    z: torch.Tensor | None = None  # float32 [L, T, H, D]: each head's output before c_proj (lmlab's GPT)
    mlp_out: torch.Tensor | None = None  # float32 [L, T, C]: each MLP's output (None: attention only)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size()
                   for t in (self.logits, self.attention, self.streams, self.z, self.mlp_out) if t is not None)

    def loss(self) -> float:
        """Mean next-token cross-entropy over the text (nats); nan for one token."""
        if len(self.ids) < 2:
            return float("nan")
        return float(F.cross_entropy(self.logits[:-1], torch.tensor(self.ids[1:])))

    def predictions(self, position: int, tokenizer, k: int = 10):
        """The k likeliest next tokens after ids[:position + 1] (`interpret.top_predictions`)."""
        if not 0 <= position < len(self.ids):
            raise ConfigError(f"position={position} is outside the text's {len(self.ids)} tokens "
                              f"(0..{len(self.ids) - 1})")
        return interpret.top_predictions(self.logits[position], tokenizer, k)

    def attention_view(self) -> interpret.Attention:
        """The attention as an `interpret.Attention` (float16 weights)."""
        return interpret.Attention(self.attention, self.tokens, self.ids)


class _Store:
    """The passes of one model, newest last."""

    def __init__(self):
        self.passes: OrderedDict = OrderedDict()
        self.induction: tuple[int, torch.Tensor] | None = None

    def get(self, key):
        with _guard:
            found = self.passes.get(key)
            if found is not None:
                self.passes.move_to_end(key)
            return found

    def peek(self, key):
        """The pass under `key` or None, leaving the order as it is."""
        with _guard:
            return self.passes.get(key)

    def put(self, key, value: Pass) -> None:
        with _guard:
            self.passes[key] = value
            while len(self.passes) > 1 and (len(self.passes) > MAX_PASSES
                                            or sum(p.nbytes for p in self.passes.values()) > MAX_BYTES):
                self.passes.popitem(last=False)


_stores: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_guard = threading.Lock()
# forwards run for the views, for tests and benchmarks ("parts": attribution's own, where no pass was kept)
calls = {"passes": 0, "ablated": 0, "induction": 0, "parts": 0}


def _store(model) -> _Store:
    with _guard:
        store = _stores.get(model)
        if store is None:
            store = _stores[model] = _Store()
        return store


def run_pass(model, ids: list[int], tokenizer=None) -> Pass:
    """One forward of `ids` (checked against the context and vocabulary) recording logits,
    attention and streams, read through `reading(model)`; not cached."""
    ids = token_ids(model, ids, None, context_length(model))
    with reading(model):
        version = weights_version(model)
        idx = torch.tensor([ids], device=next(model.parameters()).device)
        parts = {}
        record = ([(_is_part, lambda x, hook: parts.__setitem__(hook.name, x[0].float().cpu()))]
                  if isinstance(model, GPT) else [])
        with (hooks(model, record) if record else contextlib.nullcontext()):
            logits, attention, streams = interpret.read_pass(model, idx)
        calls["passes"] += 1
    weights = interpret.Attention(attention, [], ids)
    z = [parts[n] for n in sorted(parts, key=_layer) if n.endswith("hook_z")]
    mlp = [parts[n] for n in sorted(parts, key=_layer) if n.endswith("hook_mlp_out")]
    return Pass(ids=ids, tokens=[display(tokenizer)(i) for i in ids], version=version,
                logits=logits.float().cpu(), attention=attention.half(),
                streams=torch.cat([s.float().cpu() for s in streams]), summary=interpret.head_summary(weights),
                z=torch.stack(z) if z else None, mlp_out=torch.stack(mlp) if mlp else None)


def _is_part(name: str) -> bool:
    """The points a pass keeps for attribution: each head's output and each MLP's."""
    return name.endswith("attn.hook_z") or name.endswith("hook_mlp_out")


def _layer(name: str) -> int:
    return int(name.split(".")[1])


def cached_pass(model, text_or_ids, tokenizer=None) -> Pass:
    """The pass of a text (encoded with `tokenizer`) or ids on the model's current weights:
    run once, then the same `Pass` until the weights change."""
    ids = token_ids(model, text_or_ids, tokenizer, context_length(model))
    store = _store(model)
    found = store.get(("pass", weights_version(model), tuple(ids)))
    if found is None:  # stored under the version it read (a step may have come in between)
        found = run_pass(model, ids, tokenizer)
        store.put(("pass", found.version, tuple(ids)), found)
    return found


def kept_pass(model, ids: list[int]) -> Pass | None:
    """The pass of `ids` kept for the model's current weights, or None (runs nothing)."""
    return _store(model).peek(("pass", weights_version(model), tuple(ids)))


def cached_ablation(model, ids: list[int], heads, mode: str = "zero") -> Pass:
    """The pass of `ids` with `heads` knocked out (`interpret.ablate`): its logits only (no
    attention or streams kept), run once per weights version, text, heads and mode. Where
    the text's own pass is kept, the ablated one starts from its residual stream at the
    first layer knocked out (`GPT.forward(start_at_layer=...)`): the blocks before it
    compute what they computed then."""
    fwd_hooks = interpret.ablation_hooks(model, heads, mode)  # checks the heads and the mode
    store = _store(model)
    heads = tuple(sorted((int(layer), int(head)) for layer, head in _pairs(heads)))
    found = store.get(("ablated", weights_version(model), tuple(ids), heads, mode))
    if found is None:
        with reading(model):
            version = weights_version(model)
            first = min((layer for layer, _ in heads), default=0)
            kept = store.peek(("pass", version, tuple(ids)))
            if first and kept is not None and kept.streams is not None:  # the blocks before are unchanged
                x = kept.streams[first].unsqueeze(0).to(model.device, model.transformer.wte.weight.dtype)
            else:
                first, x = 0, torch.tensor([list(ids)], device=model.device)
            with hooks(model, fwd_hooks):
                logits = model(x, start_at_layer=first).logits[0]
            calls["ablated"] += 1
        found = Pass(list(ids), [], version, logits.float().cpu(), None, None)
        store.put(("ablated", version, tuple(ids), heads, mode), found)
    return found


def _pairs(heads):
    if isinstance(heads, dict):
        return [(layer, h) for layer, hs in heads.items() for h in ([hs] if isinstance(hs, int) else hs)]
    return list(heads)


def cached_induction(model) -> torch.Tensor:
    """`interpret.induction_scores(model)` [L, H], computed once per weights version."""
    store = _store(model)
    version = weights_version(model)
    if store.induction is None or store.induction[0] != version:
        store.induction = (version, interpret.induction_scores(model))
        calls["induction"] += 1
    return store.induction[1]


def forget(model) -> None:
    """Drop every pass kept for `model`."""
    with _guard:
        _stores.pop(model, None)
