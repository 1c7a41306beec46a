"""Direct logit attribution: which parts of the model pushed a token's logit, and how far.

At position p, the residual stream the final norm reads is a sum of parts (lmlab's GPT;
L blocks, H heads, D = C // H, C width):

    x_p = wte[ids[p]] + wpe[p]                          the token and position embeddings
        + Σ_l Σ_h z[l, p, h] @ W_O[l, h]                 each head's output through its slice of c_proj
        + Σ_l b_O[l]                                     each attention's output bias
        + Σ_l mlp_out[l, p]                              each MLP's output (none in attention-only models)

Each part goes through the final LayerNorm with the scale frozen from the clean pass, as
TransformerLens's `apply_ln_to_stack` does: ln(part) = (part - mean(part)) / σ(x_p) · γ, σ
the standard deviation (with the norm's eps) of the whole stream x_p. Its direct effect is
ln(part) · d, d the unembedding of the target token (minus the other token's, for a
difference). The parts' effects sum to the logit (difference) minus β · d, the final norm's
bias term, which belongs to no part. "Direct" means through the residual stream straight
to the unembedding: what a part does through later layers is not counted here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import passes
from .adapt import context_length, display, one_token, token_ids
from .errors import ConfigError
from .hooks import ActivationCache, hooks
from .model import GPT
from .reading import reading, weights_version


@dataclass(eq=False)
class Parts:
    """What attribution needs of one forward of T ids on the CPU, float32."""

    ids: list[int]
    logits: torch.Tensor  # [T, V]
    final: torch.Tensor  # [T, C], the stream the final norm reads
    z: torch.Tensor  # [L, T, H, D], each head's output before c_proj
    mlp_out: torch.Tensor | None  # [L, T, C] (None: attention only)


@dataclass(eq=False)
class Attribution:
    """The direct effect of each part on logit[target] (minus logit[other]) at `position`, in
    logits. Shapes: L blocks, H heads."""

    position: int
    target: int
    other: int | None
    target_token: str
    other_token: str | None
    embed: float  # the token embedding's effect
    pos_embed: float  # the position embedding's
    heads: torch.Tensor  # [L, H]
    biases: torch.Tensor  # [L]: each attention's output bias
    mlps: torch.Tensor | None  # [L] (None: attention only)
    bias_term: float  # β · d: the final norm's bias, in no part
    logit: float  # the model's logit (difference): sum of every part + bias_term

    @property
    def total(self) -> float:
        """The sum of every part's effect (= logit - bias_term)."""
        mlps = float(self.mlps.sum()) if self.mlps is not None else 0.0
        return self.embed + self.pos_embed + float(self.heads.sum()) + float(self.biases.sum()) + mlps

    def rows(self) -> list[dict]:
        """One row per part, {part, layer, head, effect}, in the model's order."""
        rows = [dict(part="embed", layer=None, head=None, effect=self.embed),
                dict(part="pos_embed", layer=None, head=None, effect=self.pos_embed)]
        for layer in range(self.heads.size(0)):
            rows += [dict(part=f"L{layer}H{h}", layer=layer, head=h, effect=float(v))
                     for h, v in enumerate(self.heads[layer])]
            rows.append(dict(part=f"L{layer} attn bias", layer=layer, head=None,
                             effect=float(self.biases[layer])))
            if self.mlps is not None:
                rows.append(dict(part=f"L{layer} MLP", layer=layer, head=None, effect=float(self.mlps[layer])))
        return rows

    def top(self, k: int = 10) -> list[dict]:
        """The k parts of largest effect (either sign), largest first."""
        _count(k, "k")
        return sorted(self.rows(), key=lambda r: -abs(r["effect"]))[:k]

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows())

    @property
    def question(self) -> str:
        """What the numbers answer, in words."""
        versus = f" against {self.other_token!r}" if self.other is not None else ""
        return f"what pushed {self.target_token!r}{versus} after position {self.position}"


