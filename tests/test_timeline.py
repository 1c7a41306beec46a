"""The training timeline (`lmlab.Timeline`): snapshots equal the weights of their step,
the memory budget holds, reading snapshots changes no training, and they survive a save;
head scores over training; optimisation health."""

import math
import threading

import pytest
import torch

from lmlab import ConfigError, Timeline, Trainer, interpret
from lmlab.health import layer_of
from lmlab.timeline import Emergence, default_schedule
from test_train import make


def weights_at_every_step(trainer) -> dict:
    """{step: float32 copy of the weights} as an observer after the timeline sees them."""
    copies = {trainer.step_count: {n: t.detach().clone() for n, t in Timeline._tensors(trainer.model).items()}}
    trainer.on("step", lambda tr, row: copies.__setitem__(
        tr.step_count, {n: t.detach().clone() for n, t in Timeline._tensors(tr.model).items()}))
    return copies


def test_the_default_schedule_is_dense_early_and_sparse_late():
    kept = [s for s in range(0, 2049) if default_schedule(s)]
    assert kept[:18] == list(range(17)) + [18] and 17 not in kept  # every 2nd from 16
    assert [s for s in kept if 1024 <= s <= 2048] == list(range(1024, 2049, 128))
    assert len(kept) == 16 + 7 * 8 + 1  # 0..15, then 8 a doubling up to 2048


def test_snapshots_equal_the_weights_of_their_step_bit_for_bit_in_float32():
    trainer = make(max_steps=12)
    timeline = Timeline(trainer, dtype="float32", health=0)
    copies = weights_at_every_step(trainer)
    trainer.run(progress=False)
    assert timeline.steps == list(range(13))
    for step in (0, 1, 7, 12):
        for name, t in timeline.weights(step).items():
            assert torch.equal(t, copies[step][name]), (step, name)
    model = timeline.model_at(7)
    for name, t in Timeline._tensors(model).items():
        assert torch.equal(t, copies[7][name])
    assert model is not trainer.model and not model.training
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied


def test_float16_snapshots_are_the_weights_rounded_to_float16():
    trainer = make(max_steps=5)
    timeline = Timeline(trainer, health=0)
    copies = weights_at_every_step(trainer)
    trainer.run(progress=False)
    for name, t in timeline.weights(5).items():
        w = copies[5][name]
        assert t.dtype == torch.float16 and torch.equal(t, w.half())
        assert torch.allclose(t.float(), w, rtol=2**-11, atol=2**-24)  # float16's rounding


def test_the_memory_budget_holds_over_a_2000_step_run_and_thins_evenly():
    trainer = make(max_steps=2000, eval_interval=1000)
    per = sum(t.numel() * 2 for t in Timeline._tensors(trainer.model).values())
    budget_mb = 10.5 * per / 2**20  # room for 10 snapshots
    timeline = Timeline(trainer, every=1, budget_mb=budget_mb, health=0)
    seen = []
    trainer.on("step", lambda tr, row: seen.append(timeline.nbytes))
    trainer.run(progress=False)
    assert len(seen) == 2000 and max(seen) <= budget_mb * 2**20
    steps = timeline.steps
    assert len(steps) == 10 and steps[0] == 0 and steps[-1] == 2000
    gaps = [b - a for a, b in zip(steps, steps[1:-1])]  # the newest is always the last step's
    assert max(gaps) <= 2 * min(gaps), steps  # thinned evenly, not the oldest dropped


def test_reading_snapshots_while_training_runs_changes_no_training_result():
    plain = make(max_steps=40)
    plain.run(progress=False)

    watched = make(max_steps=40)
    timeline = Timeline(watched, health=5)
    reads = []

    def scrub():
        while watched.is_alive or not reads:
            steps = timeline.steps
            model = timeline.model_at(steps[len(reads) % len(steps)])
            reads.append(float(model.lm_head.weight.sum()))
            timeline.scores()

    reader = threading.Thread(target=scrub)
    watched.start(driver="thread")
    reader.start()
    watched.join()
    reader.join()
    assert len(reads) > 1
    assert [r["train_loss"] for r in watched.history.rows()] == [r["train_loss"] for r in plain.history.rows()]
    for a, b in zip(plain.model.parameters(), watched.model.parameters()):
        assert torch.equal(a, b)


