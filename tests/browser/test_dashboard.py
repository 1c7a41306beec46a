"""The training dashboard in JupyterLab, in headless Chromium: click, watch, read."""

import shutil
import time
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def dashboard_notebook() -> nbformat.NotebookNode:
    """A nano model on a small corpus, and its dashboard."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "import lmlab\n"
        "from lmlab.train import Trainer\n"
        "from lmlab.widgets import TrainingDashboard\n"
        "data = lmlab.TokenDataset(lmlab.load_corpus('shakespeare')[:200_000], block_size=32)\n"
        "model = lmlab.GPT(lmlab.GPTConfig.preset('nano', vocab_size=data.vocab_size,"
        " block_size=32))\n"
        "trainer = Trainer(model, data, max_steps=100_000, eval_interval=50, eval_batches=4,"
        " device='cpu')",
        "dashboard = TrainingDashboard(trainer, prompt='ROMEO:', sample_every=50,"
        " sample_tokens=40)\n"
        "dashboard",
    )]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    return nb


def step_count(jlab) -> int:
    return int(jlab.text(".lmlab-step-value"))


def chart_points(jlab) -> int:
    return jlab.page.evaluate(
        "() => { const gd = document.querySelector('.lmlab-dashboard .js-plotly-plot');"
        " return gd && gd.data ? gd.data[0].x.length : -1; }")


def wait_until(predicate, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_dashboard_trains_pauses_resumes_stops_and_reports_errors(jlab):
    nbformat.write(dashboard_notebook(), jlab.server.root / "dashboard.ipynb")
    jlab.open("dashboard.ipynb")
    jlab.run_all()
    jlab.wait_for(".lmlab-dashboard .lmlab-start")
    jlab.wait_for(".lmlab-dashboard .js-plotly-plot")
    assert step_count(jlab) == 0
    jlab.screenshot("01-ready")

    jlab.click(".lmlab-start")
    wait_until(lambda: step_count(jlab) >= 60, what="steps to rise")
    wait_until(lambda: chart_points(jlab) >= 30, what="the loss chart to gain points")
    wait_until(lambda: "step 50" in jlab.text(".lmlab-samples"), what="a sample")
    assert "tokens/s" in jlab.text(".lmlab-stats")
    jlab.screenshot("02-training")
    jlab.element_screenshot(".lmlab-dashboard", "dashboard-widget")

    jlab.click(".lmlab-pause")
    wait_until(lambda: "paused" in jlab.text(".lmlab-state"), what="paused state")
    time.sleep(1.0)
    paused_at = step_count(jlab)
    time.sleep(2.0)
    assert step_count(jlab) == paused_at, "steps rose while paused"
    assert jlab.text(".lmlab-pause").strip() == "Resume"
    jlab.screenshot("03-paused")

    jlab.click(".lmlab-pause")  # Resume
    wait_until(lambda: step_count(jlab) > paused_at + 10, what="steps to rise after Resume")
    jlab.click(".lmlab-stop")
    wait_until(lambda: "stopped" in jlab.text(".lmlab-state"), what="stopped state")
    stopped_at = step_count(jlab)
    time.sleep(1.0)
    assert step_count(jlab) == stopped_at
    assert chart_points(jlab) > 0

    jlab.fill(".lmlab-lr input", "fast")
    wait_until(lambda: "not a number" in jlab.text(".lmlab-error"), what="the error")
    assert "learning rate 'fast' is not a number" in jlab.text(".lmlab-error")
    jlab.screenshot("04-error")

    # still usable: fix the value and train on
    jlab.fill(".lmlab-lr input", "0.002")
    wait_until(lambda: jlab.text(".lmlab-error").strip() == "", what="the error to clear")
    jlab.click(".lmlab-start")
    wait_until(lambda: step_count(jlab) > stopped_at + 5, what="training after the error")
    jlab.click(".lmlab-stop")
    wait_until(lambda: "stopped" in jlab.text(".lmlab-state"), what="stopped again")
    assert not jlab.cell_errors()


def test_lesson_notebook_runs_and_shows_its_widgets(jlab):
    shutil.copy(NOTEBOOKS / "01_train_live.ipynb", jlab.server.root / "lesson.ipynb")
    jlab.open("lesson.ipynb")
    jlab.run_all()
    jlab.wait_for(".lmlab-dashboard .js-plotly-plot")
    jlab.wait_for(".lmlab-compare .js-plotly-plot")
    compared = ("() => { const gd = document.querySelector('.lmlab-compare .js-plotly-plot');"
                " return gd && gd.data && gd.data.length === 4 && gd.data[0].x.length > 0"
                " && gd.data[2].x.length > 0; }")
    jlab.page.wait_for_function(compared, timeout=300_000)  # both runs trained, drawn live
    jlab.wait_kernel_idle(timeout=300_000)
    jlab.page.locator(".lmlab-compare").scroll_into_view_if_needed()
    jlab.screenshot("lesson-comparison")
    assert not jlab.cell_errors()
