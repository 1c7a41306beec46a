"""The embedding map in JupyterLab, headless Chromium: one labelled point per token of a
trained nano model, then positions and 3-D through the controls."""

import nbformat

from test_dashboard import cell_output, run_cell, wait_until

MAP = ".lmlab-embeddings"


def labels(page) -> list[str]:
    """The text of every labelled point plotly drew (SVG scatter)."""
    return page.evaluate("(s) => [...document.querySelectorAll(s + ' .textpoint')].map(t => t.textContent)",
                         MAP)


def trace_types(page) -> list[str]:
    return page.evaluate("(s) => { const gd = document.querySelector(s + ' .js-plotly-plot');"
                         " return gd && gd.data ? gd.data.map(t => t.type) : []; }", MAP)


def test_embedding_map_labels_every_token_and_follows_its_controls(jlab_only, page):
    jlab = jlab_only
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import lmlab, torch\n"
        "data = lmlab.TokenDataset(lmlab.load_corpus('shakespeare'), block_size=64)\n"
        "torch.manual_seed(0)\n"
        "model = lmlab.GPT(lmlab.GPTConfig.preset('nano', vocab_size=data.vocab_size))\n"
        "lmlab.Trainer(model, data, max_steps=300, eval_interval=300, eval_batches=1,"
        " device='cpu').run(progress=False)\n"
        "print('ready', data.vocab_size)",
        "from lmlab.widgets.embeddings import EmbeddingMap\n"
        "EmbeddingMap(model, data.tokenizer)",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, jlab.server.root / "embeddings.ipynb")
    jlab.open("embeddings.ipynb")
    run_cell(jlab, 0)
    wait_until(lambda: "ready" in cell_output(jlab, 0), timeout=300, what="the model")
    vocab = int(cell_output(jlab, 0).split("ready")[1].split()[0])
    run_cell(jlab, 1)
    jlab.wait_for(f"{MAP} .js-plotly-plot")
    wait_until(lambda: len(labels(page)) == vocab, what=f"{vocab} token labels")
    shown = labels(page)
    assert len(set(shown)) == vocab and {"a", "e", "Z", "␣", "↵", "&", "!"} <= set(shown)
    assert set(trace_types(page)) == {"scatter"}
    axis = page.locator(f"{MAP} .xtitle").text_content()
    assert axis.startswith("PC1 (") and "% of variance)" in axis
    legend = page.locator(f"{MAP} .legendtext").all_text_contents()
    assert {"vowel", "consonant", "upper case", "punctuation/space"} <= set(legend)
    page.locator(MAP).first.scroll_into_view_if_needed()
    jlab.element_screenshot(MAP, "embeddings")

    page.locator(f"{MAP} select").first.select_option("positions")
    wait_until(lambda: labels(page) == [f"pos {i}" for i in range(64)], what="the position map")

    page.locator(f"{MAP} button", has_text="3-D").click()
    wait_until(lambda: trace_types(page) == ["scatter3d"], what="the 3-D map")
    wait_until(lambda: not labels(page), what="the 2-D points to go")
    assert page.locator(f"{MAP} .gl-container").count() == 1
    assert "PC3 (" in page.evaluate(
        "(s) => document.querySelector(s + ' .js-plotly-plot').layout.scene.zaxis.title.text", MAP)
    jlab.element_screenshot(MAP, "embeddings-3d")
