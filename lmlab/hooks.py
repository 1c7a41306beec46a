"""Named activation points, and forward passes that read or replace what passes them.

lmlab's `GPT` carries a `HookPoint` (an identity module) at each place worth looking at,
named as TransformerLens names them. Shapes: B batch, T positions, S keys (past + T),
C = n_embd, H heads, D = C // H, V vocabulary.

    blocks.{l}.hook_resid_pre     [B, T, C]     the residual stream entering block l
    blocks.{l}.attn.hook_pattern  [B, H, T, S]  attention probabilities (float32)
    blocks.{l}.attn.hook_z        [B, T, H, D]  each head's output, before the output projection
    blocks.{l}.hook_attn_out      [B, T, C]     the attention's output, added to the stream
    blocks.{l}.hook_resid_mid     [B, T, C]     the stream between attention and MLP
    blocks.{l}.mlp.hook_post      [B, T, 4C]    the MLP's hidden activation, after the GELU
    blocks.{l}.hook_mlp_out       [B, T, C]     the MLP's output, added to the stream
    blocks.{l}.hook_resid_post    [B, T, C]     the stream leaving block l
    ln_final.hook_normalized      [B, T, C]     the final norm's output, before the unembedding

A point costs one call of an empty module when nothing reads it; the attention pattern is
computed explicitly only while a hook reads it (the fused kernel runs otherwise).

A hook is `fn(activation, hook)`, `hook` the `HookPoint` (its `.name` says where): it
returns None to read, or a tensor of the same shape to replace the activation.

    logits, cache = run_with_cache(model, ids)            # every point, one forward
    cache["blocks.0.attn.hook_pattern"]; cache["pattern", 0]   # the same tensor
    logits = run_with_hooks(model, ids, [("blocks.1.attn.hook_z", zero_head_3)])
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
import torch.nn as nn

from .errors import ConfigError


class HookPoint(nn.Module):
    """The identity, at a named place in a model: PyTorch forward hooks on it read or
    replace the activation that passes (`fn(activation, hook) -> None | tensor`)."""

    name: str = ""  # set by the model that holds it: e.g. "blocks.0.hook_resid_pre"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def read(self) -> bool:
        """Whether any hook is registered here (so a costly activation is worth computing)."""
        return bool(self._forward_hooks)

    def add_hook(self, fn: Callable) -> torch.utils.hooks.RemovableHandle:
        """Call `fn(activation, self)` on each forward; its non-None result replaces it."""
        return self.register_forward_hook(lambda module, args, out: fn(out, module))

    def extra_repr(self) -> str:
        return self.name


# module paths in lmlab's GPT -> TransformerLens's names
_RENAMES = (("transformer.h.", "blocks."), ("transformer.ln_f.", "ln_final."))

# short names for ActivationCache["pattern", 0], as TransformerLens's utils.get_act_name
_SHORT = {"resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
          "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "pattern": "attn.hook_pattern",
          "z": "attn.hook_z", "post": "mlp.hook_post"}


def name_points(model: nn.Module) -> dict[str, HookPoint]:
    """Give each HookPoint of `model` its TransformerLens-style name; {name: point}."""
    points = {}
    for path, module in model.named_modules():
        if isinstance(module, HookPoint):
            for old, new in _RENAMES:
                if path.startswith(old):
                    path = new + path[len(old):]
            module.name = path
            points[path] = module
    return points


def hook_points(model) -> dict[str, HookPoint]:
    """{name: HookPoint} of lmlab's GPT, in the order a forward passes them."""
    points = getattr(model, "hook_dict", None)
    if not points:
        raise ConfigError(f"{type(model).__name__} has no named activation points; hooks work on "
                          "lmlab's GPT (a Hugging Face model's views read its attentions and hidden states)")
    return points


def act_name(name: str | tuple) -> str:
    """A point's full name from itself or a (short name, layer) pair: ("pattern", 0) ->
    "blocks.0.attn.hook_pattern"."""
    if isinstance(name, tuple):
        short, layer = name
        if short not in _SHORT:
            raise ConfigError(f"no activation point called {short!r}; choose one of {sorted(_SHORT)}")
        return f"blocks.{int(layer)}.{_SHORT[short]}"
    return name


def _select(points: dict[str, HookPoint], names) -> list[str]:
    """The point names that `names` asks for: None (all), a name, a list of names, or a
    predicate on a name."""
    if names is None:
        return list(points)
    if callable(names):
        return [n for n in points if names(n)]
    names = [act_name(names)] if isinstance(names, (str, tuple)) else [act_name(n) for n in names]
    unknown = [n for n in names if n not in points]
    if unknown:
        close = [p for p in points if unknown[0].split(".")[-1] in p][:3]
        raise ConfigError(f"no activation point named {unknown[0]!r}"
                          + (f" (did you mean {', '.join(close)}?)" if close else "")
                          + "; lmlab.hooks.hook_points(model) lists them all")
    return names


@contextlib.contextmanager
def hooks(model, fwd_hooks: Iterable[tuple]):
    """Register `fwd_hooks`, pairs (name or predicate on names, fn), for the `with` block;
    removed after, also on an error."""
    points = hook_points(model)
    handles = []
    try:
        for names, fn in fwd_hooks:
            for name in _select(points, names):
                handles.append(points[name].add_hook(fn))
        yield model
    finally:
        for handle in handles:
            handle.remove()


class ActivationCache(dict):
    """{point name: activation} of one forward, each tensor detached as recorded (on the
    model's device). Also indexed by (short name, layer): cache["pattern", 0]."""

    def __getitem__(self, key):
        return super().__getitem__(act_name(key))

    def __contains__(self, key):
        return super().__contains__(act_name(key))

    def stack(self, short: str) -> torch.Tensor:
        """One point across layers: e.g. stack("pattern") [L, B, H, T, S]."""
        layers = sorted(int(n.split(".")[1]) for n in self if n.endswith("." + _SHORT[short]))
        return torch.stack([self[short, layer] for layer in layers])


def _ids(model, tokens, tokenizer) -> torch.Tensor:
    if isinstance(tokens, torch.Tensor):
        return tokens if tokens.dim() == 2 else tokens[None]
    from .adapt import token_ids

    return torch.tensor([token_ids(model, tokens, tokenizer)], device=model.device)


def run_with_hooks(model, tokens, fwd_hooks: Iterable[tuple], *, tokenizer=None) -> torch.Tensor:
    """Logits [B, T, V] of one forward of `tokens` (ids [B, T] or [T], a list of ids, or a
    text with `tokenizer`) with `fwd_hooks` (see `hooks`) in place. Read through
    `lmlab.reading`: the model's lock, eval mode, no autograd."""
    from .reading import reading

    idx = _ids(model, tokens, tokenizer)
    with reading(model), hooks(model, fwd_hooks):
        return model(idx).logits


def run_with_cache(model, tokens, names=None, *, tokenizer=None,
                   fwd_hooks: Iterable[tuple] = ()) -> tuple[torch.Tensor, ActivationCache]:
    """(logits [B, T, V], ActivationCache) of one forward of `tokens` (as `run_with_hooks`),
    recording the points `names` asks for: None (all), a name, a list, or a predicate.
    `fwd_hooks` run too, before the recording, so the cache holds what they put there."""
    points = hook_points(model)
    cache = ActivationCache()

    def save(x, hook):
        dict.__setitem__(cache, hook.name, x.detach())

    recorded = [(name, save) for name in _select(points, names)]
    logits = run_with_hooks(model, tokens, [*fwd_hooks, *recorded], tokenizer=tokenizer)
    return logits, ActivationCache((name, cache[name]) for name in points if name in cache)
