import json
import math

import numpy as np
import pytest
import torch

from lmlab import GPT, ConfigError, CorpusError, DataError, GPTConfig, load_corpus
from lmlab.scaling import SweepPlan, count_params, fit_power_law, sweep

N = np.logspace(3, 8, 12)
WIDTHS = (16, 32, 64)
SIZES = [dict(n_layer=2, n_head=2, n_embd=w) for w in WIDTHS]
# 200 steps of 16 x 32 tokens: over seeds 0-8 the losses were ~2.83 > ~2.61 > ~2.48 (spread < 0.05)
TRAIN = dict(batch_size=16, learning_rate=3e-3, warmup_steps=20, eval_interval=1000, eval_batches=5, seed=1)
TOKENS = 200 * 16 * 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text(data_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMLAB_DATA_DIR", str(data_dir))
        return load_corpus("shakespeare")[:200_000]


def run_sweep(text, out, **kwargs):
    trainers = []
    runs = sweep(text, SIZES, tokens_per_run=TOKENS, out=out, block_size=32, eval_batches=50,
                 train=TRAIN, progress=False, trainer_hook=trainers.append, **kwargs)
    return runs, trainers


@pytest.fixture(scope="module")
def swept(text, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "sweep.json"
    runs, trainers = run_sweep(text, out)
    return runs, trainers, out


# ---- fitting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_known_law_within_its_errors(seed):
    rng = np.random.default_rng(seed)
    L = (20 * N ** -0.3 + 1.5) * np.exp(rng.normal(0, 0.003, N.shape))
    fit = fit_power_law(N, L)
    for value, err, true in ((fit.a, fit.a_err, 20), (fit.alpha, fit.alpha_err, 0.3), (fit.c, fit.c_err, 1.5)):
        assert 0 < err < 0.05 * true
        assert abs(value - true) < 4 * err
    assert fit.n_points == 12 and 0.001 < fit.rmse < 0.006


def test_exact_data_is_recovered_exactly():
    law = fit_power_law(N, 7 * N ** -0.25)
    assert law.pure.a == pytest.approx(7, rel=1e-10) and law.pure.alpha == pytest.approx(0.25, rel=1e-10)
    assert law.pure.c == 0 and law.pure.alpha_err < 1e-10
    full = fit_power_law(N, 20 * N ** -0.3 + 1.5)
    assert (full.a, full.alpha, full.c) == pytest.approx((20, 0.3, 1.5), rel=1e-8)
    assert full.pure.alpha < 0.1  # the offset flattens a pure power law's exponent


def test_fixed_offset():
    L = 20 * N ** -0.3 + 1.5
    fit = fit_power_law(N, L, c=1.5)
    assert fit.c == 1.5 and fit.c_err == 0.0
    assert (fit.a, fit.alpha) == pytest.approx((20, 0.3), rel=1e-8)
    wrong = fit_power_law(N, L, c=1.0)  # a wrong offset fits worse
    assert wrong.c == 1.0 and wrong.rmse > 100 * fit.rmse
    three = fit_power_law(N[:3], L[:3], c=1.5)  # 2 parameters: 3 points leave one degree of freedom
    assert three.alpha == pytest.approx(0.3, rel=1e-8) and math.isfinite(three.alpha_err)


def test_predict():
    fit = fit_power_law(N, 20 * N ** -0.3 + 1.5)
    assert fit.predict(1e10) == pytest.approx(20 * 1e10 ** -0.3 + 1.5, rel=1e-8)
    assert isinstance(fit.predict(1e4), float)
    grid = np.array([[1e3, 1e4], [1e5, 1e6]])
    assert fit.predict(grid).shape == (2, 2)
    assert fit.pure.predict(1e3) == pytest.approx(fit.pure.a * 1e3 ** -fit.pure.alpha)
    with pytest.raises(ConfigError, match="positive"):
        fit.predict(0)
    assert "N^-0.3000" in str(fit)


def test_exactly_as_many_points_as_parameters_has_no_errors():
    fit = fit_power_law(N[:3], 20 * N[:3] ** -0.3 + 1.5)
    assert math.isnan(fit.alpha_err) and math.isnan(fit.c_err)


@pytest.mark.parametrize("Ns, Ls, kwargs, fragment", [
    ([1e3, 1e4], [3.0, 2.0], {}, "2 points cannot determine 3 parameters"),
    ([1e3], [3.0], dict(c=1.0), "1 point cannot determine 2"),
    ([1e3, -1e4, 1e5, 1e6], [3, 2.5, 2, 1.8], {}, "every N must be a positive"),
    ([1e3, 1e4, 1e5, 1e6], [3, 2.5, 0, 1.8], {}, "every L must be a positive"),
    ([1e3, 1e4, 1e5, 1e6], [3, 2.5, float("nan"), 1.8], {}, "every L must be a positive"),
    ([1e3, 1e4, 1e5], [3, 2.5], {}, "of one length"),
    ([1e4, 1e4, 1e4, 1e4], [3, 2.5, 2, 1.8], {}, "every N is the same"),
    ([1e3, 1e4, 1e5, 1e6], [3, 2.5, 2, 1.8], dict(c=1.8), "not below every L"),
    ([1e3, 1e4, 1e5, 1e6], [3, 2.5, 2, 1.8], dict(c=float("inf")), "finite"),
    ("abc", [1, 2, 3], {}, "sequences of numbers"),
])
def test_bad_fit_input(Ns, Ls, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        fit_power_law(Ns, Ls, **kwargs)


# ---- sweeps ----------------------------------------------------------------------------------


def test_sweep_loss_falls_with_size(swept):
    runs, trainers, _ = swept
    assert len(trainers) == 3 and [r["model"]["n_embd"] for r in runs] == list(WIDTHS)
    losses = runs.column("val_loss")
    assert losses[0] > losses[1] > losses[2], losses
    assert all(1.5 < v < 3.5 for v in losses)
    assert not any(r["reused"] for r in runs)
    fit = runs.fit(c=1.0)
    assert 0 < fit.alpha < 1
    assert fit.predict(runs[1]["params_non_embedding"]) == pytest.approx(losses[1], rel=0.05)


def test_sweep_counts_parameters_tokens_and_flops(swept):
    runs, trainers, _ = swept
    for run, trainer in zip(runs, trainers):
        model = GPT(GPTConfig(**run["model"]))
        wte = model.transformer.wte.weight.numel()
        assert run["params_non_embedding"] == model.num_params() - wte  # num_params() leaves out wpe
        assert run["params"] == model.num_params(non_embedding=False)
        assert run["params"] == run["params_non_embedding"] + run["params_embedding"]
        assert run["tokens"] == TOKENS == trainer.tokens_seen and run["steps"] == 200
        assert run["flops"] == 6 * run["params_non_embedding"] * run["tokens"]
        assert run["model"]["vocab_size"] == trainer.dataset.vocab_size and run["model"]["block_size"] == 32
        assert run["history"][-1]["step"] == 200 and len(run["history"]) <= 201
        assert run["wall_time"] > 0


def test_sweep_resumes_without_training_again(swept, text):
    runs, _, out = swept
    starts, ends = [], []
    again, trainers = run_sweep(text, out, on_run_start=lambda i, c: starts.append(i),
                                on_run_end=lambda i, r: ends.append(i))
    assert trainers == [] and starts == [] and ends == [0, 1, 2]
    assert all(r["reused"] for r in again)
    assert again.column("wall_time") == runs.column("wall_time")
    assert again.column("val_loss") == runs.column("val_loss")


def test_a_file_from_before_a_setting_existed_is_read_back_at_its_default(swept, text, tmp_path):
    _, _, out = swept
    old = json.loads(out.read_text())
    for run in old["runs"]:  # as written before lmlab had grad_clip
        assert run["key"]["train"].pop("grad_clip") == 1.0
    older = tmp_path / "older.json"
    older.write_text(json.dumps(old))
    plan = SweepPlan(text, SIZES, tokens_per_run=TOKENS, out=older, block_size=32, eval_batches=50, train=TRAIN)
    assert plan.next_missing() is None
    other = SweepPlan(text, SIZES, tokens_per_run=TOKENS, out=older, block_size=32, eval_batches=50,
                      train={**TRAIN, "grad_clip": 0.5})
    assert other.next_missing() == 0


def test_sweep_trains_only_what_is_missing_and_reproduces_it(swept, text, tmp_path):
    runs, _, out = swept
    data = json.loads(out.read_text())
    data["runs"] = data["runs"][:2]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(data))
    starts = []
    again, trainers = run_sweep(text, partial, on_run_start=lambda i, c: starts.append((i, c.n_embd)))
    assert starts == [(2, 64)] and len(trainers) == 1
    assert [r["reused"] for r in again] == [True, True, False]
    assert again[2]["val_loss"] == pytest.approx(runs[2]["val_loss"], abs=1e-6)  # seeded: the same run
    assert len(json.loads(partial.read_text())["runs"]) == 3


def test_compute_matched_budget_gives_smaller_models_more_tokens(text):
    big = count_params(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32)))["params_non_embedding"]
    budget = 6 * big * 20 * 512  # 20 steps of 512 tokens for the largest
    state = torch.get_rng_state()
    runs = sweep(text, SIZES, compute_budget=budget, block_size=32, eval_batches=2, train=TRAIN,
                 progress=False, history_points=10)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    tokens = runs.column("tokens")
    assert tokens[0] > tokens[1] > tokens[2] == 20 * 512
    for run in runs:  # each within a step of the budget
        assert budget <= run["flops"] < budget + 6 * run["params_non_embedding"] * 512
        assert len(run["history"]) <= 10 and run["history"][-1]["step"] == run["steps"]


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(), ConfigError, "exactly one budget"),
    (dict(tokens_per_run=1000, compute_budget=1e9), ConfigError, "exactly one budget"),
    (dict(tokens_per_run=-5), ConfigError, "tokens_per_run=-5"),
    (dict(tokens_per_run=10), ConfigError, "raise the budget"),
    (dict(tokens_per_run=1000, sizes=[]), ConfigError, "non-empty list"),
    (dict(tokens_per_run=1000, sizes=[dict(n_embd=32, n_head=2), dict(n_embd=32, n_head=2, block_size=16)]),
     ConfigError, "same block_size"),
    (dict(tokens_per_run=1000, sizes=[dict(n_embd=30, n_head=4)]), ConfigError, "not divisible"),
    (dict(tokens_per_run=1000, sizes=[3]), ConfigError, "a size must be"),
    (dict(tokens_per_run=1000, corpus="shakespear"), CorpusError, "no corpus named 'shakespear'"),
    (dict(tokens_per_run=1000, corpus=42), CorpusError, "not int"),
])
def test_bad_sweep_input(text, kwargs, error, fragment):
    kwargs = {"corpus": text, "sizes": SIZES[:1], **kwargs}
    with pytest.raises(error, match=fragment):
        sweep(kwargs.pop("corpus"), kwargs.pop("sizes"), progress=False, **kwargs)


