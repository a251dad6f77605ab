"""The page in a real browser: Debian's chromium, driven by Playwright, against real gunicorn.

Needs /usr/bin/chromium (``bash .ci/install-chromium.sh``). Without it these
tests fail when CI is set and are skipped otherwise. Playwright only drives the
installed chromium: nothing here runs ``playwright install``. The browser may
only talk to the gunicorn under test; every other request is aborted and fails
the test.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import feedparser
import httpx
import pytest

from .conftest import all_items
from .fakeupstream import FakeUpstream
from .servers import start_gunicorn, stop, wait_for_feed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
HOSTILE_TITLE = "Zebrafish <img src=x onerror=alert('title')> & <script>alert('title')</script> models"
HOSTILE_ITEM = {
    "paper": {"id": "2608.00001", "title": HOSTILE_TITLE, "summary": "A hostile title.", "upvotes": 7},
    "publishedAt": "2026-08-20T00:00:00Z",
}


def require_browser():
    """Fail under CI, skip elsewhere, when the browser or its driver is missing."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"Debian's chromium is not installed at {CHROMIUM}: run `bash .ci/install-chromium.sh`"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed: pip install -e '.[test]'"
    if missing and os.environ.get("CI"):
        pytest.fail(missing, pytrace=False)
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module")
def server():
    """Real gunicorn on a free loopback port, following a fake upstream with one hostile paper."""
    fake = FakeUpstream([HOSTILE_ITEM, *all_items()]).start()
    # One worker: every request sees the same snapshot from the first 200 on (a second worker
    # could still be loading its own, which is the business of the end-to-end tests).
    proc, base = start_gunicorn({"FEEDPROXY_UPSTREAM_URL": fake.url, "FEEDPROXY_WINDOW_DAYS": "1000",
                                 "WEB_CONCURRENCY": "1"})
    try:
        wait_for_feed(base, proc)
        yield base
    finally:
        log = stop(proc)
        fake.stop()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def playwright():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


class Tab:
    """One page in a fresh browser profile, recording what must not happen."""

    def __init__(self, page, base: str):
        self.page, self.base = page, base
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.preview_requests: list[str] = []
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # Chrome logs every 4xx/5xx fetch; the 400 of an invalid query is expected.
        page.on("console", lambda msg: msg.type == "error" and not msg.text.startswith("Failed to load resource")
                and self.errors.append(msg.text))
        page.on("request", lambda req: "/preview.json" in req.url and self.preview_requests.append(req.url))

    def papers(self) -> list[str]:
        return self.page.locator("#papers li > a:not(.similar)").evaluate_all("links => links.map(a => a.href)")


@pytest.fixture
def open_tab(playwright, server, tmp_path):
    """Open the page at a path in a new headless chromium with its own profile; check it stayed local."""
    contexts, tabs, outside = [], [], []

    def keep_local(route):
        if route.request.url.startswith(server + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    def open_(path: str = "/", **options) -> Tab:
        profile = tempfile.mkdtemp(prefix="profile-", dir=tmp_path)
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, **options
        )
        contexts.append(context)
        context.route("**/*", keep_local)
        tab = Tab(context.pages[0] if context.pages else context.new_page(), server)
        tabs.append(tab)
        tab.page.goto(server + path)
        return tab

    yield open_
    for context in contexts:
        context.close()
    assert outside == [], "the page asked for something outside the service"
    for tab in tabs:
        assert tab.dialogs == [] and tab.errors == []


