"""Click-to-repaint in JupyterLab, headless Chromium, on a GPT-2-shaped model (12 layers x
12 heads, 768 wide, random weights) over a 128-token text, with a character vocabulary and
with GPT-2's 50,257 tokens: select a head on the overview, focus a token on the big view,
knock a head out, Step the stepper.

Each click is timed in the page, from its pointerdown to the frame after the element it
changes shows the new state (a MutationObserver, then requestAnimationFrame). The test
asserts what each click must do (and that selecting and focusing run no model, knocking out
runs one pass per head); the milliseconds are printed, with the kernel's own time for each
knock-out (its ablated pass and what it sends, timed around the explorer's handler), and,
with LMLAB_BENCH_OUT set, written there for `python -m lmlab.bench views --browser`: never
asserted. A second test clicks the big view at GPT-2's whole context, 1,024 tokens.
"""

import json
import os

import nbformat
import pytest

from lmlab.bench import percentile
from test_dashboard import cell_output, run_cell, wait_until

CLICKS = int(os.environ.get("LMLAB_BENCH_CLICKS", "16"))
GRID = ".lmlab-attention .lmlab-heads-canvas"

# Arms a one-shot probe: t0 at the next pointerdown (or the `start` event given), t1 at the
# frame after `condition` (a function body of `arg`, run on every DOM change after it) first holds.
PROBE = """([condition, arg, start = "pointerdown"]) => {
  const test = new Function("arg", condition);
  const probe = window.__lmlabProbe = {t0: null, t1: null};
  const observer = new MutationObserver(() => {
    if (probe.t0 === null || probe.done || !test(arg)) return;
    probe.done = true;
    observer.disconnect();
    requestAnimationFrame(() => { probe.t1 = performance.now(); });
  });
  observer.observe(document.body, {subtree: true, childList: true, attributes: true,
                                   characterData: true});
  document.addEventListener(start, () => { probe.t0 = performance.now(); },
                            {capture: true, once: true});
}"""

HEAD_SHOWN = """const c = document.querySelector(".lmlab-attention .lmlab-matrix-canvas");
return c && c.dataset.title.includes(arg.title) && Number(c.dataset.drawn) > arg.drawn;"""
PREDICTIONS = """const p = document.querySelector(".lmlab-attention .lmlab-predictions");
return p && p.parentElement.textContent.includes(arg);"""
CHIPS = """const c = document.querySelector(".lmlab-stepper .lmlab-chips");
return c && Number(c.dataset.chips) === arg;"""


def notebook(vocab: str, tokens: int = 128) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import json, time, lmlab\n"
        "from lmlab.widgets import AttentionExplorer, SamplingStepper\n"
        "from lmlab.widgets.bench_views import Counter, setup\n"
        f"model, tok, text = setup({vocab!r}, {tokens})\n"
        "forwards = Counter(model)\n"
        "print('ready', len(tok.encode(text)))",
        "explorer = AttentionExplorer(model, tok, text)\n"
        "knock_ms = []  # the kernel's side of each knock-out: the ablated pass and what it sends\n"
        "def timed(draw=explorer._draw_ablation):\n"
        "    t0, n = time.perf_counter(), forwards.n\n"
        "    draw()\n"
        "    if forwards.n > n:  # an ablated pass ran\n"
        "        knock_ms.append((time.perf_counter() - t0) * 1000)\n"
        "explorer._draw_ablation = timed\n"
        "explorer",
        "stepper = SamplingStepper(model, tok, text[:20], seed=0)\nstepper",
        "runs = globals().get('runs', 0) + 1\n"
        "print('forwards', forwards.n, 'run', runs, json.dumps(lmlab.passes.calls))",
        "print('knock_ms', json.dumps(knock_ms))",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    return nb


def timed(page, condition: str, arg, click, timeout: float = 30) -> float:
    """Milliseconds from the pointerdown of `click()` to the frame showing `condition`."""
    page.evaluate(PROBE, [condition, arg])
    click()
    try:
        page.wait_for_function("() => window.__lmlabProbe.t1 !== null", polling=100, timeout=timeout * 1000)
    except Exception:
        state = page.evaluate("() => ({probe: window.__lmlabProbe, matrix: {...(document.querySelector("
                              "'.lmlab-attention .lmlab-matrix-canvas') || {}).dataset}})")
        raise AssertionError(f"the click did not lead to {condition[:60]!r}… with {str(arg)[:80]!r}…; "
                             f"the page: {state}") from None
    return page.evaluate("() => window.__lmlabProbe.t1 - window.__lmlabProbe.t0")


