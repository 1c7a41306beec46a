"""Reference numbers from TransformerLens 4.x, for testing lmlab's interpretability tools.

Each function runs TransformerLens's own tools on a `TransformerBridge` holding an lmlab
`GPT`'s weights (see ../shared/notes/transformer-lens-4.md). Shapes: T positions, L layers,
H heads, C = n_embd, V vocabulary. Token ids go in as tensors [B, T] (or [T]); the bridge
prepends no BOS to a tensor (`prepend_bos` only applies to strings), so position p here is
position p in lmlab.

The bridge keeps Hugging Face's raw weights (no LayerNorm folding), so the final LayerNorm's
weight is NOT in `W_U`: `bridge.tokens_to_residual_directions` (and so `cache.logit_attrs`,
which uses it) returns bare `W_U` columns and would be off by `ln_final.w`. The logit
directions here are `ln_final.w * (W_U[:, target] - W_U[:, other])`.
"""

from __future__ import annotations

from typing import Callable

import torch

Metric = Callable[[torch.Tensor], torch.Tensor]  # logits [B, T, V] -> scalar tensor


def boot_bridge(model, folder):
    """A `TransformerBridge` around a `GPT2LMHeadModel` holding `model`'s weights, booted offline
    from `folder` (`lmlab.bench.peers.tl_twin`). Default numerics: no folding, float32."""
    from lmlab.bench.peers import tl_twin

    return tl_twin(model, folder)


def _ids(ids: torch.Tensor) -> torch.Tensor:
    return ids[None] if ids.ndim == 1 else ids


@torch.no_grad()
def direct_logit_attribution(bridge, ids, position: int, target: int, other: int | None = None) -> dict:
    """Each component's direct effect on logit[target] (minus logit[other]) at `position` of the
    one sequence `ids` [1, T], through the final LayerNorm with the scale frozen from this pass:

        part = (x - mean(x)) / ln_final.hook_scale[position] @ (ln_final.w * (W_U[:, target] - W_U[:, other]))

    (`cache.apply_ln_to_stack(..., layer=-1)`: centre, divide by the cached scale). Returns
    {"heads": [L, H] (`cache.stack_head_results`: z @ W_O per head, without b_O),
     "b_O": [L] (each layer's attention output bias), "mlps": [L] (hook_mlp_out, its bias included),
     "embed", "pos_embed": floats (`cache.decompose_resid`),
     "ln_bias": ln_final.b @ (W_U[:, target] - W_U[:, other]) (float), "logit": the logit (difference)}.
    The parts sum to logit - ln_bias (b_U is zero: GPT-2 has no unembedding bias)."""
    ids = _ids(ids)
    assert ids.shape[0] == 1, "one sequence"
    logits, cache = bridge.run_with_cache(ids)
    unembed = bridge.W_U[:, target] - (bridge.W_U[:, other] if other is not None else 0)
    direction = bridge.ln_final.w * unembed
    L, H = bridge.cfg.n_layers, bridge.cfg.n_heads

    def project(stack):  # [n, 1, C] at `position` -> [n]
        return cache.apply_ln_to_stack(stack, layer=-1, pos_slice=position)[:, 0] @ direction

    heads = project(cache.stack_head_results(layer=-1, pos_slice=position)).reshape(L, H)
    resid, labels = cache.decompose_resid(layer=-1, pos_slice=position, return_labels=True)
    parts = dict(zip(labels, project(resid)))
    b_O = project(bridge.b_O[:, None, :])
    logit = logits[0, position, target] - (logits[0, position, other] if other is not None else 0)
    return {"heads": heads, "b_O": b_O, "mlps": torch.stack([parts[f"{layer}_mlp_out"] for layer in range(L)]),
            "embed": float(parts["embed"]), "pos_embed": float(parts["pos_embed"]),
            "ln_bias": float(bridge.ln_final.b @ unembed), "logit": float(logit)}


@torch.no_grad()
def _patch(patcher, bridge, clean_ids, corrupted_ids, metric: Metric) -> torch.Tensor:
    _, clean_cache = bridge.run_with_cache(_ids(clean_ids))
    return patcher(bridge, _ids(corrupted_ids), clean_cache, metric)


def patch_resid_pre(bridge, clean_ids, corrupted_ids, metric: Metric) -> torch.Tensor:
    """[L, T]: metric(logits) of the corrupted run with `blocks.{l}.hook_resid_pre` at position t
    replaced by the clean run's (`transformer_lens.patching.get_act_patch_resid_pre`)."""
    from transformer_lens.patching import get_act_patch_resid_pre

    return _patch(get_act_patch_resid_pre, bridge, clean_ids, corrupted_ids, metric)


def patch_head_out(bridge, clean_ids, corrupted_ids, metric: Metric) -> torch.Tensor:
    """[L, H]: metric of the corrupted run with head h's `blocks.{l}.attn.hook_z` [B, T, H, D]
    replaced by the clean run's at every position (`get_act_patch_attn_head_out_all_pos`)."""
    from transformer_lens.patching import get_act_patch_attn_head_out_all_pos

    return _patch(get_act_patch_attn_head_out_all_pos, bridge, clean_ids, corrupted_ids, metric)


def patch_mlp_out(bridge, clean_ids, corrupted_ids, metric: Metric) -> torch.Tensor:
    """[L, T]: metric of the corrupted run with `blocks.{l}.hook_mlp_out` at position t replaced
    by the clean run's (`get_act_patch_mlp_out`)."""
    from transformer_lens.patching import get_act_patch_mlp_out

    return _patch(get_act_patch_mlp_out, bridge, clean_ids, corrupted_ids, metric)