def test_foreign_out_file_is_refused_and_kept(text, tmp_path):
    out = tmp_path / "notes.json"
    out.write_text('{"hello": 1}')
    with pytest.raises(DataError, match="not an lmlab sweep file"):
        sweep(text, SIZES[:1], tokens_per_run=1000, out=out, progress=False)
    assert out.read_text() == '{"hello": 1}'


def test_stopping_a_run_ends_the_sweep_without_recording_it(text, tmp_path):
    out = tmp_path / "stopped.json"

    def stop_early(trainer):
        trainer.on("step", lambda t, row: t.stop(wait=False) if row["step"] == 3 else None)

    with pytest.warns(UserWarning, match="stopped during run 0"):
        runs = sweep(text, SIZES[:2], tokens_per_run=TOKENS, out=out, block_size=32, train=TRAIN,
                     progress=False, trainer_hook=stop_early)
    assert len(runs) == 0 and not runs.complete and not out.exists()


def test_fitted_offset_is_never_negative():
    L = 2 * N ** -0.05 - 0.3  # bends the wrong way: no floor
    fit = fit_power_law(N, L)
    assert fit.c == 0.0 and math.isnan(fit.c_err)
    assert (fit.a, fit.alpha) == pytest.approx((fit.pure.a, fit.pure.alpha), rel=1e-6)