def test_snapshots_survive_a_save_and_a_load_when_asked(tmp_path):
    trainer = make(max_steps=10)
    timeline = Timeline(trainer, every=2, dtype="float32", health=0,
                        probe=trainer.dataset.tokenizer.encode("the fox. the fox"))
    trainer.run(progress=False)
    trainer.save(tmp_path / "with.ckpt", timeline=True)
    trainer.save(tmp_path / "without.ckpt")
    back = Trainer.load(tmp_path / "with.ckpt", trainer.dataset)
    assert back.timeline is not None and back.timeline.steps == timeline.steps == [0, 2, 4, 6, 8, 10]
    assert back.timeline.every == 2 and back.timeline.probe == timeline.probe
    for name, t in timeline.weights(4).items():
        assert torch.equal(back.timeline.weights(4)[name], t)
    assert Trainer.load(tmp_path / "without.ckpt", trainer.dataset).timeline is None
    bare = make(max_steps=10)
    with pytest.raises(Exception, match="keeps no timeline"):
        bare.save(tmp_path / "x.ckpt", timeline=True)


def test_a_reset_drops_the_snapshots_after_the_trainers_step():
    trainer = make(max_steps=12, eval_interval=4)
    timeline = Timeline(trainer, every=2, health=0)
    trainer.run(progress=False)
    assert timeline.steps[-1] == 12
    trainer.reset()
    assert timeline.steps == [0]
    for name, t in timeline.weights(0).items():
        assert torch.equal(t, Timeline._tensors(trainer.model)[name].detach().half())


def test_induction_on_any_text_is_the_classic_score_on_a_repeated_sequence():
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(2, 3, 12, 12), -1)
    ids = [5, 2, 9, 4, 7, 1] * 2
    assert torch.allclose(interpret.induction_score_on(w, ids), interpret.induction_score(w, 6))
    with pytest.raises(ConfigError, match="repeats no token"):
        interpret.induction_score_on(w[..., :3, :3], [1, 2, 3])


def test_scores_over_training_and_the_first_crossing():
    trainer = make(max_steps=6)
    timeline = Timeline(trainer, health=0)
    trainer.run(progress=False)
    em = timeline.scores()
    L, H = trainer.model.config.n_layer, trainer.model.config.n_head
    assert em.steps == list(range(7)) and em.scores["induction"].shape == (7, L, H)
    model = timeline.model_at(3)
    summary = interpret.head_summary(interpret.capture_attention(model, timeline.text))
    row = summary[1]
    at = (3, row["layer"], row["head"])
    assert math.isclose(em.scores["previous_token"][at], row["previous_token"], rel_tol=1e-5)
    assert math.isclose(em.scores["entropy"][at], row["entropy"], rel_tol=1e-5)
    assert torch.allclose(em.scores["induction"][3], interpret.induction_scores(model))

    fake = Emergence([0, 10, 20], {"induction": torch.tensor([[[0.1, 0.2]], [[0.6, 0.3]], [[0.9, 0.7]]])})
    assert fake.first_crossing("induction", 0.5) == [(0, 0, 10), (0, 1, 20)]


