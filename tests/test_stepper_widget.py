"""The sampling stepper widget without a browser: Step, chips, bars, sliders (no model
call), a bar click, a chip click, branches, Back/Reset, bad input."""

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

import torch  # noqa: E402

from lmlab import GPT, GPTConfig, Stepper, TokenDataset  # noqa: E402
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