def feed_ids(url: str) -> list[str]:
    """The entry ids of the feed at ``url``, in order, whatever its format."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("application/feed+json"):
        return [item["id"] for item in json.loads(response.content)["items"]]
    parsed = feedparser.parse(response.content)
    assert not parsed.bozo
    return [entry.id for entry in parsed.entries]


def test_typing_previews_the_papers_that_the_feed_url_serves(open_tab, server):
    from playwright.sync_api import expect

    tab = open_tab()
    page = tab.page
    everything = tab.papers()  # server-rendered: the empty query lists every paper
    page.locator("#q").press_sequentially("video generation", delay=25)
    expect(page.locator("#feed-url")).to_have_value(f"{server}/feed?q=video%20generation")
    expect(page.locator("#preview-status")).to_contain_text("papers, as the feed lists them")
    previewed = tab.papers()
    assert 0 < len(previewed) < len(everything)
    assert feed_ids(page.input_value("#feed-url")) == previewed
    assert 1 <= len(tab.preview_requests) <= 3  # debounced: not one request per keystroke (16 keys)
    assert page.url == f"{server}/?q=video%20generation"  # the address can be shared and reloaded
    # The chart is redrawn for the new query: what the server draws for it, bar for bar.
    chart = httpx.get(f"{server}/preview.json", params={"q": "video generation"}, timeout=10).json()["chart"]
    expect(page.locator("#chart-summary")).to_have_text(chart["summary"])
    bars = page.locator("#chart rect").evaluate_all(
        "rects => rects.map(r => [parseFloat(r.getAttribute('x')), parseFloat(r.getAttribute('height')), r.textContent])")
    assert bars == [[b["x"], b["height"], b["label"]] for b in chart["bars"]] and bars
    assert page.locator("#chart-rows tr").count() == len(chart["bars"])

    page.select_option("#sort", "upvotes")
    page.fill("#limit", "3")
    page.select_option("#format", "json")
    expect(page.locator("#feed-url")).to_have_value(f"{server}/feed?q=video%20generation&sort=upvotes&format=json&limit=3")
    expect(page.locator("#papers li")).to_have_count(3)
    assert feed_ids(page.input_value("#feed-url")) == tab.papers()
    assert page.get_attribute("#subscribe", "href") == page.input_value("#feed-url")
    assert page.get_attribute("#opml", "href") == f"{server}/opml?q=video%20generation&sort=upvotes&format=json&limit=3"
    # The syntax examples keep what was chosen: following one changes the query alone.
    example = page.locator("a.example").first
    assert example.get_attribute("href") == "/?q=pretraining+-survey&sort=upvotes&format=json&limit=3"
    ranked = tab.papers()
    metas = page.locator("#papers .meta").evaluate_all("m => m.map(e => e.textContent.replace(/\\s+/g, ' ').trim())")
    assert any(" · code (" in meta for meta in metas)  # organisation, code and stars, drawn by page.js
    summary = page.text_content("#chart-summary")

    page.reload()  # the server renders the same state from the address alone
    assert tab.papers() == ranked and page.input_value("#limit") == "3"
    assert page.locator("#papers .meta").evaluate_all("m => m.map(e => e.textContent.replace(/\\s+/g, ' ').trim())") == metas
    assert page.text_content("#chart-summary") == summary


def test_an_invalid_query_shows_the_feeds_message_next_to_the_box(open_tab, server):
    from playwright.sync_api import expect

    page = open_tab("/?q=diffusion").page
    message = httpx.get(server + "/feed", params={"q": "diffusion OR"}, timeout=10).text.strip()
    page.locator("#q").press("End")
    page.keyboard.type(" OR")
    expect(page.locator("#form-error")).to_have_text(message)
    expect(page.locator("#form-error")).to_be_visible()
    assert page.get_attribute("#q", "aria-describedby").split() == ["q-hint", "form-error"]
    assert page.get_attribute("#q", "aria-invalid") == "true"
    expect(page.locator("#feed-box")).to_be_hidden()
    expect(page.locator("#papers li")).to_have_count(0)

    page.keyboard.type(" flow")  # fixed: the message goes, the feed comes back
    expect(page.locator("#form-error")).to_be_hidden()
    expect(page.locator("#feed-url")).to_have_value(f"{server}/feed?q=diffusion%20OR%20flow")
    assert page.get_attribute("#q", "aria-invalid") is None
    assert page.get_attribute("#q", "aria-describedby") == "q-hint"


def test_markup_in_the_query_or_a_title_is_shown_as_text(open_tab, server):
    from playwright.sync_api import expect

    tab = open_tab()
    page = tab.page
    page.fill("#q", "zebrafish <script>")
    expect(page.locator("#papers li")).to_have_count(1)
    expect(page.locator("#papers li > a:not(.similar)")).to_have_text(HOSTILE_TITLE)
    assert page.input_value("#q") == "zebrafish <script>"
    page.fill("#q", '"<script>alert(1)</script>')  # an unclosed quote: the message quotes the query
    expect(page.locator("#form-error")).to_contain_text('"<script>aler')
    # Nothing from the data became an element, so nothing could run.
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 1
    page.reload()  # the server-rendered error and value
    expect(page.locator("#form-error")).to_contain_text('"<script>aler')
    assert page.locator("script").count() == 1 and page.input_value("#q") == '"<script>alert(1)</script>'
    assert tab.dialogs == []


def test_keyboard_only_finds_papers_and_copies_the_feed_url(open_tab, server):
    from playwright.sync_api import expect

    tab = open_tab("/", permissions=["clipboard-read", "clipboard-write"])
    page = tab.page
    page.keyboard.press("Tab")  # the header link, then the query box
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("agents")
    page.keyboard.press("Enter")  # submits at once, without reloading the page
    expect(page.locator("#feed-url")).to_have_value(f"{server}/feed?q=agents")
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "copy":
            break
    focus = page.evaluate("(s => [s.outlineStyle, s.outlineWidth])(getComputedStyle(document.activeElement))")
    assert focus == ["solid", "3px"]  # a visible focus ring
    page.keyboard.press("Enter")
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == f"{server}/feed?q=agents"


def test_without_the_clipboard_api_copy_selects_the_url(open_tab, server):
    from playwright.sync_api import expect

    tab = open_tab("/?q=agents")
    page = tab.page
    page.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    page.reload()  # plain http on another host has no navigator.clipboard
    page.click("#copy")
    expect(page.locator("#copy-status")).to_contain_text("Ctrl+C")
    selected = page.evaluate("(i => i.value.slice(i.selectionStart, i.selectionEnd))(document.activeElement)")
    assert selected == f"{server}/feed?q=agents"


def test_without_javascript_the_form_still_previews_and_gives_the_url(open_tab, server):
    tab = open_tab("/", java_script_enabled=False)
    page = tab.page
    assert page.is_hidden("#copy")  # a button that could do nothing is not shown
    page.fill("#q", "benchmark")
    page.fill("#min_upvotes", "5")
    with page.expect_navigation():
        page.press("#q", "Enter")
    assert page.url.startswith(f"{server}/?q=benchmark&min_upvotes=5&")
    assert page.input_value("#feed-url") == f"{server}/feed?q=benchmark&min_upvotes=5"
    assert tab.papers() and tab.papers() == feed_ids(page.input_value("#feed-url"))
    # The chart of matches per week is drawn by the server: visible, with bars, described in words.
    assert page.is_visible("#chart") and page.get_attribute("#chart", "role") == "img"
    box = page.locator("#chart").bounding_box()
    assert box and box["width"] > 100 and box["height"] > 20
    assert page.locator("#chart rect").count() >= 1
    assert page.text_content("#chart-summary").endswith(".") and "matching in the" in page.text_content("#chart-summary")


def test_fits_a_phone_screen(open_tab, server):
    page = open_tab("/?q=" + "diffusion+" * 20, viewport={"width": 360, "height": 740}).page
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing scrolls sideways
    box = page.locator("#copy").bounding_box()
    assert box and box["x"] + box["width"] <= 360


def test_missing_chromium_fails_under_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install-chromium.sh"):
        require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="install-chromium.sh"):
        require_browser()
