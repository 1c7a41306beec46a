"""The sampling stepper widget without a browser: Step, chips, bars, sliders (no model
call), a bar click, a chip click, branches, Back/Reset, bad input."""

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

import torch  # noqa: E402

from lmlab import GPT, ConfigError, GPTConfig, Stepper, TokenDataset  # noqa: E402
from lmlab.widgets import SamplingStepper  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 200


@pytest.fixture
def tok():
    return TokenDataset(TEXT, block_size=32).tokenizer


@pytest.fixture
def model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16))


def counting(model):
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_step_adds_a_chip_tinted_by_its_probability(model, tok):
    w = SamplingStepper(model, tok, "the ", seed=3)
    assert [c["prob"] for c in w.chips.chips] == [None] * 4
    for _ in range(3):
        w.step_button.click()
    reference = Stepper(model, tok, "the ", seed=3)
    steps = reference.run(3)
    chips = w.chips.chips[4:]
    assert [c["text"] for c in chips] == [s.text for s in steps]
    assert [c["prob"] for c in chips] == pytest.approx([s.prob_raw for s in steps])
    assert all(len(c["alternatives"]) == 5 for c in chips)
    assert "3 tokens generated" in w.stats.value


def test_sliders_redraw_the_bars_without_running_the_model(model, tok):
    w = SamplingStepper(model, tok, "the ", candidates=10)
    calls = counting(model)
    before = [r["prob"] for r in w.bars.rows]
    w.temperature.value = 0.3
    assert [r["prob"] for r in w.bars.rows] != before
    w.top_k.value = 3
    assert sum(r["removed_by"] == "top_k" for r in w.bars.rows) == 7
    assert sum(r["prob"] > 0 for r in w.bars.rows) == 3
    w.top_p.value = 0.05
    assert sum(r["prob"] > 0 for r in w.bars.rows) == 1
    assert calls == []


def test_clicking_a_bar_takes_that_token(model, tok):
    w = SamplingStepper(model, tok, "the ")
    pick = w.bars.rows[4]["id"]
    w.bars.picked = {"id": pick, "n": 1}
    assert w.stepper.ids[-1] == pick and w.stepper.steps[-1].sampled is False


def test_clicking_a_chip_rewinds_and_a_new_choice_keeps_a_branch(model, tok):
    w = SamplingStepper(model, tok, "the ", seed=1)
    for _ in range(5):
        w.step()
    old = list(w.stepper.ids)
    w.chips.clicked = {"index": 6, "n": 1}  # back to just before the third generated token
    assert w.stepper.ids == old[:6]
    other = next(r["id"] for r in w.bars.rows if r["id"] != old[6])
    w.bars.picked = {"id": other, "n": 2}
    assert len(w.branch_box.options) == 1 and "1 branch" in w.stats.value
    w.show_branch()
    assert w.stepper.ids == old


def test_back_reset_and_greedy(model, tok):
    w = SamplingStepper(model, tok, "the ")
    w.back_button.click()
    assert "nothing to undo" in w.status.value
    w.greedy_button.click()
    greedy = Stepper(model, tok, "the ", temperature=0).run(len(w.stepper.steps))
    assert w.stepper.new_ids == [s.id for s in greedy]
    assert w.temperature.value == 1.0 and w.stepper.temperature == 1.0  # settings kept
    w.reset_button.click()
    assert w.stepper.steps == [] and len(w.chips.chips) == 4


@pytest.mark.parametrize("prompt, fragment", [("", "empty"), ("€", "€")])
def test_bad_prompts_are_explained_and_the_widget_stays_usable(model, tok, prompt, fragment):
    w = SamplingStepper(model, tok, "the ")
    w.prompt_box.value = prompt
    assert fragment in w.status.value and "lmlab-error" in w.status.value
    w.prompt_box.value = "a fox"
    w.step()
    assert w.status.value == "" and len(w.chips.chips) == 6


def test_a_long_prompt_keeps_its_last_tokens_and_says_so(model, tok):
    w = SamplingStepper(model, tok, "the dog " * 10)
    assert "only its last 32 tokens are kept" in w.status.value
    assert len(w.chips.chips) == 32


def test_two_steppers_are_independent(model, tok):
    a, b = SamplingStepper(model, tok, "the "), SamplingStepper(model, tok, "the ")
    a.step()
    a.temperature.value = 0.5
    assert b.stepper.steps == [] and b.stepper.temperature == 1.0


