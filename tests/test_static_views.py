"""Every lmlab view's output carries a static snapshot beside the live widget, so a saved
notebook shows its views where widgets do not run (nbconvert's HTML, nbviewer, an
untrusted notebook): the bundles, the display-id refresh, and an executed notebook
exported to HTML without a kernel."""

import html
import re
import subprocess
import sys

import pytest
from _needs import need

need("ipywidgets", "pip install -e .")

import nbformat  # noqa: E402

from lmlab.train import TrainConfig, Trainer  # noqa: E402
from lmlab.widgets import (AttentionExplorer, EmbeddingMap, RunComparison, SamplingStepper,  # noqa: E402
                           TokenizerPlayground, TokenSurprise, TrainingDashboard)
from lmlab.widgets.chart import LineChart, line  # noqa: E402

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 200
SETUP = f"""import torch
from lmlab import GPT, GPTConfig, TokenDataset
from lmlab.train import TrainConfig, Trainer
from lmlab.widgets import EmbeddingMap, SamplingStepper, TokenSurprise, TrainingDashboard
data = TokenDataset({TEXT!r}, block_size=32)
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=data.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16))
trainer = Trainer(model, data, TrainConfig(max_steps=20, batch_size=4, eval_interval=10,
                                           eval_batches=1, warmup_steps=5, device="cpu"))"""



@pytest.fixture
def trainer(model, data):
    return Trainer(model, data, TrainConfig(max_steps=20, batch_size=4, eval_interval=10, eval_batches=1,
                                            warmup_steps=5, device="cpu"))


def static(view) -> str:
    """The view's bundle checked for the live widget; its static HTML."""
    bundle = view._repr_mimebundle_()
    assert bundle[WIDGET_VIEW]["model_id"] == view.model_id and bundle["text/plain"]
    snapshot = bundle["text/html"]
    assert "<script" not in snapshot and not re.search(r'(src|href)="http', snapshot)
    assert "no static snapshot" not in snapshot
    return snapshot


def test_dashboard_snapshot_has_the_status_charts_and_samples(trainer):
    dashboard = TrainingDashboard(trainer, sample_every=10, sample_tokens=10)
    assert '"lmlab-step-value">0</span> / 20' in static(dashboard)
    dashboard.run()
    snapshot = static(dashboard)
    assert '"lmlab-step-value">20</span> / 20' in snapshot and "finished" in snapshot
    assert f"loss {trainer.history.last()['train_loss']:.4f}" in snapshot
    loss_svg, lr_svg = re.findall(r"<svg.*?</svg>", snapshot)
    assert loss_svg.count("<path") == 3 and loss_svg.count("<circle") == 2  # raw, smoothed, val
    assert "learning rate" in lr_svg and lr_svg.count("<path") == 1
    assert html.escape(trainer.samples[-1]["text"]) in snapshot
    assert len(snapshot) < 20_000


def test_comparison_snapshot_draws_each_run(trainer, model, data):
    other = Trainer(model, data, TrainConfig(max_steps=10, batch_size=4, device="cpu", optimizer="sgd"))
    view = RunComparison([trainer, other], labels=["adamw", "sgd"])
    view.run()
    snapshot = static(view)
    assert "adamw train" in snapshot and "sgd val" in snapshot
    assert snapshot.count("<path") == 4 and ">20</text>" in snapshot  # train and val of each, to step 20


def test_attention_snapshot_has_both_pictures_and_the_table(model, data):
    view = AttentionExplorer(model, data.tokenizer, "the lazy fox")
    view.select(1, 1)
    snapshot = static(view)
    assert snapshot.count("data:image/png;base64,") == 2 and "layer 1, head 1" in snapshot
    assert snapshot.count("<tr") - snapshot.count("lmlab-predictions") >= 4 + 1  # a row a head
    assert "<code>2:e</code>" in snapshot and "plotly" not in snapshot
    assert len(snapshot) < 30_000


def test_stepper_snapshot_has_the_tokens_and_the_candidates(model, data):
    view = SamplingStepper(model, data.tokenizer, "the ", candidates=5)
    view.step()
    view.step()
    snapshot = static(view)
    chips = re.search(r"<div class='lmlab-chips'.*?</div>", snapshot).group(0)
    shown = re.sub(r"<[^>]+>", "", chips)
    assert html.unescape(shown) == "".join(c["text"] for c in view.chips.chips)
    assert chips.count("title='probability") == 2  # the generated tokens are tinted
    assert "2 tokens generated" in snapshot
    assert snapshot.count("<code>") == 5


def test_surprise_and_playground_snapshots_show_their_tokens(model, data):
    surprise = TokenSurprise(model, data.tokenizer, "the lazy dog")
    snapshot = static(surprise)
    assert "data-chips='12'" in snapshot and f"cross-entropy {surprise.score.cross_entropy:.3f}" in snapshot
    playground = TokenizerPlayground("the lazy dog", [data.tokenizer])
    snapshot = static(playground)
    assert "data-chips='12'" in snapshot and "12 tokens" in snapshot


def test_embedding_snapshot_is_an_svg_of_every_token(model, data):
    view = EmbeddingMap(model, data.tokenizer)
    snapshot = static(view)
    assert snapshot.count("<circle") == data.vocab_size and ">q</text>" in snapshot
    assert "PC1" in snapshot and "plotly" not in snapshot and len(snapshot) < 30_000
    view.update(dims=3)
    assert "first two of three" in static(view)


def test_a_failing_snapshot_still_displays_the_live_view(model, data, monkeypatch):
    view = TokenSurprise(model, data.tokenizer, "the lazy dog")
    monkeypatch.setattr(view, "_static_html", lambda: 1 / 0)
    bundle = view._repr_mimebundle_()
    assert WIDGET_VIEW in bundle and "ZeroDivisionError" in bundle["text/html"]


