"""The timeline view without a browser: the slider moves every linked view to a snapshot,
and a view at snapshot k equals the same view of a model loaded from step k's checkpoint;
live, errors, marks, the heatmap and the static snapshot."""

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

import torch  # noqa: E402

from lmlab import ConfigError, Stepper, Timeline, checkpoint, interpret  # noqa: E402
from lmlab.widgets import (AttentionExplorer, EmbeddingMap, LogitLensView, ModelComparison,  # noqa: E402
                           SamplingStepper, TimelineView, TrainingDashboard)
from test_train import make  # noqa: E402

TEXT = "the lazy dog. th"  # 16 tokens, the context of test_train's model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 30-step run with float32 snapshots every 5 steps, and a checkpoint at step 15."""
    folder = tmp_path_factory.mktemp("timeline")
    trainer = make(max_steps=30, learning_rate=3e-3)
    timeline = Timeline(trainer, every=5, dtype="float32", health=5)
    trainer.on("step", lambda tr, row: tr.step_count == 15 and tr.save(folder / "step15.ckpt"))
    trainer.run(progress=False)
    return trainer, timeline, folder / "step15.ckpt"


def views_of(trainer):
    tok = trainer.dataset.tokenizer
    stepper = SamplingStepper(trainer.model, tok, "the ", seed=1)
    for _ in range(6):
        stepper.step()
    other = make(max_steps=1, seed=5)
    return {
        "dashboard": TrainingDashboard(trainer),
        "explorer": AttentionExplorer(trainer=trainer, text=TEXT),
        "lens": LogitLensView(trainer=trainer, text=TEXT),
        "embeddings": EmbeddingMap(trainer=trainer),
        "stepper": stepper,
        "compare": ModelComparison(trainers={"run": trainer, "other": other}, text=TEXT),
    }


def test_every_linked_view_at_snapshot_k_equals_the_view_of_step_ks_checkpoint(run):
    trainer, timeline, path = run
    views = views_of(trainer)
    view = TimelineView(timeline, list(views.values()))
    view.slider.value = timeline.steps.index(15)  # a move of the slider, as a drag would
    assert view.step == 15 and view.live.value is False
    loaded = checkpoint.load(path).model
    tok = trainer.dataset.tokenizer

    same = {"explorer": AttentionExplorer(loaded, tok, TEXT), "lens": LogitLensView(loaded, tok, TEXT),
            "embeddings": EmbeddingMap(loaded, tok)}  # the same views of the checkpoint's model
    assert torch.equal(views["explorer"].attention.weights, same["explorer"].attention.weights)
    assert views["explorer"].table.rows == same["explorer"].table.rows
    assert views["lens"].lens.ids == same["lens"].lens.ids
    assert torch.equal(views["lens"].lens.top_probs, same["lens"].lens.top_probs)
    assert torch.equal(views["lens"].lens.next_probs, same["lens"].lens.next_probs)
    assert torch.equal(views["embeddings"].projection.coords, same["embeddings"].projection.coords)
    reference = Stepper(loaded, tok, "the ", seed=1)
    for token in views["stepper"].stepper.new_ids:
        reference.step(token)
    assert [s.prob_raw for s in views["stepper"].stepper.steps] == pytest.approx(
        [s.prob_raw for s in reference.steps], rel=1e-5)
    assert torch.allclose(views["stepper"].stepper.logits, reference.logits, atol=1e-5)
    assert views["compare"].models["run"] is timeline.model_at(15)
    assert views["compare"].models["other"] is not trainer.model
    assert [m["x"] for m in views["dashboard"].loss_chart.marks] == [15]
    assert "step 15" in views["explorer"].grid.title

    view.live.value = True  # back to the model as it is now
    assert view.step is None and views["explorer"].model is trainer.model
    assert views["stepper"].stepper.model is trainer.model and views["dashboard"].loss_chart.marks == []
    assert torch.allclose(views["explorer"].attention.weights.float(),
                          interpret.capture_attention(trainer.model, TEXT, tok).weights, atol=1e-3)


