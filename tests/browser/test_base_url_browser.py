"""lmlab's widgets under a base URL, as Binder and JupyterHub serve JupyterLab
(`/user/<name>/lab`): the server runs with `--ServerApp.base_url=/user/lmlab-test/`, and
each widget's front end (anywidget modules, CSS, the widget manager's comm) must load
from there. One notebook shows the training dashboard, the sampling stepper, the token
surprise view and the attention explorer; every one must render and no cell may fail."""

import nbformat
import pytest

from test_dashboard import cell_output, run_cell, wait_until

BASE_URL = "/user/lmlab-test/"  # as conftest.BASE_URL: JupyterHub's and Binder's form
WIDGETS = {  # cell index: what its front end draws once loaded
    1: ".lmlab-dashboard .lmlab-loss-chart svg",
    2: ".lmlab-stepper .lmlab-chips",
    3: ".lmlab-surprise .lmlab-chips",
    4: ".lmlab-attention canvas",
}


def widgets_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import lmlab, torch\n"
        "from lmlab.widgets import AttentionExplorer, SamplingStepper, TokenSurprise,"
        " TrainingDashboard\n"
        "data = lmlab.TokenDataset(lmlab.load_corpus('shakespeare')[:100_000], block_size=32)\n"
        "torch.manual_seed(0)\n"
        "model = lmlab.GPT(lmlab.GPTConfig.preset('nano', vocab_size=data.vocab_size, block_size=32))\n"
        "trainer = lmlab.Trainer(model, data, max_steps=20, eval_interval=10, eval_batches=1,"
        " device='cpu')\n"
        "print('ready')",
        "TrainingDashboard(trainer, prompt='ROMEO:', sample_every=10, sample_tokens=20)",
        "SamplingStepper(model, data.tokenizer, 'ROMEO:', seed=1)",
        "TokenSurprise(model, data.tokenizer, 'JULIET:\\nO Romeo, Romeo!')",
        "AttentionExplorer(model, data.tokenizer, 'ROMEO: But soft, what light')",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    return nb


@pytest.mark.parametrize("lab", [BASE_URL], indirect=True, ids=["user-base-url"])
def test_every_widget_renders_under_a_base_url(jlab_only, page):
    jlab = jlab_only
    assert jlab.server.base_url == BASE_URL
    assert jlab.server.notebook_url("w.ipynb").startswith(f"http://127.0.0.1:{jlab.server.port}{BASE_URL}lab/")
    nbformat.write(widgets_notebook(), jlab.server.root / "widgets.ipynb")
    jlab.open("widgets.ipynb")
    assert page.url.startswith(f"http://127.0.0.1:{jlab.server.port}{BASE_URL}lab/tree/widgets.ipynb")
    base = page.evaluate("() => JSON.parse(document.getElementById('jupyter-config-data').textContent).baseUrl")
    assert base == BASE_URL

    failed = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    run_cell(jlab, 0)
    wait_until(lambda: "ready" in cell_output(jlab, 0), timeout=300, what="the model")
    for index in WIDGETS:
        run_cell(jlab, index)
        jlab.wait_kernel_idle()
    for index, selector in WIDGETS.items():
        page.evaluate("(i) => jupyterapp.shell.currentWidget.content.widgets[i].node.scrollIntoView()", index)
        jlab.wait_for(selector)
    jlab.click(".lmlab-dashboard .lmlab-start")  # the comm works both ways: the kernel trains
    wait_until(lambda: int(jlab.text(".lmlab-dashboard .lmlab-step-value")) >= 20, timeout=120,
               what="20 training steps")
    step = page.locator(".lmlab-stepper button", has_text="Step").first
    step.click()
    wait_until(lambda: page.evaluate("() => Number(document.querySelector("
                                     "'.lmlab-stepper .lmlab-chips').dataset.chips)") == 7,
               what="a chip after Step")
    assert not jlab.cell_errors(), jlab.cell_errors()
    assert not any(t.strip() for t in page.locator(".lmlab-error").all_inner_texts())
    ours = [f for f in failed if "/lab/extensions/" in f or "/static/" in f or "/api/" in f]
    assert not ours, f"requests failed under {BASE_URL}: {ours}"
    page.evaluate("() => jupyterapp.shell.currentWidget.content.widgets[1].node.scrollIntoView()")
    jlab.screenshot("base-url")  # the dashboard and the stepper
    page.evaluate("() => jupyterapp.shell.currentWidget.content.widgets[3].node.scrollIntoView()")
    jlab.screenshot("base-url-surprise-attention")
