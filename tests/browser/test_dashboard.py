"""The training dashboard in JupyterLab and Notebook 7, in headless Chromium: click,
watch, run other cells meanwhile, reload, open a second tab, interrupt, narrow screens."""

import shutil
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
OTHER_CELL = 2  # index of the cell run while training


def dashboard_notebook(blocking_steps: int = 0) -> nbformat.NotebookNode:
    """A nano model on a small corpus, its dashboard, and a cell to run meanwhile."""
    nb = nbformat.v4.new_notebook()
    sources = [
        "import lmlab\n"
        "from lmlab.widgets import TrainingDashboard\n"
        "data = lmlab.TokenDataset(lmlab.load_corpus('shakespeare')[:200_000], block_size=32)\n"
        "model = lmlab.GPT(lmlab.GPTConfig.preset('nano', vocab_size=data.vocab_size,"
        " block_size=32))\n"
        "trainer = lmlab.Trainer(model, data, max_steps=100_000, eval_interval=50, eval_batches=4,"
        " device='cpu')\n"
        "import threading\n"
        "step_threads = set()  # which threads run the steps\n"
        "trainer.on_step(lambda t, row: step_threads.add(threading.current_thread().name))",
        "dashboard = TrainingDashboard(trainer, prompt='ROMEO:', sample_every=50,"
        " sample_tokens=40)\n"
        "dashboard",
        "print(f'another cell ran at step {trainer.step_count}', 6 * 7, sorted(step_threads))",
    ]
    if blocking_steps:
        sources.append(f"dashboard.run({blocking_steps})")
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    return nb


def step_count(jlab) -> int:
    return int(jlab.text(".lmlab-dashboard .lmlab-step-value"))


def chart_points(jlab, page=None) -> int:
    """Points of the loss chart's first line, as drawn in the page."""
    return (page or jlab.page).evaluate(
        "() => { const s = document.querySelector('.lmlab-loss-chart svg');"
        " return s ? Number(s.dataset.points) : -1; }")


