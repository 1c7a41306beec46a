"""The token-surprise view without a browser: chips from `score`, editing recomputes,
bad text explained, live with a trainer, Hugging Face models."""

import math

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")


from lmlab import score  # noqa: E402
from lmlab.train import TrainConfig, Trainer  # noqa: E402
from lmlab.widgets import TokenSurprise  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 200



def test_chips_show_the_models_probability_of_each_token(model, data):
    tok = data.tokenizer
    w = TokenSurprise(model, tok, "the lazy fox")
    s = score(model, tok, "the lazy fox")
    chips = w.chips.chips
    assert w.chips.clickable is False
    assert [c["text"] for c in chips] == s.tokens and chips[0]["prob"] is None
    assert [c["prob"] for c in chips[1:]] == pytest.approx(s.probs)
    assert [c["rank"] for c in chips[1:]] == s.ranks
    assert [tuple(a) for a in chips[1]["alternatives"]] == s.alternatives[0]
    assert f"surprise {-math.log(s.probs[0]):.2f} nats" in chips[1]["note"]
    assert f"perplexity {s.perplexity:.2f}" in w.stats.value


def test_editing_the_text_recomputes(model, data):
    w = TokenSurprise(model, data.tokenizer, "the dog")
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    w.text_box.value = "a quick brown fox"
    assert calls and len(w.chips.chips) == len("a quick brown fox")
    assert w.score.perplexity == pytest.approx(score(model, data.tokenizer, "a quick brown fox").perplexity)


@pytest.mark.parametrize("text, fragment, kind", [("", "empty", "error"), ("the €", "€", "error"),
                                                  ("t", "at least two tokens", "notice")])
def test_bad_text_is_explained_and_the_last_view_stays(model, data, text, fragment, kind):
    w = TokenSurprise(model, data.tokenizer, "the dog")
    before = w.chips.chips
    w.text_box.value = text
    assert fragment in w.status.value and f"lmlab-{kind}" in w.status.value
    assert w.chips.chips == before
    w.text_box.value = "the fox"
    assert w.status.value == "" and len(w.chips.chips) == 7


def test_a_long_text_is_scored_over_what_the_model_reads(model, data):
    w = TokenSurprise(model, data.tokenizer, "the dog " * 10)
    assert "80 tokens long" in w.status.value and "first 33" in w.status.value
    assert len(w.chips.chips) == 33


def test_with_a_trainer_the_surprise_falls_as_it_trains(model, data):
    trainer = Trainer(model, data, TrainConfig(batch_size=8, max_steps=60, learning_rate=1e-2,
                                               eval_interval=30, device="cpu"))
    w = TokenSurprise(trainer=trainer, text="the quick brown fox jumps", every=20)
    first = w.score.cross_entropy
    trainer.run()
    assert w.score.cross_entropy < first - 0.5
    expected = score(trainer.model, data.tokenizer, "the quick brown fox jumps")
    assert w.score.probs == pytest.approx(expected.probs, rel=1e-5)  # the last step's weights


def test_a_hugging_face_model(model, data):
    need("transformers", "pip install -e '.[hf]'")
    from lmlab.bench.peers import hf_twin

    ours = TokenSurprise(model, data.tokenizer, "the lazy dog")
    theirs = TokenSurprise(hf_twin(model), data.tokenizer, "the lazy dog")
    assert theirs.status.value == ""
    assert [c["prob"] for c in theirs.chips.chips[1:]] == pytest.approx(
        [c["prob"] for c in ours.chips.chips[1:]], rel=1e-4)
