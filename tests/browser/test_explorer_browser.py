"""The attention explorer in JupyterLab, headless Chromium: the all-heads grid's render
time at 12 x 12 heads x 128 tokens, a click on a head, two explorers side by side, and
the static HTML snapshot with the network blocked."""

import re
import time

import nbformat

from test_dashboard import cell_output, run_cell, wait_until

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
        " n_head=12, n_embd=48))\n"
        "print('model built')\n"
        "data = lmlab.TokenDataset(lmlab.load_corpus('shakespeare'), tok, block_size=128)\n"
        "lmlab.Trainer(model, data, max_steps=80, batch_size=8, learning_rate=3e-3, eval_interval=80,"
        " eval_batches=1, device='cpu').run(progress=False)  # some structure to look at\n"
        "print('ready')",
        "first = AttentionExplorer(model, tok, text)\nfirst",
        "second = AttentionExplorer(model, tok, text[:40])\nsecond",
        "first.to_html('snapshot.html'); print('written')",
    ]
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    return nb


def wait_for_output(jlab, index: int, text: str, timeout: float = 300):
    """Wait until cell `index` prints `text`; on a timeout, say what the cell showed."""
    try:
        wait_until(lambda: text in cell_output(jlab, index), timeout=timeout, what=text)
    except AssertionError:
        shot = jlab.screenshot(f"waiting-for-{text.replace(' ', '-')}")
        raise AssertionError(f"cell {index} did not print {text!r} (screenshot {shot}); it shows:\n"
                             + cell_output(jlab, index)[-3000:]) from None


def open_explorer(jlab, nb, name: str, built: str) -> float:
    """Open `nb`, run its first cell until it prints `built`, then its second (an explorer):
    seconds from running that cell to the grid on screen."""
    nbformat.write(nb, jlab.server.root / name)
    jlab.open(name)
    run_cell(jlab, 0)
    wait_for_output(jlab, 0, built)
    started = time.monotonic()
    run_cell(jlab, 1)
    jlab.wait_for(GRID)
    return time.monotonic() - started


def grid_state(page, index: int) -> dict:
    return page.evaluate(
        "(i) => { const c = document.querySelectorAll('%s')[i];"
        " return c ? {...c.dataset, width: c.width} : null; }" % GRID, index)


def big_view_title(page, index: int) -> str:
    """The title of explorer `index`'s big view, as last drawn."""
    return page.evaluate(
        "(i) => { const v = document.querySelectorAll('.lmlab-attention')[i];"
        " const c = v && v.querySelector('.lmlab-matrix-canvas'); return c ? c.dataset.title : ''; }", index)