def test_a_tokens_probability_over_training():
    trainer = make(max_steps=30, learning_rate=3e-3)
    timeline = Timeline(trainer, every=10, health=0)
    trainer.run(progress=False)
    enc = trainer.dataset.tokenizer.encode
    steps, p = timeline.probability(enc("the quick brown fo"), enc("x")[0])
    assert steps == [0, 10, 20, 30] and p[-1] > p[0]
    with torch.no_grad():
        logits = timeline.model_at(20)(torch.tensor([enc("the quick brown fo")])).logits[0, -1]
    assert math.isclose(p[2], float(torch.softmax(logits, -1)[enc("x")[0]]), rel_tol=1e-5)


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(every=0), "every=0"),
    (dict(dtype="bfloat8"), "dtype='bfloat8'"),
    (dict(budget_mb=0.001), "fewer than two snapshots"),
    (dict(probe=[1, 2, 3]), "repeats no token"),
    (dict(health=-2), "every=-2"),
])
def test_bad_settings_are_refused_with_what_to_do(kwargs, phrase):
    with pytest.raises(ConfigError, match=phrase):
        Timeline(make(), **kwargs)


def test_a_step_without_a_snapshot_says_which_steps_are_kept():
    trainer = make(max_steps=4)
    timeline = Timeline(trainer, every=2, health=0)
    trainer.run(progress=False)
    with pytest.raises(ConfigError, match=r"step 3 has no snapshot.*3 steps: 0, 2, 4"):
        timeline.weights(3)
    assert timeline.nearest(3) == 2


def test_health_is_each_layers_gradient_norm_and_update_ratio():
    trainer = make(max_steps=8, grad_clip=0.0)
    timeline = Timeline(trainer, health=4)
    copies = weights_at_every_step(trainer)
    grads = {}

    def keep_grads(optimizer, args, kwargs):
        grads[trainer.step_count + 1] = {n: p.grad.clone() for n, p in trainer.model.named_parameters()
                                         if p.grad is not None}
    trainer.optimizer.register_step_pre_hook(keep_grads)
    trainer.run(progress=False)
    rows = timeline.health.rows
    assert sorted({r["step"] for r in rows}) == [4, 8]
    assert {r["layer"] for r in rows} == {"embedding", "block 0", "block 1"}
    for row in rows:
        names = [n for n, p in trainer.model.named_parameters() if p.ndim == 2 and layer_of(n) == row["layer"]]
        k = row["step"]
        moved = math.sqrt(sum(float((copies[k][n] - copies[k - 1][n]).pow(2).sum()) for n in names))
        size = math.sqrt(sum(float(copies[k][n].pow(2).sum()) for n in names))
        norm = math.sqrt(sum(float(grads[k][n].pow(2).sum()) for n in names))
        assert math.isclose(row["update_ratio"], moved / size, rel_tol=1e-4)
        assert math.isclose(row["grad_norm"], norm, rel_tol=1e-4)


@pytest.mark.parametrize("learning_rate, phrase", [(1.0, "too high"), (1e-7, "too low")])
def test_health_warns_in_words_when_a_ratio_is_far_off(learning_rate, phrase):
    trainer = make(max_steps=20, learning_rate=learning_rate, warmup_steps=0, grad_clip=0.0)
    timeline = Timeline(trainer, health=2)
    trainer.run(progress=False)
    warnings = timeline.health.warnings()
    assert warnings and all(phrase in w for w in warnings)


def test_health_follows_an_optimiser_rebuilt_by_a_restore(tmp_path):
    trainer = make(max_steps=4)
    timeline = Timeline(trainer, health=2)
    trainer.run(progress=False)
    trainer.save(tmp_path / "a.ckpt")
    trainer.restore(tmp_path / "a.ckpt")
    trainer.update_config(max_steps=8)
    trainer.run(progress=False)
    assert sorted({r["step"] for r in timeline.health.rows}) == [2, 4, 6, 8]


def test_a_model_at_a_step_is_a_plain_lmlab_model_on_the_cpu():
    trainer = make(max_steps=2)
    timeline = Timeline(trainer, health=0)
    trainer.run(progress=False)
    model = timeline.model_at(2)
    assert model.config == trainer.model.config and model.device.type == "cpu"