def test_chart_svg_leaves_gaps_and_skips_what_a_log_scale_cannot_show():
    chart = LineChart(title="t", height=200)
    assert "no points yet" in chart.svg()
    chart.set_lines([line("a", [0, 1, 2, 3], [1.0, None, 2.0, 3.0], "#123456"),
                     line("", [0, 1], [0.0, 4.0], "#654321")])
    svg = chart.svg()
    first = re.search(r'<path d="([^"]*)"[^>]*#123456', svg).group(1)
    assert first.count("M") == 2 and first.count("L") == 1  # the gap splits the line
    chart.log_y = True
    second = re.search(r'<path d="([^"]*)"[^>]*#654321', chart.svg()).group(1)
    assert second.count("M") == 1 and "L" not in second  # y = 0 is not on a log scale
    assert ">a</text>" in svg and svg.count("<line") == 1  # only named lines in the legend


def test_displayed_view_refreshes_its_snapshot_at_the_end_of_a_run_and_on_close(trainer, monkeypatch):
    import IPython.display

    calls = []
    monkeypatch.setattr(IPython.display, "display", lambda b, **kw: calls.append(("display", b, kw)))
    monkeypatch.setattr(IPython.display, "update_display", lambda b, **kw: calls.append(("update", b, kw)))
    dashboard = TrainingDashboard(trainer, sample_every=0)
    dashboard._ipython_display_()
    dashboard.run(5)
    dashboard.close()
    (_, shown, kw), (_, ended, kw_end), (_, closed, kw_close) = calls
    assert kw["raw"] and kw["display_id"] == kw_end["display_id"] == kw_close["display_id"]
    assert '"lmlab-step-value">0<' in shown["text/html"] and WIDGET_VIEW in shown
    assert '"lmlab-step-value">5<' in ended["text/html"] and WIDGET_VIEW in ended
    assert WIDGET_VIEW not in closed and '"lmlab-step-value">5<' in closed["text/html"]


def jupyter(*args, cwd):
    done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """A notebook of four views, run by nbconvert without saving widget state."""
    folder = tmp_path_factory.mktemp("static")
    cells = [SETUP,
             "dashboard = TrainingDashboard(trainer, sample_every=10, sample_tokens=10)\ndashboard",
             "dashboard.run()",
             "stepper = SamplingStepper(model, data.tokenizer, 'the ')\nstepper.step()\nstepper.step()\n"
             "stepper",
             "TokenSurprise(model, data.tokenizer, 'the lazy dog')",
             "EmbeddingMap(model, data.tokenizer)",
             "stepper.close()"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "views.ipynb")
    jupyter("--to", "notebook", "--execute", "--ExecutePreprocessor.store_widget_state=False",
            "--output", "ran.ipynb", "views.ipynb", cwd=folder)
    return folder


def exported(folder, name, *args, notebook="ran.ipynb") -> str:
    jupyter("--to", "html", *args, "--output", name, notebook, cwd=folder)
    return (folder / f"{name}.html").read_text(encoding="utf-8")


def test_executed_notebook_keeps_the_last_snapshot_of_each_view(executed):
    nb = nbformat.read(executed / "ran.ipynb", as_version=4)
    dashboard, = nb.cells[1].outputs
    assert '"lmlab-step-value">20</span> / 20' in dashboard.data["text/html"]  # refreshed by the run
    stepper, = nb.cells[3].outputs
    assert WIDGET_VIEW not in stepper.data and "2 tokens generated" in stepper.data["text/html"]  # closed
    assert WIDGET_VIEW in nb.cells[4].outputs[0].data and "widgets" not in nb.metadata


def test_nbconvert_html_shows_the_snapshots_and_loads_no_widget_script(executed):
    page = exported(executed, "plain")
    for view in ("TrainingDashboard", "SamplingStepper", "TokenSurprise", "EmbeddingMap"):
        assert f"lmlab-static {view}" in page
    assert '"lmlab-step-value">20</span> / 20' in page
    assert page.count("<svg") == 3 and 'data-chips="12"' in page  # the page is re-serialized
    assert WIDGET_VIEW not in page and "unpkg" not in page and "plotly" not in page.lower()
    scripts = re.findall(r'<script[^>]*src="(http[^"]*)"', page)
    assert all("require.js" in s or "mathjax" in s for s in scripts), scripts  # nbconvert's page, not ours


def test_saved_widget_state_hides_the_snapshot_from_nbconvert_until_cleared(executed):
    nb = nbformat.read(executed / "ran.ipynb", as_version=4)
    ids = [o.data[WIDGET_VIEW]["model_id"] for c in nb.cells for o in c.get("outputs", [])
           if WIDGET_VIEW in o.get("data", {})]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {i: {"model_name": "VBoxModel", "model_module": "@jupyter-widgets/controls",
                      "model_module_version": "2.0.0", "state": {}} for i in ids},
        "version_major": 2, "version_minor": 0}}
    nbformat.write(nb, executed / "saved_state.ipynb")
    with_state = exported(executed, "with_state", notebook="saved_state.ipynb")
    assert "lmlab-static TrainingDashboard" not in with_state and "unpkg.com" in with_state
    assert "lmlab-static SamplingStepper" in with_state  # closed: the snapshot alone
    cleared = exported(executed, "cleared", "--ClearMetadataPreprocessor.enabled=True",
                       notebook="saved_state.ipynb")
    assert "lmlab-static TrainingDashboard" in cleared and "unpkg" not in cleared

