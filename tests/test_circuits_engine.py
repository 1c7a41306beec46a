"""Direct logit attribution, activation patching and a head's QK / OV circuits, on lmlab's
own forward (TransformerLens's numbers: tests/test_interp_parity.py)."""

import math

import pytest
import torch

from _needs import need
from lmlab import GPT, CharTokenizer, ConfigError, GPTConfig, passes
from lmlab.attribution import logit_attribution
from lmlab.circuits import ov_circuit, qk_breakdown
from lmlab.patching import Patcher, patch

TEXT = "abcabcdab"


def model(attn_only=False, seed=0) -> GPT:
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=8, block_size=16, n_layer=2, n_head=4, n_embd=32, attn_only=attn_only)).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.3)
            else:
                p.mul_(6)
    return m


@pytest.fixture
def tok():
    return CharTokenizer("abcdefgh")


# ---- attention-only models -----------------------------------------------------------------


def test_an_attention_only_block_has_no_mlp_and_its_stream_is_attention_alone():
    m = model(attn_only=True)
    names = list(m.hook_dict)
    assert not any("mlp" in n or "resid_mid" in n for n in names)
    idx = torch.tensor([[1, 2, 3]])
    logits, cache = m.run_with_cache(idx)
    for layer in range(2):
        torch.testing.assert_close(cache["resid_post", layer],
                                   cache["resid_pre", layer] + cache["attn_out", layer])
    full = GPT(GPTConfig(vocab_size=8, block_size=16, n_layer=2, n_head=4, n_embd=32))
    assert m.num_params() < full.num_params()


def test_an_attention_only_model_saves_loads_and_refuses_a_hugging_face_export(tmp_path):
    from lmlab import checkpoint
    from lmlab.pretrained import gpt2_config_for, to_hf_state_dict

    m = model(attn_only=True)
    loaded = checkpoint.load(checkpoint.save(tmp_path / "a.safetensors", m)).model
    assert loaded.config.attn_only
    torch.testing.assert_close(loaded(torch.tensor([[1, 2]])).logits, m(torch.tensor([[1, 2]])).logits)
    for export in (lambda: gpt2_config_for(m.config), lambda: to_hf_state_dict(m)):
        with pytest.raises(ConfigError, match="attention-only"):
            export()
    with pytest.raises(ConfigError, match="attn_only"):
        GPTConfig(attn_only="yes")


# ---- direct logit attribution --------------------------------------------------------------


@pytest.mark.parametrize("attn_only", [False, True])
def test_the_parts_sum_to_the_logit_minus_the_final_norms_bias(tok, attn_only):
    m = model(attn_only)
    a = logit_attribution(m, TEXT, position=4, target="c", other="a", tokenizer=tok)
    logits = m(torch.tensor([tok.encode(TEXT)])).logits[0, 4].detach()
    assert a.logit == pytest.approx(float(logits[2] - logits[0]), abs=1e-5)
    assert a.total + a.bias_term == pytest.approx(a.logit, abs=1e-4)
    assert abs(a.bias_term) > 1e-3 and (a.mlps is None) == attn_only
    assert a.heads.shape == (2, 4) and len(a.rows()) == 2 + 2 * (4 + 1 + (0 if attn_only else 1))
    top = a.top(3)
    assert [abs(r["effect"]) for r in top] == sorted((abs(r["effect"]) for r in a.rows()), reverse=True)[:3]
    assert "'c'" in a.question and "'a'" in a.question


def test_one_heads_part_is_what_removing_its_direct_path_takes_away(tok):
    """Zeroing head (1, 2) only at the last block changes nothing upstream, so the logit moves by
    its part (with the frozen norm scale: to first order; exactly once the scale is the same)."""
    m = model()
    ids = tok.encode(TEXT)
    a = logit_attribution(m, ids, position=-1, target=3)
    assert a.position == len(ids) - 1 and a.other is None
    w_o = m.transformer.h[1].attn.c_proj.weight[:, 16:24]  # head 2 of 4, 8 wide
    _, cache = m.run_with_cache(torch.tensor([ids]))
    part = cache["z", 1][0, -1, 2] @ w_o.t()
    final = cache["resid_post", 1][0, -1]
    ln = m.transformer.ln_f
    sigma = torch.sqrt(final.var(unbiased=False) + ln.eps)
    want = ((part - part.mean()) / sigma * ln.weight) @ m.lm_head.weight[3]
    assert a.heads[1, 2] == pytest.approx(float(want), abs=1e-5)


