"""Shared pieces of the web UI browser tests (tests/test_webui*.py): Debian's chromium driven by
Playwright's Python package, one browser per test module, one fresh profile (browser context) per test.

Every page records the requests it makes; a test fails if one goes anywhere but the server that served
the page (data: and blob: URLs are the page's own), or if the page logs an error. Screenshots go to
out/webui/ (gitignored)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "out" / "webui"
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
TOUCH = {"has_touch": True, "is_mobile": True}   # a phone's touch screen and mobile viewport

# The page's own controls, by their place in the page: a selector like "#input" would pick the first
# element with that id in document order, which is exactly what a hostile reply tries to provide.
COMPOSER = "body > main > form#composer"
INPUT, SEND, STOP = COMPOSER + " > textarea#input", COMPOSER + " > button#send", COMPOSER + " > button#stop"
# the last reply has finished and the conversation is stored (no write in flight)
DONE = "body:not([data-saving]) .message.assistant:not(.streaming) .meta .regenerate"


@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: run scripts/setup_browser.sh (make system-deps)"
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


class Profile:
    """A fresh browser profile on the live server: new pages, the requests they made, their errors."""

    def __init__(self, browser, base_url: str, viewport: dict, **context_options):
        """`context_options`: more of Playwright's new_context options (has_touch, is_mobile for a phone)."""
        self.base_url = base_url
        self.context = browser.new_context(viewport=viewport, accept_downloads=True, **context_options)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r.url))

    def new_page(self):
        page = self.context.new_page()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.goto(self.base_url + "/")
        page.wait_for_selector("body[data-ready]")
        return page

    def foreign_requests(self) -> list[str]:
        own = (self.base_url + "/", "data:", "blob:")
        return [u for u in self.requests if not u.startswith(own)]

    def close(self, allow_csp_reports: bool = False) -> None:
        """Check the profile kept to its server and logged no error, then close it. `allow_csp_reports`:
        the Content-Security-Policy refusing markup a test planted logs an error, as it should."""
        self.context.close()
        errors = [e for e in self.errors if not (allow_csp_reports and "Content Security Policy" in e)]
        assert self.foreign_requests() == []
        assert errors == []


def send(page, text: str) -> None:
    page.fill(INPUT, text)
    page.press(INPUT, "Enter")


def set_setting(page, field: str, value: str) -> None:
    if not page.is_visible("#settings"):
        page.click("#settings-toggle")
    page.fill(f"#{field}", value)
    page.dispatch_event(f"#{field}", "change")
    page.click("#settings-toggle")


def stored(page, select: str = "(r) => r") -> list:
    """The conversations in the page's IndexedDB ({conv, messages} records), each mapped in the page by
    the JavaScript function `select` (to bring back less than a whole big record)."""
    page.wait_for_selector("body:not([data-saving])", state="attached")   # no write still in flight
    return page.evaluate("""() => new Promise((resolve, reject) => {
        const open = indexedDB.open('chatfile');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
            const req = open.result.transaction('conversations').objectStore('conversations').getAll();
            req.onsuccess = () => { open.result.close(); resolve(req.result.map(SELECT)); };
            req.onerror = () => reject(req.error);
        };
    })""".replace("SELECT", select))   # spliced in, not eval'd: the page's CSP forbids eval


def visible_path(record: dict) -> list[dict]:
    """The messages from the first turn to conv.currNode of a stored/exported conversation."""
    by_id = {m["id"]: m for m in record["messages"]}
    path, m = [], by_id.get(record["conv"]["currNode"])
    while m and m["type"] != "root":
        path.append(m)
        m = by_id.get(m["parent"])
    return path[::-1]


def sse_body(text: str, pieces: int = 7, first: dict | None = None) -> str:
    """A streamed chat completion carrying `text`, cut into `pieces` deltas (mid-tag, as a model would);
    `first` adds top-level fields to the first chunk."""
    step = max(1, len(text) // pieces)
    chunks = [text[i:i + step] for i in range(0, len(text), step)]
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": c}, "finish_reason": None}]}
              for c in chunks]
    events[0].update(first or {})
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def reply_once_with(page, text: str, first: dict | None = None) -> None:
    """The next chat completion the page asks for answers `text`. A model's words are what an attacker
    or a test cannot choose on a real model, so the test supplies them verbatim through the page's own
    streaming path; every later request goes to the real server."""
    page.route("**/v1/chat/completions", times=1, handler=lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=sse_body(text, first=first)))


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path
