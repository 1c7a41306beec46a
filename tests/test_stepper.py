"""The sampling stepper and what it is built on: the distribution record, generation one
token at a time with undo and branches, beam search and scoring."""

import math
import threading

import pytest
from _needs import need
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from lmlab import GPT, CharTokenizer, ConfigError, GPTConfig, TokenizerError
from lmlab.reading import model_lock
from lmlab.sampling import beam_search, distribution, generate, score
from lmlab.stepper import Stepper

TOK = CharTokenizer.fit("abcdefgh \n")
BLOCK = 16


def tiny(dropout=0.0, vocab=None):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab or TOK.vocab_size, block_size=BLOCK, n_layer=2, n_head=2,
                         n_embd=16, dropout=dropout))


def reference(model, prompt, n, temperature=1.0, top_k=None, top_p=None, seed=0):
    """Sampling without a cache: every token re-reads the last block_size tokens."""
    from lmlab.sampling import filter_probs

    gen, ids = torch.Generator().manual_seed(seed), list(prompt)
    model.eval()
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids[-BLOCK:]])).logits[0, -1]
        ids.append(int(torch.multinomial(filter_probs(logits, temperature, top_k, top_p), 1,
                                         generator=gen)))
    return ids[len(prompt):]


def count_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


# ---- the distribution record --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(logits=st.lists(st.integers(-4, 4), min_size=1, max_size=12),
       temperature=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       top_k=st.one_of(st.none(), st.integers(1, 14)),
       top_p=st.one_of(st.none(), st.floats(0.01, 1.0)))
def test_distribution_properties(logits, temperature, top_k, top_p):
    x = torch.tensor(logits, dtype=torch.float32)
    V = len(logits)
    d = distribution(x, temperature=temperature, top_k=top_k, top_p=top_p)
    kept, removed = d.kept, d.removed
    assert sorted(d.ids) == list(range(V)) and d.tokens == [str(i) for i in d.ids]
    assert set(kept) | set(removed) == set(range(V)) and not set(kept) & set(removed)
    assert set(d.removed_by) == set(removed)
    mass = dict(zip(d.ids, d.probs))
    assert math.isclose(sum(mass[i] for i in kept), 1, abs_tol=1e-5)
    assert all(mass[i] == 0 for i in removed)
    torch.testing.assert_close(torch.tensor(d.probs_raw), x.softmax(-1)[d.ids])
    by_logit = sorted(range(V), key=lambda i: (-logits[i], i))  # most likely first, ties: lower id
    assert kept + removed == d.ids
    assert kept == [i for i in by_logit if i in kept] and removed == [i for i in by_logit if i in removed]
    if temperature == 0:
        assert kept == [by_logit[0]] and set(d.removed_by.values()) <= {"greedy"}
        return
    torch.testing.assert_close(torch.tensor(d.probs_temp), (x / temperature).softmax(-1)[d.ids])
    k = V if top_k is None else min(top_k, V)
    assert [i for i in by_logit if d.removed_by.get(i) != "top_k"] == by_logit[:k]  # exactly k
    assert kept[0] == by_logit[0]  # the most likely token always stays
    # top-p: the smallest prefix (of the top-k tokens, renormalised) whose mass reaches p
    after_k = (x / temperature).masked_fill(torch.ones(V, dtype=torch.bool).index_fill(
        0, torch.tensor(by_logit[:k]), False), float("-inf")).softmax(-1).double()
    assert kept == by_logit[: len(kept)]
    if top_p is None or top_p == 1:
        assert len(kept) == k
    else:
        assert float(after_k[kept].sum()) >= top_p - 1e-5
        assert float(after_k[kept[:-1]].sum()) < top_p + 1e-5


