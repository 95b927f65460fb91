"""End-to-end tests in real headless Chromium against a real waitress server.

They need Debian's chromium (`apt-get install chromium`) and Python Playwright (`pip install
playwright`; its own browser download is not used). Without either they are skipped, saying
why. The tour saves screenshots to docs/screenshots/.
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_PASSWORD, live_server, settings_for
from flask import Flask
from PIL import Image

from hybrid_search.demo import PHOTOS_DIR

pytestmark = [pytest.mark.browser, pytest.mark.model]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

if not CHROMIUM.is_file():
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Python Playwright is not installed (pip install playwright)")


def cropped(name: str, path: Path) -> Path:
    """A JPEG near-duplicate of a demo photo, written to `path`."""
    with Image.open(PHOTOS_DIR / name) as im:
        w, h = im.size
        small = im.convert("RGB").crop((w // 10, h // 10, w - w // 10, h - h // 10))
        small.resize((small.width // 2, small.height // 2)).save(path, "JPEG", quality=85)
    return path


def png(color: tuple[int, int, int], path: Path) -> Path:
    """A small generated photo."""
    im = Image.new("RGB", (96, 72), color)
    for x in range(0, 96, 12):
        for y in range(72):
            im.putpixel((x, y), (255 - color[0], 255 - color[1], 255 - color[2]))
    im.save(path, "PNG")
    return path


@pytest.fixture(scope="module")
def site(demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[str, Flask]]:
    """A waitress server over a copy of the demo collection: (base URL, app)."""
    from hybrid_search.web import create_app

    data = tmp_path_factory.mktemp("browser") / "data"
    shutil.copytree(demo_data_dir, data)
    app = create_app({"SECRET_KEY": "browser test key"}, settings=settings_for(data))
    try:
        with live_server(app) as url:
            yield url, app
    finally:
        app.extensions["hybrid_search"].close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright."""
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A browser tab that fails the test on any console error (CSP violations included)."""

    def __init__(self, browser: Any, base: str, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.allowed: set[int] = set()  # statuses a step expects, e.g. 401 for a bad password
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.set_default_timeout(15_000)

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        status = re.search(r"status of (\d{3})", message.text)
        if status is None or int(status.group(1)) not in self.allowed:
            self.errors.append(message.text)

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)

    def wait_for(self, *fragments: str) -> str:
        """Wait until the URL holds every fragment; returns the URL."""
        self.page.wait_for_url(lambda url: all(f in url for f in fragments))
        self.page.wait_for_load_state("load")
        return self.page.url

    def shot(self, name: str, full_page: bool = True) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # Polled from here: wait_for_function evaluates strings in the page, which its CSP forbids.
        for _ in range(200):
            if self.page.evaluate(
                    "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"):
                break
            self.page.wait_for_timeout(50)
        self.page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)

    def titles(self) -> list[str]:
        return [t.strip() for t in self.page.locator(".results .card-title").all_inner_texts()]

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


def test_the_tour(site: tuple[str, Flask], browser: Any, tmp_path: Path) -> None:
    """Words, a photo, both, the slider, fusion, more like this, sign in, edit, add photos."""
    base, _ = site
    tab = Page(browser, base, viewport=DESKTOP)
    page = tab.page

    # Words: type and press Enter.
    tab.goto("/")
    assert page.locator("h1").first.inner_text() == "Newest photos"
    page.click("h1")  # away from the box (it has autofocus on this page)
    page.keyboard.press("/")  # the shortcut focuses the search box
    page.keyboard.type("cat")
    page.keyboard.press("Enter")
    tab.wait_for("q=cat")
    assert tab.titles()[0] == "Close-up of a tabby cat"
    assert page.locator(".results .card-title mark").first.inner_text() == "cat"
    assert page.locator(".results .card").first.locator("meter").count() == 2  # words, overall

    # A photo: choosing a file searches at once.
    page.fill("#q", "")
    page.set_input_files("#image", str(cropped("rocket.jpg", tmp_path / "rocket query.jpg")))
    url = tab.wait_for("q_image=")
    key = re.search(r"q_image=([0-9a-f]{64})", url)
    assert key is not None
    assert tab.titles()[0] == "Falcon 9 rocket on the launch pad at dusk"
    assert page.locator(".query-photo img").get_attribute("src").endswith(key.group(1))

    # Both: words added to the kept photo.
    page.fill("#q", "texture")
    page.keyboard.press("Enter")
    tab.wait_for("q=texture", key.group(1))
    assert "for “texture” and your photo" in page.locator(".results-title").inner_text()
    assert page.locator(".results .card").first.locator("meter").count() == 3

    # The slider: all the way to "looks" with the keyboard; the photo stays.
    page.focus("#alpha")
    page.keyboard.press("End")
    tab.wait_for("alpha=1", "q=texture", key.group(1))
    assert page.locator("#alpha-out").inner_text() == "0% words · 100% looks"
    assert tab.titles()[0] == "Falcon 9 rocket on the launch pad at dusk"
    page.focus("#alpha")  # a new page: focus is back at the top
    page.keyboard.press("Home")
    tab.wait_for("alpha=0", key.group(1))
    assert page.locator("#alpha-out").inner_text() == "100% words · 0% looks"
    assert tab.titles()[0] in {"Brick wall pattern", "Grass and clover close-up",
                               "Gravel stones close-up"}

    # Fusion method, then the weight back to the middle for the screenshot.
    page.click("label:has-text('Rank fusion')")
    tab.wait_for("fusion=rrf", key.group(1))
    assert page.locator("input[value=rrf]").is_checked()
    tab.goto(f"/?q=texture&q_image={key.group(1)}&alpha=0.4")
    tab.shot("search-results.png")

    # More like this, from a result card.
    first_card = page.locator(".results .card").first
    liked = first_card.locator(".card-title").inner_text().strip()
    first_card.locator("text=More like this").click()
    tab.wait_for("like=")
    assert f"photos like “{liked}”" in page.locator(".results-title").inner_text()
    assert liked not in tab.titles() and len(tab.titles()) == 10

    # Drag and drop a photo onto the drop zone, then paste one.
    drop_photo = base64_of(cropped("coffee.png", tmp_path / "coffee.jpg"))
    page.evaluate(DROP_SCRIPT, {"data": drop_photo, "name": "coffee.jpg", "event": "drop"})
    tab.wait_for("q_image=")
    assert tab.titles()[0] == "Espresso in a red cup on a wooden table"
    paste_photo = base64_of(cropped("cat.png", tmp_path / "cat.jpg"))
    page.evaluate(DROP_SCRIPT, {"data": paste_photo, "name": "", "event": "paste"})
    sync_api.expect(page.locator(".results .card-title").first).to_contain_text("tabby")

    # The image page: full photo, words, neighbours.
    page.locator(".results .card-title a").first.click()
    page.wait_for_url(re.compile(r"/images/\d+"))
    assert page.locator(".photo-title").inner_text() == "Close-up of a tabby cat"
    assert page.locator(".neighbours .card").count() == 8
    assert page.evaluate("document.querySelector('.photo-view img').naturalWidth") > 0
    tab.shot("image-page.png")

    # Sign in from the image page, come back, and edit the words.
    image_url = page.url.split("?")[0]
    page.click("text=Sign in >> nth=-1")
    page.wait_for_url(re.compile(r"/login"))
    tab.allowed.add(401)
    page.fill("#password", "wrong password")
    page.keyboard.press("Enter")
    page.wait_for_selector(".alert-error")
    page.fill("#password", ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: url.split("?")[0] == image_url)
    assert "You are signed in." in page.locator(".flashes").inner_text()
    page.click("text=Edit title, description and tags")
    page.fill("#edit-title", "Chelsea the tabby, wide awake")
    page.fill("#edit-tags", "cat, tabby cat, chelsea, whiskers")
    page.click("button:has-text('Save')")
    page.wait_for_selector(".flash-success")
    assert page.locator(".photo-title").inner_text() == "Chelsea the tabby, wide awake"
    assert "chelsea" in page.locator(".photo-info .tags").first.inner_text()
    tab.goto("/")
    page.fill("#q", "awake")
    page.keyboard.press("Enter")
    tab.wait_for("q=awake")
    assert tab.titles()[0] == "Chelsea the tabby, wide awake"

    # Add two photos with words, from the upload page.
    page.click("text=Add photos")
    page.wait_for_url(re.compile(r"/upload"))
    page.set_input_files("#images", [str(png((230, 120, 20), tmp_path / "sunset-1.png")),
                                     str(png((20, 60, 200), tmp_path / "sunset-2.png"))])
    assert page.locator(".previews li").count() == 2
    page.fill("#title", "Sunset over the bay")
    page.fill("#tags", "sunset, bay, evening")
    tab.shot("upload-form.png")
    page.click("button:has-text('Add photos')")
    page.wait_for_selector(".flash-success")
    assert "Added 2 photos." in page.locator(".flashes").inner_text()
    tab.goto("/?q=sunset")
    assert tab.titles()[:2] == ["Sunset over the bay", "Sunset over the bay"]
    tab.close()


def test_phone_sized_screen(site: tuple[str, Flask], browser: Any) -> None:
    """The search page fits a phone: no sideways scrolling, two columns of results."""
    base, app = site
    tab = Page(browser, base, viewport=PHONE, device_scale_factor=2, is_mobile=True,
               has_touch=True)
    page = tab.page
    by_name = {r.filename: r.id for r in app.extensions["hybrid_search"].store.iter_records()}
    tab.goto(f"/?q=space+stars&like={by_name['astronaut.png']}&alpha=0.4")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    tops = page.evaluate(
        "Array.from(document.querySelectorAll('.results .card')).slice(0, 2)"
        ".map(c => c.getBoundingClientRect().top)")
    assert len(tops) == 2 and abs(tops[0] - tops[1]) < 1  # side by side
    tab.shot("phone.png", full_page=False)  # what the phone shows first
    tab.close()


def test_errors_are_explained_in_the_page(site: tuple[str, Flask], browser: Any,
                                          tmp_path: Path) -> None:
    base, _ = site
    tab = Page(browser, base, viewport=DESKTOP)
    tab.allowed.update({400, 404})
    page = tab.page
    tab.goto("/?q=rockt")
    page.click(".suggestion a")
    tab.wait_for("q=rocket")
    assert tab.titles()[0] == "Falcon 9 rocket on the launch pad at dusk"
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    page.set_input_files("#image", str(notes))
    page.wait_for_selector(".alert-error")
    assert "not an image" in page.locator(".alert-error").inner_text()
    tab.goto("/images/99999")
    assert page.locator("h1").inner_text() == "Not found"
    tab.close()


def base64_of(path: Path) -> str:
    """A file's bytes as base64 text."""
    return base64.b64encode(path.read_bytes()).decode()


# Builds a File from base64 and drops (or pastes) it the way a browser does.
DROP_SCRIPT = """({data, name, event}) => {
  const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
  const file = new File([bytes], name || "image.jpg", {type: "image/jpeg"});
  const transfer = new DataTransfer();
  transfer.items.add(file);
  if (event === "drop") {
    const zone = document.querySelector("[data-dropzone]");
    zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true,
                                                 cancelable: true}));
    zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true,
                                             cancelable: true}));
  } else {
    document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer,
                                                       bubbles: true, cancelable: true}));
  }
}"""
