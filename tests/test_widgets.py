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
from lmlab.widgets._view import View  # noqa: E402
from lmlab.widgets.dashboard import MAX_POINTS, LossCurves  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 400


def make_trainer(max_steps=100_000, **kw):
    ds = TokenDataset(TEXT, block_size=16)
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, block_size=16, n_layer=1, n_head=2,
                          n_embd=16))
    kw = {"batch_size": 4, **kw}
    return Trainer(model, ds, device="cpu", max_steps=max_steps,
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
    t = dash.trainer
    dash.lr_input.value = "fast"
    assert "learning rate 'fast' is not a number" in dash.error.value
    assert dash.lr_input.value == "0.001" and t.config.learning_rate == 0.001  # the box shows the setting
    dash.lr_input.value = "-3"  # the engine's rule, said in the dashboard's words
    assert "learning rate -3.0 must be in (0, 10]" in dash.error.value
    assert "learning_rate" not in dash.error.value  # the words on screen, not code names
    assert dash.lr_input.value == "0.001"
    dash.batch_input.value = "100000"  # the trainer's own check of the text's length
    assert "less than one batch (batch size 100000" in dash.error.value
    assert t.config.batch_size == 4 and dash.batch_input.value == "4"
    dash.heads_input.value = 3  # 16 wide is not divisible by 3 heads
    dash.reset_button.click()
    assert "width 16 is not divisible by heads 3" in dash.error.value
    dash.heads_input.value = 2
    dash.lr_input.value = "0.00002"  # below the old fixed min_lr of 1e-4: accepted now
    assert dash.error.value == ""
    assert t.config.learning_rate == 0.00002
    assert t.config.final_lr == pytest.approx(0.000002)
    dash.start_button.click()
    wait_for(lambda: t.step_count >= 3)
    dash.batch_input.value = "8"  # while running: refused by the trainer, said in the dashboard's words
    assert "training is running: stop it before changing its settings" in dash.error.value
    assert "str:" not in dash.error.value and "update_config" not in dash.error.value
    assert dash.batch_input.value == "4" and t.config.batch_size == 4
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
    class Probe(View, W.VBox):
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
    assert "fewer than one block of 4000 + 1; pick a shorter context" in dash.error.value
    assert dash.trainer.is_alive
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


@pytest.mark.parametrize("press", ["start", "step"])
@pytest.mark.parametrize("change", ["update_config", "restore", "rollback"])
def test_a_setting_changed_outside_the_dashboard_survives_its_buttons(tmp_path, change, press):
    """The trainer owns its settings: a change made in a cell (or by restore, rollback) is
    what Start and Step train with, and the boxes show it (the boxes were re-applied on
    Start and Step before, undoing it)."""
    t = make_trainer(learning_rate=1e-3, max_steps=40)
    dash = TrainingDashboard(t, sample_every=0, refresh=0.05)
    if change == "update_config":
        t.update_config(learning_rate=3e-4, batch_size=3, max_steps=30)
        expect = (3e-4, 3, 30)
    elif change == "restore":
        other = make_trainer(learning_rate=3e-4, max_steps=30, batch_size=3)
        other.step()
        other.save(tmp_path / "ck.safetensors")
        t.restore(tmp_path / "ck.safetensors")
        expect = (3e-4, 3, 30)
    else:
        t.update_config(learning_rate=3e-4)
        t.run(20, progress=False)  # an evaluation at step 20, trained at 3e-4
        t.update_config(learning_rate=5.0, batch_size=3)
        t.rollback()
        expect = (3e-4, 3, 40)  # the rate of that step; the batch size stays
    assert (dash.lr_input.value, dash.batch_input.value, dash.steps_input.value) == \
        tuple(str(v) for v in expect)
    before = t.step_count
    (dash.start_button if press == "start" else dash.step_button).click()
    wait_for(lambda: t.step_count > before)
    t.stop()
    assert (t.config.learning_rate, t.config.batch_size, t.config.max_steps) == expect
    assert t.history.last()["lr"] <= expect[0]
    assert (dash.lr_input.value, dash.batch_input.value, dash.steps_input.value) == \
        tuple(str(v) for v in expect)
    assert dash.error.value == ""


def test_the_trainer_tells_one_config_event_with_what_changed():
    t = make_trainer()
    seen = []
    t.on("config", lambda trainer, changed: seen.append(changed))
    t.update_config(learning_rate=2e-3, batch_size=4)  # batch_size as it was
    t.update_config(batch_size=4)  # nothing changes: no event
    t.set_sampling(every=7)
    assert seen[0] == {"learning_rate": 2e-3}
    assert len(seen) == 2 and seen[1]["sampling"].every == 7


def test_dashboard_edits_go_to_the_trainer_and_mirror_back():
    t = make_trainer()
    dash = TrainingDashboard(t, sample_every=0, refresh=0.05)
    seen = []
    t.on("config", lambda trainer, changed: seen.append(changed))
    dash.lr_input.value = "0.002"
    assert t.config.learning_rate == 0.002 and seen == [{"learning_rate": 0.002}]
    dash.sample_every_input.value = "9"
    assert t.sampling.every == 9
    t.set_sampling(prompt="fox ")
    assert dash.prompt_input.value == "fox " and dash.sample_every_input.value == "9"


def test_the_eta_counts_every_micro_batch_of_a_step():
    """With grad_accum_steps=4 a step trains on 4 micro-batches: the ETA is the steps left
    times the time a step took (the rows' own tokens/s), not a quarter of it."""
    t = make_trainer(grad_accum_steps=4)
    dash = TrainingDashboard(t, sample_every=0, refresh=0.05)
    for _ in range(10):
        dash.step_button.click()
    rows = t.history.rows()
    per_step = t.config.batch_size * t.config.grad_accum_steps * t.dataset.block_size
    seconds = sum(per_step / r["tokens_per_s"] for r in rows[-20:]) / len(rows[-20:])
    eta = dash.stats.value.split("ETA ")[1].split("<")[0]  # m:ss or h:mm:ss
    shown = 0
    for part in eta.split(":"):
        shown = shown * 60 + int(part)
    expected = (t.config.max_steps - t.step_count) * seconds  # minutes: 4x what the old ETA said
    assert expected > 60 and abs(shown - expected) <= 0.2 * expected, (shown, expected)


def test_the_model_boxes_follow_a_reset_made_in_a_cell():
    t = make_trainer()
    dash = TrainingDashboard(t, sample_every=0, refresh=0.05)
    t.reset(n_layer=2, n_embd=32)
    assert (dash.layers_input.value, dash.width_input.value) == (2, 32)
    dash.reset_button.click()  # Reset again: the shape the boxes show, the new one
    assert (t.model.config.n_layer, t.model.config.n_embd) == (2, 32)


def test_sample_every_in_words_and_refused_by_the_trainer():
    t = make_trainer()
    dash = TrainingDashboard(t, sample_every=5, refresh=0.05)
    dash.sample_every_input.value = "often"
    assert "sample every 'often' is not a whole number" in dash.error.value
    dash.sample_every_input.value = "-3"  # a number the trainer refuses, in the box's words
    assert "sample every -3 must be a whole number of steps" in dash.error.value
    assert t.sampling.every == 5 and dash.sample_every_input.value == "5"
