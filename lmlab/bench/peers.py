"""The peer the speed benchmarks compare with: transformers' GPT2LMHeadModel."""

from __future__ import annotations

import torch

from ..model import GPT, GPTConfig
from ..pretrained import gpt2_config_for, to_hf_state_dict


def hf_twin(model: GPT):
    """A GPT2LMHeadModel with `model`'s shape and weights, on transformers' fastest CPU
    attention (sdpa)."""
    try:
        from transformers import GPT2LMHeadModel
    except ImportError as e:
        raise SystemExit("this benchmark compares with transformers: pip install 'lmlab[hf]'") from e

    config: GPTConfig = model.config
    hf_config = gpt2_config_for(config)
    hf_config._attn_implementation = "sdpa"
    twin = GPT2LMHeadModel(hf_config)
    twin.load_state_dict(to_hf_state_dict(model), strict=False)
    return twin


def train_loss(model, x, y) -> torch.Tensor:
    """Cross-entropy of next-token logits for lmlab's GPT or transformers' GPT2LMHeadModel."""
    if isinstance(model, GPT):
        return model(x, y).loss
    logits = model(input_ids=x).logits
    return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