def test_distribution_edge_cases():
    x = torch.log(torch.tensor([0.1, 0.5, 0.15, 0.2, 0.05]))
    assert distribution(x, top_k=99).removed == []  # top_k past the vocabulary: no filter
    assert distribution(x, top_p=1.0).removed == []
    tiny_p = distribution(x, top_p=1e-6)  # only the most likely token stays
    assert tiny_p.kept == [1] and tiny_p.probs[0] == 1
    assert tiny_p.removed_by == {i: "top_p" for i in (3, 2, 0, 4)}
    both = distribution(x, top_k=3, top_p=0.6)  # top-k first, then top-p on what is left
    assert both.kept == [1, 3] and both.removed_by == {2: "top_p", 0: "top_k", 4: "top_k"}
    greedy = distribution(x, TOK, temperature=0)
    assert greedy.kept == [1] and set(greedy.removed_by.values()) == {"greedy"}
    assert greedy.tokens == [TOK.token_text(i) for i in greedy.ids] and greedy.entropy == 0
    ties = distribution(torch.tensor([1.0, 3.0, 3.0, 3.0, 0.0]), top_k=2)  # ties: lower id
    assert ties.kept == [1, 2] and ties.removed_by[3] == "top_k"
    assert math.isclose(ties.entropy, math.log(2), rel_tol=1e-6)
    # logits apart by less than float32 can tell after softmax: top-p keeps the lower id,
    # and the record lists what was kept first
    close = distribution(torch.tensor([0.0, 1e-8]), top_p=0.3)
    assert close.ids == [0, 1] and close.kept == [0] and close.removed_by == {1: "top_p"}
    with pytest.raises(ConfigError, match="1-D tensor"):
        distribution(torch.zeros(2, 5))


def test_ranks_break_ties_by_the_lower_id():
    model = tiny()
    for p in model.parameters():
        torch.nn.init.zeros_(p)  # every logit 0: all tied
    s = Stepper(model, TOK, "ab")
    assert s.step(token=3).rank == 4 and s.step(token=0).rank == 1
    assert s.distribution.ids == list(range(TOK.vocab_size))
    assert score(model, None, [5, 3, 0, 9]).ranks == [4, 1, 10]


# ---- the stepper --------------------------------------------------------------------------


def test_greedy_steps_take_the_argmax_past_the_window():
    model = tiny()
    s = Stepper(model, TOK, "abc", temperature=0)
    s.run(25)  # past block_size=16: the window slides
    ids = TOK.encode("abc")
    for _ in range(25):
        with torch.no_grad():
            ids.append(int(model.eval()(torch.tensor([ids[-BLOCK:]])).logits[0, -1].argmax()))
    assert s.ids == ids and s.text == TOK.decode(ids)
    assert all(step.rank == 1 and step.prob == 1 for step in s.steps)


@pytest.mark.parametrize("kwargs", [dict(), dict(temperature=1.5, top_k=4), dict(top_p=0.8)])
def test_seeded_steps_equal_generate_and_sampling_without_a_cache(kwargs):
    model = tiny()
    prompt = TOK.encode("ab ")
    s = Stepper(model, TOK, prompt, seed=7, **kwargs)
    s.run(30)
    assert s.new_ids == generate(model, prompt, 30, seed=7, **kwargs)
    assert s.new_ids == generate(model, prompt, 30, generator=torch.Generator().manual_seed(7), **kwargs)
    assert s.new_ids == reference(model, prompt, 30, seed=7, **kwargs)
    other = Stepper(model, TOK, prompt, seed=8, **kwargs)
    assert other.run(30) and other.new_ids != s.new_ids


def test_step_records_what_the_model_said():
    model = tiny()
    s = Stepper(model, TOK, "abc", top_k=3)
    d = s.distribution
    step = s.step()
    with torch.no_grad():
        logits = model.eval()(torch.tensor([TOK.encode("abc")])).logits[0, -1]
    raw = logits.softmax(-1)
    assert step.position == 3 and step.id == s.ids[3] and step.text == TOK.token_text(step.id)
    assert step.sampled and step.id in d.kept
    assert step.rank == d.ids.index(step.id) + 1
    assert math.isclose(step.prob_raw, float(raw[step.id]), rel_tol=1e-5)
    assert math.isclose(step.prob, d.probs[d.ids.index(step.id)], rel_tol=1e-5)
    assert math.isclose(step.entropy, d.entropy, rel_tol=1e-5)
    assert math.isclose(step.entropy_raw, float(-(raw * raw.log()).sum()), rel_tol=1e-5)
    forced = s.step(token=d.removed[0])  # a token the filters removed: it had no chance
    assert not forced.sampled and forced.prob == 0 and forced.prob_raw > 0