def forwards(jlab, runs: list, cell: int = 3) -> int:
    """The model's forwards so far (`cell`, printing "forwards N run R ...", run once more;
    `runs` counts its runs in this notebook)."""
    runs[0] += 1
    run_cell(jlab, cell)
    wait_until(lambda: f"run {runs[0]} " in cell_output(jlab, cell), what="the forward count")
    return int(cell_output(jlab, cell).split()[1])


def grid_click(page, layer: int, head: int):
    """Click head `head` of layer `layer` on the overview (its layout: 34 px of labels on
    the left, 18 on top, cells with 3 px gaps)."""
    canvas = page.locator(GRID).first
    box = canvas.bounding_box()
    width = float(page.evaluate("(s) => document.querySelector(s).width", GRID))
    cell = (width - 34) / 12 - 3
    scale = box["width"] / width
    canvas.click(position={"x": (34 + head * (cell + 3) + cell / 2) * scale,
                           "y": (18 + layer * (cell + 3) + cell / 2) * scale})


def cell_point(page, row: int) -> dict:
    """Where on the page to click the big view's row `row` (its key column `row // 2`): its
    canvas's layout, 96 px of labels on the left and 6 on top, then `round(side / T)`
    pixels a token. A click's clientX/Y are whole CSS pixels, and at 1,024 tokens a row is
    under one: {"x", "y"} are whole, and "row" is the row they land on (`row` or a neighbour)."""
    return page.evaluate(
        "(row) => { const c = document.querySelector('.lmlab-attention .lmlab-matrix-canvas');"
        " const box = c.getBoundingClientRect(), scale = box.width / c.width;"
        " const T = Number(c.dataset.size), cell = Math.max(1, Math.round(440 / T));"
        " const x = Math.round(box.left + (96 + (Math.floor(row / 2) + 0.5) * cell) * scale);"
        " const y = Math.round(box.top + (6 + (row + 0.5) * cell) * scale);"
        " const hit = Math.floor(((y - box.top) / scale - 6) / cell);"
        " return {x, y, row: Math.min(T - 1, Math.max(0, hit))}; }",
        row)


def matrix(page) -> dict:
    """The big view's canvas: its title, times drawn, focus."""
    return page.evaluate("() => { const c = document.querySelector('.lmlab-attention .lmlab-matrix-canvas');"
                         " return c ? {...c.dataset} : {}; }")


HEADS = [(layer, head) for layer in range(12) for head in range(12)][1:CLICKS + 1]


def open_explorer(jlab, page, vocab: str, tokens: int) -> tuple[list, int]:
    """The views notebook on `tokens` tokens, run up to the explorer drawn; returns the
    forward counter's `runs` and the forwards so far."""
    name = f"views-{vocab}-{tokens}.ipynb"
    nbformat.write(notebook(vocab, tokens), jlab.server.root / name)
    jlab.open(name)
    run_cell(jlab, 0)
    wait_until(lambda: "ready" in cell_output(jlab, 0), timeout=300, what="the model")
    assert cell_output(jlab, 0).split()[1] == str(tokens)
    run_cell(jlab, 1)
    jlab.wait_for(GRID)
    wait_until(lambda: "layer 0, head 0 " in matrix(page).get("title", ""), timeout=300, what="the big view")
    assert matrix(page)["size"] == str(tokens)
    page.locator(".lmlab-attention").first.scroll_into_view_if_needed()
    runs = [0]
    return runs, forwards(jlab, runs)


