"""Widget behaviour without a browser: clicks are the buttons' own click()."""

import gc
import threading
import time

import pytest
from _needs import need

W = need("ipywidgets", "pip install -e .")

import torch  # noqa: E402

from lmlab import GPT, GPTConfig, TokenDataset, TokenizerError  # noqa: E402
from lmlab.history import downsample, smooth  # noqa: E402
from lmlab.train import Trainer  # noqa: E402
from lmlab.widgets import RunComparison, TrainingDashboard  # noqa: E402
from lmlab.widgets._comm import recording_comms  # noqa: E402
from lmlab.widgets._view import TrainerView  # noqa: E402
from lmlab.widgets.dashboard import MAX_POINTS, LossCurves  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 400


def make_trainer(max_steps=100_000, **kw):
    ds = TokenDataset(TEXT, block_size=16)
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, block_size=16, n_layer=1, n_head=2,
                          n_embd=16))
    return Trainer(model, ds, device="cpu", batch_size=4, max_steps=max_steps,
                   eval_interval=20, eval_batches=2, warmup_steps=2, **kw)


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.fixture
def dash():
    d = TrainingDashboard(make_trainer(), sample_every=10, sample_tokens=10, refresh=0.05)
    yield d
    d.trainer.stop()


def test_buttons_drive_the_trainer_through_its_states(dash):
    assert dash.trainer.state == "idle" and dash.pause_button.disabled
    dash.start_button.click()
    assert dash.trainer.state == "running" and dash.start_button.disabled
    wait_for(lambda: dash.trainer.step_count >= 25)
    dash.pause_button.click()
    assert dash.trainer.state == "paused" and dash.pause_button.description == "Resume"
    time.sleep(0.1)
    n = dash.trainer.step_count
    time.sleep(0.2)
    assert dash.trainer.step_count == n
    dash.pause_button.click()
    assert dash.trainer.state == "running" and dash.pause_button.description == "Pause"
    wait_for(lambda: dash.trainer.step_count > n + 3)
    dash.stop_button.click()
    assert dash.trainer.state == "stopped" and not dash.trainer.is_alive
    assert not [t for t in threading.enumerate() if t.name == "lmlab-trainer"]
    # the view caught up with the trainer
    assert f">{dash.trainer.step_count}<" in dash.counter.value
    assert len(dash.loss_chart.lines()[0]['x']) == dash.trainer.step_count
    assert len(dash.loss_chart.lines()[2]['x']) == dash.trainer.step_count // 20
    assert "step 20" in dash.samples.value and "step 10" in dash.samples.value
    assert dash.samples.value.index("step 20") < dash.samples.value.index("step 10")
    assert dash.error.value == ""


def test_step_and_reset(dash):
    dash.step_button.click()
    dash.step_button.click()
    assert dash.trainer.step_count == 2 and len(dash.loss_chart.lines()[0]['y']) == 2
    old_weights = dash.trainer.model.transformer.wte.weight.detach().clone()
    dash.width_input.value = 32
    dash.reset_button.click()
    assert dash.trainer.step_count == 0 and len(dash.loss_chart.lines()[0]['y']) == 0
    assert dash.trainer.model.config.n_embd == 32
    assert dash.trainer.model.transformer.wte.weight.shape != old_weights.shape
    dash.step_button.click()
    assert dash.trainer.step_count == 1


def test_invalid_input_shows_an_error_and_the_widget_stays_usable(dash):
    dash.lr_input.value = "fast"
    assert "learning rate 'fast' is not a number" in dash.error.value
    dash.start_button.click()  # refused with the same message, nothing started
    assert dash.trainer.state == "idle" and "not a number" in dash.error.value
    dash.lr_input.value = "-3"
    assert "learning rate -3 must be above 0" in dash.error.value
    assert "learning_rate" not in dash.error.value  # the words on screen, not code names
    dash.heads_input.value = 3  # 16 wide is not divisible by 3 heads
    dash.reset_button.click()
    assert "width 16 is not divisible by heads 3" in dash.error.value
    dash.heads_input.value = 2
    dash.lr_input.value = "0.00002"  # below the old fixed min_lr of 1e-4: accepted now
    assert dash.error.value == ""
    assert dash.trainer.config.learning_rate == 0.00002
    assert dash.trainer.config.final_lr == pytest.approx(0.000002)
    dash.start_button.click()
    wait_for(lambda: dash.trainer.step_count >= 3)
    dash.batch_input.value = "8"  # while running: said in the dashboard's words
    assert "the new batch size applies at the next Start" in dash.error.value
    assert "str:" not in dash.error.value and "update_config" not in dash.error.value
    dash.stop_button.click()
    assert dash.error.value == ""  # the stale error cleared with the change of state


def test_a_failing_view_callback_is_shown_and_training_goes_on(dash):
    dash._on_sample = lambda trainer, sample: 1 / 0
    dash.steps_input.value = "25"
    dash.start_button.click()
    dash.trainer.join(30)
    assert dash.trainer.state == "finished" and dash.trainer.step_count == 25
    assert "ZeroDivisionError" in dash.error.value and "#c00" in dash.error.value
    assert any("ZeroDivisionError" in w for w in dash.trainer.warnings)