def test_runner_up_is_the_likeliest_other_token_before_the_filters():
    model = tiny()
    s = Stepper(model, TOK, "abc", seed=2, temperature=0.5, top_k=2)
    s.run(6)
    s.step(token=s.distribution.removed[-1])  # an unlikely token: the runner-up is the likeliest
    for i, step in enumerate(s.steps):
        with torch.no_grad():
            raw = model.eval()(torch.tensor([s.ids[:step.position]])).logits[0, -1].softmax(-1)
        order = sorted(range(TOK.vocab_size), key=lambda t: (-float(raw[t]), t))
        other = next(t for t in order if t != step.id)
        token, text, prob = s.runner_up(i)
        assert (token, text) == (other, TOK.token_text(other))
        assert math.isclose(prob, float(raw[other]), rel_tol=1e-5)
    assert s.runner_up(6)[0] == order[0]


def test_context_of_a_step_is_what_the_model_read_for_it():
    """Within the context, every step shares the whole text (one pass serves them all); past
    it, a step's text is the last block_size tokens before it: either way, the logits at its
    position are the ones the step drew from."""
    model = tiny()
    s = Stepper(model, TOK, "abcd", seed=1)
    s.run(20)  # 24 tokens: past the 16-token window
    for i, step in enumerate(s.steps):
        ids, position = s.context_of(i)
        if step.position <= BLOCK:
            assert ids == s.ids[:BLOCK] and position == step.position - 1
        else:
            assert ids == s.ids[step.position - BLOCK:step.position] and position == BLOCK - 1
        with torch.no_grad():
            raw = model.eval()(torch.tensor([ids])).logits[0, position].softmax(-1)
        assert math.isclose(float(raw[step.id]), step.prob_raw, rel_tol=1e-4)


def test_back_restores_the_exact_state_across_the_window():
    model = tiny()
    s = Stepper(model, TOK, "ab", seed=3, top_p=0.9)
    s.run(10)
    ids, dist, logits = list(s.ids), s.distribution, s.logits.clone()
    ahead = s.run(12)  # 24 tokens: past the window
    assert [s.back() for _ in range(12)] == ahead[::-1]
    assert s.ids == ids and s.distribution == dist and torch.equal(s.logits, logits)
    assert s.run(12) == ahead  # the same generator state: the same draws
    while s.back():
        pass
    assert s.ids == TOK.encode("ab") and s.back() is None and s.steps == []
    assert s.run(22) == s.steps and s.steps[10:] == ahead


def test_set_refilters_without_running_the_model():
    model = tiny()
    s = Stepper(model, TOK, "abc")
    calls = count_forwards(model)
    d = s.set(temperature=0.5, top_k=2)
    assert calls == [] and len(d.kept) == 2 and d is s.distribution
    assert s.set(top_k=None).kept == s.distribution.kept and s.temperature == 0.5  # the rest stays
    assert len(s.distribution.kept) == TOK.vocab_size and calls == []
    with pytest.raises(ConfigError, match="top_p"):
        s.set(temperature=1.0, top_p=0)
    assert s.temperature == 0.5 and s.top_p is None  # a refused setting changes nothing
    s.set(temperature=0)
    assert s.step().rank == 1 and len(calls) == 1


def test_log_prob_and_perplexity_are_the_models_own():
    model = tiny()
    s = Stepper(model, TOK, "abc", seed=1, temperature=0.7, top_k=3)
    assert s.log_prob == 0 and math.isnan(s.perplexity)
    s.run(10)
    scored = score(model, TOK, s.ids)  # unfiltered, temperature 1
    generated = torch.tensor(scored.probs[s.prompt_length - 1:]).double().log()
    assert math.isclose(s.log_prob, float(generated.sum()), rel_tol=1e-5)
    assert math.isclose(s.perplexity, math.exp(-float(generated.mean())), rel_tol=1e-5)


