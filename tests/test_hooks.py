"""Named activation points: what each records, hooks that replace, what an unread point
costs (the fused attention kernel still runs), and TransformerLens's numbers on the same
weights."""

import pytest
import torch
from torch.nn import functional as F

from lmlab import GPT, ConfigError, GPTConfig
from lmlab.hooks import ActivationCache, hook_points, hooks, run_with_cache, run_with_hooks
from lmlab.interpret import ablate

CONFIG = GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, activation="gelu_tanh")
PER_BLOCK = ["hook_resid_pre", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid",
             "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]


@pytest.fixture
def gpt():
    return GPT(CONFIG).eval()


def test_the_points_are_named_as_transformer_lens_names_them_in_forward_order(gpt):
    names = [f"blocks.{i}.{p}" for i in range(CONFIG.n_layer) for p in PER_BLOCK] + ["ln_final.hook_normalized"]
    assert list(hook_points(gpt)) == names
    idx = torch.randint(20, (3, 10))
    _, cache = gpt.run_with_cache(idx)
    assert list(cache) == names  # recorded in the order a forward passes them
    C, H, D = 16, 2, 8
    shapes = {"hook_resid_pre": (3, 10, C), "attn.hook_pattern": (3, H, 10, 10), "attn.hook_z": (3, 10, H, D),
              "hook_attn_out": (3, 10, C), "hook_resid_mid": (3, 10, C), "mlp.hook_post": (3, 10, 4 * C),
              "hook_mlp_out": (3, 10, C), "hook_resid_post": (3, 10, C)}
    for name, shape in shapes.items():
        assert tuple(cache[f"blocks.1.{name}"].shape) == shape, name


def test_the_cache_is_the_forward_written_out(gpt):
    idx = torch.randint(20, (2, 12))
    logits, cache = gpt.run_with_cache(idx)
    torch.testing.assert_close(logits, gpt(idx).logits, atol=1e-6, rtol=0)
    t = gpt.transformer
    torch.testing.assert_close(cache["resid_pre", 0], t.wte(idx) + t.wpe(torch.arange(12)))
    for i, block in enumerate(t.h):
        torch.testing.assert_close(cache["resid_mid", i], cache["resid_pre", i] + cache["attn_out", i])
        torch.testing.assert_close(cache["resid_post", i], cache["resid_mid", i] + cache["mlp_out", i])
        torch.testing.assert_close(cache["attn_out", i], block.attn.c_proj(cache["z", i].reshape(2, 12, 16)))
        torch.testing.assert_close(cache["pattern", i].sum(-1), torch.ones(2, 2, 12))
        assert torch.all(cache["pattern", i].triu(1) == 0)
    torch.testing.assert_close(cache["resid_pre", 1], cache["resid_post", 0])
    torch.testing.assert_close(cache["ln_final.hook_normalized"], t.ln_f(cache["resid_post", 1]))
    assert cache.stack("pattern").shape == (2, 2, 2, 12, 12)


def test_a_hook_that_returns_a_tensor_replaces_the_activation(gpt):
    idx = torch.randint(20, (1, 9))

    def zero_head_1(z, hook):
        assert hook.name == "blocks.0.attn.hook_z"
        z = z.clone()
        z[:, :, 1] = 0
        return z

    patched = run_with_hooks(gpt, idx, [("blocks.0.attn.hook_z", zero_head_1)])
    with torch.no_grad(), ablate(gpt, {0: [1]}):
        knocked = gpt(idx).logits
    torch.testing.assert_close(patched, knocked)
    assert not torch.allclose(patched, gpt(idx).logits.detach())
    # the cache holds what the hooks put there
    _, cache = run_with_cache(gpt, idx, [("z", 0)], fwd_hooks=[("blocks.0.attn.hook_z", zero_head_1)])
    assert torch.all(cache["z", 0][:, :, 1] == 0) and list(cache) == ["blocks.0.attn.hook_z"]


def test_unread_points_cost_nothing_and_the_fused_kernel_runs(gpt, monkeypatch):
    fused = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: fused.append(1) or real(*a, **k))
    idx = torch.randint(20, (1, 8))
    gpt(idx)
    assert len(fused) == CONFIG.n_layer  # no pattern asked for: the fused kernel, every layer
    fused.clear()
    gpt.run_with_cache(idx, [("pattern", 1), ("resid_post", 0)])
    assert len(fused) == 1  # only the layer whose pattern is read computes it explicitly
    fused.clear()
    gpt.run_with_cache(idx, ("resid_pre", 0))
    assert len(fused) == CONFIG.n_layer
    assert not any(point.read for point in hook_points(gpt).values())  # every hook removed