def test_a_prompt_the_tokenizer_cannot_encode_is_refused_and_can_be_corrected():
    t = make_trainer()
    with pytest.raises(TokenizerError, match="'R'"):
        TrainingDashboard(t, prompt="ROMEO:")
    d = TrainingDashboard(t, prompt="the ", sample_every=5, sample_tokens=4)
    d.prompt_input.value = "ROMEO:"
    assert "not in the vocabulary" in d.error.value and t.sampling.prompt == "the "
    d.prompt_input.value = "fox "
    assert d.error.value == "" and t.sampling.prompt == "fox "
    for _ in range(5):
        d.step_button.click()
    assert "<b>fox </b>" in d.samples.value and "step 5" in d.samples.value


def test_redisplaying_and_closing_dashboards_never_multiplies_the_work():
    t = make_trainer()
    base = t.callback_count()
    first = TrainingDashboard(t, sample_every=0)
    per_view = t.callback_count() - base
    assert per_view > 0
    views = [TrainingDashboard(t, sample_every=0) for _ in range(3)]  # the cell ran again
    assert t.callback_count() == base + per_view
    assert "newer view" in first.error.value and first.start_button.disabled
    views[-1].close()
    assert t.callback_count() == base
    cmp_base = t.callback_count()
    comparisons = [RunComparison([t]) for _ in range(3)]
    assert t.callback_count() - cmp_base == 3  # step, end, reset: once, not three times
    comparisons[-1].close()
    assert t.callback_count() == cmp_base


def test_a_garbage_collected_view_costs_the_trainer_nothing():
    class Probe(TrainerView, W.VBox):
        def __init__(self, trainer):
            super().__init__()
            self._init_view([trainer])
            self._watch(trainer, "step", "_tick")

        def redraw(self, force=False):
            pass

    t = make_trainer()
    base = t.callback_count()
    probe = Probe(t)
    assert t.callback_count() == base + 1
    W.Widget.close(probe)  # leaves ipywidgets' registry without unsubscribing
    del probe
    gc.collect()
    t.step()  # the forwarder finds the view gone and unsubscribes
    assert t.callback_count() == base


def test_the_dashboard_redraws_while_training(dash):
    dash.start_button.click()
    wait_for(lambda: len(dash.loss_chart.lines()[0]['x']) >= 5)
    assert dash.trainer.is_alive  # drawn before the run ended
    drawn = len(dash.loss_chart.lines()[0]['x'])
    wait_for(lambda: len(dash.loss_chart.lines()[0]['x']) > drawn)
    dash.stop_button.click()


def test_reset_keeps_the_users_trainer(dash):
    trainer = dash.trainer
    for _ in range(3):
        dash.step_button.click()
    dash.reset_button.click()
    assert dash.trainer is trainer and trainer.step_count == 0 and len(trainer.history) == 0
    dash.step_button.click()
    assert len(dash.loss_chart.lines()[0]['x']) == 1 == len(trainer.history)


def test_back_to_the_last_healthy_step_after_a_divergence(dash):
    t = dash.trainer
    dash.steps_input.value = "40"
    dash.run(20)  # an evaluation at 20: a healthy point
    assert dash.back_button.layout.display == "none"  # nothing to go back to yet
    with torch.no_grad():
        t.model.transformer.wte.weight.mul_(1e30)
    dash.lr_input.value = "5"  # the bad learning rate the class tries
    dash.start_button.click()
    t.join(30)
    assert t.state == "failed"
    assert "Training diverged" in dash.error.value and "Back to step 20" in dash.error.value
    assert "try 0" not in dash.error.value  # no learning rate that may fail again
    assert dash.back_button.layout.display != "none"
    assert dash.back_button.description.startswith("Back to step 20 (val loss ")
    dash.back_button.click()
    assert t.step_count == 20 and t.state == "idle" and dash.error.value == ""
    assert t.config.learning_rate == 0.001 and dash.lr_input.value == "0.001"  # one click
    assert len(dash.loss_chart.lines()[0]['x']) == 20


def test_buttons_show_inactive_during_a_blocking_run():
    d = TrainingDashboard(make_trainer(max_steps=10), sample_every=0, refresh=0.0)
    seen = []
    d.trainer.on_step(lambda t, row: seen.append(
        (d.start_button.disabled, d.stop_button.disabled, d.pause_button.disabled,
         d.stop_button.tooltip, d.error.value)))
    d.run()
    assert seen and all(all(s[:3]) for s in seen[1:])
    assert "interrupt" in seen[-1][3] and "interrupt the kernel" in seen[-1][4]
    assert not d.start_button.disabled and "interrupt" not in d.start_button.tooltip
    assert d.error.value == ""