def test_attribution_reads_a_views_kept_pass_without_running_the_model(tok):
    m = model()
    passes.cached_pass(m, TEXT, tok)
    forwards = []
    handle = m.register_forward_hook(lambda *_: forwards.append(1))
    a = logit_attribution(m, TEXT, position=2, tokenizer=tok)
    handle.remove()
    assert forwards == []
    m.transformer.h[0].attn.c_proj.weight.data.mul_(2)
    from lmlab.reading import weights_changed

    weights_changed(m)
    handle = m.register_forward_hook(lambda *_: forwards.append(1))
    b = logit_attribution(m, TEXT, position=2, tokenizer=tok)  # new weights: one forward
    handle.remove()
    assert forwards == [1] and not torch.allclose(a.heads, b.heads)


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(position=9), "outside the text's 9 tokens"),
    (dict(position=True), "position"),
    (dict(target="ab"), "2 tokens, not one"),
    (dict(target=99), "from 0 to 7"),
    (dict(target="a", other="a"), "same token"),
])
def test_bad_attribution_input_is_explained(tok, kwargs, phrase):
    with pytest.raises(ConfigError, match=phrase):
        logit_attribution(model(), TEXT, tokenizer=tok, **kwargs)


def test_a_hugging_face_model_is_refused_in_words():
    transformers = need("transformers", "pip install '.[hf]'")
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=8, n_positions=16, n_embd=16,
                                                              n_layer=1, n_head=2))
    with pytest.raises(ConfigError, match="lmlab's GPT"):
        logit_attribution(hf, [1, 2, 3])
    with pytest.raises(ConfigError, match="lmlab's GPT"):
        patch(hf, [1, 2, 3], [1, 4, 3])


# ---- activation patching ------------------------------------------------------------------


def one_by_one(m, clean, corrupted, answer, wrong):
    """The grids as a loop of single patched forwards through run_with_hooks."""
    def metric(logits):
        return float(logits[0, -1, answer] - logits[0, -1, wrong])

    _, cache = m.run_with_cache(torch.tensor([clean]))
    low, high = (metric(m(torch.tensor([ids])).logits.detach()) for ids in (corrupted, clean))
    T, L, H = len(clean), m.config.n_layer, m.config.n_head
    grids = {"resid_pre": torch.zeros(L, T), "heads": torch.zeros(L, H), "mlps": torch.zeros(L, T)}
    for kind, point, width in (("resid_pre", "hook_resid_pre", T), ("heads", "attn.hook_z", H),
                               ("mlps", "hook_mlp_out", T)):
        for layer in range(L):
            name = f"blocks.{layer}.{point}"
            for i in range(width):
                def put(x, hook, i=i, name=name, kind=kind):
                    x = x.clone()
                    if kind == "heads":
                        x[0, :, i] = cache[name][0, :, i]
                    else:
                        x[0, i] = cache[name][0, i]
                    return x
                got = metric(m.run_with_hooks(torch.tensor([corrupted]), [(name, put)]))
                grids[kind][layer, i] = (got - low) / (high - low)
    return grids


@pytest.mark.parametrize("batch_size", [None, 1, 4])
def test_the_batched_grids_equal_patching_one_cell_at_a_time(tok, batch_size):
    m = model()
    clean, corrupted = tok.encode("abcdabcda"), tok.encode("abcdabgda")
    found = patch(m, clean, corrupted, answer=1, wrong=2, batch_size=batch_size, progress=False)
    want = one_by_one(m, clean, corrupted, 1, 2)
    for kind in ("resid_pre", "heads", "mlps"):  # cells reach 5 (metric / a small clean-corrupted gap): rtol
        torch.testing.assert_close(found.grids[kind], want[kind], atol=1e-4, rtol=1e-4, msg=kind)
    assert found.complete and found.position == 8


def test_each_cell_keeps_its_patched_runs_predictions(tok):
    m = model()
    clean, corrupted = "abcdabcda", "abcdabgda"
    found = patch(m, clean, corrupted, tok, answer="b", wrong="c", k=3, progress=False)
    ids = tok.encode(corrupted)
    _, cache = m.run_with_cache(torch.tensor([tok.encode(clean)]))

    def put(x, hook):
        x = x.clone()
        x[0, 6] = cache["resid_pre", 1][0, 6]
        return x

    probs = torch.softmax(m.run_with_hooks(torch.tensor([ids]), [("blocks.1.hook_resid_pre", put)])[0, -1], -1)
    want = [(tok.decode([int(i)]), float(p)) for p, i in zip(*probs.topk(3))]
    got = found.predictions("resid_pre", 1, 6)
    assert [t for t, _ in got] == [t for t, _ in want]
    assert [p for _, p in got] == pytest.approx([p for _, p in want], abs=1e-5)
    assert found.answer_token == "b" and found.wrong_token == "c"


