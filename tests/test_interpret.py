"""Attention capture, per-head scores, head ablation, predictions and thumbnails."""

import copy
import math
import threading

import numpy as np
import pytest
import torch
from _needs import need

from lmlab import GPT, CharTokenizer, ConfigError, GPTConfig, TokenizerError
from lmlab.interpret import (Attention, ablate, ablation_effect, capture_attention, head_summary,
                           head_thumbnails, induction_score, induction_scores, predictions_at,
                           quantize)
from lmlab.reading import model_lock
from lmlab.sampling import next_token_distribution

TEXT = "the quick brown fox jumps over the lazy dog.\n"
TOK = CharTokenizer.fit(TEXT)


def tiny(dropout=0.0, bias=True):
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16,
                         dropout=dropout, bias=bias))


def attention_of(*patterns):
    """An Attention with one layer, one head per [T, T] pattern."""
    w = torch.stack(patterns)[None].float()
    T = w.size(-1)
    return Attention(w, [str(i) for i in range(T)], list(range(T)))


def previous_token_pattern(T):
    w = torch.zeros(T, T)
    w[0, 0] = 1
    w[torch.arange(1, T), torch.arange(T - 1)] = 1
    return w


def first_token_pattern(T):
    w = torch.zeros(T, T)
    w[:, 0] = 1
    return w


def uniform_pattern(T):
    return torch.ones(T, T).tril() / torch.arange(1, T + 1)[:, None]


# ---- capture --------------------------------------------------------------------------------


def test_capture_gives_causal_rows_that_sum_to_one_and_display_tokens():
    model = tiny()
    text = "the lazy fox\njumps"
    a = capture_attention(model, text, TOK)
    T = len(text)
    assert a.weights.shape == (2, 2, T, T) and (a.n_layer, a.n_head) == (2, 2)
    assert a.weights.dtype == torch.float32 and a.weights.device.type == "cpu"
    torch.testing.assert_close(a.weights.sum(-1), torch.ones(2, 2, T), atol=1e-6, rtol=0)
    assert torch.all(a.weights.triu(diagonal=1) == 0)
    assert a.ids == TOK.encode(text)
    assert a.tokens == [TOK.token_text(i) for i in a.ids]
    assert a.tokens[3] == "\u2423" and a.tokens[12] == "\u21b5"  # whitespace made visible
    assert torch.equal(a.head(1, 0), a.weights[1, 0])
    assert torch.equal(capture_attention(model, a.ids).weights, a.weights)  # ids give the same


def test_capture_reads_through_the_models_lock():
    model = tiny()
    done = threading.Event()
    with model_lock(model):  # a training step in progress holds this lock
        threading.Thread(target=lambda: (capture_attention(model, "the fox", TOK), done.set())).start()
        assert not done.wait(0.3), "capture_attention read the model while a step held its lock"
    assert done.wait(10)