def test_run_blocks_with_live_updates():
    d = TrainingDashboard(make_trainer(max_steps=30), sample_every=0, refresh=0.01)
    d.run()
    assert d.trainer.state == "finished" and len(d.loss_chart.lines()[0]['x']) == 30
    assert "30" in d.counter.value and d.progress.value == 1.0
    assert d.lr_chart.lines()[0]['y'] == pytest.approx(d.trainer.history.column("lr"), rel=1e-5)


def test_x_axis_and_log_toggles(dash):
    for _ in range(3):
        dash.step_button.click()
    dash.x_axis.value = "tokens"
    assert dash.loss_chart.lines()[0]['x'] == [64, 128, 192]
    dash.log_y.value = True
    assert dash.loss_chart.log_y


def _rows(n):
    return [{"step": i + 1, "tokens": (i + 1) * 10, "train_loss": 3.0 - i / n,
             "val_loss": 2.0 if (i + 1) % 10 == 0 else None, "lr": 1e-3, "grad_norm": 1.0,
             "tokens_per_s": 100.0, "wall_time": float(i)} for i in range(n)]


def test_long_runs_send_no_more_points_than_short_ones():
    short, long = LossCurves(), LossCurves()
    short.add(_rows(2_000))
    long.add(_rows(20_000))
    for key in ("train_raw", "train_smooth", "lr"):
        assert len(long.series()[key][0]) == len(short.series()[key][0]) == MAX_POINTS
    assert len(long.series()["val"][0]) == MAX_POINTS  # 2,000 evaluations, capped too
    assert len(short.series()["val"][0]) == 200
    xs = long.series()["train_raw"][0]
    assert xs[0] == 1 and xs[-1] == 20_000  # the ends are kept


def test_bytes_sent_per_redraw_are_bounded():
    sizes = {}
    for n in (2_000, 20_000):
        with recording_comms() as log:
            t = make_trainer()
            d = TrainingDashboard(t, sample_every=0)
            for row in _rows(n):
                t.history.append(row)
            start = len(log)
            d.redraw(force=True)
            sizes[n] = sum(size for _, size in log[start:])
    assert sizes[20_000] < 1.5 * sizes[2_000]  # 10x the rows; same points, longer numbers


def test_smoothing_and_downsampling_helpers():
    values, state = smooth([1.0, 2.0, float("nan"), 3.0], weight=0.5)
    assert values[:2] == [1.0, 1.5] and values[3] == 2.25 and state == 2.25
    more, _ = smooth([5.0], weight=0.5, state=state)
    assert more == [3.625]
    assert list(downsample(5, 10)) == [0, 1, 2, 3, 4]
    idx = downsample(10_001, 100)
    assert len(idx) <= 100 and idx[0] == 0 and idx[-1] == 10_000


def test_run_comparison_overlays_runs():
    a, b = make_trainer(max_steps=20), make_trainer(max_steps=20, optimizer="sgd",
                                                    learning_rate=0.05)
    cmp = RunComparison([a, b], labels=["adamw", "sgd"], refresh=0.01)
    cmp.run()
    data = cmp.chart.lines()
    names = [tr["name"] for tr in data]
    assert names == ["adamw train", "adamw val", "sgd train", "sgd val"]
    assert len(data[0]["x"]) == 20 and len(data[3]["x"]) == 1
    assert data[2]["y"] != data[0]["y"]
    with pytest.raises(ValueError, match="2 labels for 1 trainers"):
        RunComparison([a], labels=["x", "y"])


def test_reset_checks_the_new_model_before_stopping_the_run(dash):
    dash.start_button.click()
    wait_for(lambda: dash.trainer.step_count >= 2)
    dash.width_input.value = 33  # not divisible by 2 heads
    dash.reset_button.click()
    assert "width 33 is not divisible by heads 2" in dash.error.value
    assert dash.trainer.is_alive  # the run was not stopped for nothing
    dash.width_input.value = 16
    dash.context_input.value = 4000
    dash.reset_button.click()
    assert "context 4000 with batch size 4 needs more text" in dash.error.value
    assert "batch_size" not in dash.error.value and dash.trainer.is_alive
    dash.stop_button.click()


def test_a_diverging_step_by_hand_says_what_to_click(dash):
    dash.step_button.click()
    with torch.no_grad():
        dash.trainer.model.transformer.wte.weight.fill_(float("nan"))
    dash.step_button.click()
    assert "Training diverged" in dash.error.value and "Back to step 0" in dash.error.value
    assert "trainer.reset()" not in dash.error.value


def test_run_comparison_redraws_a_trainers_replaced_history(tmp_path):
    other = make_trainer(max_steps=5, learning_rate=0.01)
    other.run(progress=False)
    other.save(tmp_path / "other.safetensors")
    t = make_trainer(max_steps=10)
    cmp = RunComparison([t], labels=["a"], refresh=0.0)
    t.run(steps=3, progress=False)
    t.restore(tmp_path / "other.safetensors")  # a longer history replaces the shown one
    drawn = cmp.chart.lines()[0]
    assert drawn["x"] == [1, 2, 3, 4, 5]
    smoothed, _ = smooth(t.history.column("train_loss"))
    assert drawn["y"] == pytest.approx(smoothed, rel=1e-5)
