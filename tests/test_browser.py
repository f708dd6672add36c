"""End to end in a real headless Chromium (Debian's /usr/bin/chromium), driven by Playwright."""

import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import real_photo

from lookalike import Collection
from lookalike.testing import free_port

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("LOOKALIKE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]




TOKEN = "browser-test-token-0123456789"


@contextmanager
def _serving(db, **kwargs):
    import uvicorn

    from lookalike.server import create_app

    port = free_port()
    app = create_app(db, check_interval=0.1, **kwargs)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def _photos(tmp_path):
    photos = tmp_path / "photos"
    for cls in ("accordion", "soccer_ball", "strawberry", "pizza"):
        for p in real_photo(cls, n=4):
            (photos / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, photos / cls / p.name)
    return photos


@pytest.fixture
def server(tmp_path):
    Collection.create(tmp_path / "db").index(_photos(tmp_path))
    with _serving(tmp_path / "db") as url:
        yield url


@pytest.fixture
def dup_server(tmp_path):
    """16 photos plus smaller copies of 3 of them in copies/ (three duplicate groups); moves go to moved/."""
    from PIL import Image

    photos = _photos(tmp_path)
    (photos / "copies").mkdir()
    for cls in ("accordion", "pizza", "strawberry"):
        src = sorted((photos / cls).glob("*.jpg"))[0]
        with Image.open(src) as im:
            im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4)).save(photos / "copies" / f"{cls}.jpg")
    Collection.create(tmp_path / "db").index(photos)
    with _serving(tmp_path / "db", token=TOKEN, move_to=tmp_path / "moved") as url:
        yield url, photos, tmp_path / "moved"


@contextmanager
def _browser(offline_log=None):
    sync_api = pytest.importorskip("playwright.sync_api")
    assert os.path.exists(CHROMIUM), f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _shot(page, tmp_path, name):
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    folder = os.environ.get("LOOKALIKE_SCREENSHOTS")
    if folder:
        shutil.copy(path, Path(folder) / name)
    return path


def test_upload_a_photo_and_see_the_grid(server, tmp_path):
    query = real_photo("strawberry", n=6)[5]  # a strawberry photo that is not in the collection
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server)
        page.wait_for_selector("#stats:has-text('16 images')")
        page.set_input_files("#file", str(query))
        page.wait_for_selector("#results .result")
        cards = page.locator("#results .result")
        assert cards.count() == 12
        top_name = cards.nth(0).locator(".name").inner_text()
        assert top_name.startswith("strawberry/image_"), f"folder/name: {top_name}"
        top_title = cards.nth(0).locator(".name").get_attribute("title")
        assert "/strawberry/" in top_title and top_title.startswith("/"), f"the full path as title: {top_title}"
        assert "#1 ·" in cards.nth(0).locator(".score").inner_text()
        assert page.locator("#browse").is_hidden(), "the browse grid makes room for the results"
        _shot(page, tmp_path, "search.png")
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
        # a non-image upload shows the server's reason, and no longer sits above the previous results
        bad = tmp_path / "notes.jpg"
        bad.write_text("not an image")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#message.error")
        assert "not an image" in page.locator("#message").inner_text()
        assert page.locator("#results .result").count() == 0 and page.locator("#query img").count() == 0
        _shot(page, tmp_path, "failed-upload.png")
        # the duplicates view polls while the server computes (202 + progress), then renders the result
        page.click("#tab-dupes")
        page.wait_for_function(
            "() => { const t = document.querySelector('#dupes-message').textContent; "
            "return t && !t.startsWith('Looking'); }")
        assert "threshold" in page.locator("#dupes-message").inner_text()
        assert page.locator("#dupes-progress").is_hidden()
    assert (tmp_path / "search.png").stat().st_size > 10_000
    shutil.copy(tmp_path / "search.png", os.environ.get("LOOKALIKE_SCREENSHOT", tmp_path / "copy.png"))


