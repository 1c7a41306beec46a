"""The logit-lens view without a browser: cells from `logit_lens`, the colour toggle,
editing recomputes, bad text explained, long texts capped, the snapshot, a Hugging Face
GPT-2, and following a trainer."""

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

import torch  # noqa: E402

from lmlab.errors import ConfigError  # noqa: E402
from lmlab.interpret import logit_lens  # noqa: E402
from lmlab.train import TrainConfig, Trainer  # noqa: E402
from lmlab.widgets import LogitLensView  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 200


def test_cells_are_the_engines_lens_and_the_toggle_recolours(model, data):
    tok, text = data.tokenizer, "the quick brown fox"
    w = LogitLensView(model, tok, text, k=4)
    lens = logit_lens(model, text, tok, k=4)
    trace = w.figure.data[0]
    T = len(lens.ids)
    assert list(w.figure.layout.yaxis.ticktext) == lens.labels == ["embeddings", "block 0", "block 1"]
    assert list(trace.x) == list(range(T)) and list(w.figure.layout.xaxis.ticktext) == lens.tokens
    assert torch.tensor(trace.z) == pytest.approx(lens.top_probs[..., 0])
    assert [list(row) for row in trace.text] == lens.top_tokens
    hover = trace.customdata[2][5]  # the model's own prediction after position 5
    for i, p in zip(lens.top_ids[2, 5].tolist(), lens.top_probs[2, 5].tolist()):
        assert f"{p:.3f}  {tok.token_text(i)}" in hover
    assert f"next in the text: {lens.tokens[6]} ({lens.next_probs[2, 5]:.3f})" in hover
    assert trace.colorscale[-1][1] == "rgb(8,48,107)"  # Blues

    calls = []
    model.lm_head.register_forward_hook(lambda *_: calls.append(1))
    w.colour_box.value = "true"  # recoloured from the lens already read: no model call
    trace = w.figure.data[0]
    assert calls == []
    assert [row[-1] for row in trace.z] == [None] * 3  # nothing comes after the last token
    assert torch.tensor([row[:-1] for row in trace.z]) == pytest.approx(lens.next_probs)
    assert trace.colorscale[-1][1] == "rgb(0,68,27)" and "true next" in trace.colorbar.title.text


def test_editing_the_text_recomputes(model, data):
    w = LogitLensView(model, data.tokenizer, "the dog")
    calls = []
    model.lm_head.register_forward_hook(lambda *_: calls.append(1))
    w.text_box.value = "a lazy brown fox"
    assert calls and len(w.figure.data[0].x) == len("a lazy brown fox")
    expected = logit_lens(model, "a lazy brown fox", data.tokenizer, k=5)
    assert w.lens.top_ids.tolist() == expected.top_ids.tolist()
    assert w.status.value == ""


@pytest.mark.parametrize("text, fragment", [("", "empty"), ("the €", "€")])
def test_bad_text_is_explained_and_the_last_view_stays(model, data, text, fragment):
    w = LogitLensView(model, data.tokenizer, "the dog")
    before = (w.figure.data[0].z, w.figure.data[0].text, w.lens)
    w.text_box.value = text
    assert fragment in w.status.value and "lmlab-error" in w.status.value
    assert (w.figure.data[0].z, w.figure.data[0].text, w.lens) == before
    w.text_box.value = "the fox"
    assert w.status.value == "" and len(w.figure.data[0].x) == 7


def test_long_texts_show_their_last_columns_with_a_notice(model, data):
    w = LogitLensView(model, data.tokenizer, "the quick brown fox", columns=8)
    assert list(w.figure.data[0].x) == list(range(11, 19))
    assert "showing the last 8 of 19 positions" in w.status.value
    lens = logit_lens(model, "the quick brown fox", data.tokenizer, k=5)
    assert torch.tensor(w.figure.data[0].z) == pytest.approx(lens.top_probs[:, 11:, 0])

    text = "the lazy dog " * 10  # 130 tokens; the model reads 32
    w.text_box.value = text
    assert "130 tokens long" in w.status.value and "reads the last 32" in w.status.value
    expected = logit_lens(model, data.tokenizer.encode(text)[-32:], data.tokenizer, k=5)
    assert w.lens.top_ids.tolist() == expected.top_ids.tolist()
    assert list(w.figure.data[0].x) == list(range(24, 32))


def test_bad_settings_are_refused(model, data):
    for bad in (dict(k=0), dict(k=10_000), dict(columns=0), dict(colour="red")):
        with pytest.raises(ConfigError):
            LogitLensView(model, data.tokenizer, "the dog", **bad)


def test_the_snapshot_is_the_lens_as_a_table(model, data):
    w = LogitLensView(model, data.tokenizer, "the lazy dog", k=3)
    lens = w.lens
    snap = w._snapshot()
    assert "lmlab-lens-table" in snap and "Logit lens on <q>the lazy dog</q>" in snap
    table = snap[snap.index("lmlab-lens-table"):]
    assert table.index(">block 1<") < table.index(">block 0<") < table.index(">embeddings<")  # as drawn
    tip = "; ".join(f"{data.tokenizer.token_text(i)} {p:.3f}"
                    for i, p in zip(lens.top_ids[2, 4].tolist(), lens.top_probs[2, 4].tolist()))
    assert f"title='{tip}'" in snap
    assert snap.count("<td") == 3 * len(lens.ids)
    w.close()
    assert "lmlab-lens-table" in w._snapshot()


def test_a_hugging_face_gpt2(data):
    transformers = need("transformers", "pip install -e '.[hf]'")
    tok = data.tokenizer
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32,
                                     vocab_size=tok.vocab_size, initializer_range=0.2,
                                     bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(config).eval()
    w = LogitLensView(hf, tok, "the quick brown fox", k=3)
    assert w.status.value == ""
    lens = logit_lens(hf, "the quick brown fox", tok, k=3)
    assert list(w.figure.layout.yaxis.ticktext) == ["embeddings", "block 0", "block 1"]
    assert torch.tensor(w.figure.data[0].z) == pytest.approx(lens.top_probs[..., 0])
    assert [list(r) for r in w.figure.data[0].text] == lens.top_tokens
    with torch.no_grad():  # the top row is the model's own prediction
        own = hf(torch.tensor([lens.ids])).logits[0].softmax(-1).max(-1).values
    assert torch.tensor(w.figure.data[0].z[-1]) == pytest.approx(own, abs=1e-5)


def test_with_a_trainer_the_lens_follows_training(model, data):
    trainer = Trainer(model, data, TrainConfig(batch_size=8, max_steps=40, learning_rate=1e-2,
                                               eval_interval=40, device="cpu"))
    w = LogitLensView(trainer=trainer, text="the quick brown fox", every=20)
    first = w.lens.top_probs.clone()
    trainer.run()
    expected = logit_lens(trainer.model, "the quick brown fox", data.tokenizer, k=5)
    assert w.lens.top_probs == pytest.approx(expected.top_probs, abs=1e-6)  # the last step's weights
    assert not torch.allclose(first, w.lens.top_probs)
    assert "step 40" in w.caption.value
    w.close()
    assert not any(s.active for s in w._subscriptions) and not w._subscriptions


def test_a_view_started_on_bad_text_says_why_and_recovers(model, data):
    w = LogitLensView(model, data.tokenizer, "the €")
    assert w.lens is None and "€" in w.status.value
    assert "€" in w._snapshot() and "lmlab-error" in w._snapshot()
    w.text_box.value = "the dog"
    assert w.status.value == "" and len(w.figure.data[0].x) == 7
