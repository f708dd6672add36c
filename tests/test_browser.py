"""End to end in a real headless Chromium (Debian's /usr/bin/chromium), driven by Playwright."""

import os
import shutil
import socket
import threading
import time

import pytest
from conftest import real_photo

from lookalike import Collection

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("LOOKALIKE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    import uvicorn

    from lookalike.server import create_app

    photos = tmp_path / "photos"
    for cls in ("accordion", "soccer_ball", "strawberry", "pizza"):
        for p in real_photo(cls, n=4):
            (photos / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, photos / cls / p.name)
    Collection.create(tmp_path / "db").index(photos)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(tmp_path / "db"), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_upload_a_photo_and_see_the_grid(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    query = real_photo("strawberry", n=6)[5]  # a strawberry photo that is not in the collection
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server)
        page.wait_for_selector("#stats:has-text('16 images')")
        page.set_input_files("#file", str(query))
        page.wait_for_selector("#results .result")
        cards = page.locator("#results .result")
        assert cards.count() == 12
        top_name = cards.nth(0).locator(".name").inner_text()
        assert top_name.startswith("image_"), top_name
        top_title = cards.nth(0).locator(".name").get_attribute("title")
        assert "/strawberry/" in top_title, f"top hit for a strawberry photo: {top_title}"
        assert "#1 ·" in cards.nth(0).locator(".score").inner_text()
        page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
        # click a result: searches by its id; the clicked image becomes the query and is left out of
        # its own results (no card wasted on it)
        clicked = cards.nth(3).get_attribute("data-id")
        clicked_thumb = f"/api/thumbs/{clicked}"
        cards.nth(3).click()
        page.wait_for_function(
            "thumb => document.querySelector('#query img')?.getAttribute('src') === thumb", arg=clicked_thumb)
        page.wait_for_selector("#results .result")
        ids = [page.locator("#results .result").nth(i).get_attribute("data-id")
               for i in range(page.locator("#results .result").count())]
        assert ids and clicked not in ids
        # a non-image upload shows the server's reason
        bad = tmp_path / "notes.jpg"
        bad.write_text("not an image")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#message.error")
        assert "not an image" in page.locator("#message").inner_text()
        # the duplicates view polls while the server computes (202 + progress), then renders the result
        page.click("#tab-dupes")
        page.wait_for_function(
            "() => { const t = document.querySelector('#dupes-message').textContent; "
            "return t && !t.startsWith('Looking'); }")
        assert "threshold" in page.locator("#dupes-message").inner_text()
        assert page.locator("#dupes-progress").is_hidden()
        browser.close()
    assert (tmp_path / "search.png").stat().st_size > 10_000
    shutil.copy(tmp_path / "search.png", os.environ.get("LOOKALIKE_SCREENSHOT", tmp_path / "copy.png"))