def _lmlab_gpt(model) -> None:
    if not isinstance(model, GPT):
        raise ConfigError(f"direct logit attribution reads lmlab's GPT, not a {type(model).__name__}; "
                          "load GPT-2's weights with lmlab.from_pretrained to attribute them")


def _count(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} must be a whole number of at least {low}")
    return value


def read_parts(model, ids: list[int]) -> Parts:
    """One forward of `ids` keeping each head's output, each MLP's and the final stream (no
    attention pattern: the fused kernel runs). Callers hold `reading(model)`."""
    last = f"blocks.{model.config.n_layer - 1}.hook_resid_post"

    def wanted(name: str) -> bool:
        return name.endswith("attn.hook_z") or name.endswith("hook_mlp_out") or name == last

    cache = ActivationCache()
    with hooks(model, [(wanted, lambda x, hook: dict.__setitem__(cache, hook.name, x))]):
        logits = model(torch.tensor([ids], device=model.device)).logits
    passes.calls["parts"] += 1
    n = model.config.n_layer
    return Parts(ids=list(ids), logits=logits[0].float().cpu(), final=cache[last][0].float().cpu(),
                 z=torch.stack([cache["z", i][0] for i in range(n)]).float().cpu(),
                 mlp_out=(None if model.config.attn_only
                          else torch.stack([cache["mlp_out", i][0] for i in range(n)]).float().cpu()))


def parts_of_pass(found) -> Parts:
    """The `Parts` a cached view pass (`lmlab.passes.Pass`) already holds."""
    return Parts(ids=found.ids, logits=found.logits, final=found.streams[-1], z=found.z, mlp_out=found.mlp_out)


def _position(position, length: int) -> int:
    if isinstance(position, bool) or not isinstance(position, int) or not -length <= position < length:
        raise ConfigError(f"position={position!r} is outside the text's {length} tokens "
                          f"(0..{length - 1}, or -1 for the last)")
    return position % length


def direction(model, target: int, other: int | None) -> torch.Tensor:
    """d [C] on the CPU: the unembedding of `target`, minus `other`'s where given."""
    unembed = model.lm_head.weight.detach().float().cpu()
    return unembed[target] - (unembed[other] if other is not None else 0)


def attribute(model, parts: Parts, position: int = -1, target=None, other=None, tokenizer=None) -> Attribution:
    """The direct logit attribution (see the module) at `position` of a forward already read
    (`read_parts`, `parts_of_pass`). `target` and `other` are token ids or one-token texts;
    `target` defaults to the model's likeliest next token there; with `other`, the effects
    are on logit[target] - logit[other]. Callers hold `reading(model)` while weights may change."""
    _lmlab_gpt(model)
    p = _position(position, len(parts.ids))
    target = int(parts.logits[p].argmax()) if target is None else one_token(model, target, tokenizer,
                                                                            "target")
    other = None if other is None else one_token(model, other, tokenizer, "other")
    if other == target:
        raise ConfigError(f"target and other are the same token ({target}); a difference needs two tokens")
    d = direction(model, target, other)
    norm = model.transformer.ln_f
    w = read_direction(parts.final[p], norm, d)
    c = model.config
    L, H, D = c.n_layer, c.n_head, c.n_embd // c.n_head
    heads, biases, mlps = torch.empty(L, H), torch.zeros(L), torch.empty(L)
    for i, block in enumerate(model.transformer.h):
        proj = block.attn.c_proj
        u = w @ proj.weight.detach().float().cpu()  # [C]: what each of head h's D outputs is worth
        heads[i] = (parts.z[i, p] * u.view(H, D)).sum(-1)
        if proj.bias is not None:
            biases[i] = proj.bias.detach().float().cpu() @ w
        if parts.mlp_out is not None:
            mlps[i] = parts.mlp_out[i, p] @ w
    wte, wpe = model.transformer.wte.weight.detach(), model.transformer.wpe.weight.detach()
    beta = norm.bias.detach().float().cpu() if norm.bias is not None else torch.zeros(d.shape)
    logit = parts.logits[p, target] - (parts.logits[p, other] if other is not None else 0)
    show = display(tokenizer)
    return Attribution(
        position=p, target=target, other=other, target_token=show(target),
        other_token=show(other) if other is not None else None,
        embed=float(wte[parts.ids[p]].float().cpu() @ w), pos_embed=float(wpe[p].float().cpu() @ w),
        heads=heads, biases=biases, mlps=None if parts.mlp_out is None else mlps,
        bias_term=float(beta @ d), logit=float(logit))


