"""The tokenizer playground in JupyterLab, headless Chromium: a row of chips per tokenizer,
the merge slider replaying BPE, and an edit a character tokenizer cannot read."""

import nbformat

from test_dashboard import cell_output, run_cell, wait_until

TEXT = "The quick brown fox. 你好，世界"
ROWS = ".lmlab-playground .lmlab-token-row"


def chip_counts(page) -> list:
    return page.evaluate("(s) => [...document.querySelectorAll(s)]"
                         ".map(r => Number(r.querySelector('.lmlab-chips').dataset.chips))", ROWS)


def test_playground_rows_and_the_merge_slider(jlab_only, page):
    jlab = jlab_only
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import lmlab\n"
        "from lmlab import BPETokenizer, CharTokenizer\n"
        "from lmlab.widgets.playground import TokenizerPlayground\n"
        f"text = {TEXT!r}\n"
        "bpe = BPETokenizer.train(lmlab.load_corpus('shakespeare')[:100_000], vocab_size=400)\n"
        "print('ready', len(bpe.encode(text)), len(bpe.merges))",
        "pg = TokenizerPlayground(text, tokenizers={'characters': CharTokenizer.fit(text),"
        " 'BPE': bpe})\npg",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, jlab.server.root / "playground.ipynb")
    jlab.open("playground.ipynb")
    run_cell(jlab, 0)
    wait_until(lambda: "ready" in cell_output(jlab, 0), timeout=120, what="the BPE tokenizer")
    bpe_count, merges = (int(n) for n in cell_output(jlab, 0).split()[1:3])
    run_cell(jlab, 1)
    jlab.wait_for(f"{ROWS} .lmlab-chip")
    wait_until(lambda: len(chip_counts(page)) == 2, what="two rows")
    assert chip_counts(page) == [len(TEXT), bpe_count]
    names = page.locator(f"{ROWS} .lmlab-row-head b").all_inner_texts()
    assert names == ["characters", "BPE"]
    assert "tokens" in page.locator(f"{ROWS} .lmlab-row-stats").nth(1).inner_text()
    assert page.locator(f"{ROWS} .lmlab-chip").nth(3).inner_text() == "␣"
    assert page.locator(f"{ROWS} .lmlab-chip").first.get_attribute("title").startswith("id ")
    label = page.locator(".lmlab-playground .lmlab-merge")
    assert f"merge {merges}:" in label.inner_text()

    slider = page.locator(".lmlab-playground .widget-hslider").first
    handle = slider.locator(".noUi-handle, .slider-handle, [role=slider]").first
    handle.focus()
    for _ in range(merges - 5):
        page.keyboard.press("ArrowLeft")  # back to the first five merges: more, shorter tokens
    wait_until(lambda: "merge 5:" in label.inner_text(), what="the label of merge 5")
    wait_until(lambda: chip_counts(page)[1] > bpe_count, what="the BPE row to split up")
    assert chip_counts(page)[0] == len(TEXT)  # the character row stays
    assert "after 5 of" in page.locator(f"{ROWS} .lmlab-row-stats").nth(1).inner_text()
    page.locator(".lmlab-playground").first.scroll_into_view_if_needed()
    jlab.element_screenshot(".lmlab-playground", "playground")

    for _ in range(5):
        page.keyboard.press("ArrowLeft")
    wait_until(lambda: chip_counts(page)[1] == len(TEXT.encode("utf-8")), what="one chip per byte")
    assert "no merges" in label.inner_text()

    box = page.locator(".lmlab-playground textarea")
    box.fill("hello there")  # 'l' is not among the characters the char tokenizer knows
    box.press("Tab")  # the text box reports on blur
    error = page.locator(f"{ROWS} .lmlab-row-error").first
    wait_until(lambda: "'l'" in error.inner_text(), what="the character row's error")
    wait_until(lambda: chip_counts(page)[1] == len("hello there"), what="the BPE row's new bytes")
    assert not jlab.cell_errors()
