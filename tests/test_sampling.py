import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab import GPT, CharTokenizer, ConfigError, GPTConfig
from lmlab.sampling import filter_probs, generate, next_token_distribution

LOGITS = torch.log(torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]))


def test_temperature_one_is_softmax_and_zero_is_greedy():
    torch.testing.assert_close(filter_probs(LOGITS), LOGITS.softmax(-1))
    assert filter_probs(LOGITS, temperature=0).tolist() == [1, 0, 0, 0, 0]
    hot = filter_probs(LOGITS, temperature=2.0)
    assert hot[0] < 0.5 and hot[-1] > 0.05  # flatter


def test_top_k_and_top_p_remove_the_tail():
    k2 = filter_probs(LOGITS, top_k=2)
    torch.testing.assert_close(k2, torch.tensor([5 / 7, 2 / 7, 0, 0, 0]))
    p = filter_probs(LOGITS, top_p=0.75)  # 0.5 + 0.2 < 0.75: the third token is still needed
    torch.testing.assert_close(p, torch.tensor([0.5, 0.2, 0.15, 0, 0]) / 0.85)
    shuffled = LOGITS[[3, 0, 4, 2, 1]]
    torch.testing.assert_close(filter_probs(shuffled, top_p=0.75), p[[3, 0, 4, 2, 1]])


@pytest.mark.parametrize("kwargs", [dict(temperature=-1), dict(top_k=0), dict(top_p=0.0),
                                    dict(top_p=1.5)])
def test_bad_settings_are_explained(kwargs):
    with pytest.raises(ConfigError):
        filter_probs(LOGITS, **kwargs)


def test_distribution_exchange_format():
    tok = CharTokenizer.fit("ab c\n")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    d = next_token_distribution(model, tok, tok.encode("ab"), top_k=2)
    assert sorted(d.ids) == list(range(tok.vocab_size))
    assert len(d.removed) == tok.vocab_size - 2
    assert abs(sum(d.probs) - 1) < 1e-6 and abs(sum(d.probs_raw) - 1) < 1e-6
    assert d.tokens == [tok.token_text(i) for i in d.ids]


def test_generate_matches_uncached_greedy_decoding_past_the_window():
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
    model = GPT(config).eval()
    prompt = [1, 2, 3]
    got = generate(model, prompt, 20, temperature=0)
    ids = list(prompt)
    for _ in range(20):  # the reference: full forward on the last block_size tokens
        with torch.no_grad():
            logits = model(torch.tensor([ids[-8:]])).logits[0, -1]
        ids.append(int(logits.argmax()))
    assert got == ids[3:]


def test_generate_is_reproducible_with_a_generator():
    model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=1, n_embd=8))
    a = generate(model, [0], 30, generator=torch.Generator().manual_seed(5))
    b = generate(model, [0], 30, generator=torch.Generator().manual_seed(5))
    assert a == b and len(a) == 30
    assert model.training  # restored


def test_a_chunk_longer_than_the_room_left_in_the_cache_is_refused():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)).eval()
    cache = model.new_cache()
    model(torch.tensor([[1, 2, 3, 4, 5]]), cache=cache)
    with pytest.raises(ConfigError, match="6 new tokens do not fit after the 5 cached positions"):
        model(torch.tensor([[1, 2, 3, 4, 5, 6]]), cache=cache)
    assert cache.length == 5  # nothing was stored
    fresh = model.new_cache()  # an empty cache keeps the last block_size tokens, as without one
    out = model(torch.arange(10).view(1, 10) % 11, cache=fresh)
    assert out.logits.shape[1] == 8 and fresh.length == 8


def test_top_k_keeps_exactly_k_and_breaks_ties_by_token_id():
    probs = filter_probs(torch.zeros(6), top_k=2)
    assert probs.tolist() == [0.5, 0.5, 0, 0, 0, 0]
    probs = filter_probs(torch.tensor([1.0, 3.0, 3.0, 3.0, 0.0]), top_k=2)
    assert (probs > 0).tolist() == [False, True, True, False, False]


@settings(max_examples=200, deadline=None)
@given(logits=st.lists(st.integers(-4, 4), min_size=1, max_size=12),
       temperature=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       top_k=st.one_of(st.none(), st.integers(1, 14)),
       top_p=st.one_of(st.none(), st.floats(0.01, 1.0)))
def test_filter_properties(logits, temperature, top_k, top_p):
    x = torch.tensor(logits, dtype=torch.float32)
    probs = filter_probs(x, temperature, top_k, top_p)
    assert torch.isclose(probs.sum(), torch.tensor(1.0), atol=1e-5)
    assert (probs >= 0).all()
    kept = int((probs > 0).sum())
    if temperature == 0:
        assert kept == 1 and int(probs.argmax()) == int(x.argmax())  # greedy: the argmax
        return
    if top_k is not None:
        assert kept <= top_k
    if top_p is None and top_k is not None:
        assert kept == min(top_k, len(logits))
    assert probs[int(x.argmax())] > 0  # the most likely token always survives
    if top_p is not None and top_k is None:
        # the kept set is the smallest prefix (by probability) whose mass reaches top_p
        full = torch.softmax(x / temperature, -1)
        kept_mass = full[probs > 0].sum()
        assert kept_mass >= top_p - 1e-5 or kept == len(logits)


def test_divergence_between_two_next_token_distributions():
    from lmlab.sampling import divergence

    d = divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]))
    assert d["tv"] == pytest.approx(0.5) and d["kl"] == pytest.approx(math.log(2))
    assert d["kl_back"] == math.inf  # q gives a token p rules out
    same = divergence(torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.2, 0.3, 0.5]))
    assert same == {"tv": 0.0, "kl": 0.0, "kl_back": 0.0}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40), st.integers(0, 45))
def test_largest_is_a_stable_sorts_head(values, k):
    """Ties at the k-th value go to the lower index, as a stable descending sort has them."""
    from lmlab.sampling import largest

    x = torch.tensor(values, dtype=torch.float32)
    top, ids = largest(x, k)
    ordered = torch.sort(x, descending=True, stable=True)
    assert ids.tolist() == ordered.indices[:k].tolist()
    assert top.tolist() == ordered.values[:k].tolist()
