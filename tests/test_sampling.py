import pytest
import torch

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
