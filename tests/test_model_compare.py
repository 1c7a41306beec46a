"""The model comparison without a browser: next-token bars, losses, head summaries and
the divergence line from the engine; choosing a position; editing recomputes; bad
input explained; the shared tokenizer enforced; Hugging Face GPT-2; following trainers."""

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmlab import GPT, GPTConfig, TokenDataset  # noqa: E402
from lmlab.errors import ConfigError  # noqa: E402
from lmlab.interpret import capture_attention, head_summary, induction_scores  # noqa: E402
from lmlab.sampling import next_token_distribution, score  # noqa: E402
from lmlab.train import TrainConfig, Trainer  # noqa: E402
from lmlab.widgets import ModelComparison  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 200


@pytest.fixture
def other(data):
    """A second tiny GPT for `data`, other weights."""
    torch.manual_seed(1)
    return GPT(GPTConfig(vocab_size=data.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16))


def probs(model, tok, ids) -> np.ndarray:
    d = next_token_distribution(model, tok, ids)
    out = np.zeros(tok.vocab_size)
    out[d.ids] = d.probs_raw
    return out


def test_state_is_the_engines_reading(model, other, data):
    tok, text = data.tokenizer, "the quick brown fox"
    w = ModelComparison({"pretrained": model, "fine-tuned": other}, tok, text, k=5)
    ids = tok.encode(text)
    assert w.ids == ids and w.position == len(ids) - 1 == w.picker.selected
    for name, m in (("pretrained", model), ("fine-tuned", other)):
        assert w.scores[name].cross_entropy == pytest.approx(score(m, tok, text).cross_entropy)
        expected = head_summary(capture_attention(m, ids, tok), induction=induction_scores(m))
        assert len(w.summaries[name]) == len(expected) == 4
        for row, want in zip(w.summaries[name], expected):
            assert row == pytest.approx(want)
        d = next_token_distribution(m, tok, ids)
        assert w.distributions[name].ids[:5] == d.ids[:5]
        assert w.distributions[name].probs_raw == pytest.approx(d.probs_raw)
        header = w.panels[name]["header"].value
        assert f"loss on this text <b>{w.scores[name].cross_entropy:.3f}</b>" in header
        bars = w.panels[name]["bars"].value
        assert bars.count("lmlab-compare-bar'") == 5
        assert f"<code>{d.tokens[0]}</code>" in bars and f"{d.probs_raw[0]:.3f}" in bars
        heads = w.panels[name]["heads"].value
        assert heads.count("data-metric=") == 3 and heads.count("<td") == 3 * 2 * 2
        assert f"{expected[0]['previous_token']:.2f}" in heads
    p, q = probs(model, tok, ids), probs(other, tok, ids)
    tv = 0.5 * np.abs(p - q).sum()
    kl = float((p * np.log(p / q)).sum())
    assert w.divergences["fine-tuned"]["tv"] == pytest.approx(tv, rel=1e-5)
    assert w.divergences["fine-tuned"]["kl"] == pytest.approx(kl, rel=1e-4)
    assert f"total variation <b>{tv:.3f}</b>" in w.line.value
    assert f"KL(pretrained‖fine-tuned) <b>{kl:.3f}</b> nats" in w.line.value


def test_choosing_a_position_compares_the_next_token_there(model, other, data):
    tok = data.tokenizer
    w = ModelComparison([model, other], tok, "the quick brown fox")
    assert list(w.panels) == ["model 1", "model 2"]
    ids = tok.encode("the quick brown fox")
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    w.picker.selected = 3  # a click on the 4th token
    assert w.position == 3 and w.position_slider.value == 3
    assert calls == []  # read from each model's kept pass: no model runs
    assert w.distributions["model 1"].probs_raw == pytest.approx(
        next_token_distribution(model, tok, ids[:4]).probs_raw)
    tv = 0.5 * np.abs(probs(model, tok, ids[:4]) - probs(other, tok, ids[:4])).sum()
    assert w.divergences["model 2"]["tv"] == pytest.approx(tv, rel=1e-5)
    assert "after position 3 (<code>␣</code>; the text goes on with <code>q</code>)" in w.line.value
    assert "the text's next token <code>q</code>" in w.panels["model 1"]["bars"].value
    w.position_slider.value = 6
    assert w.picker.selected == 6 and w.position == 6
    w.select(1)
    assert w.picker.selected == 1 and "after position 1" in w.line.value
    with pytest.raises(ConfigError, match="outside the text's 19 tokens"):
        w.select(19)


def test_editing_the_text_recomputes_and_the_position_follows_the_end(model, other, data):
    tok = data.tokenizer
    w = ModelComparison({"a": model, "b": other}, tok, "the dog")
    w.text_box.value = "a quick brown fox"
    assert w.position == 16 and w.position_slider.max == 16
    assert w.scores["b"].cross_entropy == pytest.approx(score(other, tok, "a quick brown fox").cross_entropy)
    w.select(4)
    w.text_box.value = "a lazy brown dog"  # a chosen position is kept
    assert w.position == 4 and w.ids == tok.encode("a lazy brown dog")
    assert w.distributions["a"].probs_raw == pytest.approx(
        next_token_distribution(model, tok, tok.encode("a lazy brown dog")[:5]).probs_raw)


@pytest.mark.parametrize("text, fragment, kind", [("", "empty", "error"), ("the €", "€", "error"),
                                                  ("t", "at least two tokens", "notice")])
