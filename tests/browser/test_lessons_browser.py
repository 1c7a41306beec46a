"""Every lesson in JupyterLab, headless Chromium, quick mode: Run All, no cell shows an
error, and the views it shows are on screen with their front ends drawn."""

import shutil
from pathlib import Path

import pytest

from test_dashboard import wait_until

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
VIEWS = {  # what each lesson must show, drawn by its front end
    "00_quickstart.ipynb": [],
    "01_train_live.ipynb": [".lmlab-dashboard .lmlab-loss-chart svg",
                            ".lmlab-compare .lmlab-compare-chart svg"],
    "02_attention.ipynb": [".lmlab-attention .lmlab-heads-canvas", ".lmlab-attention .lmlab-matrix-canvas"],
    "03_sampling.ipynb": [".lmlab-stepper .lmlab-chips .lmlab-chip", ".lmlab-stepper .lmlab-bar-row",
                          ".lmlab-surprise .lmlab-chips .lmlab-chip"],
    "04_embeddings_and_positions.ipynb": [".lmlab-embeddings .js-plotly-plot"],
    "05_tokenizers.ipynb": [".lmlab-playground .lmlab-token-row .lmlab-chip"],
    "06_scaling_laws.ipynb": [".lmlab-scaling .lmlab-scaling-curves svg path.series",
                              ".lmlab-scaling .lmlab-scaling-fit svg circle"],
    "07_pretrain_finetune.ipynb": [".lmlab-compare .lmlab-compare-chart svg path.series",
                                   ".lmlab-compare-models .lmlab-compare-model"],
    "08_inside_gpt2.ipynb": [".lmlab-attention canvas", ".lmlab-stepper .lmlab-bar-row",
                             ".lmlab-lens .js-plotly-plot"],
    "09_circuits.ipynb": [".lmlab-dashboard .lmlab-loss-chart svg", ".lmlab-attention .lmlab-heads-canvas",
                          ".lmlab-attention .lmlab-matrix-canvas", ".lmlab-patching .lmlab-patching-canvas"],
}
ALL_RAN = ("() => { const cells = jupyterapp.shell.currentWidget.content.widgets;"
           " return cells.every(c => c.model.type !== 'code' || (c.model.executionCount !== null"
           " && !c.node.querySelector('.jp-InputArea-prompt').innerText.includes('*'))); }")


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setenv("LMLAB_QUICK", "1")  # before the server starts: its kernels inherit it


def test_every_lesson_has_its_views(quick):
    assert sorted(VIEWS) == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_lesson_runs_in_jupyterlab(quick, jlab_only, name):
    jlab = jlab_only
    shutil.copy(NOTEBOOKS / name, jlab.server.root / name)
    jlab.open(name)
    jlab.run_all()
    jlab.page.wait_for_function(ALL_RAN, timeout=600_000, polling=500)
    jlab.wait_kernel_idle(timeout=300_000)
    assert not jlab.cell_errors(), "\n".join(e[-1500:] for e in jlab.cell_errors())
    refused = jlab.page.locator(".lmlab-message.lmlab-error").all_inner_texts()
    assert not refused, refused  # a view that shows an error instead of its lesson's text
    for i, selector in enumerate(VIEWS[name]):
        wait_until(lambda: jlab.page.locator(selector).count() > 0, timeout=60, what=selector)
        jlab.element_screenshot(selector.split()[0], f"{Path(name).stem}-view-{i}")
    jlab.screenshot(Path(name).stem)
