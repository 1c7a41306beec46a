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


def tl_twin(model: GPT, folder):
    """TransformerLens 4's `TransformerBridge` around a GPT2LMHeadModel holding `model`'s
    weights, booted offline from `folder` (the HF model and a one-character-per-token
    tokenizer of the model's vocabulary are saved there: 4.x reads both by name). Default
    numerics (no LayerNorm folding), so its logits equal lmlab's to float error."""
    try:
        import transformers
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as e:
        raise SystemExit("this benchmark compares with TransformerLens: pip install 'lmlab[interp,hf]'") from e
    from pathlib import Path

    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = Path(folder)
    hf = transformers.GPT2LMHeadModel(gpt2_config_for(model.config)).eval()
    hf.load_state_dict(to_hf_state_dict(model), strict=False)  # only the causal-mask buffers are left out
    hf.save_pretrained(folder)
    chars = [chr(97 + i) for i in range(model.config.vocab_size)]
    words = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token="a"))
    words.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="a", pad_token="a",
                                         eos_token="a", bos_token="a").save_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)  # needs name_or_path: load, not build
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=hf, tokenizer=tokenizer, device="cpu")
    return bridge.eval()