def test_explorer_grid_click_two_views_and_offline_snapshot(jlab_only, page):
    jlab = jlab_only
    first_s = open_explorer(jlab, explorer_notebook(), "explorer.ipynb", "ready")
    state = grid_state(page, 0)
    render_ms = float(state["renderMs"])
    print(f"all-heads grid, 12 x 12 heads x 128 tokens: rendered in {render_ms:.1f} ms "
          f"(drawing {float(state['drawMs']):.1f} ms)")
    assert render_ms < 1000
    wait_until(lambda: "layer 0, head 0" in big_view_title(page, 0), what="the big view")

    started = time.monotonic()
    run_cell(jlab, 2)
    wait_until(lambda: page.locator(GRID).count() == 2, timeout=60, what="a second explorer")
    print(f"from running the cell to the grid on screen: {first_s:.1f} s for the notebook's first "
          f"explorer (loads the front ends), {time.monotonic() - started:.1f} s for the second")
    wait_until(lambda: "layer 0, head 0" in big_view_title(page, 1), what="the second big view")

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
    wait_until(lambda: "layer 2, head 3" in big_view_title(page, 0), what="the clicked head")
    assert grid_state(page, 0)["selected"] == "2,3"
    assert grid_state(page, 1)["selected"] == "0,0"  # the other explorer is left alone
    assert "layer 0, head 0" in big_view_title(page, 1)
    # the summary table: a click on a header sorts, a click on a row selects
    table = page.locator(".lmlab-attention").first.locator(".lmlab-table")
    wait_until(lambda: table.locator("tr.lmlab-selected").get_attribute("data-head") == "2,3",
               what="the table to mark the clicked head")
    table.locator("th[data-key='entropy']").click()
    entropies = [float(v) for v in table.locator("tbody tr td:nth-child(3)").all_inner_texts()]
    assert entropies == sorted(entropies, reverse=True) and len(entropies) == 144
    table.locator("tbody tr").nth(5).click()
    chosen = table.locator("tbody tr").nth(5).get_attribute("data-head")
    try:
        wait_until(lambda: f"layer {chosen.replace(',', ', head ')}" in big_view_title(page, 0),
                   what="the head clicked in the table")
    except AssertionError:
        raise AssertionError(f"chosen {chosen}, title {big_view_title(page, 0)!r}, grid "
                             f"{grid_state(page, 0)}, screenshot {jlab.screenshot('table-click')}")
    assert grid_state(page, 0)["selected"] == chosen
    table.locator("th[data-key='entropy']").click()  # again: ascending
    entropies = [float(v) for v in table.locator("tbody tr td:nth-child(3)").all_inner_texts()]
    assert entropies == sorted(entropies)
    first = page.locator(".lmlab-attention").first
    first.locator(".lmlab-heads-canvas").click(position={"x": (34 + 3 * (cell + 3) + cell / 2) * scale,
                                                         "y": (18 + 2 * (cell + 3) + cell / 2) * scale})
    wait_until(lambda: "layer 2, head 3" in big_view_title(page, 0), what="head 2, 3 again")
    # the big view: hovering names both tokens and the weight, a click focuses the query
    big = first.locator(".lmlab-matrix-canvas")
    big.scroll_into_view_if_needed()
    size = int(big.get_attribute("data-size"))
    cell, scale = max(1, round(440 / size)), big.bounding_box()["width"] / float(big.evaluate("c => c.width"))
    at = {"x": (96 + 2.5 * cell) * scale, "y": (6 + 5.5 * cell) * scale}  # query 5, key 2
    big.hover(position=at)
    tip = first.locator(".lmlab-matrix-tip")
    wait_until(lambda: tip.is_visible(), what="the hover tip")
    assert re.fullmatch(r"5:\S+ → 2:\S+\nattention [01]\.\d{3}", tip.inner_text()), tip.inner_text()
    big.click(position=at)
    wait_until(lambda: "next token after position 5 " in first.locator(".lmlab-predictions").inner_text(),
               what="the predictions at the clicked query")
    assert big.get_attribute("data-focus") == "5"
    knock = first.locator("button", has_text="Knock out this head")
    box = first.locator(".lmlab-table tr[data-head='2,3'] input")
    knock.click()  # the table ticks the head's box (and only it)
    wait_until(lambda: box.is_checked(), what="the table's box of the knocked-out head")
    assert first.locator(".lmlab-table input:checked").count() == 1
    knock.click()
    wait_until(lambda: not box.is_checked(), what="the box cleared")
    jlab.page.locator(".lmlab-attention").first.scroll_into_view_if_needed()
    jlab.screenshot("explorer")
    page.set_viewport_size({"width": 1500, "height": 1900})
    jlab.element_screenshot(".lmlab-attention", "explorer-view")
    page.set_viewport_size({"width": 1500, "height": 1100})

    with page.expect_download() as download:  # the overview's own Save PNG, no kernel involved
        page.locator(".lmlab-attention .lmlab-heads-bar button").first.click()
    saved = download.value.path()
    with open(saved, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert download.value.suggested_filename == "attention-heads.png"

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


def test_explorer_at_512_tokens(jlab_only, page):
    """12 layers x 12 heads x 512 tokens: the overview gets thumbnails made in the engine."""
    jlab = jlab_only
    nb = explorer_notebook()
    nb.cells[0].source = (nb.cells[0].source.replace("[:128]", "[:512]")
                          .replace("block_size=128", "block_size=512")
                          .split("\ndata =")[0])  # untrained: only the speed is looked at
    nb.cells = nb.cells[:2]
    grid_s = open_explorer(jlab, nb, "explorer512.ipynb", "model built")
    shown = time.monotonic()
    wait_until(lambda: "layer 0, head 0" in big_view_title(page, 0), timeout=120, what="the big view")
    view_s = grid_s + time.monotonic() - shown
    state = grid_state(page, 0)
    print(f"512 tokens: grid rendered in {float(state['renderMs']):.1f} ms in the browser; "
          f"{grid_s:.1f} s from running the cell to the grid on screen, {view_s:.1f} s to the "
          "big heatmap")
    assert float(state["renderMs"]) < 1000
    jlab.screenshot("explorer-512")


def test_live_explorer_watches_an_induction_head_form(jlab_only, page):
    """Training on the induction corpus with the explorer following every 250 steps."""
    jlab = jlab_only
    nb = nbformat.v4.new_notebook()
    sources = [
        "import lmlab, torch\n"
        "from lmlab.widgets import AttentionExplorer\n"
        "data = lmlab.TokenDataset(lmlab.load_corpus('induction'), block_size=64)\n"
        "torch.manual_seed(0)\n"
        "model = lmlab.GPT(lmlab.GPTConfig(vocab_size=data.vocab_size, block_size=64, n_layer=2,"
        " n_head=4, n_embd=64))\n"
        "trainer = lmlab.Trainer(model, data, max_steps=2000, learning_rate=1e-3, batch_size=32,"
        " eval_interval=500, eval_batches=5, device='cpu')",
        "live = AttentionExplorer(trainer=trainer, text='qwertyuiopz|qwertyuiopz', every=250)\n"
        "live.select(1, 0)\n"
        "live.focus_box.value = 16\n"
        "live",
        "trainer.start()",
    ]
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, jlab.server.root / "live.ipynb")
    jlab.open("live.ipynb")
    for index in (0, 1):
        run_cell(jlab, index)
        jlab.wait_kernel_idle()
    jlab.wait_for(GRID)
    drawn = int(grid_state(page, 0)["drawn"])
    run_cell(jlab, 2)
    title = ".lmlab-attention .lmlab-heads-bar span"
    wait_until(lambda: "step 2000" in jlab.text(title), timeout=600, what="2000 steps")
    assert int(grid_state(page, 0)["drawn"]) >= drawn + 8  # redrawn every 250 steps
    page.set_viewport_size({"width": 1500, "height": 1500})
    page.locator(".lmlab-attention").first.scroll_into_view_if_needed()
    jlab.element_screenshot(".lmlab-attention", "live-induction")


