"""The sampling stepper in JupyterLab, headless Chromium: Step, the temperature slider,
a click on a candidate bar, a click on a chip, a branch; the token-surprise view: its
chips, their hover text, and an edit that recomputes them."""

import nbformat

from test_dashboard import cell_output, run_cell, wait_until

CHIPS = ".lmlab-stepper .lmlab-chips"


def chip_count(page) -> int:
    return page.evaluate("(s) => Number(document.querySelector(s).dataset.chips)", CHIPS)


def bar_widths(page) -> list:
    return page.evaluate("() => [...document.querySelectorAll('.lmlab-stepper .lmlab-bar')]"
                         ".map(b => b.style.width)")


def test_stepper_steps_reshapes_chooses_and_rewinds(jlab_only, page):
    jlab = jlab_only
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import lmlab, torch\n"
        "from lmlab.widgets import SamplingStepper\n"
        "data = lmlab.TokenDataset(lmlab.load_corpus('shakespeare'), block_size=64)\n"
        "torch.manual_seed(0)\n"
        "model = lmlab.GPT(lmlab.GPTConfig.preset('nano', vocab_size=data.vocab_size))\n"
        "lmlab.Trainer(model, data, max_steps=600, eval_interval=600, eval_batches=1,"
        " device='cpu').run(progress=False)\n"
        "print('ready')",
        "stepper = SamplingStepper(model, data.tokenizer, 'ROMEO:', seed=1)\nstepper",
        "from lmlab.widgets import TokenSurprise\n"
        "TokenSurprise(model, data.tokenizer, 'ROMEO:\\nWhat say you, my lord?')",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, jlab.server.root / "stepper.ipynb")
    jlab.open("stepper.ipynb")
    run_cell(jlab, 0)
    wait_until(lambda: "ready" in cell_output(jlab, 0), timeout=300, what="the model")
    run_cell(jlab, 1)
    jlab.wait_for(CHIPS)
    assert chip_count(page) == 6  # the prompt, R O M E O :

    step = page.locator(".lmlab-stepper button", has_text="Step").first
    for n in range(1, 4):
        step.click()
        wait_until(lambda: chip_count(page) == 6 + n, what=f"chip {6 + n}")

    before = bar_widths(page)
    temperature = page.locator(".lmlab-stepper .widget-hslider").first
    slider = temperature.locator(".noUi-handle, .slider-handle, [role=slider]").first
    slider.focus()
    for _ in range(10):
        page.keyboard.press("ArrowLeft")  # temperature down: the bars sharpen
    wait_until(lambda: bar_widths(page) != before, what="the bars to change")

    bar = page.locator(".lmlab-stepper .lmlab-bar-row").nth(2)
    chosen = bar.locator("code").inner_text()
    bar.click()
    wait_until(lambda: chip_count(page) == 10, what="the chosen token")
    last = page.locator(f"{CHIPS} .lmlab-chip").last.inner_text()
    assert last == chosen

    page.locator(f"{CHIPS} .lmlab-chip").nth(7).click()  # back to just before chip 7
    wait_until(lambda: chip_count(page) == 7, what="the rewind")

    taken = page.locator(f"{CHIPS} .lmlab-chip").count()
    rows = page.locator(".lmlab-stepper .lmlab-bar-row")
    rows.nth(1).click()  # another token than the one taken before: the old text is a branch
    wait_until(lambda: chip_count(page) == taken + 1, what="the new choice")
    wait_until(lambda: "1 branch" in page.locator(".lmlab-stepper .lmlab-stats").inner_text(),
               what="the branch count")
    for n in range(1, 11):
        step.click()
        wait_until(lambda: chip_count(page) == taken + 1 + n, what=f"step {n} after the branch")
    page.locator(".lmlab-stepper").first.scroll_into_view_if_needed()
    jlab.element_screenshot(".lmlab-stepper", "stepper")

    run_cell(jlab, 2)
    surprise = ".lmlab-surprise .lmlab-chips"
    jlab.wait_for(surprise)
    count = lambda: page.evaluate("(s) => Number(document.querySelector(s).dataset.chips)", surprise)  # noqa: E731
    assert count() == len("ROMEO:\nWhat say you, my lord?")
    chip = page.locator(f"{surprise} .lmlab-chip").nth(3)
    title = chip.get_attribute("title")
    assert "probability" in title and "surprise" in title and "top tokens" in title
    assert "click" not in title  # nothing to rewind here
    stats = page.locator(".lmlab-surprise .lmlab-stats").inner_text()
    assert "perplexity" in stats
    box = page.locator(".lmlab-surprise textarea")
    box.fill("JULIET:\nO Romeo, Romeo!")
    box.press("Tab")  # the text box reports on blur
    wait_until(lambda: count() == len("JULIET:\nO Romeo, Romeo!"), what="the rescored text")
    wait_until(lambda: page.locator(".lmlab-surprise .lmlab-stats").inner_text() != stats,
               what="the new perplexity")
    page.locator(".lmlab-surprise").first.scroll_into_view_if_needed()
    jlab.element_screenshot(".lmlab-surprise", "surprise")
