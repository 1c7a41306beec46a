"""The logit lens and the model comparison in JupyterLab, headless Chromium: a nano model
pretrained on Shakespeare and a copy fine-tuned on names; the lens draws a labelled cell
per layer and token, shows the top-k on hover and recolours by the true next token; the
comparison draws both models' bars and head grids and follows a click on a token."""

import nbformat

from test_dashboard import cell_output, run_cell, wait_until

LENS = ".lmlab-lens"
COMPARE = ".lmlab-compare-models"
LENS_TEXT = "ROMEO:\\nWhat say you?"  # as written in the cell: 20 tokens
COMPARE_TEXT = "ROMEO:\\nemma\\nolivia"  # 18 tokens


def heatmap(page) -> dict:
    """The lens's plotly heatmap as drawn: its cell labels, colour bar title, and the
    labels plotly wrote into the SVG."""
    return page.evaluate(
        "(s) => { const gd = document.querySelector(s + ' .js-plotly-plot');"
        " if (!gd || !gd.data) return null; const t = gd.data[0];"
        " return {text: t.text, z: t.z, colorbar: t.colorbar.title.text,"
        " ticks: gd.layout.yaxis.ticktext,"
        " svg: [...gd.querySelectorAll('.heatmaplayer text, .hm text')].map(e => e.textContent)}; }",
        LENS)


def test_lens_and_comparison_render_and_respond(jlab_only, page):
    jlab = jlab_only
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import copy, lmlab, torch\n"
        "from lmlab.widgets import LogitLensView, ModelComparison\n"
        "shakespeare = lmlab.TokenDataset(lmlab.load_corpus('shakespeare'), block_size=64)\n"
        "tok = shakespeare.tokenizer\n"
        "names = lmlab.TokenDataset(lmlab.load_corpus('names'), tokenizer=tok, block_size=64)\n"
        "torch.manual_seed(0)\n"
        "pre = lmlab.GPT(lmlab.GPTConfig.preset('nano', vocab_size=tok.vocab_size))\n"
        "lmlab.Trainer(pre, shakespeare, max_steps=150, batch_size=8, eval_interval=150,"
        " eval_batches=1, device='cpu').run(progress=False)\n"
        "fine = copy.deepcopy(pre)\n"
        "lmlab.Trainer(fine, names, max_steps=80, batch_size=8, eval_interval=80, eval_batches=1,"
        " device='cpu').run(progress=False)\n"
        "print('ready')",
        f"lens = LogitLensView(pre, tok, '{LENS_TEXT}', k=5)\nlens",
        f"comparison = ModelComparison({{'pretrained': pre, 'fine-tuned': fine}}, tok, '{COMPARE_TEXT}')\n"
        "comparison",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, jlab.server.root / "lens.ipynb")
    jlab.open("lens.ipynb")
    run_cell(jlab, 0)
    wait_until(lambda: "ready" in cell_output(jlab, 0), timeout=120, what="the models")

    # ---- the logit lens -----------------------------------------------------------------
    run_cell(jlab, 1)
    jlab.wait_for(f"{LENS} .js-plotly-plot")
    wait_until(lambda: (heatmap(page) or {}).get("svg"), what="the lens's cell labels")
    drawn = heatmap(page)
    assert drawn["ticks"] == ["embeddings", "block 0", "block 1"]
    assert len(drawn["text"]) == 3 and all(len(row) == 20 for row in drawn["text"])
    assert len(drawn["svg"]) == 3 * 20  # a label in every cell
    assert sorted(drawn["svg"]) == sorted(t for row in drawn["text"] for t in row)
    assert drawn["colorbar"] == "p(top prediction)"
    caption = page.locator(f"{LENS} .lmlab-lens-caption").inner_text()
    assert "3 rows" in caption and "20 positions" in caption

    page.locator(LENS).first.scroll_into_view_if_needed()
    box = page.locator(f"{LENS} .js-plotly-plot .nsewdrag").first.bounding_box()
    # the top row (the model's own prediction) at position 7, the 'W' of "What"
    x = box["x"] + box["width"] * (7.5 / 20)
    y = box["y"] + box["height"] * (0.5 / 3)
    page.mouse.move(x, y)
    hover = page.locator(f"{LENS} .hoverlayer .hovertext")
    wait_until(lambda: hover.count() > 0, what="the hover label")
    label = hover.first.text_content()
    assert "block 1, after position 7 W" in label and "top 5:" in label
    assert "next in the text: h" in label
    jlab.element_screenshot(LENS, "lens-hover")

    page.locator(f"{LENS} button", has_text="the true next token").click()
    wait_until(lambda: heatmap(page)["colorbar"] == "p(true next)", what="the recolouring")
    assert [row[-1] for row in heatmap(page)["z"]] == [None] * 3
    page.mouse.move(0, 0)
    jlab.element_screenshot(LENS, "lens-true-next")

    # ---- the comparison -----------------------------------------------------------------
    run_cell(jlab, 2)
    jlab.wait_for(f"{COMPARE} .lmlab-compare-bars")
    panels = page.locator(f"{COMPARE} .lmlab-compare-model")
    assert panels.count() == 2
    for i, name in enumerate(["pretrained", "fine-tuned"]):
        panel = panels.nth(i)
        assert panel.locator(".lmlab-compare-header").inner_text().startswith(name)
        assert panel.locator("tr.lmlab-compare-bar").count() == 10
        assert panel.locator(".lmlab-head-grid").count() == 3
    picker = f"{COMPARE} .lmlab-picker"
    assert page.evaluate("(s) => document.querySelector(s).dataset.selected", picker) == "17"
    line = page.locator(f"{COMPARE} .lmlab-compare-line").inner_text()
    assert "after position 17" in line and "total variation" in line and "KL(pretrained‖fine-tuned)" in line

    page.locator(f"{picker} .lmlab-pick").nth(8).click()  # the 'm' of "emma"
    wait_until(lambda: "after position 8" in page.locator(f"{COMPARE} .lmlab-compare-line").inner_text(),
               what="the comparison at the clicked token")
    assert "the text goes on with m" in page.locator(f"{COMPARE} .lmlab-compare-line").inner_text()
    assert page.evaluate("(s) => document.querySelector(s).dataset.selected", picker) == "8"
    slider = page.locator(f"{COMPARE} .widget-readout").first.inner_text()
    assert slider.strip() == "8"
    page.locator(COMPARE).first.scroll_into_view_if_needed()
    jlab.element_screenshot(COMPARE, "comparison")
    assert not jlab.cell_errors()