def wait_until(predicate, timeout=60.0, what="condition"):
    """Wait for `predicate()`; `what` names it in the failure (a callable: said then)."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what() if callable(what) else what}"
        time.sleep(0.2)


def run_cell(jlab, index: int):
    """Run one cell, as Shift+Enter on it would."""
    jlab.page.evaluate(
        "(i) => { const nb = jupyterapp.shell.currentWidget.content; nb.activeCellIndex = i;"
        " jupyterapp.commands.execute('notebook:run-cell'); }", index)


def cell_output(jlab, index: int) -> str:
    return jlab.page.evaluate(
        "(i) => { const c = jupyterapp.shell.currentWidget.content.widgets[i];"
        " return c.outputArea ? c.outputArea.node.innerText : ''; }", index)


def open_dashboard(jlab, nb=None):
    nbformat.write(nb or dashboard_notebook(), jlab.server.root / "dashboard.ipynb")
    jlab.open("dashboard.ipynb")
    for index in (0, 1):
        run_cell(jlab, index)
        jlab.wait_kernel_idle()
    jlab.wait_for(".lmlab-dashboard .lmlab-start")
    jlab.wait_for(".lmlab-loss-chart svg")
    assert step_count(jlab) == 0


def test_dashboard_trains_while_other_cells_run_and_obeys_its_buttons(jlab):
    open_dashboard(jlab)
    jlab.screenshot("01-ready")

    jlab.click(".lmlab-start")
    wait_until(lambda: step_count(jlab) >= 60, what="steps to rise")
    wait_until(lambda: chart_points(jlab) >= 30, what="the loss chart to gain points")
    wait_until(lambda: "step 50" in jlab.text(".lmlab-samples"), what="a sample")
    assert "tokens/s" in jlab.text(".lmlab-stats")

    before = step_count(jlab)
    run_cell(jlab, OTHER_CELL)  # the notebook stays usable while Start trains
    wait_until(lambda: "another cell ran at step" in cell_output(jlab, OTHER_CELL),
               what="the other cell's output")
    assert "42" in cell_output(jlab, OTHER_CELL)
    # the click reached the kernel on a subshell thread; the steps still run on the main one
    assert "['MainThread']" in cell_output(jlab, OTHER_CELL)
    wait_until(lambda: step_count(jlab) > before + 20, what="training to go on after the cell")
    jlab.screenshot("02-training")
    jlab.element_screenshot(".lmlab-dashboard", "dashboard-widget")

    jlab.click(".lmlab-pause")
    wait_until(lambda: "paused" in jlab.text(".lmlab-state"), what="paused state")
    time.sleep(1.0)
    paused_at, points_paused = step_count(jlab), chart_points(jlab)
    time.sleep(2.0)
    assert step_count(jlab) == paused_at, "steps rose while paused"
    assert jlab.text(".lmlab-pause").strip() == "Resume"
    jlab.screenshot("03-paused")

    jlab.click(".lmlab-pause")  # Resume
    wait_until(lambda: step_count(jlab) > paused_at + 10, what="steps to rise after Resume")
    wait_until(lambda: chart_points(jlab) > points_paused, what="the chart to grow again")
    jlab.click(".lmlab-stop")
    wait_until(lambda: "stopped" in jlab.text(".lmlab-state"), what="stopped state")
    stopped_at = step_count(jlab)
    time.sleep(1.0)
    assert step_count(jlab) == stopped_at

    jlab.fill(".lmlab-lr input", "fast")
    wait_until(lambda: "not a number" in jlab.text(".lmlab-error"), what="the error")
    assert "learning rate 'fast' is not a number" in jlab.text(".lmlab-error")
    jlab.screenshot("04-error")

    # still usable: fix the value and train on
    jlab.fill(".lmlab-lr input", "0.002")
    wait_until(lambda: jlab.text(".lmlab-error").strip() == "", what="the error to clear")
    jlab.click(".lmlab-start")
    wait_until(lambda: step_count(jlab) > stopped_at + 5, what="training after the error")
    run_cell(jlab, OTHER_CELL)  # later clicks reach the kernel on a subshell thread too
    wait_until(lambda: f"at step {stopped_at}" not in cell_output(jlab, OTHER_CELL)
               and "another cell ran" in cell_output(jlab, OTHER_CELL), what="the cell again")
    assert "['MainThread']" in cell_output(jlab, OTHER_CELL), cell_output(jlab, OTHER_CELL)
    jlab.click(".lmlab-stop")
    wait_until(lambda: "stopped" in jlab.text(".lmlab-state"), what="stopped again")
    assert not jlab.cell_errors()


def test_the_dashboard_survives_a_reload_and_a_second_tab(jlab):
    open_dashboard(jlab)
    jlab.click(".lmlab-start")
    wait_until(lambda: chart_points(jlab) >= 40, what="points before the reload")
    jlab.page.evaluate("() => jupyterapp.commands.execute('docmanager:save')")
    time.sleep(1.0)
    drawn = chart_points(jlab)

    jlab.page.reload()  # the teacher reloads the projector's tab
    jlab.page.wait_for_function("() => window.jupyterapp && jupyterapp.shell.currentWidget",
                                timeout=90_000)
    wait_until(lambda: chart_points(jlab) >= drawn, timeout=90, what="the whole curve after reload")
    after_reload = chart_points(jlab)
    wait_until(lambda: chart_points(jlab) > after_reload, what="the curve to keep growing")
    assert "model not found" not in jlab.page.inner_text("body")
    jlab.screenshot("05-reloaded")

    second = jlab.page.context.new_page()  # the same notebook in a second tab
    second.goto(jlab.server.notebook_url("dashboard.ipynb", jlab.frontend))
    second.wait_for_selector(".lmlab-loss-chart svg", timeout=90_000)
    wait_until(lambda: chart_points(jlab, second) >= after_reload, what="the curve in tab two")
    in_second = chart_points(jlab, second)
    wait_until(lambda: chart_points(jlab, second) > in_second, what="tab two to keep updating")
    path = jlab.shots / "06-second-tab.png"
    second.screenshot(path=str(path))
    print(f"screenshot: {path}")
    assert "model not found" not in second.inner_text("body")
    second.locator(".lmlab-stop").click()  # the buttons of the second tab work too
    wait_until(lambda: "stopped" in jlab.text(".lmlab-state"), what="stopped from tab two")
    second.close()


def test_interrupting_the_kernel_stops_training_after_the_step(jlab):
    open_dashboard(jlab, dashboard_notebook(blocking_steps=100_000))
    jlab.click(".lmlab-start")
    wait_until(lambda: step_count(jlab) >= 20, what="Start to train")
    jlab.page.evaluate("() => jupyterapp.commands.execute('notebook:interrupt-kernel')")
    wait_until(lambda: "stopped" in jlab.text(".lmlab-state"), what="the interrupt to stop Start")
    stopped_at = step_count(jlab)
    time.sleep(1.0)
    assert step_count(jlab) == stopped_at

    run_cell(jlab, 3)  # dashboard.run(): training in this cell, the kernel busy
    wait_until(lambda: "training in this cell" in jlab.text(".lmlab-state"),
               what="the blocking run to show")
    wait_until(lambda: step_count(jlab) > stopped_at + 10, what="the blocking run to train")
    for button in (".lmlab-start", ".lmlab-pause", ".lmlab-stop", ".lmlab-step-once"):
        assert jlab.page.locator(button).is_disabled(), f"{button} looks clickable"
    assert "interrupt" in jlab.page.locator(".lmlab-stop").get_attribute("title")
    assert "interrupt the kernel" in jlab.text(".lmlab-error")
    jlab.screenshot("07-blocking-run")
    jlab.page.evaluate("() => jupyterapp.commands.execute('notebook:interrupt-kernel')")
    wait_until(lambda: "stopped" in jlab.text(".lmlab-state"), what="the interrupt to stop run()")
    jlab.wait_kernel_idle()
    assert not jlab.page.locator(".lmlab-start").is_disabled()
    assert not jlab.cell_errors()  # stopped after a whole step, no KeyboardInterrupt


@pytest.mark.parametrize("width", [1024, 1400])
def test_the_dashboard_fits_a_projector(jlab_only, width):
    jlab, page = jlab_only, jlab_only.page
    page.set_viewport_size({"width": width, "height": 900})
    open_dashboard(jlab)
    page.evaluate("() => jupyterapp.commands.execute('filebrowser:activate')")  # sidebar open
    time.sleep(1.0)
    for n in range(1, 4):  # one step at a time: this test is about the layout, and a click mid-step can be lost
        jlab.click(".lmlab-step-once")
        wait_until(lambda: step_count(jlab) == n,
                   what=lambda: f"step {n} (the dashboard shows step {step_count(jlab)}, its error "
                                f"box {jlab.text('.lmlab-error')!r})")
    time.sleep(0.5)
    overflow = page.evaluate("""() => {
        const root = document.querySelector('.lmlab-dashboard');
        const box = root.getBoundingClientRect();
        const out = [...root.querySelectorAll('*')].filter(e => e.offsetParent !== null)
          .map(e => [e, e.getBoundingClientRect()])
          .filter(([e, r]) => r.width > 0 && r.right > box.right + 1)
          .map(([e, r]) => (e.className.baseVal ?? e.className) + ' ' + Math.round(r.right));
        return {outside: out.slice(0, 10), scroll: root.scrollWidth - root.clientWidth,
                width: Math.round(box.width)};
    }""")
    jlab.screenshot(f"dashboard-{width}px")
    assert overflow["outside"] == [] and overflow["scroll"] <= 1, overflow
    for selector in (".lmlab-samples", ".lmlab-sample-every", ".lmlab-prompt"):
        assert page.locator(selector).first.is_visible()


def test_lesson_notebook_runs_and_shows_its_widgets(jlab):
    shutil.copy(NOTEBOOKS / "01_train_live.ipynb", jlab.server.root / "lesson.ipynb")
    jlab.open("lesson.ipynb")
    jlab.run_all()
    jlab.wait_for(".lmlab-dashboard .lmlab-loss-chart svg")
    jlab.wait_for(".lmlab-compare .lmlab-compare-chart svg")
    compared = ("() => { const s = document.querySelector('.lmlab-compare-chart svg');"
                " return s && s.dataset.series === '4' && Number(s.dataset.points) > 0; }")
    jlab.page.wait_for_function(compared, timeout=300_000)  # both runs trained, drawn live
    jlab.wait_kernel_idle(timeout=300_000)
    jlab.page.locator(".lmlab-compare").first.scroll_into_view_if_needed()
    jlab.screenshot("lesson-comparison")
    assert not jlab.cell_errors()