def stream_parts(model, parts: Parts, layer: int, position: int) -> tuple[list[str], torch.Tensor]:
    """The residual stream entering block `layer` (L: the one the final norm reads) at
    `position`, as its parts [N, C] (float32, CPU) summing to it, and their labels: "embed",
    "pos_embed", then for each block before `layer` its heads "L{l}H{h}", "L{l} attn bias"
    and (unless attention only) "L{l} MLP"."""
    c = model.config
    H, D = c.n_head, c.n_embd // c.n_head
    per_block = H + 1 + (parts.mlp_out is not None)
    stack = torch.empty(2 + layer * per_block, c.n_embd)
    stack[0] = model.transformer.wte.weight.detach()[parts.ids[position]]
    stack[1] = model.transformer.wpe.weight.detach()[position]
    labels = ["embed", "pos_embed"]
    for i, block in enumerate(model.transformer.h[:layer]):
        row, proj = 2 + i * per_block, block.attn.c_proj
        w_o = proj.weight.detach().float().cpu().view(c.n_embd, H, D)  # [C, H, D]: head h's columns, no copy
        stack[row:row + H] = (w_o * parts.z[i, position]).sum(-1).t()  # z_h @ W_O[h]
        stack[row + H] = proj.bias.detach() if proj.bias is not None else 0
        labels += [f"L{i}H{h}" for h in range(H)] + [f"L{i} attn bias"]
        if parts.mlp_out is not None:
            stack[row + H + 1] = parts.mlp_out[i, position]
            labels.append(f"L{i} MLP")
    return labels, stack


def read_direction(whole: torch.Tensor, norm: torch.nn.LayerNorm, d: torch.Tensor) -> torch.Tensor:
    """w [C] such that part · w = frozen_norm(part) · d for every part of the stream `whole`
    [C]: (γ ⊙ d) / σ(whole), centred (a part's mean times Σw is then 0)."""
    sigma = torch.sqrt(whole.var(unbiased=False) + norm.eps)
    w = norm.weight.detach().float().cpu() * d / sigma
    return w - w.mean()


def frozen_norm(stack: torch.Tensor, whole: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """Parts [N, C] of the stream `whole` [C] through LayerNorm `norm` with the scale frozen
    from `whole`: (part - mean(part)) / σ(whole) · γ, no bias (their sum is norm(whole) - β)."""
    sigma = torch.sqrt(whole.var(unbiased=False) + norm.eps)
    return (stack - stack.mean(-1, keepdim=True)) / sigma * norm.weight.detach().float().cpu()


def logit_attribution(model, text_or_ids, position: int = -1, target=None, other=None,
                      tokenizer=None) -> Attribution:
    """Which heads, MLPs and embeddings pushed `target` (against `other`) at `position` of a
    text (encoded with `tokenizer`) or list of ids: one forward, or none where a view's pass
    of the text on these weights is kept (`lmlab.passes`). See the module for the method."""
    _lmlab_gpt(model)
    ids = token_ids(model, text_or_ids, tokenizer, context_length(model))
    kept = passes.kept_pass(model, ids)
    with reading(model):
        if kept is not None and kept.version == weights_version(model) and kept.z is not None:
            parts = parts_of_pass(kept)
        else:
            parts = read_parts(model, ids)
        return attribute(model, parts, position, target, other, tokenizer)