def test_capture_leaves_the_global_rng_and_training_mode_alone():
    model = tiny(dropout=0.2).train()
    before = torch.get_rng_state()
    first = capture_attention(model, "the lazy dog", TOK)
    second = capture_attention(model, "the lazy dog", TOK)
    induction_scores(model, seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert model.training
    assert torch.equal(first.weights, second.weights)  # eval mode: no dropout


def test_bad_input_is_refused_with_a_readable_message():
    model = tiny()
    with pytest.raises(ConfigError, match="the text is empty"):
        capture_attention(model, "", TOK)
    with pytest.raises(ConfigError, match="the text is empty"):
        capture_attention(model, [])
    with pytest.raises(ConfigError, match="give lmlab's GPT or a Hugging Face causal LM"):
        capture_attention(torch.nn.Linear(2, 2), [1])
    long = "the quick brown fox jumps over it"  # 33 characters
    with pytest.raises(ConfigError, match=r"33 tokens long.*at most 32 tokens.*shorten") as e:
        capture_attention(model, long, TOK)
    assert "context" in str(e.value)
    capture_attention(model, long[:32], TOK)  # the limit itself is fine
    with pytest.raises(TokenizerError, match=r"not in the vocabulary: 'E', 'M', 'O', 'R'"):
        capture_attention(model, "ROMEO", TOK)  # CharTokenizer's own message, let through
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        capture_attention(model, "the fox")
    with pytest.raises(TokenizerError, match=r"\[99\] are outside the model's vocabulary"):
        capture_attention(model, [1, 99])


# ---- per-head scores ----------------------------------------------------------------------


def test_head_scores_on_hand_built_patterns():
    T = 9
    table = head_summary(attention_of(previous_token_pattern(T), first_token_pattern(T),
                                      uniform_pattern(T)))
    rows = table.rows
    assert list(table) == rows and all(isinstance(r, dict) for r in table)
    assert [(r["layer"], r["head"]) for r in rows] == [(0, 0), (0, 1), (0, 2)]
    prev, first, uniform = rows
    assert prev["previous_token"] == pytest.approx(1) and prev["entropy"] == pytest.approx(0)
    assert prev["first_token"] == pytest.approx(1 / (T - 1))  # only query 1 looks at key 0
    assert first["first_token"] == pytest.approx(1) and first["entropy"] == pytest.approx(0)
    assert first["previous_token"] == pytest.approx(1 / (T - 1))
    expected = sum(math.log(q + 1) for q in range(T)) / T
    assert uniform["entropy"] == pytest.approx(expected, abs=1e-6)
    assert uniform["previous_token"] == pytest.approx(sum(1 / (q + 1) for q in range(1, T)) / (T - 1))
    assert prev["induction"] is None


def test_induction_score_of_a_pattern_that_looks_after_the_earlier_occurrence():
    L = 6
    T = 2 * L
    induction = uniform_pattern(T)
    for q in range(L, T):
        induction[q] = 0
        induction[q, q - L + 1] = 1
    scores = induction_score(attention_of(induction, previous_token_pattern(T)).weights, L)
    assert scores.shape == (1, 2)
    assert scores[0, 0] == pytest.approx(1)
    assert scores[0, 1] == pytest.approx(0)
    rows = head_summary(attention_of(induction, previous_token_pattern(T)), induction=scores).rows
    assert [r["induction"] for r in rows] == pytest.approx([1, 0])


def test_induction_scores_of_a_model_are_seeded_and_clamped_to_the_context():
    model = tiny()
    scores = induction_scores(model, length=1000, seed=3)  # clamped to 32 // 2
    assert scores.shape == (2, 2) and torch.all((scores >= 0) & (scores <= 1))
    assert torch.equal(scores, induction_scores(model, length=16, seed=3))
    assert not torch.equal(scores, induction_scores(model, length=16, seed=4))
    with pytest.raises(ConfigError, match="at least 2"):
        induction_scores(model, length=1)


def test_head_table_to_pandas():
    need("pandas", "pip install pandas")
    df = head_summary(attention_of(uniform_pattern(4), uniform_pattern(4))).to_pandas()
    assert list(df.columns) == ["layer", "head", "entropy", "previous_token", "first_token",
                                "induction"]
    assert len(df) == 2


# ---- Hugging Face models ----------------------------------------------------------------------


def _hf_twin(model):
    transformers = need("transformers", "pip install '.[hf]'")
    from lmlab.pretrained import gpt2_config_for, to_hf_state_dict

    config = gpt2_config_for(model.config)
    config._attn_implementation = "sdpa"  # transformers' default: returns no attention
    twin = transformers.GPT2LMHeadModel(config)
    twin.load_state_dict(to_hf_state_dict(model), strict=False)
    return twin


def test_capture_from_a_hugging_face_model():
    hf = _hf_twin(tiny())
    hf.train()
    a = capture_attention(hf, "the dog", TOK)
    assert a.weights.shape == (2, 2, 7, 7) and a.weights.dtype == torch.float32
    torch.testing.assert_close(a.weights.sum(-1), torch.ones(2, 2, 7), atol=1e-6, rtol=0)
    assert torch.all(a.weights.triu(diagonal=1) == 0)
    assert a.tokens == [TOK.token_text(i) for i in TOK.encode("the dog")]
    assert hf.config._attn_implementation == "sdpa" and hf.training  # restored
    with pytest.raises(ConfigError, match="at most 32 tokens"):
        capture_attention(hf, list(range(20)) * 2)


@pytest.mark.parametrize("bias", [True, False])
def test_lmlab_and_its_hugging_face_twin_give_the_same_attention(bias):
    model = tiny(bias=bias)
    hf = _hf_twin(model)
    ids = TOK.encode("the quick brown fox jumps over")
    ours, theirs = capture_attention(model, ids), capture_attention(hf, ids)
    torch.testing.assert_close(ours.weights, theirs.weights, atol=1e-5, rtol=0)
    assert induction_scores(hf, seed=0).shape == (2, 2)


# ---- ablation ---------------------------------------------------------------------------------


def _logits(model, idx):
    with torch.no_grad():
        return model.eval()(idx).logits


def _idx():
    return torch.tensor([TOK.encode("the quick brown fox jumps")])


def _random_weights(model):
    """Weights far from GPT-2's small initialisation, so that every head matters, and
    nonzero biases (c_proj's bias among them)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.5)
    return model


def test_ablating_nothing_changes_nothing():
    model = tiny()
    idx = _idx()
    before = _logits(model, idx)
    for heads in ({}, []):
        with ablate(model, heads):
            assert torch.equal(_logits(model, idx), before)


def test_zeroing_every_head_of_a_layer_leaves_only_the_projections_bias():
    model = _random_weights(tiny())
    idx = _idx()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.transformer.h[1].attn.c_proj.weight.zero_()  # attention adds only the bias
    before = _logits(model, idx)
    with ablate(model, {1: [0, 1]}, mode="zero"):
        inside = _logits(model, idx)
    assert torch.equal(inside, _logits(reference, idx))
    assert not torch.allclose(inside, before, atol=1e-4)
    assert torch.equal(_logits(model, idx), before)  # restored after the block
    assert not any(block.attn.hook_z.read for block in model.transformer.h)


def test_mean_ablation_replaces_a_heads_output_by_its_mean_over_positions():
    model = _random_weights(tiny())
    idx = _idx()
    D = model.config.n_embd // model.config.n_head
    reference = copy.deepcopy(model)

    def mean_head_1(module, args):  # c_proj's input [B, T, C]: head 1 is columns D..2D
        y = args[0].clone()
        y[:, :, D:2 * D] = y[:, :, D:2 * D].mean(1, keepdim=True)
        return (y,)

    reference.transformer.h[0].attn.c_proj.register_forward_pre_hook(mean_head_1)
    before = _logits(model, idx)
    with ablate(model, [(0, 1)], mode="mean"):
        inside = _logits(model, idx)
    torch.testing.assert_close(inside, _logits(reference, idx), atol=1e-6, rtol=0)
    assert not torch.allclose(inside, before, atol=1e-4)
    assert torch.equal(_logits(model, idx), before)


def test_ablate_holds_the_models_lock_and_restores_on_error():
    model = tiny()
    taken = []
    with ablate(model, {0: 1}):
        t = threading.Thread(target=lambda: taken.append(model_lock(model).acquire(timeout=0.2)))
        t.start()
        t.join()
    assert taken == [False], "another thread took the lock during ablate(): a step could run"
    with pytest.raises(RuntimeError, match="boom"):
        with ablate(model, {0: [0]}):
            raise RuntimeError("boom")
    assert not any(block.attn.hook_z.read for block in model.transformer.h)


def test_ablate_refuses_bad_heads_modes_and_models():
    model = tiny()
    with pytest.raises(ConfigError, match=r"\(layer=2, head=0\) does not exist.*layers 0\.\.1"):
        with ablate(model, [(2, 0)]):
            pass
    with pytest.raises(ConfigError, match="not a \\(layer, head\\) pair"):
        with ablate(model, [0, 1]):
            pass
    with pytest.raises(ConfigError, match="choose 'zero' or 'mean'"):
        with ablate(model, {0: [0]}, mode="half"):
            pass
    with ablate(model, {0: [0]}):
        with pytest.raises(ConfigError, match="already have heads ablated"):
            with ablate(model, {0: [1]}):
                pass
        assert model.transformer.h[0].attn.hook_z.read  # the outer one still holds
    assert not model.transformer.h[0].attn.hook_z.read


def test_ablation_effect_on_the_loss():
    model = _random_weights(tiny()).train()
    ids = TOK.encode("the lazy dog jumps over the fox")
    result = ablation_effect(model, ids, {0: [0, 1], 1: [0, 1]})
    assert model.training and not any(block.attn.hook_z.read for block in model.transformer.h)
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    with torch.no_grad():
        assert result["loss"] == pytest.approx(float(model.eval()(x, y).loss))
        with ablate(model, {0: [0, 1], 1: [0, 1]}):
            assert result["ablated_loss"] == pytest.approx(float(model(x, y).loss))
    assert result["ablated_loss"] != pytest.approx(result["loss"])
    same = ablation_effect(model, "the lazy dog", {}, tokenizer=TOK)
    assert same["ablated_loss"] == same["loss"]
    with pytest.raises(ConfigError, match="at least 2 tokens"):
        ablation_effect(model, [3], {0: [0]})


# ---- predictions and images -------------------------------------------------------------------


def test_predictions_at_a_position_are_the_engines_distribution_cut_to_k():
    model = tiny()
    ids = TOK.encode("the lazy dog")
    top = predictions_at(model, TOK, ids, position=4, k=5)
    full = next_token_distribution(model, TOK, ids[:5])
    assert top.ids == full.ids[:5] and top.tokens == full.tokens[:5]
    assert top.probs == pytest.approx(full.probs_raw[:5])
    assert top.probs == sorted(top.probs, reverse=True)
    with pytest.raises(ConfigError, match="outside the text's 12 tokens"):
        predictions_at(model, TOK, ids, position=12)


def test_thumbnails_keep_a_thin_diagonal_visible():
    T = 100
    a = attention_of(previous_token_pattern(T), uniform_pattern(T))
    thumbs = head_thumbnails(a, size=32)
    assert thumbs.shape == (1, 2, 32, 32) and thumbs.dtype == torch.uint8
    diagonal = thumbs[0, 0].diagonal()
    assert torch.all(diagonal == 255), "the previous-token diagonal faded when downsampled"
    assert torch.all(thumbs[0, 0].triu(diagonal=2) == 0) and torch.all(thumbs[0, 0].tril(-2) == 0)
    assert head_thumbnails(a.weights[:, :, :8, :8], size=32).shape == (1, 2, 8, 8)  # never upsampled


def test_quantize_is_row_major_uint8():
    a = capture_attention(tiny(), "the fox", TOK)
    data = quantize(a)
    assert isinstance(data, bytes) and len(data) == 2 * 2 * 7 * 7
    back = np.frombuffer(data, dtype=np.uint8).reshape(2, 2, 7, 7)
    assert np.array_equal(back, (a.weights * 255).round().numpy().astype(np.uint8))
    assert back[1, 0, 6, 0] == round(float(a.weights[1, 0, 6, 0]) * 255)


def test_the_old_module_name_still_imports_with_a_deprecation_warning():
    import importlib
    import sys

    sys.modules.pop("lmlab.inspect", None)
    with pytest.warns(DeprecationWarning, match="lmlab.interpret"):
        old = importlib.import_module("lmlab.inspect")
    assert old.capture_attention is capture_attention and old.logit_lens is not None