def test_browse_k_and_a_shareable_url(server, tmp_path):
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server)
        page.wait_for_selector("#browse-grid .result")  # the start page shows the collection
        assert page.locator("#browse-grid .result").count() == 16
        assert "images 1–16 of 16" in page.locator("#browse-pager").inner_text()
        assert page.locator("#browse-grid .result .name").nth(0).inner_text().count("/") == 1
        _shot(page, tmp_path, "browse.png")
        page.select_option("#k", "6")
        card = page.locator("#browse-grid .result").nth(5)
        clicked = card.get_attribute("data-id")
        card.click()
        page.wait_for_selector("#results .result")
        assert page.locator("#results .result").count() == 6
        url = page.url
        assert f"id={clicked}" in url and "k=6" in url, url
        fresh = browser.new_page(viewport={"width": 1280, "height": 900})  # a shared link, opened anew
        fresh.goto(url)
        fresh.wait_for_selector("#results .result")
        assert fresh.locator("#results .result").count() == 6 and fresh.locator("#k").input_value() == "6"
        assert fresh.locator("#query img").get_attribute("src") == f"/api/thumbs/{clicked}"
        fresh.select_option("#k", "24")  # the largest choice the 16 images allow: 15 others
        fresh.wait_for_function("() => document.querySelectorAll('#results .result').length === 15")
        assert "k=24" in fresh.url
        fresh.click("#browse-link")
        fresh.wait_for_selector("#browse-grid .result")
        assert "id=" not in fresh.url and fresh.locator("#results .result").count() == 0


def test_phone_width_header(server, tmp_path):
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 740}, device_scale_factor=2)
        page.goto(server)
        page.wait_for_selector("#stats:has-text('16 images')")
        page.wait_for_selector("#browse-grid .result")
        spans = page.locator("#stats span")
        assert spans.count() == 3
        line = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('#stats')).lineHeight)")
        for i in range(3):
            box = spans.nth(i).bounding_box()
            assert box["height"] < 1.5 * line, f"statistic {i} wraps inside itself: {box}"
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375, f"statistic {i} leaves the screen: {box}"
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 375, "no sideways scrolling"
        title = page.locator("h1").bounding_box()
        assert title["height"] < 2 * line
        _shot(page, tmp_path, "phone.png")


def test_docs_work_offline(server, tmp_path):
    with _browser() as browser:
        page = browser.new_page()
        outside = []
        page.route("**/*", lambda route: (outside.append(route.request.url), route.abort())
                   if not route.request.url.startswith(server) else route.continue_())
        page.goto(f"{server}/docs")
        page.wait_for_selector(".endpoint")
        text = page.locator("#endpoints").inner_text()
        assert "POST /api/search" in text and "POST /api/actions/apply" in text and "needs the token" in text
        assert "needs the internet" in page.locator("#offline-note").inner_text()
        assert page.locator("a[href='/openapi.json']").count() == 1
        assert outside == [], f"/docs reached outside this server: {outside}"
        page.goto(server)
        page.wait_for_selector("#browse-grid .result")
        assert outside == [], f"the page reached outside this server: {outside}"
        page.goto(f"{server}/docs")
        page.click("#load-swagger")  # only on request; offline it says so
        page.wait_for_function("() => document.querySelector('#offline-note').textContent.includes('could not')")
        assert any("cdn.jsdelivr.net" in u for u in outside)


def _files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _review_loaded(page):
    page.wait_for_function("() => { const t = document.querySelector('#dupes-message').textContent; "
                           "return t.startsWith('Groups') || t.startsWith('No duplicates'); }", timeout=60_000)