def test_the_frame_marks_the_step_on_every_chart_and_the_heatmap(run):
    trainer, timeline, _ = run
    view = TimelineView(timeline, context="the quick brown fo", token="x")
    view.show(12)  # the nearest snapshot
    assert view.step == 10 and view.slider.value == timeline.steps.index(10)
    for chart in (view.loss_chart, view.health_chart, view.probability_chart):
        assert 10 in [m["x"] for m in chart.marks]
        assert chart.x_range == [0.0, 30.0]
    assert 'data-step="10"' in view.heatmap.value and "L1H1" in view.heatmap.value
    assert "step 10</b> of 30" in view.label.value
    steps, p = timeline.probability(trainer.dataset.tokenizer.encode("the quick brown fo"),
                                    trainer.dataset.tokenizer.encode("x")[0])
    assert view.probability_chart.lines()[0]["y"] == pytest.approx(p)
    assert [ln["name"] for ln in view.health_chart.lines()][:3] == ["embedding", "block 0", "block 1"]
    static = view._static_html()
    assert "lmlab-heatmap" in static and "<svg" in static and "step 10" in static


def test_a_crossing_head_is_marked_on_the_loss_curve(run):
    trainer, timeline, _ = run
    em = timeline.scores()
    layer, head = 0, 1
    threshold = float(em.scores["previous_token"][:, layer, head].max()) - 1e-6
    view = TimelineView(timeline, metric="previous_token", threshold=threshold)
    labels = [m["label"] for m in view.loss_chart.marks]
    assert f"L{layer}H{head}" in labels
    step = next(m["x"] for m in view.loss_chart.marks if m["label"] == f"L{layer}H{head}")
    assert (layer, head, step) in em.first_crossing("previous_token", threshold)


def test_a_view_that_fails_shows_its_error_and_the_others_still_move(run):
    trainer, timeline, _ = run
    explorer = AttentionExplorer(trainer=trainer, text=TEXT)
    lens = LogitLensView(trainer=trainer, text=TEXT)
    view = TimelineView(timeline, [lens, explorer])
    lens.update = lambda *a: (_ for _ in ()).throw(RuntimeError("lens broke"))
    view.show(20)
    assert "lens broke" in lens.status.value
    assert "step 20" in explorer.grid.title and explorer.model is timeline.model_at(20)


def test_bad_links_and_inputs_are_refused_in_words(run):
    trainer, timeline, _ = run
    with pytest.raises(ConfigError, match="metric='loss'"):
        TimelineView(timeline, metric="loss")
    other = make(max_steps=1, seed=3)
    other_model = type(trainer.model)(type(trainer.model.config)(**{**trainer.model.config.to_dict(),
                                                                    "n_embd": 16}))
    view = TimelineView(timeline)
    with pytest.raises(ConfigError, match="another shape"):
        view.link(AttentionExplorer(other_model, other.dataset.tokenizer, TEXT))
    with pytest.raises(ConfigError, match="cannot follow a timeline"):
        view.link(object())
    view.token_box.value = "xy"
    view.context_box.value = "the"
    assert "give one token" in view.status.value  # shown, and the view stays usable
    view.token_box.value = "x"
    view.show(5)
    assert view.step == 5


def test_the_stepper_re_reads_its_tokens_with_another_model(run):
    trainer, timeline, _ = run
    tok = trainer.dataset.tokenizer
    stepper = Stepper(timeline.model_at(5), tok, "the ", seed=2, temperature=0.7, top_k=5)
    stepper.run(4)
    stepper.set(temperature=1.3)
    stepper.step()
    state = stepper._generator.get_state()
    stepper.use_model(timeline.model_at(25, "probe"))
    fresh = Stepper(timeline.model_at(25, "probe"), tok, "the ", temperature=0.7, top_k=5)
    for token in stepper.new_ids[:4]:
        fresh.step(token)
    fresh.set(temperature=1.3)
    fresh.step(stepper.new_ids[4])
    assert [s.id for s in stepper.steps] == [s.id for s in fresh.steps]
    assert [s.prob for s in stepper.steps] == pytest.approx([s.prob for s in fresh.steps], rel=1e-5)
    entropies = [s.entropy_raw for s in fresh.steps]
    assert [s.entropy_raw for s in stepper.steps] == pytest.approx(entropies, rel=1e-5)
    assert torch.equal(stepper._generator.get_state(), state)
    assert stepper.distribution.probs == pytest.approx(fresh.distribution.probs, abs=1e-6)