def test_a_forward_can_start_at_a_layer_from_a_recorded_stream(gpt):
    idx = torch.randint(20, (2, 9))
    with torch.no_grad():
        logits, cache = gpt.run_with_cache(idx, names=["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"])
        torch.testing.assert_close(gpt(cache["resid_pre", 1], start_at_layer=1).logits, logits)
        torch.testing.assert_close(gpt(cache["resid_post", 1], start_at_layer=2).logits, logits)
    with pytest.raises(ConfigError, match="residual stream"):
        gpt(idx, start_at_layer=1)
    with pytest.raises(ConfigError, match="needs no cache and a layer in 1..2"):
        gpt(cache["resid_pre", 1], start_at_layer=3)
    with pytest.raises(ConfigError, match="needs no cache"):
        gpt(cache["resid_pre", 1][:1], start_at_layer=1, cache=gpt.new_cache())


def test_hooks_are_removed_when_the_forward_fails(gpt):
    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_with_hooks(gpt, torch.randint(20, (1, 4)), [("blocks.1.hook_mlp_out", boom)])
    assert not any(point.read for point in hook_points(gpt).values())
    assert gpt.training is False


def test_bad_names_are_explained(gpt):
    with pytest.raises(ConfigError, match="did you mean blocks.0.hook_resid_pre"):
        gpt.run_with_cache(torch.zeros(1, 3, dtype=torch.long), "blocks.0.hook_resid_pr")
    with pytest.raises(ConfigError, match="choose one of"):
        ActivationCache()["pattren", 0]
    with pytest.raises(ConfigError, match="hooks work on lmlab's GPT"):
        with hooks(torch.nn.Linear(2, 2), []):
            pass


def test_a_predicate_picks_points_and_a_text_needs_a_tokenizer(gpt):
    from lmlab.tokenizers import CharTokenizer

    tok = CharTokenizer("abcdefghijklmnopqrst")
    logits, cache = run_with_cache(gpt, "abc", lambda name: name.endswith("resid_post"), tokenizer=tok)
    assert list(cache) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert logits.shape == (1, 3, 20)
    with pytest.raises(ConfigError, match="tokenizer"):
        run_with_cache(gpt, "abc")


# ---- TransformerLens on the same weights ------------------------------------------------------


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    """TransformerLens 4's bridge around a GPT2LMHeadModel holding an lmlab model's weights,
    booted offline from a local folder (see ../shared/notes/transformer-lens-4.md)."""
    from _needs import need

    transformers = need("transformers", "pip install '.[hf]'")
    need("transformer_lens", "pip install '.[interp]'")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens.model_bridge import TransformerBridge

    from lmlab.pretrained import gpt2_config_for, to_hf_state_dict

    torch.manual_seed(0)
    ours = GPT(CONFIG).eval()
    hf = transformers.GPT2LMHeadModel(gpt2_config_for(CONFIG)).eval()
    hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    folder = tmp_path_factory.mktemp("tl")
    hf.save_pretrained(folder)
    chars = [chr(97 + i) for i in range(CONFIG.vocab_size)]
    words = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token="a"))
    words.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="a", pad_token="a",
                                         eos_token="a", bos_token="a").save_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    theirs = TransformerBridge.boot_transformers(str(folder), hf_model=hf, tokenizer=tokenizer, device="cpu")
    return ours, theirs


def test_every_point_equals_transformer_lens(bridge):
    ours, theirs = bridge
    idx = torch.randint(CONFIG.vocab_size, (2, 12))
    want_logits, want = theirs.run_with_cache(idx)
    got_logits, got = ours.run_with_cache(idx)
    torch.testing.assert_close(got_logits, want_logits, atol=1e-5, rtol=0)
    assert len(got) == len(PER_BLOCK) * CONFIG.n_layer + 1
    for name, value in got.items():
        torch.testing.assert_close(value, want[name], atol=1e-5, rtol=0, msg=name)


def test_a_patched_head_equals_transformer_lens(bridge):
    ours, theirs = bridge
    idx = torch.randint(CONFIG.vocab_size, (1, 10))

    def zero_head_0(z, hook):
        z = z.clone()
        z[:, :, 0] = 0
        return z

    want = theirs.run_with_hooks(idx, fwd_hooks=[("blocks.1.attn.hook_z", zero_head_0)])
    got = ours.run_with_hooks(idx, [("blocks.1.attn.hook_z", zero_head_0)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert not torch.allclose(got, ours(idx).logits.detach(), atol=1e-4)