def test_review_duplicates_with_the_keyboard_apply_and_undo(dup_server, tmp_path):
    url, photos, moved = dup_server
    before = _files(photos)
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/#token={TOKEN}")
        page.wait_for_selector("#stats:has-text('19 images')")
        assert "token" not in page.url, "the token leaves the URL at once"
        page.click("#tab-dupes")
        page.fill("#threshold", "0.9")
        page.click("#dupes-form button[type=submit]")
        _review_loaded(page)
        assert page.locator("#groups .group").count() == 3
        assert "Apply moves" in page.locator("#actions-state").inner_text()
        first = page.locator("#groups .group").nth(0)
        member = first.locator(".member").nth(0)
        assert member.locator(".name").inner_text().count("/") == 1
        facts = member.locator(".facts").inner_text()
        assert "KB" in facts and "×" in facts and "20" in facts and str(photos) in facts, facts
        assert first.locator(".member.keeper").count() == 1
        _shot(page, tmp_path, "review.png")
        # j/k move between groups
        page.keyboard.press("j")
        page.keyboard.press("j")
        assert "current" in page.locator("#groups .group").nth(2).get_attribute("class")
        page.keyboard.press("k")
        page.keyboard.press("k")
        assert "current" in first.get_attribute("class")
        # click a photo: full size; its search is a separate button
        member.locator("img").click()
        page.wait_for_selector("#viewer[open]")
        assert page.locator("#viewer img").get_attribute("src").startswith("/api/images/")
        page.keyboard.press("Escape")
        page.wait_for_selector("#viewer", state="hidden")
        # group 1: choose the second member as keeper, apply
        ids = [first.locator(".member").nth(i).get_attribute("data-id") for i in range(2)]
        paths = [first.locator(".member .name").nth(i).get_attribute("title") for i in range(2)]
        page.keyboard.press("2")
        assert first.locator(".member.keeper").get_attribute("data-id") == ids[1]
        page.keyboard.press("a")
        page.wait_for_function("() => document.querySelector('#dupes-message').textContent.includes('moved 1 files')")
        assert page.locator("#groups .group").count() == 2
        # group 2 (now first): the suggested keeper, apply
        page.keyboard.press("a")
        page.wait_for_function("() => document.querySelector('#dupes-message').textContent.includes('moved 1 files')")
        assert page.locator("#groups .group").count() == 1
        # group 3: not duplicates
        page.keyboard.press("x")
        page.wait_for_function("() => document.querySelector('#dupes-message').textContent.includes('not duplicates')")
        assert page.locator("#groups .group").count() == 0
        assert len(_files(moved)) == 2 and len(_files(photos)) == len(before) - 2
        assert Path(paths[1]).exists() and not Path(paths[0]).exists(), "the keeper chosen with 2 stayed"
        _shot(page, tmp_path, "review-applied.png")
        # u undoes the last run, then the one before
        page.keyboard.press("u")
        page.wait_for_function("() => document.querySelector('#dupes-message').textContent.includes('Undone')"
                               " && document.querySelectorAll('#groups .group').length === 1")
        page.keyboard.press("u")  # the two moved groups are back; the one marked "not duplicates" stays away
        page.wait_for_function("() => document.querySelectorAll('#groups .group').length === 2")
    assert _files(photos) == before, "undo restores every file, byte for byte"
    assert _files(moved) == {}


def test_apply_all_shows_files_and_bytes_first(dup_server, tmp_path):
    url, photos, moved = dup_server
    before = _files(photos)
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/#token={TOKEN}")
        page.click("#tab-dupes")
        page.fill("#threshold", "0.9")
        page.click("#dupes-form button[type=submit]")
        _review_loaded(page)
        page.click("#apply-all")
        page.wait_for_selector("#confirm[open]")
        head = page.locator("#confirm h3").inner_text()
        assert head.startswith("Move 3 files of 3 groups (") and "KB" in head and str(moved) in head, head
        assert page.locator("#confirm li").count() == 3
        _shot(page, tmp_path, "apply-all.png")
        page.click("#confirm-no")
        assert _files(photos) == before, "cancel changes nothing"
        page.click("#apply-all")
        page.wait_for_selector("#confirm[open]")
        page.click("#confirm-yes")
        page.wait_for_function("() => document.querySelector('#dupes-message').textContent.includes('moved 3 files')")
        assert len(_files(moved)) == 3
        page.keyboard.press("u")
        page.wait_for_function("() => document.querySelector('#dupes-message').textContent.includes('Undone')")
    assert _files(photos) == before


def test_without_the_token_the_page_says_how_to_act(dup_server):
    url, photos, _ = dup_server
    before = _files(photos)
    with _browser() as browser:
        page = browser.new_page()
        page.goto(url)
        page.click("#tab-dupes")
        page.fill("#threshold", "0.9")
        page.click("#dupes-form button[type=submit]")
        _review_loaded(page)
        assert "open the page URL" in page.locator("#actions-state").inner_text()
        assert page.locator("#apply-all").is_disabled()
        page.keyboard.press("a")
        page.wait_for_selector("#dupes-message.error")
        assert "token" in page.locator("#dupes-message").inner_text()
    assert _files(photos) == before


def test_verified_hard_copies_are_marked_and_moved(tmp_path):
    """Copies below the threshold that local features verify show "verified" and the page acts on them."""
    from conftest import hard_copy_db

    db, group = hard_copy_db(tmp_path)
    with _serving(db, token=TOKEN, move_to=tmp_path / "moved") as url, _browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/#token={TOKEN}")
        page.click("#tab-dupes")
        _review_loaded(page)
        assert page.locator("#groups .group").count() == 1
        assert page.locator("#groups .member .verified:visible").count() == 2
        assert "Note:" not in page.locator("#dupes-message").inner_text()
        _shot(page, tmp_path, "dupes-verified.png")
        page.keyboard.press("a")
        page.wait_for_function("() => document.querySelector('#dupes-message').textContent.includes('moved 2 files')")
    assert sorted(p.name for p in (tmp_path / "moved").rglob("*.jpg")) == sorted(
        n for n in group if n != "copy_rotate_20.jpg")
