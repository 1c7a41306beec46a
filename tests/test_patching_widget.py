"""The activation-patching view without a browser: the grid drawn is the engine's, the swap
helper, errors in the status line, Stop between batches on an event loop, a second Patch
refused, attention-only models, a cell's predictions, the static snapshot."""

import asyncio
import math
import re
import sys

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

import torch  # noqa: E402

import lmlab  # noqa: E402
from lmlab.patching import patch  # noqa: E402
from lmlab.widgets import PatchingView  # noqa: E402
from lmlab.widgets._comm import RecordingComm, recording_comms  # noqa: E402
from lmlab.widgets.patching import TITLES  # noqa: E402

CLEAN, CORRUPTED = "the cat sat", "the hat sat"  # seed 0's model predicts 't' after one, 'u' after the other


@pytest.fixture
def tok():
    return lmlab.CharTokenizer.fit("abcdefghijklmnopqrstuvwxyz .")


def gpt(tok, **config):
    torch.manual_seed(0)
    return lmlab.GPT(lmlab.GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=4, n_embd=32,
                                     block_size=32, **config))


@pytest.fixture
def model(tok):
    return gpt(tok)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes, equal values, nan where the other has nan."""
    return (a.shape == b.shape and torch.equal(a.isnan(), b.isnan())
            and torch.equal(a.nan_to_num(), b.nan_to_num()))


def status(view) -> str:
    return re.sub("<[^>]+>", "", view.status.value)


def test_the_grid_drawn_is_the_engines(model, tok):
    view = PatchingView(model, tok, CLEAN, CORRUPTED)
    assert view.result is None and view.grid.kinds == []  # nothing runs until Patch
    view.patch_button.click()  # no event loop here: it runs to the end
    want = patch(model, CLEAN, CORRUPTED, tok, progress=False)
    assert view.result.complete and list(view.grid.kinds) == ["resid_pre", "heads", "mlps"]
    for kind in want.grids:
        assert same(view.grid.values(kind), want.grids[kind]), kind
    assert (view.grid.answer, view.grid.wrong) == ("t", "u")  # the defaults: each text's prediction
    assert list(view.grid.tokens) == want.clean_tokens and view.grid.position == len(CLEAN) - 1
    assert "clean" in view.caption.value and f"{want.clean_metric:.3f}" in view.caption.value
    assert view.progress.layout.display == "none" and not view.patch_button.disabled
    assert view.stop_button.disabled


def test_explicit_answer_and_wrong_tokens(model, tok):
    view = PatchingView(model, tok, CLEAN, CORRUPTED, answer="a", wrong="␣")  # ␣: a space, as shown
    view.run()
    want = patch(model, CLEAN, CORRUPTED, tok, answer="a", wrong=" ", progress=False)
    assert (view.result.answer_token, view.result.wrong_token) == ("a", "␣")
    assert same(view.grid.values("heads"), want.heads)


def test_the_swap_helper_makes_a_same_length_corrupted_text(model, tok):
    view = PatchingView(model, tok, CLEAN)
    assert [label for label, _ in view.swap_box.options][:2] == ["0: t", "1: h"]
    view.swap_box.value = 4
    view.replacement_box.value = "m"
    view.swap_button.click()
    assert view.corrupted_box.value == "the mat sat"
    view.replacement_box.value = "mm"  # two tokens
    view.swap_button.click()
    assert "2 tokens, not one" in status(view) and view.corrupted_box.value == "the mat sat"
    view.clean_box.value = "a dog"  # the positions follow the clean text
    assert len(view.swap_box.options) == 5
    view.swap_box.value, view.replacement_box.value = 2, "␣"
    view.swap_button.click()
    assert view.corrupted_box.value == "a  og" and status(view) == ""


@pytest.mark.parametrize("corrupted, answer, wrong, words", [
    ("the hat sa", "", "", "the clean text is 11 tokens and the corrupted one 10"),
    (CORRUPTED, "a", "a", "both predict 'a'"),
    (CORRUPTED, "Z", "", "not in the vocabulary: 'Z'"),
])
def test_bad_input_is_shown_and_the_view_still_works(model, tok, corrupted, answer, wrong, words):
    view = PatchingView(model, tok, CLEAN, corrupted, answer=answer or None, wrong=wrong or None)
    view.patch_button.click()
    assert words in status(view) and view.result is None
    assert not view.patch_button.disabled and view.progress.layout.display == "none"
    view.corrupted_box.value, view.answer_box.value, view.wrong_box.value = CORRUPTED, "", ""
    view.patch_button.click()
    assert status(view) == "" and view.result.complete
    assert same(view.grid.values("resid_pre"), patch(model, CLEAN, CORRUPTED, tok, progress=False).resid)


def test_on_an_event_loop_it_runs_in_the_background_and_stops_between_batches(model, tok):
    view = PatchingView(model, tok, CLEAN, CORRUPTED)
    seen = {}

    async def notebook():
        view.patch_button.click()  # returns at once: the batches run on this loop
        seen["at the click"] = view.patcher.done
        assert view.running and view.patch_button.disabled and view.progress.layout.display == ""
        view.patch_button.click()  # a second Patch while one runs
        seen["second"] = status(view)
        while view.patcher.done < 1:
            await asyncio.sleep(0)
        view.stop_button.click()
        await view.wait()

    asyncio.run(notebook())
    assert seen["at the click"] == 0
    assert "a grid is running" in seen["second"] and "press Stop first" in seen["second"]
    total = view.patcher.total
    assert view.patcher.done == 1 < total and not view.result.complete
    drawn = view.grid.values("resid_pre")
    assert view.patcher.jobs[1][:2] == ("resid_pre", 1)  # the first batch was the whole of layer 0
    assert not drawn[0].isnan().any() and drawn[1].isnan().all()
    assert view.grid.values("heads").isnan().all() and view.grid.values("mlps").isnan().all()
    assert f"stopped after 1 of {total} batches" in status(view)
    assert not view.running and not view.patch_button.disabled and view.stop_button.disabled
    view.patch_button.click()  # a fresh grid, to the end
    assert view.result.complete and not view.grid.values("mlps").isnan().any()


def test_an_attention_only_model_has_two_grids(tok):
    model = gpt(tok, attn_only=True)
    view = PatchingView(model, tok, CLEAN, CORRUPTED, answer="a", wrong="b")
    view.run()
    assert list(view.grid.kinds) == ["resid_pre", "heads"]
    want = patch(model, CLEAN, CORRUPTED, tok, answer="a", wrong="b", progress=False)
    assert same(view.grid.values("heads"), want.heads)
    assert view._static_html().count("<table class='lmlab-patching-table'") == 2


def test_select_shows_the_cells_predictions(model, tok):
    view = PatchingView(model, tok, CLEAN, CORRUPTED, k=5)
    with pytest.raises(lmlab.ConfigError, match="press Patch first"):
        view.select("heads", 1, 2)
    view.run()
    want = patch(model, CLEAN, CORRUPTED, tok, k=5, progress=False)
    for kind, layer, index in [("heads", 1, 2), ("resid_pre", 0, 4), ("mlps", 1, 10)]:
        assert view.select(kind, layer, index) == want.predictions(kind, layer, index)
        assert view.selected == (kind, layer, index) and list(view.grid.selected) == [kind, layer, index]
        shown = view.grid.predictions(kind, layer, index)  # what a click draws in the page
        assert [t for t, _ in shown] == [t for t, _ in want.predictions(kind, layer, index)]
        assert all(abs(p - q) < 1e-6 for (_, p), (_, q) in zip(shown, want.predictions(kind, layer, index)))
        assert len(shown) == 5
    with pytest.raises(lmlab.ConfigError, match="outside the heads grid"):
        view.select("heads", 1, 4)
    view.grid.selected = ["resid_pre", 1, 3]  # what a click in the page sends
    assert view.selected == ("resid_pre", 1, 3)


def test_the_static_snapshot_has_the_grids_and_the_metric(model, tok, tmp_path):
    view = PatchingView(model, tok, CLEAN, CORRUPTED)
    assert "No grid yet" in view._snapshot()
    view.run()
    view.select("heads", 1, 2)
    bundle = view._repr_mimebundle_()
    snapshot = bundle["text/html"]
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == view.model_id
    assert "<script" not in snapshot and not re.search(r'(src|href)="http', snapshot)
    assert snapshot.count("<table class='lmlab-patching-table'") == 3
    r = view.result
    for kind in r.grids:
        table = snapshot.split(f">{TITLES[kind]}<")[1]
        cells = re.findall(r"<td style='background-color:rgb[^>]*>([^<]*)</td>", table)
        values = r.grids[kind].flatten().tolist()
        assert cells[:len(values)] == [f"{v:.2f}" for v in values], kind
    assert "<b style='color:#d35400'>c→h</b>" in snapshot  # the changed position, marked
    assert f"clean {r.clean_metric:.3f}" in snapshot and f"corrupted {r.corrupted_metric:.3f}" in snapshot
    assert "<code>t</code>" in snapshot and "<code>u</code>" in snapshot
    for token, p in r.predictions("heads", 1, 2):
        assert f"<code>{token}</code></td><td>{p:.3f}</td>" in snapshot  # probabilities over 0.001 here
    page = view.to_html(tmp_path / "patching.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("lmlab-patching-table") == 3


async def stop_after_first_batch(view) -> None:
    """Patch on a running loop, as in a notebook, and press Stop once one batch has run."""
    view.run()
    while view.patcher.done < 1:
        await asyncio.sleep(0)
    view.stop()
    await view.wait()


def test_a_stopped_grid_shows_grey_cells_in_the_snapshot(model, tok):
    view = PatchingView(model, tok, CLEAN, CORRUPTED)
    asyncio.run(stop_after_first_batch(view))
    snapshot = view._static_html()
    assert "background-color:rgb(200, 200, 200)" in snapshot and "not run" in snapshot
    assert "batches run)" in snapshot


def test_the_grid_travels_as_one_small_buffer(model, tok):
    with recording_comms():  # JSON as the kernel sends it: a nan there would raise
        view = PatchingView(model, tok, CLEAN, CORRUPTED)
        RecordingComm.states.clear()
        asyncio.run(stop_after_first_batch(view))  # a partial grid: nan cells
        view.run()
    sent = [buffers["data"] for _, buffers in RecordingComm.states if "data" in buffers]
    L, T, H, k = 2, len(CLEAN), 4, 10
    assert sent and sent[-1] == 4 * L * (2 * T + H) * (1 + 2 * k)
    assert view.grid.values("mlps").isnan().sum() == 0


def test_colab_gets_the_grid_as_base64(model, tok, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    view = PatchingView(model, tok, CLEAN, CORRUPTED)
    view.run()
    assert view.grid.encoding == "base64" and view.grid.data == b"" and view.grid.data_b64
    assert same(view.grid.values("heads"), view.result.heads)


def test_a_trainers_model_and_tokenizer(tok):
    data = lmlab.TokenDataset("the cat sat on the mat. " * 40, block_size=16)
    model = lmlab.GPT(lmlab.GPTConfig(vocab_size=data.vocab_size, n_layer=2, n_head=2, n_embd=16,
                                      block_size=16))
    trainer = lmlab.Trainer(model, data, lmlab.TrainConfig(max_steps=1, batch_size=2, device="cpu"))
    view = PatchingView(trainer=trainer, clean="the cat", corrupted="the mat", answer="a", wrong="t")
    assert view.model is model and view.tokenizer is data.tokenizer
    view.run()
    assert view.result.complete and not math.isnan(float(view.result.resid[0, 4]))
    with pytest.raises(TypeError, match="PatchingView"):
        PatchingView(clean="x")
