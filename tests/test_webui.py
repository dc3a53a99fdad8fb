"""The web UI in Debian's chromium (Playwright's Python package, headless) against the live server on
SmolLM2: send a message and watch the reply stream in, stop a reply, reload and find the conversation,
model output never runs script, no request leaves the server's origin, the API-key prompt.

Needs /usr/bin/chromium (`make system-deps` / scripts/setup_browser.sh). Without it this test fails:
it does not skip."""
from __future__ import annotations

import os
import re

import pytest

from server_helpers import httpx, live_server, smollm2_model, start_server  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: run scripts/setup_browser.sh (make system-deps)"
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    requests, console_errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(live_server.url + "/")
    page.console_errors = console_errors
    yield page
    # air-gapped: everything the page asked for came from the server that served it
    foreign = [u for u in requests if not (u.startswith(live_server.url + "/") or u.startswith("data:"))]
    assert foreign == []
    assert console_errors == []
    context.close()


def set_setting(page, field, value):
    if not page.is_visible("#settings"):
        page.click("#settings-toggle")
    page.fill(f"#{field}", value)
    page.dispatch_event(f"#{field}", "change")


def send(page, text):
    page.fill("#input", text)
    page.press("#input", "Enter")


def test_chat_stream_stop_reload(page, live_server, smollm2_model, tmp_path):
    name = smollm2_model.gguf.metadata["general.name"]
    page.wait_for_function("() => document.querySelector('#model-name').textContent !== '…'")
    assert page.text_content("#model-name") == name

    # 1. a message; the reply streams in (the Stop button shows while it does) and ends with its stats
    set_setting(page, "temperature", "0")
    set_setting(page, "max_tokens", "32")
    send(page, "What is the capital of France?")
    page.wait_for_selector(".message.assistant.streaming")
    assert page.is_visible("#stop")
    page.wait_for_function("() => document.querySelector('.message.assistant .body').textContent.length > 0")
    page.wait_for_selector(".message.assistant:not(.streaming) .stats", timeout=120_000)
    # the page's reply is the API's greedy reply to the same conversation (the stored Markdown source)
    stored = page.evaluate("() => JSON.parse(localStorage.getItem('chatfile.conversations'))[0].messages")
    expected = httpx.post(live_server.url + "/v1/chat/completions", timeout=300, json={
        "messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0,
        "max_tokens": 32, "cache_prompt": False}).json()["choices"][0]["message"]["content"]   # fresh, as the page's was
    assert stored[1] == {"role": "assistant", "content": expected, "stats": stored[1]["stats"]}
    assert expected.split()[0] in page.text_content(".message.assistant .body")
    assert re.search(r"\d+ tokens · [\d.]+ tokens/s", page.text_content(".message.assistant .stats"))
    assert page.is_visible("#send") and not page.is_visible("#stop")

    # 2. a long reply, stopped after its first words
    send(page, "Write a very long story about a dragon who learns to bake bread.")
    page.wait_for_function(
        "() => { const m = document.querySelectorAll('.message.assistant');"
        " return m.length === 2 && m[1].querySelector('.body').textContent.length > 20; }", timeout=120_000)
    page.click("#stop")
    page.wait_for_selector(".message.assistant:nth-of-type(4) .stats")
    assert page.text_content(".message.assistant:nth-of-type(4) .stats").startswith("stopped")
    stopped_text = page.text_content(".message.assistant:nth-of-type(4) .body")
    page.wait_for_timeout(500)
    assert page.text_content(".message.assistant:nth-of-type(4) .body") == stopped_text   # nothing more came

    # 3. reload: the conversation is still listed and opens with both exchanges
    page.screenshot(path=str(tmp_path / "webui-chat.png"), full_page=True)
    page.reload()
    page.wait_for_selector("#conversations li")
    titles = page.locator("#conversations .title").all_text_contents()
    assert titles == ["What is the capital of France?"]
    page.click("#conversations .title")
    assert page.locator(".message").count() == 4
    assert expected.split()[0] in page.text_content(".message.assistant .body")
    page.screenshot(path=str(tmp_path / "webui-reloaded.png"), full_page=True)
    print(f"screenshots in {tmp_path}")

    # 4. regenerate replaces the last reply; new chat empties the view but keeps the list
    page.click(".message.assistant:nth-of-type(4) .regenerate")
    page.wait_for_selector(".message.assistant:nth-of-type(4).streaming")
    page.click("#stop")
    page.wait_for_selector("#send:not([hidden])")
    assert page.locator(".message").count() == 4
    page.click("#new-chat")
    assert page.locator(".message").count() == 0
    assert page.locator("#conversations li").count() == 1


def test_edit_and_resend(page):
    set_setting(page, "max_tokens", "4")
    send(page, "Say one word.")
    page.wait_for_selector(".message.assistant:not(.streaming) .stats", timeout=120_000)
    page.click(".message.user .edit")
    page.fill(".edit-box textarea", "Say two words.")
    page.click(".edit-box .save-edit")
    page.wait_for_selector(".message.assistant:not(.streaming) .stats", timeout=120_000)
    assert page.locator(".message").count() == 2
    assert page.text_content(".message.user .body") == "Say two words."


def test_model_output_cannot_run_script(page):
    """A reply holding HTML and script is rendered as sanitized Markdown: nothing executes."""
    evil = ("Here:\n\n<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>"
            "<a href=\"javascript:window.__pwned=3\">link</a>\n\n```python\nprint('<b>hi</b>')\n```\n")
    page.evaluate("""(evil) => localStorage.setItem('chatfile.conversations', JSON.stringify([{id: 'x', title: 'evil',
        updated: 1, messages: [{role: 'user', content: '<img src=y onerror="window.__pwned=4">'},
                               {role: 'assistant', content: evil}]}]))""", evil)
    page.reload()
    page.click("#conversations .title")
    page.wait_for_selector(".message.assistant pre code")
    page.click(".message.assistant a")
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator(".message img").count() == 0
    assert page.locator(".message script").count() == 0
    assert page.get_attribute(".message.assistant a", "href") is None
    assert "hljs" in page.get_attribute(".message.assistant pre code", "class")   # highlighted
    assert page.locator(".message.assistant .copy-code").count() == 1
    assert page.text_content(".message.user .body") == '<img src=y onerror="window.__pwned=4">'
    # DOMPurify parsing the reply trips the page's CSP (inline handlers are refused outright): expected
    page.console_errors[:] = [e for e in page.console_errors if "Content Security Policy" not in e]


def test_api_key_prompt(browser, smollm2_model):
    server = start_server(smollm2_model, api_keys=("k3y",))
    try:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_selector("#api-key-box:not([hidden])")
        page.fill("#api-key", "k3y")
        page.click("#api-key-form button")
        name = smollm2_model.gguf.metadata["general.name"]
        page.wait_for_function(f"() => document.querySelector('#model-name').textContent === {name!r}")
        set_setting(page, "max_tokens", "3")
        send(page, "Hi")
        page.wait_for_selector(".message.assistant:not(.streaming) .stats", timeout=120_000)
        assert page.locator(".message.assistant .error").count() == 0
        page.close()
    finally:
        server.stop()
