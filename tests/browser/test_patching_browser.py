"""The activation-patching view in JupyterLab, headless Chromium, on a GPT-2-shaped model (12
layers x 12 heads, 768 wide, random weights, GPT-2's 50,257-token vocabulary) over 32
tokens: Patch runs the grid on the kernel's event loop while other cells run; Stop leaves a
partial grid, grey where not run; a click on a cell shows that cell's predictions, the
kernel's `Patching.predictions`, drawn in the page without running the model. Each click is
timed from its pointerdown to the frame showing the cell's predictions (printed, with
LMLAB_BENCH_OUT set written there: never asserted)."""

import json

import nbformat

from test_dashboard import cell_output, run_cell, wait_until
from test_views_speed_browser import report, timed

VIEW = ".lmlab-patching"
CELLS = ([("resid_pre", layer, index) for layer, index in [(0, 1), (3, 5), (6, 10), (9, 20), (11, 31), (2, 1)]]
         + [("heads", layer, index) for layer, index in [(0, 0), (1, 11), (5, 5), (7, 3), (11, 11), (4, 8)]]
         + [("mlps", layer, index) for layer, index in [(0, 1), (2, 31), (5, 7), (8, 16), (10, 2), (11, 30)]])
PROBE_CELL, PREDICTIONS_CELL = 2, 3
DETAIL_SHOWN = """const d = document.querySelector(".lmlab-patching .lmlab-patching-detail");
return d && d.dataset.cell === arg;"""


def notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import json, lmlab\n"
        "from lmlab.widgets import PatchingView\n"
        "from lmlab.widgets.bench_views import Counter, setup\n"
        "model, tok, text = setup('gpt2-vocab', 32)\n"
        "forwards = Counter(model.transformer.h[-1])  # every run of the model, whole or patched\n"
        "print('ready', len(tok.encode(text)))",
        "view = PatchingView(model, tok, text, answer='␣all', wrong='␣speak')\n"
        "view.swap(31, '␣speak')  # '...You are all' -> '...You are speak'\n"
        "view",
        "probes = globals().get('probes', 0) + 1\n"
        "p = view.patcher\n"
        "print('probe', probes, 'done', p.done if p else 0, 'of', p.total if p else 0,\n"
        "      'complete', view.result.complete if view.result else None, 'forwards', forwards.n)",
        f"cells = {CELLS!r}\n"
        "print('kernel', json.dumps({'selected': view.selected,\n"
        "      'predictions': [view.result.predictions(*c) for c in cells]}))",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    return nb


def probe(jlab, runs: list) -> dict:
    """The kernel's answer to the probe cell (run once more): batches done, total, complete,
    forwards so far. It answers between two batches of a running grid."""
    runs[0] += 1
    run_cell(jlab, PROBE_CELL)
    wait_until(lambda: f"probe {runs[0]} " in cell_output(jlab, PROBE_CELL), timeout=120,
               what="the kernel's answer")
    words = cell_output(jlab, PROBE_CELL).split()
    return {"done": int(words[3]), "total": int(words[5]), "complete": words[7], "forwards": int(words[9])}


def patch_button(page):
    return page.locator(f"{VIEW} .lmlab-patch").first


def status(page) -> str:
    return page.locator(f"{VIEW} .lmlab-message").first.inner_text() if page.locator(
        f"{VIEW} .lmlab-message").count() else ""


def pixel(page, kind: str, layer: int, index: int) -> list:
    """The colour drawn at the centre of a cell of `kind`'s canvas."""
    return page.evaluate(
        "([kind, l, i]) => { const c = document.querySelector(`.lmlab-patching-${kind}`), d = c.dataset;"
        " const x = Number(d.left) + (i + 0.5) * Number(d.cw), y = Number(d.top) + (l + 0.5) * Number(d.ch);"
        " return [...c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)]; }", [kind, layer, index])


def click_cell(page, kind: str, layer: int, index: int):
    canvas = page.locator(f".lmlab-patching-{kind}").first
    d = page.evaluate("(s) => { const c = document.querySelector(s); const b = c.getBoundingClientRect();"
                      " return {...c.dataset, scale: b.width / c.width}; }", f".lmlab-patching-{kind}")
    s = d["scale"]
    canvas.click(position={"x": (float(d["left"]) + (index + 0.5) * float(d["cw"])) * s,
                           "y": (float(d["top"]) + (layer + 0.5) * float(d["ch"])) * s})


