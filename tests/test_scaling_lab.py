"""The scaling-law lab without a browser: runs trained one after another (blocking, and
through the run control), resumed from its file, the fit with a fixed or fitted offset,
the compute frontier, and errors shown in the view."""

import math
import threading
import time

import numpy as np
import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

from lmlab import CharTokenizer  # noqa: E402
from lmlab.scaling import ENGLISH_NATS_PER_CHAR, default_offset, fit_power_law  # noqa: E402
from lmlab.widgets import ScalingLab  # noqa: E402

SIZES = [dict(n_layer=1, n_head=2, n_embd=w) for w in (8, 16, 32)]
TRAIN = dict(learning_rate=3e-3, eval_interval=1000, batch_size=8)
TOKENS = 60 * 8 * 32
TEXT = "".join(f"{i} little pigs went to market; {i * 7 % 13} came home.\n" for i in range(600))


pytestmark = pytest.mark.usefixtures("one_thread")


def make_lab(out, **kwargs):
    return ScalingLab(TEXT, SIZES, tokens_per_run=TOKENS, block_size=32, out=out, train=TRAIN,
                      eval_batches=4, **kwargs)


def wait_for(condition, timeout=120.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab") / "sweep.json"
    lab = make_lab(out)
    runs = lab.run()
    return lab, runs, out


def test_run_trains_every_size_and_draws_its_curve(trained):
    lab, runs, _ = trained
    assert len(runs) == 3 and runs.complete
    assert [r["params_non_embedding"] for r in runs] == lab.plan.params
    assert runs[0]["val_loss"] > runs[2]["val_loss"]
    curves = lab.curve_chart.lines()
    assert len(curves) == 3
    for curve, run in zip(curves, runs):
        assert len(curve["x"]) == run["steps"]  # the whole run, not the last redraw's part
        assert curve["x"][-1] == run["tokens"]
    assert "3 of 3 sizes trained" in lab.progress.value
    assert lab.start_button.disabled


def test_fit_uses_the_offset_fixed_a_priori(trained):
    lab, runs, _ = trained
    N, L = runs.column("params_non_embedding"), runs.column("val_loss")
    assert lab.offset_slider.value == pytest.approx(ENGLISH_NATS_PER_CHAR)  # a character corpus
    expected = fit_power_law(N, L, c=ENGLISH_NATS_PER_CHAR)
    assert lab.fit.alpha == pytest.approx(expected.alpha) and lab.fit.c == pytest.approx(expected.c)
    assert f"N<sup>−{expected.alpha:.3f}</sup>" in lab.equation.value
    assert "c fixed a priori" in lab.equation.value
    points, fitted = lab.fit_chart.lines()[:2]
    assert points["x"] == pytest.approx(N) and points["y"] == pytest.approx(L, rel=1e-6)
    assert fitted["y"] == pytest.approx(expected.predict(np.array(fitted["x"])), rel=1e-5)

    lab.offset_slider.value = 1.0
    assert lab.fit.c == 1.0 and lab.fit.alpha == pytest.approx(fit_power_law(N, L, c=1.0).alpha)
    lab.fit_offset.value = True
    free = fit_power_law(N, L)
    assert lab.fit.c == pytest.approx(free.c) and lab.offset_slider.disabled
    assert "c fitted from the points" in lab.equation.value
    lab.fit_offset.value = False


def test_compute_frontier_is_the_lowest_loss_reached_by_each_compute(trained):
    lab, runs, _ = trained
    lines = lab.compute_chart.lines()
    frontier = lines[-1]
    assert frontier["name"] == "frontier"
    for c, best in zip(frontier["x"], frontier["y"]):
        reached = [min(y for x, y in zip(ln["x"], ln["y"]) if x <= c * (1 + 1e-6))
                   for ln in lines[:-1] if ln["x"][0] <= c * (1 + 1e-6)]
        assert best == pytest.approx(min(reached), rel=1e-5)
    for ln, run in zip(lines, runs):  # compute C = 6·N·D along each curve
        assert ln["x"][-1] == pytest.approx(6 * run["params_non_embedding"] * run["tokens"], rel=1e-6)


def test_a_second_lab_reads_the_finished_runs_back(trained):
    _, runs, out = trained
    again = make_lab(out)
    assert again.plan.next_missing() is None
    assert [r["val_loss"] for r in again.results] == runs.column("val_loss")
    assert all(r["reused"] for r in again.results)
    assert f"from {out.name}" in again.table.value and again.fit is not None
    again.start_button.click()  # nothing left: said in the view, which stays usable
    assert "every size is trained" in again.status.value


def test_start_trains_in_the_background_and_stop_then_start_continues(tmp_path):
    lab = make_lab(tmp_path / "s.json")
    lab.start()
    first = lab.trainer
    wait_for(lambda: first.step_count >= 5)
    lab.stop()
    wait_for(lambda: not first.is_alive)
    stopped_at = first.step_count
    assert 5 <= stopped_at < first.config.max_steps and lab.plan.runs[0] is None
    assert "Start continues it" in lab.status.value
    lab.start()  # continues the same run, then the next sizes follow on their own
    assert lab.trainer is first
    wait_for(lambda: lab.plan.next_missing() is None and lab.trainer is None)
    runs = lab.results
    assert runs.complete and runs[0]["steps"] == first.config.max_steps
    assert [r["reused"] for r in runs] == [False] * 3
    assert not math.isnan(lab.fit.alpha) and lab.start_button.disabled


def test_a_failing_chart_never_stops_the_sweep(tmp_path, monkeypatch):
    lab = make_lab(tmp_path / "f.json")
    monkeypatch.setattr(lab.curve_chart, "set_lines", lambda lines: 1 / 0)
    lab.refresh = 0
    runs = lab.run()
    assert runs.complete and "ZeroDivisionError" in lab.status.value


def test_default_offset():
    assert default_offset(CharTokenizer.fit("abc")) == pytest.approx(math.log(2))
    assert default_offset(object()) == 0.0


def test_an_offset_above_the_losses_is_clamped_without_hanging(trained):
    _, runs, out = trained
    built = []
    worker = threading.Thread(target=lambda: built.append(make_lab(out, offset=5.0)), daemon=True)
    worker.start()
    worker.join(30)  # the slider's lower max moved its value inside a redraw: it deadlocked
    assert not worker.is_alive(), "building the lab hung"
    lab = built[0]
    assert lab.offset_slider.value < min(runs.column("val_loss")) and lab.fit.c == lab.offset_slider.value


def test_running_the_cell_again_stops_the_older_lab(tmp_path):
    out = tmp_path / "again.json"
    first = make_lab(out)
    first.start()
    trainer = first.trainer
    wait_for(lambda: trainer.step_count >= 3)
    second = make_lab(out)
    wait_for(lambda: not trainer.is_alive)
    assert first.start_button.disabled and "a newer view writing to" in first.status.value
    assert second.plan.next_missing() == 0 and not second.start_button.disabled


def test_closing_the_lab_stops_its_training(tmp_path):
    lab = make_lab(tmp_path / "closed.json")
    lab.start()
    trainer = lab.trainer
    wait_for(lambda: trainer.step_count >= 3)
    lab.close()
    wait_for(lambda: not trainer.is_alive)
    assert trainer.step_count < trainer.config.max_steps


def test_a_stop_during_the_last_step_still_records_the_size(tmp_path):
    lab = make_lab(tmp_path / "last.json")
    lab.start()
    trainer = lab.trainer
    last = trainer.config.max_steps - 1

    def stop_in_last_step(module, args):
        if trainer.step_count == last and trainer.state == "running":
            lab._chain = False  # as the Stop button does (its trainer.stop waits: not from a step)
            trainer.stop(wait=False)  # lands during the final step: the run ends "stopped"

    hook = trainer.model.register_forward_pre_hook(stop_in_last_step)
    wait_for(lambda: not trainer.is_alive)
    hook.remove()
    assert trainer.state == "stopped" and trainer.step_count == trainer.config.max_steps
    lab.start()  # records it and goes on (it refused: "already at step N of max_steps")
    wait_for(lambda: lab.plan.next_missing() is None and lab.trainer is None)
    assert lab.results.complete and lab.results[0]["steps"] == trainer.config.max_steps


def test_redraws_refit_only_when_a_run_or_a_control_changes(trained, monkeypatch):
    import lmlab.widgets.scaling as module

    lab, calls = trained[0], []
    real = module.fit_power_law
    monkeypatch.setattr(module, "fit_power_law", lambda *a, **k: calls.append(1) or real(*a, **k))
    lab.redraw(force=True)
    lab.redraw(force=True)
    assert calls == []  # a redraw while a size trains leaves the fit alone
    lab.offset_slider.value = 0.5
    assert calls == [1] and lab.fit.c == 0.5