def test_patching_stops_between_batches_and_leaves_the_rest_unrun(tok):
    m = model()
    calls = []
    found = patch(m, "abcdabcda", "abcdabgda", tok, answer="b", wrong="c", progress=False,
                  stop=lambda: calls.append(1) or True)
    assert not found.complete and len(calls) == 1
    patcher = Patcher(m, "abcdabcda", "abcdabgda", tok, answer="b", wrong="c")
    assert patcher.batch_size == 3  # a quarter of the 9 positions, rounded up
    # layer 0's one batch: the stream entering it is the embeddings, which differ at the 'g' (position 6) alone
    kind, layer, rows, known = patcher.jobs[0]
    assert (kind, layer, rows.tolist(), known.tolist()) == ("resid_pre", 0, [6], [0, 1, 2, 3, 4, 5, 7, 8])
    assert not found.resid[0].isnan().any() and (found.resid[0, :6] == 0).all()
    assert found.resid[1].isnan().all()
    assert found.heads.isnan().all() and found.predictions("heads", 0, 0) == []


def test_cells_the_texts_share_are_known_without_a_run(tok):
    """Positions before the first token the texts differ in hold the same activations in both
    runs, so patching them restores nothing: they are filled, not run, and match a run of them."""
    m = model()
    clean, corrupted = tok.encode("abcdabcdab"), tok.encode("abcdabcgab")  # they differ at position 7
    patcher = Patcher(m, clean, corrupted, answer=1, wrong=2, batch_size=2)
    run = {(kind, at): sorted(c for k, layer, rows, _ in patcher.jobs if (k, layer) == (kind, at)
                              for c in rows.tolist())
           for kind in ("resid_pre", "mlps") for at in (0, 1)}
    assert run == {("resid_pre", 0): [7], ("resid_pre", 1): [7, 8, 9],
                   ("mlps", 0): [7, 8, 9], ("mlps", 1): [7, 8, 9]}
    assert len(patcher.jobs) == (1 + 2 + 2) + (2 + 2 + 2)  # batches (of 2) of positions, of 4 heads, of MLPs
    found = patcher.run(progress=False)
    want = one_by_one(m, clean, corrupted, 1, 2)
    for kind in ("resid_pre", "mlps"):
        assert (found.grids[kind][:, :7] == 0).all()
        torch.testing.assert_close(found.grids[kind], want[kind], atol=1e-4, rtol=1e-4, msg=kind)
    assert found.predictions("resid_pre", 1, 0) == found.predictions("mlps", 0, 3)  # both the corrupted run


def test_a_training_step_between_batches_is_caught(tok):
    from lmlab.reading import weights_changed

    m = model()
    patcher = Patcher(m, "abcdabcda", "abcdabgda", tok, answer="b", wrong="c")
    patcher.run_batch()
    weights_changed(m)
    with pytest.raises(ConfigError, match="weights changed"):
        patcher.run_batch()


def test_an_attention_only_model_has_two_grids(tok):
    m = model(attn_only=True)
    found = patch(m, "abcdabcda", "abcdabgda", tok, answer="b", wrong="c", progress=False)
    assert sorted(found.grids) == ["heads", "resid_pre"] and found.complete
    with pytest.raises(ConfigError, match="no MLPs"):
        patch(m, "abcdabcda", "abcdabgda", tok, answer="b", wrong="c", kinds="mlps")


@pytest.mark.parametrize("args, kwargs, phrase", [
    (("abcd", "abc"), {}, "same length"),
    (("abcd", "abcd"), {}, "both predict"),
    (("abcd", "abce"), dict(answer="a", wrong="a"), "both predict"),
    (("abcd", "abce"), dict(kinds=("attn",)), "choose from"),
    (("abcd", "abce"), dict(position=4), "outside the texts' 4 tokens"),
    (("abcd", "abce"), dict(k=0), "k=0"),
    (("abcd", "abce"), dict(batch_size=0), "batch_size=0"),
    (("abcd", "abce"), dict(answer="ab"), "2 tokens"),
    (("abcd", "abce"), dict(answer=True), "token id"),
])
def test_bad_patching_input_is_explained(tok, args, kwargs, phrase):
    with pytest.raises(ConfigError, match=phrase):
        patch(model(), *args, tok, progress=False, **kwargs)


# ---- QK and OV -----------------------------------------------------------------------------