def select_and_focus(page, tokens: int, stride: int) -> dict:
    """Click CLICKS heads on the overview, then CLICKS rows of the big view (every
    `stride`-th, scrolled to where below the fold); the milliseconds of each."""
    samples = {"select a head": [], "focus a token": []}
    for layer, head in HEADS:
        arg = {"title": f"layer {layer}, head {head} ", "drawn": int(matrix(page)["drawn"])}
        samples["select a head"].append(
            timed(page, HEAD_SHOWN, arg, lambda: grid_click(page, layer, head)))
    page.locator(".lmlab-attention .lmlab-matrix-canvas").first.scroll_into_view_if_needed()
    for n in range(CLICKS):
        point = cell_point(page, (n * stride + 5) % tokens)
        if point["y"] > page.viewport_size["height"] - 2:  # below the fold: scroll to it
            page.mouse.wheel(0, point["y"] - page.viewport_size["height"] / 2)
            page.wait_for_timeout(100)
            point = cell_point(page, (n * stride + 5) % tokens)
        row = point["row"]
        samples["focus a token"].append(timed(page, PREDICTIONS, f"after position {row} (",
                                              lambda: page.mouse.click(point["x"], point["y"])))
        assert matrix(page)["focus"] == str(row)  # its row and column outlined
    return samples


@pytest.mark.parametrize("vocab", ["characters", "gpt2-vocab"])
def test_clicks_redraw_what_they_change(jlab_only, page, vocab):
    jlab = jlab_only
    runs, built = open_explorer(jlab, page, vocab, 128)
    assert built == 2  # the text's pass and the induction probe
    samples = {**select_and_focus(page, 128, 37), "knock a head out": [], "Step": []}
    assert forwards(jlab, runs) == built  # selecting and focusing read the kept pass

    knock = page.locator(".lmlab-attention button", has_text="Knock out this head").first
    for layer, head in HEADS[::-1]:
        grid_click(page, layer, head)
        wait_until(lambda: f"layer {layer}, head {head} " in matrix(page)["title"],
                   what=f"head {layer}, {head}")
        samples["knock a head out"].append(
            timed(page, PREDICTIONS, f"knocked out L{layer}H{head} (", knock.click))
        knock.click()  # back on: the next head is knocked out alone
        wait_until(lambda: "knocked out" not in page.locator(".lmlab-attention .lmlab-predictions")
                   .first.inner_text(), what="the head back on")
    assert forwards(jlab, runs) == built + len(HEADS)  # one ablated pass per head
    run_cell(jlab, 4)
    wait_until(lambda: "knock_ms" in cell_output(jlab, 4), what="the kernel's knock-out times")
    samples["(knock: its kernel side)"] = json.loads(cell_output(jlab, 4).split("knock_ms", 1)[1])
    assert len(samples["(knock: its kernel side)"]) == len(HEADS)

    run_cell(jlab, 2)
    jlab.wait_for(".lmlab-stepper .lmlab-chips")
    chips = page.locator(".lmlab-stepper .lmlab-chips").first
    chips.scroll_into_view_if_needed()
    step = page.locator(".lmlab-stepper button", has_text="Step").first
    first = int(chips.get_attribute("data-chips"))
    for n in range(CLICKS):
        samples["Step"].append(timed(page, CHIPS, first + n + 1, step.click))
    jlab.screenshot(f"views-{vocab}")
    report(vocab, samples)


def report(name: str, samples: dict) -> None:
    """Print p50 / p95 of each list of `samples`; with LMLAB_BENCH_OUT set, add them there
    under `name`."""
    for what, values in samples.items():
        print(f"{name}, {what}: p50 {percentile(values, 50):.1f} ms, p95 {percentile(values, 95):.1f} ms "
              f"over {len(values)} clicks")
    out = os.environ.get("LMLAB_BENCH_OUT")
    if out:
        found = json.loads(open(out).read()) if os.path.exists(out) else {}
        found[name] = samples
        with open(out, "w") as f:
            json.dump(found, f)


def test_big_view_at_the_whole_context(jlab_only, page):
    """GPT-2's 1,024-token context, characters: a head switch sends 1 MB (the causal
    triangle, 2 bytes a cell) and the canvas paints a million cells; a click on a row still
    runs no model."""
    jlab = jlab_only
    runs, built = open_explorer(jlab, page, "characters", 1024)
    samples = select_and_focus(page, 1024, 311)
    assert forwards(jlab, runs) == built  # selecting and focusing read the kept pass
    jlab.screenshot("views-1024")
    report("characters-1024", samples)