def test_bad_text_is_explained_and_the_last_view_stays(model, other, data, text, fragment, kind):
    w = ModelComparison({"a": model, "b": other}, data.tokenizer, "the dog")
    before = (w.line.value, w.panels["a"]["bars"].value, w.ids, w.scores)
    w.text_box.value = text
    assert fragment in w.status.value and f"lmlab-{kind}" in w.status.value
    assert (w.line.value, w.panels["a"]["bars"].value, w.ids, w.scores) == before
    w.text_box.value = "the fox"
    assert w.status.value == "" and len(w.ids) == 7


def test_a_long_text_is_read_over_its_last_tokens(model, other, data):
    tok = data.tokenizer
    text = "the lazy dog " * 10
    w = ModelComparison({"a": model, "b": other}, tok, text)
    assert "130 tokens long" in w.status.value and "last 32" in w.status.value
    assert w.ids == tok.encode(text)[-32:] and w.position == 31


def test_the_models_must_share_the_tokenizer(model, other, data):
    tok = data.tokenizer
    wider = GPT(GPTConfig(vocab_size=tok.vocab_size + 3, block_size=32, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ConfigError, match=r"tokenizer: it has 29 tokens, but 'wide' has 32"):
        ModelComparison({"a": model, "wide": wider}, tok, "the dog")
    with pytest.raises(ConfigError, match="at least two"):
        ModelComparison({"a": model}, tok, "the dog")
    with pytest.raises(ConfigError, match="k=0"):
        ModelComparison([model, other], tok, "the dog", k=0)
    small = TokenDataset("abc" * 50, block_size=8).tokenizer
    with pytest.raises(ConfigError, match="it has 3 tokens, but 'model 1' has 29, 'model 2' has 29"):
        ModelComparison([model, other], small, "abc")


def test_the_snapshot_holds_the_comparison(model, other, data):
    w = ModelComparison({"pretrained": model, "fine-tuned": other}, data.tokenizer, "the lazy dog")
    w.select(2)
    snap = w._snapshot()
    assert "data-selected='2'" in snap and w.line.value in snap
    for name in ("pretrained", "fine-tuned"):
        assert w.panels[name]["bars"].value in snap and w.panels[name]["heads"].value in snap
        assert f"<b>{w.scores[name].cross_entropy:.3f}</b>" in snap
    w.close()
    assert w.line.value in w._snapshot()


def test_hugging_face_models(model, data):
    transformers = need("transformers", "pip install -e '.[hf]'")
    from lmlab.bench.peers import hf_twin

    tok = data.tokenizer
    w = ModelComparison({"lmlab": model, "transformers": hf_twin(model)}, tok, "the lazy dog")
    assert w.status.value == ""
    assert w.divergences["transformers"]["tv"] == pytest.approx(0, abs=1e-4)  # the same weights
    assert w.scores["transformers"].cross_entropy == pytest.approx(w.scores["lmlab"].cross_entropy, rel=1e-4)
    assert [r["entropy"] for r in w.summaries["transformers"]] == pytest.approx(
        [r["entropy"] for r in w.summaries["lmlab"]], abs=1e-4)

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32,
                                     vocab_size=tok.vocab_size, bos_token_id=None, eos_token_id=None)
    gpt2 = transformers.GPT2LMHeadModel(config).eval()
    w = ModelComparison({"ours": model, "gpt2": gpt2}, tok, "the lazy dog")
    assert w.status.value == "" and len(w.summaries["gpt2"]) == 4
    assert w.scores["gpt2"].cross_entropy == pytest.approx(score(gpt2, tok, "the lazy dog").cross_entropy)
    w.select(3)
    assert w.distributions["gpt2"].probs_raw == pytest.approx(
        next_token_distribution(gpt2, tok, tok.encode("the lazy dog")[:4]).probs_raw)


def test_following_two_trainers(model, other, data):
    config = TrainConfig(batch_size=8, max_steps=30, learning_rate=1e-2, eval_interval=30, device="cpu")
    a, b = Trainer(model, data, config), Trainer(other, data, config)
    w = ModelComparison(trainers={"a": a, "b": b}, text="the quick brown fox", every=15)
    first = w.scores["a"].cross_entropy
    a.run()
    assert w.scores["a"].cross_entropy < first - 0.2
    expected = score(model, data.tokenizer, "the quick brown fox")
    assert w.scores["a"].cross_entropy == pytest.approx(expected.cross_entropy)
    assert "step 30" in w.panels["a"]["header"].value and "step 30" not in w.panels["b"]["header"].value
    b.run()
    assert "step 30" in w.panels["b"]["header"].value
    w.close()
    assert not w._subscriptions


def test_a_comparison_started_on_bad_text_says_why_and_recovers(model, other, data):
    w = ModelComparison([model, other], data.tokenizer, "the €")
    assert w.ids == [] and "€" in w.status.value and "lmlab-error" in w._snapshot()
    w.text_box.value = "the dog"
    assert w.status.value == "" and w.position == 6 and "after position 6" in w.line.value


def test_trainers_with_another_tokenizer_of_the_same_size_are_refused(model, other, data):
    from lmlab import CharTokenizer

    config = TrainConfig(batch_size=8, max_steps=5, device="cpu")
    shuffled = CharTokenizer(list(reversed(data.tokenizer.chars)))  # same size, other ids
    b = Trainer(other, TokenDataset(TEXT, shuffled, block_size=32), config)
    with pytest.raises(ConfigError, match=r"\['b'\] tokenize with another tokenizer"):
        ModelComparison(trainers={"a": Trainer(model, data, config), "b": b}, text="the fox")
