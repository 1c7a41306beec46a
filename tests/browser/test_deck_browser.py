"""The exported deck in headless Chromium with every network request refused: slides
move with the keyboard, the plotly figure is drawn, the lmlab view shows its snapshot."""

from lmlab.widgets.slides import export_slides

from test_dashboard import wait_until
from test_slides_export import notebook


def test_the_deck_works_offline(tmp_path, page):
    deck = export_slides(notebook(tmp_path / "talk.ipynb"))
    fetched = []

    def refuse(route):
        fetched.append(route.request.url)
        route.abort()

    page.route("http*://**/*", refuse)
    page.goto(deck.as_uri())
    counter = page.locator(".deck-counter")
    assert counter.inner_text() == "1 / 3"
    assert page.locator(".deck-slide.present h1").inner_text() == "The deck's title"

    page.keyboard.press("ArrowRight")
    wait_until(lambda: counter.inner_text() == "2 / 3", what="slide 2")
    figure = page.locator(".deck-slide.present .deck-plot .main-svg").first
    figure.wait_for(state="visible", timeout=10_000)  # drawn by the inlined plotly.js
    assert page.locator(".deck-slide.present .deck-plot .scatterlayer .trace").count() == 1

    page.keyboard.press("ArrowRight")
    wait_until(lambda: counter.inner_text() == "3 / 3", what="slide 3")
    snapshot = page.locator(".deck-slide.present .lmlab-static.TokenSurprise")
    assert snapshot.is_visible() and "abcabd"[1] in snapshot.inner_text()
    assert page.locator(".deck-slide.present", has_text="hello deck").count() == 1
    page.keyboard.press("ArrowLeft")
    wait_until(lambda: counter.inner_text() == "2 / 3", what="back to slide 2")
    assert fetched == []
    page.screenshot(path=str(tmp_path / "deck.png"))
