""""Why this token?" in JupyterLab, headless Chromium, on a GPT-2-shaped model (12 layers x 12
heads, 768 wide, random weights, GPT-2's 50,257 tokens): the sampling stepper on a 32-token
prompt and the next 20 tokens of the same text taken as steps, switched to "a click on a
token: explain", then a click on 17 different generated chips.

Each click is timed in the page (`timed`: from its pointerdown to the frame after the panel
shows that chip and the chip is outlined). The test asserts that each panel names its chip's
token and runner-up, and that only the first click runs the model (one pass of the text);
the milliseconds are printed, with the kernel's own time for each explain, and written to
LMLAB_BENCH_OUT when set: never asserted.
"""

import json
import random

import nbformat
from test_dashboard import cell_output, run_cell, wait_until
from test_views_speed_browser import forwards, report, timed

PROMPT, STEPS, CLICKS = 32, 20, 17
CHIP = ".lmlab-stepper .lmlab-chips .lmlab-chip"

# The panel shows chip arg.index's token and runner-up, and that chip is the outlined one.
EXPLAINED = """const p = document.querySelector(".lmlab-stepper .lmlab-why");
const c = document.querySelector(".lmlab-stepper .lmlab-chip-explained");
return p && c && Number(p.dataset.index) === arg.index && Number(c.dataset.index) === arg.index
  && p.querySelector(".lmlab-why-title").textContent.includes(arg.text);"""


def notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import json, time, lmlab\n"
        "from lmlab.widgets import SamplingStepper\n"
        "from lmlab.widgets.bench_views import Counter, setup\n"
        f"model, tok, text = setup('gpt2-vocab', {PROMPT + STEPS})\n"
        "ids = tok.encode(text)\n"
        f"stepper = SamplingStepper(model, tok, tok.decode(ids[:{PROMPT}]), seed=0)\n"
        f"for token in ids[{PROMPT}:]:\n"
        "    stepper.step(token)\n"
        "forwards = Counter(model)\n"
        "why_ms = []  # the kernel's side of each explain: its pass (the first) and the projection\n"
        "def explain(index, explain=stepper.explain):\n"
        "    t0 = time.perf_counter()\n"
        "    explain(index)\n"
        "    why_ms.append((time.perf_counter() - t0) * 1000)\n"
        "stepper.explain = explain\n"
        "print('ready', stepper.stepper.prompt_length, len(stepper.stepper.ids))",
        "stepper",
        "runs = globals().get('runs', 0) + 1\n"
        "print('forwards', forwards.n, 'run', runs, json.dumps(lmlab.passes.calls))",
        "with open('why.json', 'w') as f:\n"
        "    json.dump({'ms': why_ms, 'chips': [[c['text'], (c.get('runner_up') or [None])[0]]\n"
        "                                       for c in stepper.chips.chips]}, f)\n"
        "print('saved')",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    return nb


def test_why_this_token_is_drawn_and_runs_one_pass(jlab_only, page):
    jlab = jlab_only
    nbformat.write(notebook(), jlab.server.root / "why.ipynb")
    jlab.open("why.ipynb")
    run_cell(jlab, 0)
    wait_until(lambda: "ready" in cell_output(jlab, 0), timeout=300, what="the model")
    prompt, total = map(int, cell_output(jlab, 0).split()[1:3])
    assert (prompt, total) == (PROMPT, PROMPT + STEPS)
    run_cell(jlab, 1)
    jlab.wait_for(CHIP)
    runs = [0]
    assert forwards(jlab, runs, cell=2) == 0

    page.locator(".lmlab-stepper .widget-toggle-button", has_text="explain").first.click()
    wait_until(lambda: page.locator(f"{CHIP}.lmlab-chip-explain").count() == total, what="explain mode")
    page.locator(".lmlab-stepper .lmlab-chips").first.scroll_into_view_if_needed()
    chips = page.locator(CHIP)
    assert "part of the prompt" in chips.nth(0).get_attribute("title")  # the hover says what a click does
    assert "\nclick: why " in chips.nth(prompt).get_attribute("title")
    titles, samples = [], []
    for index in random.Random(0).sample(range(prompt, total), CLICKS):
        arg = {"index": index, "text": chips.nth(index).inner_text()}
        samples.append(timed(page, EXPLAINED, arg, chips.nth(index).click))
        titles.append((index, page.locator(".lmlab-stepper .lmlab-why-title").first.inner_text()))
    assert forwards(jlab, runs, cell=2) == 1  # the first click's pass of the text; the others none
    jlab.element_screenshot(".lmlab-stepper", "why")
    jlab.element_screenshot(".lmlab-stepper .lmlab-chips", "why-chips")  # the outlined chip, close up

    run_cell(jlab, 3)
    wait_until(lambda: "saved" in cell_output(jlab, 3) or jlab.cell_errors(), what="the kernel's explain times")
    assert jlab.cell_errors() == []
    kernel = json.loads((jlab.server.root / "why.json").read_text())
    for index, title in titles:  # each panel names its chip's token and the runner-up
        token, other = kernel["chips"][index]
        assert title.startswith(f"Why {token} (") and f" and not {other} (" in title, (index, title)
    assert len(kernel["ms"]) == CLICKS
    report("why", {"first click (one pass)": samples[:1], "later clicks": samples[1:],
                   "(kernel side, later clicks)": kernel["ms"][1:]})
