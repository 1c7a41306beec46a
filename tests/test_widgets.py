"""Widget behaviour without a browser: clicks are the buttons' own click()."""

import threading
import time

import pytest

pytest.importorskip("ipywidgets")

from lmlab import GPT, GPTConfig, TokenDataset  # noqa: E402
from lmlab.history import downsample, smooth  # noqa: E402
from lmlab.train import Trainer  # noqa: E402
from lmlab.widgets import RunComparison, TrainingDashboard  # noqa: E402
from lmlab.widgets._comm import recording_comms  # noqa: E402
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
    assert len(dash.loss_fig.data[0].x) == dash.trainer.step_count
    assert len(dash.loss_fig.data[2].x) == dash.trainer.step_count // 20
    assert "step 20" in dash.samples.value and "step 10" in dash.samples.value
    assert dash.samples.value.index("step 20") < dash.samples.value.index("step 10")
    assert dash.error.value == ""


def test_step_and_reset(dash):
    dash.step_button.click()
    dash.step_button.click()
    assert dash.trainer.step_count == 2 and len(dash.loss_fig.data[0].y) == 2
    old_weights = dash.trainer.model.transformer.wte.weight.detach().clone()
    dash.width_input.value = 32
    dash.reset_button.click()
    assert dash.trainer.step_count == 0 and len(dash.loss_fig.data[0].y) == 0
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
    assert "learning_rate=-3" in dash.error.value
    dash.heads_input.value = 3  # 16 wide is not divisible by 3 heads
    dash.reset_button.click()
    assert "not divisible by n_head=3" in dash.error.value
    dash.heads_input.value = 2
    dash.lr_input.value = "0.002"
    assert dash.error.value == ""
    assert dash.trainer.config.learning_rate == 0.002
    dash.start_button.click()
    wait_for(lambda: dash.trainer.step_count >= 3)
    dash.stop_button.click()
    assert dash.error.value == ""


def test_training_error_is_shown_in_red(dash):
    dash.trainer.on_step(lambda t, row: 1 / 0 if row["step"] == 2 else None)
    dash.start_button.click()
    wait_for(lambda: not dash.trainer.is_alive)
    assert "ZeroDivisionError" in dash.error.value and "#c00" in dash.error.value
    assert "failed" in dash.state_label.value and not dash.start_button.disabled


def test_run_blocks_with_live_updates():
    d = TrainingDashboard(make_trainer(max_steps=30), sample_every=0, refresh=0.01)
    d.run()
    assert d.trainer.state == "finished" and len(d.loss_fig.data[0].x) == 30
    assert "30" in d.counter.value and d.progress.value == 1.0
    assert list(d.lr_fig.data[0].y) == d.trainer.history.column("lr")


def test_x_axis_and_log_toggles(dash):
    for _ in range(3):
        dash.step_button.click()
    dash.x_axis.value = "tokens"
    assert list(dash.loss_fig.data[0].x) == [64, 128, 192]
    dash.log_y.value = True
    assert dash.loss_fig.layout.yaxis.type == "log"


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
    assert sizes[20_000] < 1.2 * sizes[2_000]


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
    names = [tr.name for tr in cmp.fig.data]
    assert names == ["adamw train", "adamw val", "sgd train", "sgd val"]
    assert len(cmp.fig.data[0].x) == 20 and len(cmp.fig.data[3].x) == 1
    assert list(cmp.fig.data[2].y) != list(cmp.fig.data[0].y)
    with pytest.raises(ValueError, match="2 labels for 1 trainers"):
        RunComparison([a], labels=["x", "y"])
