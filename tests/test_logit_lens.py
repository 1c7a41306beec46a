"""lmlab.interpret.logit_lens on lmlab's GPT and on Hugging Face GPT-2 (a tiny random one,
offline)."""

import pytest
from _needs import need
import torch
from torch.nn import functional as F

transformers = need("transformers", "pip install -e '.[hf]'")

from lmlab.errors import ConfigError  # noqa: E402
from lmlab.interpret import LogitLens, logit_lens  # noqa: E402
from lmlab.model import GPT, GPTConfig  # noqa: E402
from lmlab.pretrained import from_pretrained  # noqa: E402
from lmlab.tokenizers import CharTokenizer  # noqa: E402

V, T = 100, 20


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(lmlab GPT, GPT2LMHeadModel) with the same weights, converted by from_pretrained."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gpt2")
    config = transformers.GPT2Config(n_layer=3, n_head=2, n_embd=32, n_positions=32, vocab_size=V,
                                     initializer_range=0.2, bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(folder)
    model, _ = from_pretrained(folder)
    return model, hf


@pytest.fixture
def ids():
    return torch.randint(V, (T,), generator=torch.Generator().manual_seed(1)).tolist()


def test_shapes_and_last_row_is_the_models_prediction(pair, ids):
    model, _ = pair
    lens = logit_lens(model, ids, k=5, full=True)
    assert isinstance(lens, LogitLens) and lens.n_layer == 3
    assert lens.top_ids.shape == lens.top_probs.shape == (4, T, 5)
    assert lens.log_probs.shape == (4, T, V) and lens.next_probs.shape == (4, T - 1)
    assert len(lens.top_tokens) == 4 and all(len(row) == T for row in lens.top_tokens)
    assert lens.labels == ["embeddings", "block 0", "block 1", "block 2"] and lens.ids == ids
    assert (lens.top_probs[..., :-1] >= lens.top_probs[..., 1:]).all()  # likeliest first
    with torch.no_grad():
        own = F.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    torch.testing.assert_close(lens.log_probs[-1], own, atol=1e-5, rtol=0)
    assert lens.top_ids[-1].tolist() == own.topk(5).indices.tolist()
    actual = own[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]  # the token that comes next
    torch.testing.assert_close(lens.next_probs[-1], actual.exp())
    assert logit_lens(model, ids).log_probs is None  # top-k only by default
    assert logit_lens(model, ids).top_ids.shape == (4, T, 1)


def test_hf_lens_agrees_with_lmlab_and_with_its_own_logits(pair, ids):
    model, hf = pair
    ours = logit_lens(model, ids, k=3, full=True)
    theirs = logit_lens(hf, ids, k=3, full=True)
    torch.testing.assert_close(theirs.log_probs, ours.log_probs, atol=1e-4, rtol=0)
    assert theirs.top_ids.tolist() == ours.top_ids.tolist()
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
    torch.testing.assert_close(theirs.log_probs[-1], F.log_softmax(out.logits[0], -1), atol=1e-5, rtol=0)
    # the same computation by hand through transformers' hidden states; the last one
    # already has ln_f applied, so it goes to the unembedding as is
    hidden = out.hidden_states
    assert len(hidden) == 4
    with torch.no_grad():
        by_hand = [hf.lm_head(hf.transformer.ln_f(h[0])) for h in hidden[:-1]] + [hf.lm_head(hidden[-1][0])]
    by_hand = F.log_softmax(torch.stack(by_hand), -1)
    torch.testing.assert_close(ours.log_probs, by_hand, atol=1e-4, rtol=0)


def test_each_layer_is_normalised_with_its_own_statistics(pair, ids):
    """Decoding block 0's stream with the final layer's LayerNorm scale (the cached-scale
    shortcut) would give another answer than the lens."""
    model, _ = pair
    lens = logit_lens(model, ids, full=True)
    t = model.transformer
    with torch.no_grad():
        x0 = t.wte(torch.tensor(ids)) + t.wpe(torch.arange(T))
        x1 = t.h[0](x0[None])[0]
        x = x1
        for block in t.h[1:]:
            x = block(x[None])[0]
        ln = t.ln_f
        own = ln(x1)
        torch.testing.assert_close(lens.log_probs[1], F.log_softmax(model.lm_head(own), -1), atol=1e-5, rtol=0)
        final_scale = (x.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()
        shortcut = (x1 - x1.mean(-1, keepdim=True)) / final_scale * ln.weight + ln.bias
        assert not torch.allclose(F.log_softmax(model.lm_head(shortcut), -1), lens.log_probs[1], atol=1e-3)


def test_text_with_a_tokenizer_and_display_strings():
    tok = CharTokenizer.fit("hello world")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16))
    lens = logit_lens(model, "hello world", tok, k=2)
    assert lens.tokens[5] == "\u2423"  # the space, made visible
    assert lens.top_tokens[1][0] == tok.token_text(int(lens.top_ids[1, 0, 0]))
    assert lens.top_ids.shape == (3, 11, 2)


def test_refusals(pair):
    model, hf = pair
    for m in (model, hf):
        with pytest.raises(ConfigError, match="at most 32 tokens"):
            logit_lens(m, list(range(33)))
    with pytest.raises(ConfigError, match="k=0"):
        logit_lens(model, [1, 2], k=0)
    with pytest.raises(ConfigError, match="tokenizer"):
        logit_lens(model, "text without a tokenizer")


def test_reading_restores_training_mode(pair, ids):
    model, _ = pair
    model.train()
    try:
        logit_lens(model, ids)
        assert model.training
    finally:
        model.eval()