def test_two_sweeps_on_one_file_keep_each_others_runs(text, tmp_path):
    out = tmp_path / "shared.json"
    kwargs = dict(tokens_per_run=20 * 16 * 32, out=out, block_size=32, eval_batches=2, train=TRAIN)
    a, b = SweepPlan(text, SIZES[:2], **kwargs), SweepPlan(text, SIZES[:2], **kwargs)
    for plan, i in ((a, 0), (b, 1)):
        trainer = plan.trainer(i)
        trainer.run(progress=False)
        plan.record(i, trainer)
    assert SweepPlan(text, SIZES[:2], **kwargs).next_missing() is None  # b kept a's run


def test_accumulated_steps_count_in_the_budget(text):
    one = SweepPlan(text, SIZES[:1], tokens_per_run=TOKENS, block_size=32, train=TRAIN)
    two = SweepPlan(text, SIZES[:1], tokens_per_run=TOKENS, block_size=32,
                    train={**TRAIN, "grad_accum_steps": 2})
    assert two.train_configs[0].max_steps * 2 == one.train_configs[0].max_steps == 200


def test_compute_frontier_is_the_lowest_loss_reached_by_each_compute():
    from lmlab.scaling import compute_frontier

    fast = ([1, 2, 4], [3.0, 2.0, 1.9])
    slow = ([2, 4, 8], [3.5, 1.5, 1.0])
    grid, best = compute_frontier([fast, slow], points=4)
    assert grid == pytest.approx([1, 2, 4, 8])
    assert best == [3.0, 2.0, 1.5, 1.0]
    assert compute_frontier([fast]) is None