@pytest.mark.parametrize("attn_only", [False, True])
def test_the_qk_shares_sum_to_the_heads_score_and_its_softmax_is_the_pattern(tok, attn_only):
    m = model(attn_only)
    ids = tok.encode(TEXT)
    _, cache = m.run_with_cache(torch.tensor([ids]))
    query = 7
    scores = torch.tensor([qk_breakdown(m, ids, 1, 3, query, key).matrix.sum() for key in range(query + 1)])
    torch.testing.assert_close(torch.softmax(scores, 0), cache["pattern", 1][0, 3, query, :query + 1],
                               atol=1e-5, rtol=0)
    b = qk_breakdown(m, TEXT, 1, 3, query, 2, tok)
    assert b.score == pytest.approx(float(b.matrix.sum()), abs=1e-4)
    assert b.labels[:2] == ["embed", "pos_embed"] and b.labels[-1] == "bias" and "L0H1" in b.labels
    assert b.by_query.sum() == pytest.approx(b.score, abs=1e-4) and len(b.top(4)) == 4


def test_a_copying_heads_ov_circuit_copies():
    """A head whose values pass the embedding straight through (W_V W_O = identity, norms left
    as they are) writes each token's own unembedding: its OV circuit copies every token."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=1, n_embd=16, attn_only=True, bias=False))
    with torch.no_grad():
        m.transformer.wte.weight.copy_(torch.eye(8, 16) * 4 - torch.eye(8, 16).mean(1, keepdim=True) * 0)
        attn = m.transformer.h[0].attn
        attn.c_attn.weight[32:48] = torch.eye(16)
        attn.c_proj.weight.copy_(torch.eye(16))
    ov = ov_circuit(m, 0, 0, k=2)
    assert ov.copying == 1.0 and ov.top_ids[:, 0].tolist() == list(range(8))
    with torch.no_grad():
        attn.c_proj.weight.copy_(torch.roll(torch.eye(16), 1, 0))  # now it writes the next token
    assert ov_circuit(m, 0, 0, k=2).copying == 0.0


def test_bad_circuit_input_is_explained(tok):
    m = model()
    for call, phrase in ((lambda: qk_breakdown(m, TEXT, 2, 0, 3, 1, tok), "layer=2"),
                         (lambda: qk_breakdown(m, TEXT, 0, 4, 3, 1, tok), "head=4"),
                         (lambda: qk_breakdown(m, TEXT, 0, 0, 3, 5, tok), "only looks back"),
                         (lambda: qk_breakdown(m, TEXT, 0, 0, 9, 1, tok), "query=9"),
                         (lambda: ov_circuit(m, 0, 0, sources=[], tokenizer=tok), "empty"),
                         (lambda: ov_circuit(m, 0, 0, k=0), "k=0")):
        with pytest.raises(ConfigError, match=phrase):
            call()
    big = GPT(GPTConfig(vocab_size=5000, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ConfigError, match="too many"):
        ov_circuit(big, 0, 0)
    assert math.isfinite(ov_circuit(big, 0, 0, sources=[1, 2, 3]).top_logits.sum())


def test_a_metric_read_before_the_end_ignores_later_positions(tok):
    """Positions after the metric's cannot reach it: patching them restores nothing, and each
    earlier cell equals a full patched forward read at that position."""
    m = model()
    clean, corrupted = tok.encode("abcdabcda"), tok.encode("abgdabcda")
    found = patch(m, clean, corrupted, answer=1, wrong=2, position=5, batch_size=2, progress=False)
    assert found.position == 5 and found.complete
    assert found.resid[:, 6:].abs().max() == 0 and found.mlps[:, 6:].abs().max() == 0

    def metric(logits):
        return float(logits[0, 5, 1] - logits[0, 5, 2])

    _, cache = m.run_with_cache(torch.tensor([clean]))
    low, high = (metric(m(torch.tensor([ids])).logits.detach()) for ids in (corrupted, clean))
    for layer, pos in ((0, 2), (1, 4), (1, 2)):
        def put(x, hook, pos=pos, layer=layer):
            x = x.clone()
            x[0, pos] = cache["resid_pre", layer][0, pos]
            return x
        got = metric(m.run_with_hooks(torch.tensor([corrupted]), [(f"blocks.{layer}.hook_resid_pre", put)]))
        assert float(found.resid[layer, pos]) == pytest.approx((got - low) / (high - low), abs=1e-4)


def test_running_the_batches_one_by_one_completes_the_grid(tok):
    m = model()
    patcher = Patcher(m, "abcdabcda", "abcdabgda", tok, answer="b", wrong="c")
    while patcher.done < patcher.total:
        assert not patcher.result.complete
        patcher.run_batch()
    assert patcher.result.complete