def detail(page) -> list:
    """The predictions the detail panel lists: [(token, probability text)]."""
    return page.evaluate(
        "() => [...document.querySelectorAll('.lmlab-patching .lmlab-patching-detail tr')]"
        ".map(r => [r.cells[0].textContent, r.cells[1].textContent])")


def test_patch_stop_and_click_cells(jlab_only, page):
    jlab = jlab_only
    nbformat.write(notebook(), jlab.server.root / "patching.ipynb")
    jlab.open("patching.ipynb")
    run_cell(jlab, 0)
    wait_until(lambda: "ready" in cell_output(jlab, 0), timeout=300, what="the model")
    assert cell_output(jlab, 0).split()[1] == "32"
    run_cell(jlab, 1)
    jlab.wait_for(f"{VIEW} .lmlab-patch")
    jlab.wait_kernel_idle()
    runs = [0]
    built = probe(jlab, runs)
    assert built["done"] == 0 and built["complete"] == "None"  # nothing ran yet

    # Patch, then Stop: the kernel answers between batches, the partial grid stays drawn
    patch_button(page).click()
    jlab.wait_for(f"{VIEW} .lmlab-patch-progress")
    state = probe(jlab, runs)
    # the texts differ at the last position alone, so the stream and the MLPs differ there only: a layer
    # is one batch of that position, one of its 12 heads, one of its MLP's position (the rest are known)
    batches = 12 * (1 + 1 + 1)
    assert state["total"] == batches and state["complete"] == "False"
    while state["done"] < 2:
        state = probe(jlab, runs)
    page.locator(f"{VIEW} .lmlab-patch-stop").first.click()
    wait_until(lambda: "stopped after" in status(page), timeout=120, what="the grid to stop")
    stopped = probe(jlab, runs)
    assert stopped["complete"] == "False" and 2 <= stopped["done"] < stopped["total"]
    assert f"stopped after {stopped['done']} of {batches} batches" in status(page)
    wait_until(lambda: page.locator(".lmlab-patching-resid_pre").count() == 1, what="the grid")
    grey = [200, 200, 200]
    assert pixel(page, "resid_pre", 0, 3) != grey and pixel(page, "resid_pre", 0, 31) != grey  # known, run
    assert pixel(page, "mlps", 11, 31) == grey and pixel(page, "mlps", 11, 3) == grey  # the last batch's
    jlab.screenshot("patching-stopped")

    # Patch again, to the end; the kernel answers meanwhile
    patch_button(page).click()
    during = probe(jlab, runs)
    assert during["done"] < during["total"] and during["complete"] == "False"
    wait_until(lambda: probe(jlab, runs)["complete"] == "True", timeout=900, what="the whole grid")
    wait_until(lambda: not patch_button(page).is_disabled(), what="Patch enabled again")
    jlab.wait_kernel_idle()
    before = probe(jlab, runs)["forwards"]

    samples = {"show a cell's predictions": []}
    shown = []
    for kind, layer, index in CELLS:
        samples["show a cell's predictions"].append(
            timed(page, DETAIL_SHOWN, f"{kind},{layer},{index}", lambda: click_cell(page, kind, layer, index)))
        shown.append(detail(page))
    assert probe(jlab, runs)["forwards"] == before  # the clicks ran no model

    run_cell(jlab, PREDICTIONS_CELL)
    wait_until(lambda: "kernel" in cell_output(jlab, PREDICTIONS_CELL), what="the kernel's predictions")
    kernel = json.loads(cell_output(jlab, PREDICTIONS_CELL).split("kernel", 1)[1])
    assert kernel["selected"] == list(CELLS[-1])  # the last click reached the kernel
    for cell, page_rows, kernel_rows in zip(CELLS, shown, kernel["predictions"]):
        assert len(page_rows) == 10, cell
        assert [t for t, _ in page_rows] == [t for t, _ in kernel_rows], cell
        for (_, text), (_, p) in zip(page_rows, kernel_rows):  # 3 decimals, or 2 digits below 0.001
            assert abs(float(text) - p) <= max(5e-4, 0.05 * p), (cell, text, p)
    page.locator(f"{VIEW} .lmlab-patching-detail").first.scroll_into_view_if_needed()
    jlab.screenshot("patching")
    page.locator(VIEW).first.evaluate("e => e.scrollIntoView()")
    jlab.screenshot("patching-controls")
    report("patching", samples)
