import pytest
import torch

from lmlab import GPT, ConfigError, GPTConfig
from lmlab.hooks import hooks

CONFIGS = [
    GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32),
    GPTConfig(vocab_size=11, block_size=9, n_layer=3, n_head=2, n_embd=24, bias=False),
]


def test_presets_match_nanogpt_sizes():
    sizes = {name: GPT(GPTConfig.preset(name)).num_params() for name in ("nano", "tiny", "small")}
    assert 0.08e6 < sizes["nano"] < 0.13e6
    assert 0.78e6 < sizes["tiny"] < 0.82e6
    assert 10.6e6 < sizes["small"] < 10.8e6
    tiny = GPTConfig.preset("tiny")
    assert (tiny.n_layer, tiny.n_head, tiny.n_embd, tiny.block_size) == (4, 4, 128, 64)
    small = GPTConfig.preset("small", dropout=0.2)
    assert (small.n_layer, small.n_head, small.n_embd, small.block_size, small.dropout) == (
        6, 6, 384, 256, 0.2)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(n_embd=100, n_head=3), "not divisible by n_head=3"),
    (dict(n_layer=0), "n_layer=0 must be a positive integer"),
    (dict(vocab_size=-5), "vocab_size=-5"),
    (dict(block_size=2.5), "block_size=2.5"),
    (dict(dropout=1.0), "dropout=1.0 must be in [0, 1)"),
    (dict(dropout=-0.1), "dropout=-0.1"),
])
def test_invalid_config_is_explained(kwargs, fragment):
    with pytest.raises(ConfigError) as e:
        GPTConfig(**kwargs)
    assert fragment in str(e.value)
    assert isinstance(e.value, ValueError)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="nano"):
        GPTConfig.preset("huge")


@pytest.mark.parametrize("config", CONFIGS)
def test_attention_path_matches_fast_path(config):
    model = GPT(config).eval()
    idx = torch.randint(config.vocab_size, (3, config.block_size))
    fast = model(idx)
    logits, cache = model.run_with_cache(idx, lambda name: name.endswith("hook_pattern"))
    assert not any(p.read for p in model.hook_dict.values())  # the hooks are gone after
    torch.testing.assert_close(logits, fast.logits, atol=1e-5, rtol=0)
    att = cache.stack("pattern").transpose(0, 1)
    T = config.block_size
    assert att.shape == (3, config.n_layer, config.n_head, T, T)
    assert att.dtype == torch.float32
    torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:-1]))
    assert torch.all(att.triu(diagonal=1) == 0)


def test_loss_is_cross_entropy_of_logits():
    config = CONFIGS[0]
    model = GPT(config)
    idx = torch.randint(config.vocab_size, (2, 8))
    targets = torch.randint(config.vocab_size, (2, 8))
    out = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(out.logits.reshape(-1, config.vocab_size),
                                                 targets.reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    # an untrained model is close to uniform
    assert abs(out.loss.item() - torch.log(torch.tensor(config.vocab_size)).item()) < 0.5


@pytest.mark.parametrize("config", CONFIGS)
def test_kv_cache_matches_full_forward(config):
    model = GPT(config).eval()
    T = config.block_size
    idx = torch.randint(config.vocab_size, (2, T))
    full_logits, full = model.run_with_cache(idx, lambda name: name.endswith("hook_pattern"))
    cache = model.new_cache(batch_size=2)
    # a prompt of several tokens, then one token at a time
    first = model(idx[:, :3], cache=cache)
    steps = [first.logits] + [model(idx[:, t : t + 1], cache=cache).logits for t in range(3, T)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full_logits, atol=1e-5, rtol=0)
    assert cache.length == T
    # a chunk of several tokens after a cached past, with attention returned
    cache = model.new_cache(batch_size=2)
    model(idx[:, :4], cache=cache)
    patterns = []
    with hooks(model, [(lambda name: name.endswith("hook_pattern"), lambda x, _: patterns.append(x))]):
        rest = model(idx[:, 4:], cache=cache)
    torch.testing.assert_close(rest.logits, full_logits[:, 4:], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack(patterns), full.stack("pattern")[:, :, :, 4:], atol=1e-5, rtol=0)


def test_long_prompt_is_cropped_not_crashed():
    config = CONFIGS[0]
    model = GPT(config).eval()
    idx = torch.randint(config.vocab_size, (1, config.block_size * 3))
    out = model(idx, idx)
    assert out.logits.shape == (1, config.block_size, config.vocab_size)
    torch.testing.assert_close(out.logits, model(idx[:, -config.block_size :]).logits)


def test_full_cache_says_how_to_continue():
    config = CONFIGS[1]
    model = GPT(config).eval()
    cache = model.new_cache()
    model(torch.zeros(1, config.block_size, dtype=torch.long), cache=cache)
    with pytest.raises(ConfigError, match="new_cache"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_tied_embeddings_and_gpt2_init():
    model = GPT(GPTConfig.preset("tiny"))
    assert model.lm_head.weight is model.transformer.wte.weight
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / (2 * 4) ** 0.5) < 0.002
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002


def test_flops_per_token_follows_palm_formula():
    model = GPT(GPTConfig.preset("tiny"))
    n = model.num_params()
    assert model.flops_per_token() == 6 * n + 12 * 4 * 128 * 64
    assert model.num_params(non_embedding=False) == n + 64 * 128


def test_backward_reaches_every_parameter():
    model = GPT(CONFIGS[0])
    idx = torch.randint(37, (2, 16))
    model(idx, idx).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
