"""The attention explorer in JupyterLab, headless Chromium: the all-heads grid's render
time at 12 x 12 heads x 128 tokens, a click on a head, two explorers side by side, and
the static HTML snapshot with the network blocked."""

import nbformat

from test_dashboard import run_cell, wait_until

GRID = ".lmlab-attention .lmlab-heads-canvas"


def explorer_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    sources = [
        "import lmlab, torch\n"
        "from lmlab.widgets import AttentionExplorer\n"
        "text = lmlab.load_corpus('shakespeare')[:128]\n"
        "tok = lmlab.CharTokenizer.fit(lmlab.load_corpus('shakespeare'))\n"
        "torch.manual_seed(0)\n"
        "model = lmlab.GPT(lmlab.GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=12,"
        " n_head=12, n_embd=48))",
        "first = AttentionExplorer(model, tok, text)\nfirst",
        "second = AttentionExplorer(model, tok, text[:40])\nsecond",
        "first.to_html('snapshot.html'); print('written')",
    ]
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    return nb


def grid_state(page, index: int) -> dict:
    return page.evaluate(
        "(i) => { const c = document.querySelectorAll('%s')[i];"
        " return c ? {...c.dataset, width: c.width} : null; }" % GRID, index)


def heatmap_title(page, index: int) -> str:
    return page.evaluate(
        "(i) => { const v = document.querySelectorAll('.lmlab-attention')[i];"
        " const t = v && v.querySelector('.gtitle'); return t ? t.textContent : ''; }", index)


def test_explorer_grid_click_two_views_and_offline_snapshot(jlab_only, page):
    jlab = jlab_only
    nbformat.write(explorer_notebook(), jlab.server.root / "explorer.ipynb")
    jlab.open("explorer.ipynb")
    run_cell(jlab, 0)
    jlab.wait_kernel_idle()
    run_cell(jlab, 1)
    jlab.wait_for(GRID)
    state = grid_state(page, 0)
    render_ms = float(state["renderMs"])
    print(f"all-heads grid, 12 x 12 heads x 128 tokens: rendered in {render_ms:.1f} ms "
          f"(drawing {float(state['drawMs']):.1f} ms)")
    assert render_ms < 1000
    wait_until(lambda: "layer 0, head 0" in heatmap_title(page, 0), what="the big view")

    run_cell(jlab, 2)
    wait_until(lambda: page.locator(GRID).count() == 2, what="a second explorer")
    wait_until(lambda: "layer 0, head 0" in heatmap_title(page, 1), what="the second big view")

    # click layer 2, head 3 of the first grid (the canvas's own layout: 34 px of labels
    # on the left, 18 on top, cells of `cell` pixels with 3 px gaps)
    canvas = page.locator(GRID).first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    width = float(state["width"])
    cell = (width - 34) / 12 - 3
    scale = box["width"] / width
    canvas.click(position={"x": (34 + 3 * (cell + 3) + cell / 2) * scale,
                           "y": (18 + 2 * (cell + 3) + cell / 2) * scale})
    wait_until(lambda: "layer 2, head 3" in heatmap_title(page, 0), what="the clicked head")
    assert grid_state(page, 0)["selected"] == "2,3"
    assert grid_state(page, 1)["selected"] == "0,0"  # the other explorer is left alone
    assert "layer 0, head 0" in heatmap_title(page, 1)
    jlab.page.locator(".lmlab-attention").first.scroll_into_view_if_needed()
    jlab.screenshot("explorer")

    run_cell(jlab, 3)
    wait_until(lambda: (jlab.server.root / "snapshot.html").exists(), what="the snapshot")
    context = page.context
    offline = context.new_page()
    fetched = []

    def block(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            fetched.append(route.request.url)
            route.abort()

    offline.route("**/*", block)
    offline.goto((jlab.server.root / "snapshot.html").as_uri())
    offline.wait_for_selector(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm image",
                              state="attached", timeout=30_000)
    assert "layer 2, head 3" in offline.locator(".gtitle").text_content()
    assert offline.evaluate("() => document.querySelector('img').naturalWidth") > 0
    shot = jlab.shots / "snapshot-offline.png"
    offline.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}; requests blocked: {fetched}")
    assert fetched == []