def test_the_stepper_drives_a_hugging_face_model(model, tok):
    need("transformers", "pip install -e '.[hf]'")
    from lmlab.bench.peers import hf_twin

    ours = SamplingStepper(model, tok, "the ", seed=2)
    theirs = SamplingStepper(hf_twin(model), tok, "the ", seed=2)
    for w in (ours, theirs):
        for _ in range(4):
            w.step_button.click()
        w.temperature.value = 0.5
    assert theirs.stepper.ids == ours.stepper.ids and theirs.status.value == ""
    assert [c["prob"] for c in theirs.chips.chips[4:]] == pytest.approx(
        [c["prob"] for c in ours.chips.chips[4:]], rel=1e-4)
    assert [r["id"] for r in theirs.bars.rows] == [r["id"] for r in ours.bars.rows]


def test_out_of_range_settings_typed_into_the_boxes_are_held_to_their_range(model, tok):
    w = SamplingStepper(model, tok, "the ")
    w.top_k.value = 10**6  # typed into the slider's box: held to the vocabulary
    assert w.top_k.value == tok.vocab_size and w.stepper.top_k == tok.vocab_size
    w.top_p.value = 0.0
    assert w.top_p.value == 0.05 and w.stepper.top_p == 0.05
    w.temperature.value = -3
    assert w.temperature.value == 0 and w.stepper.temperature == 0
    w.step()
    assert w.status.value == "" and len(w.chips.chips) == 5


@pytest.mark.parametrize("settings", [{}, {"top_k": 4}, {"top_p": 0.3}, {"temperature": 0}])
def test_the_bars_are_the_likeliest_tokens_of_the_whole_distribution(model, tok, settings):
    """The bars read only the head of each part (kept, removed) of the distribution: the
    same rows as sorting every token by the model's probability, ties to the lower id."""
    w = SamplingStepper(model, tok, "the ", candidates=8, **settings)
    d = w.stepper.distribution
    raw = dict(zip(d.ids, d.probs_raw))
    expected = sorted(d.ids, key=lambda i: (-raw[i], i))[:8]
    assert [r["id"] for r in w.bars.rows] == expected
    assert [r["raw"] for r in w.bars.rows] == [raw[i] for i in expected]
    assert [r["removed_by"] for r in w.bars.rows] == [d.removed_by.get(i) for i in expected]


def test_a_chips_alternatives_are_worked_out_once(model, tok, monkeypatch):
    w = SamplingStepper(model, tok, "the ", seed=3)
    w.step()
    import lmlab.stepper as stepper

    calls = []
    real = stepper.largest
    monkeypatch.setattr(stepper, "largest", lambda *a: calls.append(1) or real(*a))
    first = w.chips.chips[-1]["alternatives"]
    w.step()
    w.step()
    assert len(calls) == 2  # one for each new chip, none for the chips drawn before
    assert w.chips.chips[4]["alternatives"] == first


def test_the_stepper_owns_its_settings_and_the_sliders_mirror_them(model, tok):
    """A setting changed on the stepper in a cell shows on its slider and survives a move of
    another slider (the sliders were re-applied all together before, undoing it); Greedy
    changes no setting, so nothing is saved and put back behind the sliders."""
    w = SamplingStepper(model, tok, "the ", seed=3, temperature=0.8)
    changes = []
    w.stepper.on_settings(lambda s: changes.append((s.temperature, s.top_k, s.top_p)))
    w.stepper.set(temperature=0.3)
    assert w.temperature.value == 0.3
    w.top_k.value = 5  # another slider: the cell's temperature stays
    assert (w.stepper.temperature, w.stepper.top_k) == (0.3, 5)
    assert changes == [(0.3, None, None), (0.3, 5, None)]
    w.greedy_button.click()
    assert changes == [(0.3, None, None), (0.3, 5, None)]  # no setting touched
    assert w.stepper.new_ids == [s.id for s in Stepper(model, tok, "the ", temperature=0).run(
        len(w.stepper.steps))]
    w.top_p.value = 0.5
    w.top_p.value = 1.0  # 1: off
    assert changes[-2:] == [(0.3, 5, 0.5), (0.3, 5, None)]
    w.stepper.set(temperature=3.0, top_p=0.01)  # outside the sliders' ranges: they widen
    assert (w.temperature.value, w.top_p.value) == (3.0, 0.01)
    assert (w.stepper.temperature, w.stepper.top_p) == (3.0, 0.01)
    greedy = w.stepper.steps[-1]
    assert greedy.sampled and greedy.prob == 1.0  # a greedy step, not a token chosen by hand
    w.close()
    w.stepper.set(temperature=0.5)
    assert w.temperature.value == 3.0  # a closed view no longer follows


# ---- "a click on a token: explain" ---------------------------------------------------------


def stepped(model, tok, steps=5):
    w = SamplingStepper(model, tok, "the ", seed=1)
    for _ in range(steps):
        w.step()
    w.click_action.value = "explain"
    return w