def test_steps_read_through_the_read_path():
    model = tiny(dropout=0.5)
    model.train()
    before = torch.get_rng_state()
    s = Stepper(model, TOK, "abc", seed=2)
    s.run(5)
    s.back()
    assert torch.equal(torch.get_rng_state(), before) and model.training
    twin = Stepper(model, TOK, "abc", seed=2)
    assert twin.run(4) == s.steps  # eval mode: no dropout
    done = threading.Event()
    with model_lock(model):  # a training step in progress holds this lock
        threading.Thread(target=lambda: (s.step(), done.set())).start()
        assert not done.wait(0.3), "step() read the model while a training step held its lock"
    assert done.wait(10)


def test_branches_keep_the_path_left_and_come_back_to_it():
    model = tiny()
    s = Stepper(model, TOK, "ab", seed=4)
    s.run(20)  # past the window
    old, old_dist = list(s.ids), s.distribution
    for _ in range(6):
        s.back()
    assert s.branches == []
    s.step(token=(old[len(s.ids)] + 1) % TOK.vocab_size)  # not the token the path took
    assert len(s.branches) == 1
    branch = s.branches[0]
    assert branch.position == len(old) - 6 and branch.ids == old
    assert branch.text == TOK.decode(old[branch.position:])
    s.run(2)
    new = list(s.ids)
    s.restore_branch(0)
    assert s.ids == old and s.distribution == old_dist
    assert [b.ids for b in s.branches] == [new] and s.branches[0].position == branch.position
    uninterrupted = Stepper(model, TOK, "ab", seed=4)
    uninterrupted.run(25)
    assert s.run(5) == uninterrupted.steps[20:]  # as if it had never left
    assert s.back() and s.back() and s.step() and s.branches[0].ids == new  # same token: no branch
    assert len(s.branches) == 1
    s.reset()
    assert s.branches == [] and s.ids == TOK.encode("ab")


def test_restoring_a_branch_below_the_window_rebuilds_the_cache():
    model = tiny()
    s = Stepper(model, TOK, "a", seed=5)
    s.run(8)
    old = list(s.ids)
    for _ in range(4):
        s.back()
    s.step(token=(old[5] + 1) % TOK.vocab_size)
    s.run(3)
    s.restore_branch(0)
    assert s.ids == old
    assert s.run(10) == Stepper(model, TOK, "a", seed=5).run(18)[8:]


def test_prompts_are_checked():
    model = tiny()
    with pytest.raises(ConfigError, match="the prompt is empty"):
        Stepper(model, TOK, "")
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        Stepper(model, TOK, "xyz")
    with pytest.raises(TokenizerError, match="outside the model's vocabulary"):
        Stepper(model, TOK, [1, 99])
    with pytest.raises(ConfigError, match="temperature"):
        Stepper(model, TOK, "a", temperature=-1)
    with pytest.raises(ConfigError, match="cannot read a str"):
        Stepper("gpt", TOK, "a")
    s = Stepper(model, TOK, "a")
    with pytest.raises(TokenizerError, match="outside"):
        s.step(token=TOK.vocab_size)
    assert s.ids == TOK.encode("a") and s.steps == []
    with pytest.raises(ConfigError, match="no branch 0"):
        s.restore_branch(0)
    long = "abcdefgh" * 3
    s = Stepper(model, TOK, long)
    assert s.ids == TOK.encode(long)[-BLOCK:] and "24 tokens" in s.notice
    assert Stepper(model, TOK, "abc").notice is None


