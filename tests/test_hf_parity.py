"""Parity with Hugging Face transformers' GPT2LMHeadModel on the same weights."""

import pytest
from _needs import need
import torch

from lmlab import GPT, GPTConfig

transformers = need("transformers", "pip install '.[hf]'")

from lmlab.pretrained import gpt2_config_for, to_hf_state_dict  # noqa: E402

CONFIGS = [
    GPTConfig(vocab_size=50, block_size=24, n_layer=2, n_head=2, n_embd=32),
    GPTConfig(vocab_size=17, block_size=12, n_layer=3, n_head=4, n_embd=48),
    GPTConfig(vocab_size=65, block_size=32, n_layer=1, n_head=8, n_embd=64, bias=False),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_logits_and_attention_match_transformers(config):
    ours = GPT(config).eval()
    hf = transformers.GPT2LMHeadModel(gpt2_config_for(config)).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert not unexpected
    assert all(k.endswith("attn.bias") or k.endswith("masked_bias") for k in missing)
    idx = torch.randint(config.vocab_size, (2, config.block_size))
    with torch.no_grad():
        want = hf(idx, output_attentions=True)
        got, cache = ours.run_with_cache(idx, lambda name: name.endswith("hook_pattern"))
        fast = ours(idx)
    torch.testing.assert_close(got, want.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.logits, want.logits, atol=1e-4, rtol=0)
    theirs = torch.stack(want.attentions, dim=1)  # [B, L, H, T, T]
    torch.testing.assert_close(cache.stack("pattern").transpose(0, 1), theirs, atol=1e-5, rtol=0)


def test_copy_changes_the_result():
    """The parity above is not vacuous: a model with other weights disagrees."""
    config = CONFIGS[0]
    hf = transformers.GPT2LMHeadModel(gpt2_config_for(config)).eval()
    hf.load_state_dict(to_hf_state_dict(GPT(config)), strict=False)
    idx = torch.randint(config.vocab_size, (1, 8))
    with torch.no_grad():
        assert not torch.allclose(hf(idx).logits, GPT(config).eval()(idx).logits, atol=1e-4)