def runner_up(model, ids):
    """The likeliest token after `ids` other than the one the stepper took next, worked out here."""
    with torch.no_grad():
        raw = model.eval()(torch.tensor([ids[:-1]])).logits[0, -1].softmax(-1)
    order = sorted(range(raw.numel()), key=lambda t: (-float(raw[t]), t))
    return next(t for t in order if t != ids[-1]), raw


def test_explaining_a_chip_shows_its_attribution_against_the_runner_up(model, tok):
    from lmlab.attribution import logit_attribution
    from lmlab.widgets.bars_html import attribution_html

    w = stepped(model, tok)
    ids = list(w.stepper.ids)
    assert w.chips.action == "explain" and w.chips.explained == -1 and w.why.value == ""
    w.chips.clicked = {"index": 6, "n": 1}  # the third generated token
    other, raw = runner_up(model, ids[:7])
    expected = logit_attribution(model, ids, 5, ids[6], other, tok)
    assert w.stepper.ids == ids and w.chips.explained == 6 and w.status.value == ""
    assert attribution_html(expected, 10) in w.why.value
    for row in expected.top(10):
        assert f">{row['part']}</span>" in w.why.value and f"{row['effect']:+.3f}" in w.why.value
    title = w.why.value.split("lmlab-why-title")[1].split("</div>")[0]
    assert f">{tok.token_text(ids[6])}</code> ({float(raw[ids[6]]):.3g})" in title
    assert f">{tok.token_text(other)}</code> ({float(raw[other]):.3g})" in title
    found = w.explain(6)  # the same from a cell, returned
    assert (found.position, found.target, found.other) == (5, ids[6], other)
    torch.testing.assert_close(found.heads, expected.heads)
    torch.testing.assert_close(found.mlps, expected.mlps)
    assert found.logit == pytest.approx(expected.logit)
    assert w.chips.chips[6]["runner_up"] == [tok.token_text(other), pytest.approx(float(raw[other]), rel=1e-5)]
    snapshot = w._snapshot()  # the panel and the outlined chip stay in the static snapshot
    assert "lmlab-why" in snapshot and attribution_html(expected, 10) in snapshot
    assert snapshot.count("outline:2px solid") == 1


def test_explains_of_one_text_run_one_pass(model, tok):
    w = stepped(model, tok)
    calls = counting(model)
    for index in (4, 5, 6, 7, 8, 6):
        w.chips.clicked = {"index": index, "n": index}
        assert w.chips.explained == index and f"data-index='{index}'" in w.why.value
    assert len(calls) == 1  # one pass of the text; every explain after it is a projection
    w.step()  # one forward; a token still in the text keeps its panel
    assert len(calls) == 2 and w.chips.explained == 6 and "data-index='6'" in w.why.value
    w.explain(9)  # the first explain of the new text runs its pass, the next none
    w.explain(4)
    assert len(calls) == 3


def test_back_in_rewind_mode_a_click_rewinds_and_clears_the_panel_it_cut(model, tok):
    w = stepped(model, tok)
    old = list(w.stepper.ids)
    w.explain(6)
    w.click_action.value = "rewind"
    assert w.chips.action == "rewind"
    w.chips.clicked = {"index": 8, "n": 1}
    assert w.stepper.ids == old[:8] and w.chips.explained == 6 and "data-index='6'" in w.why.value
    w.chips.clicked = {"index": 6, "n": 2}  # the explained token is gone: so is its panel
    assert w.stepper.ids == old[:6] and w.chips.explained == -1 and w.why.value == ""
    assert "lmlab-why" not in w._snapshot()


@pytest.mark.parametrize("index, words", [(2, "part of the prompt"), (40, "there is no token 40")])
def test_explaining_a_prompt_chip_says_why_not_and_the_view_keeps_working(model, tok, index, words):
    w = stepped(model, tok)
    w.chips.clicked = {"index": index, "n": 1}
    assert words in w.status.value and "lmlab-error" in w.status.value
    assert w.why.value == "" and w.chips.explained == -1 and len(w.stepper.ids) == 9
    with pytest.raises(ConfigError, match=words):
        w.explain(index)
    w.chips.clicked = {"index": 5, "n": 2}
    assert w.status.value == "" and w.chips.explained == 5


def test_a_hugging_face_model_is_refused_in_words_and_the_view_still_steps(model, tok):
    need("transformers", "pip install -e '.[hf]'")
    import transformers

    config = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    torch.manual_seed(0)
    w = stepped(transformers.GPT2LMHeadModel(config).eval(), tok)
    w.chips.clicked = {"index": 5, "n": 1}
    assert "lmlab's GPT, not a GPT2LMHeadModel" in w.status.value and "lmlab.from_pretrained" in w.status.value
    assert w.why.value == "" and w.chips.explained == -1
    w.step_button.click()
    assert w.status.value == "" and len(w.stepper.ids) == 10
