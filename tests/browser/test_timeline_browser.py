"""The training timeline in JupyterLab, headless Chromium: a `tiny` run with 21 snapshots,
its timeline view linking the dashboard, the attention explorer (64 tokens), the logit
lens, the embeddings map and the stepper. Each move of the slider (a key press on its
handle) is timed from the keydown to the frame where the heatmap's cursor and the
explorer's title show the new step (printed, with LMLAB_BENCH_OUT set written there: never
asserted); the test asserts that each move reaches every view, and that "live" goes back."""

import nbformat

from test_dashboard import cell_output, run_cell, wait_until
from test_views_speed_browser import PROBE, report

VIEW = ".lmlab-timeline"
MOVES = 16
MOVED = """const c = document.querySelector(".lmlab-timeline .lmlab-heatmap-cursor");
const a = document.querySelector(".lmlab-attention");
return c && c.dataset.step === String(arg) && a && a.innerText.includes(`step ${arg})`);"""


def notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import torch, lmlab\n"
        "from lmlab.widgets import *\n"
        "from lmlab.bench.training import cpu_setup\n"
        "model, data, config = cpu_setup(max_steps=200, eval_interval=100)\n"
        "trainer = lmlab.Trainer(model, data, config)\n"
        "timeline = lmlab.Timeline(trainer, every=10)\n"
        "trainer.run(progress=False)\n"
        "text = data.tokenizer.decode(data.val_ids[:64].tolist())\n"
        "print('ready', timeline.steps)",
        "dashboard = TrainingDashboard(trainer)\ndashboard",
        "explorer = AttentionExplorer(trainer=trainer, text=text)\nexplorer",
        "lens = LogitLensView(trainer=trainer, text=text)\nembeddings = EmbeddingMap(trainer=trainer)\n"
        "stepper = SamplingStepper(model, data.tokenizer, 'ROMEO:', seed=0)\nstepper.stepper.greedy(20)\n"
        "import ipywidgets as W\nW.VBox([lens, embeddings, stepper])",
        "view = TimelineView(timeline, [dashboard, explorer, lens, embeddings, stepper],\n"
        "                    context='ROMEO', token=':')\n"
        "view",
        "runs = globals().get('runs', 0) + 1\n"
        "shown = timeline.model_at(view.step) if view.step is not None else model\n"
        "print('run', runs, 'step', view.step, 'explorer', explorer.shown_step,\n"
        "      'stepper', stepper.shown_step, 'lens', lens.model is shown)",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    return nb


def moved(page, key: str, step: int) -> float:
    """Press `key` on the slider's handle; milliseconds until the views show `step`."""
    page.evaluate(PROBE, [MOVED, step, "keydown"])
    page.locator(f"{VIEW} .lmlab-timeline-slider .noUi-handle").first.press(key)
    page.wait_for_function("() => window.__lmlabProbe.t1 !== null", polling=100, timeout=30_000)
    return page.evaluate("() => window.__lmlabProbe.t1 - window.__lmlabProbe.t0")


def test_scrub_the_timeline_and_every_view_follows(jlab_only, page):
    jlab = jlab_only
    nbformat.write(notebook(), jlab.server.root / "timeline.ipynb")
    jlab.open("timeline.ipynb")
    run_cell(jlab, 0)
    wait_until(lambda: "ready" in cell_output(jlab, 0), timeout=300, what="the run")
    steps = list(range(0, 201, 10))
    assert cell_output(jlab, 0).strip() == f"ready {steps}"
    for index in (1, 2, 3, 4):
        run_cell(jlab, index)
        jlab.wait_kernel_idle()
    jlab.wait_for(f"{VIEW} .lmlab-heatmap-cursor")
    assert "live" in page.locator(f"{VIEW} .lmlab-timeline-label").first.inner_text()

    samples = {"move the timeline": []}
    index = len(steps) - 1
    for i in range(MOVES):  # down the run, then back up
        key = "ArrowLeft" if i < MOVES // 2 + 2 else "ArrowRight"
        index += -1 if key == "ArrowLeft" else 1
        samples["move the timeline"].append(moved(page, key, steps[index]))
    label = page.locator(f"{VIEW} .lmlab-timeline-label").first.inner_text()
    assert f"step {steps[index]}" in label and "as it was" in label
    run_cell(jlab, 5)
    wait_until(lambda: "run 1 " in cell_output(jlab, 5), what="the kernel's answer")
    words = cell_output(jlab, 5).split()
    assert words[3] == words[5] == words[7] == str(steps[index]) and words[9] == "True"
    page.locator(VIEW).first.scroll_into_view_if_needed()
    jlab.screenshot("timeline")

    page.locator(f"{VIEW} button:has-text('live')").first.click()
    wait_until(lambda: "live" in page.locator(f"{VIEW} .lmlab-timeline-label").first.inner_text(),
               what="live again")
    jlab.wait_kernel_idle()
    run_cell(jlab, 5)
    wait_until(lambda: "run 2 " in cell_output(jlab, 5), what="the kernel's answer")
    words = cell_output(jlab, 5).split()
    assert words[3] == words[5] == words[7] == "None" and words[9] == "True"
    report("timeline", samples)
