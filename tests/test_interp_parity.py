"""lmlab's direct logit attribution and activation patching against TransformerLens 4.x on
the same weights (a `TransformerBridge` around a GPT-2 holding an lmlab model's weights:
`tests/tl_reference.py`), on random texts. Biases and norms are redrawn away from their
initial zeros and ones, so every term (attention biases, the final norm's bias and γ) counts."""

import pytest
import torch

from _needs import need
from lmlab import GPT, GPTConfig
from lmlab.attribution import logit_attribution
from lmlab.patching import patch

CONFIG = GPTConfig(vocab_size=24, block_size=16, n_layer=3, n_head=4, n_embd=32)
TEXTS = 4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    need("transformers", "pip install '.[hf]'")
    need("transformer_lens", "pip install '.[interp]'")
    import tl_reference

    torch.manual_seed(0)
    ours = GPT(CONFIG).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.3)
            else:
                p.mul_(8)  # sharper attention: a last prediction that depends on earlier tokens
    return ours, tl_reference.boot_bridge(ours, tmp_path_factory.mktemp("tl"))


def texts(seed: int, n: int = 12):
    """A random text, and the same with the two tokens before its last changed."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(CONFIG.vocab_size, (n,), generator=g)
    corrupted = clean.clone()
    for i in (n - 3, n - 2):
        step = 1 + torch.randint(CONFIG.vocab_size - 1, (), generator=g)
        corrupted[i] = (corrupted[i] + step) % CONFIG.vocab_size
    return clean, corrupted


@pytest.mark.parametrize("seed", range(TEXTS))
def test_attribution_equals_transformer_lens(models, seed):
    import tl_reference

    ours, bridge = models
    ids, _ = texts(seed)
    position, target, other = int(seed * 3 % 12), seed % CONFIG.vocab_size, (seed + 5) % CONFIG.vocab_size
    want = tl_reference.direct_logit_attribution(bridge, ids, position, target, other)
    got = logit_attribution(ours, ids.tolist(), position, target, other)
    torch.testing.assert_close(got.heads, want["heads"], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.mlps, want["mlps"], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.biases, want["b_O"], atol=1e-4, rtol=0)
    assert got.embed == pytest.approx(want["embed"], abs=1e-4)
    assert got.pos_embed == pytest.approx(want["pos_embed"], abs=1e-4)
    assert got.bias_term == pytest.approx(want["ln_bias"], abs=1e-4)
    assert got.logit == pytest.approx(want["logit"], abs=1e-4)
    assert got.total == pytest.approx(got.logit - got.bias_term, abs=1e-4)  # the parts sum to the logit
    assert abs(got.bias_term) > 1e-3  # ...and the norm's bias is a real term here


@pytest.mark.parametrize("seed", range(TEXTS))
def test_patching_grids_equal_transformer_lens(models, seed):
    import tl_reference

    ours, bridge = models
    clean, corrupted = texts(seed)
    answer, wrong = ours(clean[None]).logits[0, -1].topk(2).indices.tolist()  # the clean text's two likeliest
    found = patch(ours, clean.tolist(), corrupted.tolist(), answer=answer, wrong=wrong, progress=False,
                  batch_size=5)
    spread = found.clean_metric - found.corrupted_metric
    assert abs(spread) > 0.05, "pick texts whose answers differ"

    def restored(logits):
        m = logits[0, -1, answer] - logits[0, -1, wrong]
        return (m - found.corrupted_metric) / spread

    for kind, reference in (("resid_pre", tl_reference.patch_resid_pre), ("heads", tl_reference.patch_head_out),
                            ("mlps", tl_reference.patch_mlp_out)):
        want = reference(bridge, clean, corrupted, restored)
        torch.testing.assert_close(found.grids[kind], want.float(), atol=1e-4, rtol=0, msg=kind)
    assert found.complete
    same = clean.eq(corrupted)
    assert found.resid[0, same].abs().max() < 1e-4  # patching what is already there restores nothing
    assert found.resid[0, ~same].abs().max() > 0.1  # ...and the changed tokens carry the answer