def test_the_direct_effect_and_the_circuits_section(jlab_only, page):
    """A small trained model: the selected head's direct effect beside the predictions; the
    circuits section opened by a click shows the QK breakdown, follows the key dropdown and
    a head clicked on the overview, and the OV table with its copying fraction."""
    jlab = jlab_only
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in [
        "import lmlab, torch\n"
        "from lmlab.widgets import AttentionExplorer\n"
        "corpus = lmlab.load_corpus('shakespeare')\n"
        "tok = lmlab.CharTokenizer.fit(corpus)\n"
        "torch.manual_seed(0)\n"
        "model = lmlab.GPT(lmlab.GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4,"
        " n_embd=64))\n"
        "data = lmlab.TokenDataset(corpus, tok, block_size=64)\n"
        "lmlab.Trainer(model, data, max_steps=150, batch_size=8, learning_rate=3e-3, eval_interval=150,"
        " eval_batches=1, device='cpu').run(progress=False)\n"
        "print('ready')",
        "x = AttentionExplorer(model, tok, corpus[:48])\nx.select(1, 2)\nx.focus_box.value = 20\nx",
    ]]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    open_explorer(jlab, nb, "circuits.ipynb", "ready")
    view = page.locator(".lmlab-attention").first
    direct = view.locator(".lmlab-direct")
    wait_until(lambda: "L1H2's direct effect on predicting" in direct.inner_text(), what="the direct effect")
    assert "logits over the runner-up" in direct.inner_text()
    assert view.locator(".lmlab-qk").count() == 0  # closed: nothing computed or sent

    view.get_by_text("This head's circuits").click()
    qk = view.locator(".lmlab-qk")
    wait_until(lambda: qk.count() == 1 and qk.is_visible(), what="the QK breakdown")
    assert "Where L1H2 looks (QK): query 20" in qk.inner_text()
    assert "the shares sum to the score" in qk.inner_text()
    assert qk.locator(".lmlab-signed-bars").count() == 2  # query side, key side
    ov = view.locator(".lmlab-ov")
    assert "What L1H2 writes (OV): copying" in ov.inner_text() and "direct path only" in ov.inner_text()

    key = view.locator(".lmlab-circuits select").first
    key.select_option(label="7:" + key.locator("option").nth(7).inner_text().split(":", 1)[1])
    wait_until(lambda: "scoring key 7 " in qk.inner_text(), what="the breakdown of the chosen key")
    canvas = view.locator(".lmlab-heads-canvas")
    state = grid_state(page, 0)
    box, width = canvas.bounding_box(), float(state["width"])
    cell = (width - 34) / 4 - 3
    scale = box["width"] / width
    canvas.click(position={"x": (34 + 1 * (cell + 3) + cell / 2) * scale,
                           "y": (18 + 0 * (cell + 3) + cell / 2) * scale})  # layer 0, head 1
    wait_until(lambda: "Where L0H1 looks (QK)" in qk.inner_text(), what="the clicked head's breakdown")
    wait_until(lambda: "L0H1's direct effect" in direct.inner_text() and "What L0H1 writes" in ov.inner_text(),
               what="the clicked head's direct effect and OV table")
    assert jlab.cell_errors() == []
    page.set_viewport_size({"width": 1500, "height": 2600})
    jlab.element_screenshot(".lmlab-attention", "explorer-circuits")
    page.set_viewport_size({"width": 1500, "height": 1100})