def test_hugging_face_models_step_like_lmlab():
    need("transformers", "pip install -e '.[hf]'")
    from lmlab.bench.peers import hf_twin

    model = tiny()
    twin = hf_twin(model)
    ours, theirs = Stepper(model, TOK, "ab", seed=1), Stepper(twin, TOK, "ab", seed=1)
    assert ours.run(20) and theirs.run(20) and theirs.ids == ours.ids  # past the window
    for _ in range(10):
        theirs.back()
    assert [step.id for step in theirs.run(10)] == ours.new_ids[10:]
    while len(theirs.ids) > 8:  # below the window: the cache is cut back
        theirs.back()
    theirs.run(4)
    with torch.no_grad():
        expected = model.eval()(torch.tensor([theirs.ids])).logits[0, -1]
    torch.testing.assert_close(theirs.logits, expected, atol=1e-5, rtol=1e-5)
    assert generate(twin, [1, 2], 20, seed=3) == generate(model, [1, 2], 20, seed=3)


# ---- beam search and scoring --------------------------------------------------------------


def test_beam_search():
    model = tiny()
    prompt = TOK.encode("ab")
    greedy = generate(model, prompt, 20, temperature=0)
    [(ids, total)] = beam_search(model, "ab", beams=1, length=20, tokenizer=TOK)
    assert ids == greedy  # past the window, too
    found = beam_search(model, prompt, beams=4, length=5)
    assert len(found) == 4 and [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    for ids, total in found:  # each score is the sum of the model's log-probabilities
        probs = score(model, None, prompt + ids).probs[len(prompt) - 1:]
        assert math.isclose(total, sum(math.log(p) for p in probs), rel_tol=1e-4)
    with pytest.raises(ConfigError, match="beams=0"):
        beam_search(model, prompt, beams=0)
    with pytest.raises(ConfigError, match="tokenizer"):
        beam_search(model, "ab")


def test_score_is_the_models_cross_entropy():
    model = tiny()
    text = "abc defgh\nab"
    ids = TOK.encode(text)
    s = score(model, TOK, text)
    with torch.no_grad():
        logits = model.eval()(torch.tensor([ids[:-1]])).logits[0]
    ce = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
    assert math.isclose(s.cross_entropy, float(ce.mean()), rel_tol=1e-5)
    assert math.isclose(s.perplexity, math.exp(float(ce.mean())), rel_tol=1e-5)
    assert math.isclose(s.log_prob, -float(ce.sum()), rel_tol=1e-5)
    torch.testing.assert_close(torch.tensor(s.running_cross_entropy, dtype=torch.float64),
                               ce.double().cumsum(0) / torch.arange(1, len(ce) + 1))
    assert s.running_perplexity[-1] == pytest.approx(s.perplexity)
    ranks = [int((row > row[t]).sum()) + 1 for row, t in zip(logits, ids[1:])]
    assert s.ranks == ranks and s.tokens == TOK.tokens_text(ids)
    assert len(s.alternatives) == len(s.probs)
    for row, alts, rank, prob in zip(logits.softmax(-1), s.alternatives, s.ranks, s.probs):
        top = row.topk(5)
        assert [p for _, p in alts] == pytest.approx(top.values.tolist(), rel=1e-5)
        assert [t for t, _ in alts] == TOK.tokens_text(top.indices.tolist())
        if rank <= 5:  # the text's own token is among them, at its rank
            assert alts[rank - 1][1] == pytest.approx(prob, rel=1e-5)
    assert len(score(model, TOK, "a" * (BLOCK + 1)).probs) == BLOCK
    with pytest.raises(ConfigError, match="at most 17"):
        score(model, TOK, "a" * (BLOCK + 2))
    with pytest.raises(ConfigError, match="at least 2"):
        score(model, TOK, "a")
    with pytest.raises(TokenizerError):
        score(model, TOK, "xyz")


def test_the_stepper_still_imports_from_sampling_with_a_deprecation_warning():
    import lmlab.sampling as sampling

    with pytest.warns(DeprecationWarning, match="lmlab.stepper.Stepper"):
        old = sampling.Stepper
    assert old is Stepper
    with pytest.raises(AttributeError):
        sampling.Nothing  # noqa: B018
