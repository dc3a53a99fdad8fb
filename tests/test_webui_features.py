"""The web UI's features in Debian's chromium, driven as a person would, against a live server on
SmolLM2 whose defaults differ from llama.cpp's (temperature 0.2, top-k 7, seed 11, 8 tokens a reply):
phone and desktop layouts with screenshots (out/webui/), math, branches across reloads, export and import
into a fresh profile, search, text files dropped or picked, keyboard shortcuts and the theme, settings
that follow the server's /props, tool calls and the dropped-messages notice; then the features again at
390 px on a touch screen, tapped. Every profile checks that no request left the server's origin and that
the page logged no error (webui_helpers.Profile).

Replies the model cannot be made to write (a formula, a tool call, a hostile file) come from a canned
stream through the page's own streaming path (reply_once_with) or from an imported file; everything the
test says about requests is read from what the page actually sent."""
from __future__ import annotations

import json
import re

import pytest

from server_helpers import smollm2_model, start_server  # noqa: F401
from webui_helpers import (DESKTOP, DONE, INPUT, PHONE, SEND, STOP, TOUCH, Profile, browser,  # noqa: F401
                           reply_once_with, screenshot, send, set_setting, stored, visible_path)

pytestmark = pytest.mark.slow
CHAT = "**/v1/chat/completions"


@pytest.fixture(scope="module")
def server(smollm2_model):
    from runtime.sampler import SamplingParams
    s = start_server(smollm2_model, defaults=SamplingParams(temperature=0.2, top_k=7, seed=11), max_tokens=8,
                     request_timeout=5.0)
    yield s
    s.stop()


@pytest.fixture
def open_profile(browser, server):
    """open_profile(viewport=DESKTOP, **context_options) -> a fresh Profile; each is checked and closed
    after the test."""
    made = []

    def make(viewport=DESKTOP, **context_options):
        made.append(Profile(browser, server.url, viewport, **context_options))
        return made[-1]
    yield make
    for p in made:
        p.close(allow_csp_reports=getattr(p, "csp_expected", False))


def sent_body(page, action) -> dict:
    """Run `action` (which makes the page send a chat completion) and return the JSON the page sent."""
    with page.expect_request(CHAT) as req:
        action()
    return json.loads(req.value.post_data)


def import_file(page, path) -> str:
    """Import `path` through the Import… button as a person would; returns the status line."""
    if not page.is_visible("#import"):
        page.click("#sidebar-toggle")
    with page.expect_file_chooser() as chooser:
        page.click("#import")
    chooser.value.set_files(str(path))
    # "Importing NAME…" is shown as the file is picked, then the outcome replaces it
    page.wait_for_function("() => { const s = document.querySelector('#status').textContent;"
                           " return s.startsWith('Import') && !s.startsWith('Importing'); }")
    return page.text_content("#status")


def export(page, button: str, path) -> list | dict:
    with page.expect_download() as download:
        page.click(button)
    download.value.save_as(str(path))
    return json.loads(path.read_text())


def write_json(tmp_path, name: str, data) -> object:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def conversation(conv_id: str, name: str, turns: list[tuple[str, str]], **extra_fields) -> dict:
    """A linear conversation in the export shape (root + turns), ids derived from `conv_id`."""
    ids = [f"{conv_id}-root"] + [f"{conv_id}-{i}" for i in range(len(turns))]
    messages = [{"id": ids[0], "convId": conv_id, "type": "root", "timestamp": 1, "role": "system", "content": "",
                 "parent": None, "children": ids[1:2]}]
    for i, (role, content) in enumerate(turns):
        messages.append({"id": ids[i + 1], "convId": conv_id, "type": "text", "timestamp": 2 + i, "role": role,
                         "content": content, "parent": ids[i], "children": ids[i + 2:i + 3], **extra_fields})
    return {"conv": {"id": conv_id, "name": name, "lastModified": 10, "currNode": ids[-1]}, "messages": messages}


def canonical(records) -> list:
    """An export, order-independent: conversations by id, messages by id."""
    records = records if isinstance(records, list) else [records]
    return sorted(({"conv": r["conv"], "messages": sorted(r["messages"], key=lambda m: m["id"])} for r in records),
                  key=lambda r: r["conv"]["id"])


# ---- layout ------------------------------------------------------------------------------------------

WIDE = conversation("wide", "Wide things", [
    ("user", "Show me wide things."),
    ("assistant", "A long line of code:\n\n```python\nprint('" + "x" * 300 + "')\n```\n\n"
                  "| a | b | c | d | e | f | g | h |\n|---|---|---|---|---|---|---|---|\n"
                  + "| " + " | ".join(["a-rather-long-cell-value"] * 8) + " |\n\n"
                  "A URL: https://example.com/" + "very-long-path-segment/" * 12 + "\n\n"
                  "$$\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2} + \\int_0^1 x^2\\,dx + "
                  + " + ".join(f"a_{{{i}}}" for i in range(40)) + "$$\n\nInline $e^{i\\pi} + 1 = 0$."),
])


def overflow(page) -> dict:
    """What sticks out sideways: the page's own scroll width, and messages wider than the window."""
    return page.evaluate("""() => ({
        page: document.documentElement.scrollWidth - innerWidth,
        body: document.body.scrollWidth - innerWidth,
        messages: [...document.querySelectorAll('.message')].filter((m) => m.getBoundingClientRect().right > innerWidth + 0.5).length,
    })""")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE, {"width": 360, "height": 740}], ids=["1280", "390", "360"])
def test_layout_fits_desktop_and_phone(open_profile, viewport, tmp_path):
    width = viewport["width"]
    profile = open_profile(viewport)
    page = profile.new_page()
    narrow = width < 700
    assert page.is_visible("#sidebar") is not narrow            # behind a button on a phone
    assert page.is_visible("#sidebar-toggle") is narrow
    status = import_file(page, write_json(tmp_path, "wide.json", WIDE))
    assert status.startswith("Imported 1 conversation")
    page.click("#conversations .title")
    assert page.is_visible("#sidebar") is not narrow            # opening a chat closes the list
    page.wait_for_selector(".message.assistant .katex-display")
    assert overflow(page) == {"page": 0, "body": 0, "messages": 0}
    screenshot(page, f"chat-{width}")

    box = page.locator(INPUT).bounding_box()
    assert box["width"] >= 0.5 * width and box["x"] + box["width"] <= width
    if narrow:
        for control in (SEND, "#attach", "#sidebar-toggle", "#settings-toggle", "#help-toggle", "#theme-toggle"):
            b = page.locator(control).bounding_box()
            assert b["height"] >= 40 and b["width"] >= 40, control          # touch-sized
            assert 0 <= b["x"] and b["x"] + b["width"] <= width, control
        page.click("#sidebar-toggle")
        page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
        side = page.locator("#sidebar").bounding_box()
        assert side["x"] + side["width"] <= width
        screenshot(page, f"sidebar-{width}")
        page.click("#backdrop", position={"x": width - 10, "y": 300})
        page.wait_for_function("() => !document.body.classList.contains('sidebar-open')")

    page.click("#settings-toggle")
    for field in page.locator("#settings input, #settings textarea").all():
        b = field.bounding_box()
        assert b["x"] >= 0 and b["x"] + b["width"] <= width
    assert overflow(page)["page"] == 0
    screenshot(page, f"settings-{width}")


# ---- math --------------------------------------------------------------------------------------------

MATH_REPLY = r"""Euler: $e^{i\pi} + 1 = 0$, and \(a^2 + b^2 = c^2\).

$$\int_0^1 x^2\,dx = \frac{1}{3}$$

\[ \sum_{k=1}^{n} k = \frac{n(n+1)}{2} \]

It costs $5 and $10 today; US$5/$10 too. Code stays code: `$x$`. Escaped: \$y\$.

Broken: $\frac{1$ and $\href{javascript:alert(1)}{click}$.
"""


def test_math_rendered_with_vendored_katex(open_profile):
    profile = open_profile()
    page = profile.new_page()
    reply_once_with(page, MATH_REPLY)
    send(page, "Some math, please.")
    page.wait_for_selector(DONE)
    body = ".message.assistant .body"
    # four inline/display formulas typeset (inline 2, display 2), plus the \href one typeset without a link
    assert page.locator(f"{body} .katex").count() == 5
    assert page.locator(f"{body} .katex-display").count() == 2
    assert page.locator(f"{body} .katex a, {body} a").count() == 0
    text = page.text_content(body)
    assert "It costs $5 and $10 today; US$5/$10 too." in text                  # prices stay text
    assert page.text_content(f"{body} code") == "$x$"
    assert "$y$" in text
    assert page.text_content(f"{body} .math-error") == "$\\frac{1$"            # shown as its source
    # KaTeX's fonts came from this server (and nothing from anywhere else: Profile.close checks)
    page.evaluate("() => document.fonts.ready")
    assert page.evaluate("() => document.fonts.check('20px KaTeX_Main')")
    assert any(u.endswith("/vendor/fonts/KaTeX_Main-Regular.woff2") for u in profile.requests)
    # the formula is drawn (not raw source): the display block is taller than a line of text
    assert page.locator(f"{body} .katex-display").first.bounding_box()["height"] > 30
    screenshot(page, "math-1280")
    page.reload()
    page.wait_for_selector("#conversations .title")
    page.click("#conversations .title")
    assert page.locator(f"{body} .katex").count() == 5


# ---- branches ----------------------------------------------------------------------------------------

def texts(page) -> list[str]:
    return page.locator("#messages .message .body").all_text_contents()


def test_branches_survive_reload_and_the_visible_path_is_sent(open_profile):
    page = open_profile().new_page()
    send(page, "Name a color.")
    page.wait_for_selector(DONE)
    send(page, "Another one.")
    page.wait_for_function("() => document.querySelectorAll('.message.assistant .regenerate').length === 2"
                           " && !document.querySelector('.message.streaming') && !document.body.dataset.saving")
    first_branch = texts(page)
    assert len(first_branch) == 4
    first_sources = [(m["role"], m["content"]) for m in visible_path(stored(page)[0])]   # Markdown as sent

    # editing the first message makes a second version of it: the view now ends at its new reply
    page.click(".message.user:nth-of-type(1) .edit")
    page.fill(".edit-box textarea", "Name a fruit.")
    body = sent_body(page, lambda: page.click(".edit-box .save-edit"))
    assert [m["content"] for m in body["messages"]] == ["Name a fruit."]
    page.wait_for_selector(DONE)
    assert page.text_content(".message.user .sibling-pos") == "2/2"
    # regenerating its reply makes a second version of the reply
    page.click(".message.assistant .regenerate")
    page.wait_for_selector(DONE)
    assert page.text_content(".message.assistant .sibling-pos") == "2/2"
    second_branch = texts(page)
    assert second_branch[0] == "Name a fruit." and len(second_branch) == 2

    page.reload()
    page.click("#conversations .title")
    assert texts(page) == second_branch
    assert page.text_content(".message.user .sibling-pos") == "2/2"
    assert page.text_content(".message.assistant .sibling-pos") == "2/2"
    screenshot(page, "branches-1280")

    page.click(".message.user .sibling-prev")                  # back to the first version, all of it
    assert texts(page) == first_branch
    assert page.text_content(".message.user .sibling-pos") == "1/2"
    page.reload()
    page.click("#conversations .title")
    assert texts(page) == first_branch                         # the choice of branch persists too

    body = sent_body(page, lambda: send(page, "And a third?"))
    assert [(m["role"], m["content"]) for m in body["messages"]] == first_sources + [("user", "And a third?")]
    page.wait_for_selector("body:not([data-saving]) .message:nth-of-type(6).assistant:not(.streaming) .regenerate")
    record = stored(page)[0]
    assert len(record["messages"]) == 1 + 4 + 2 + 1 + 2      # root, branch 1, fruit + reply, 2nd reply, new turn


# ---- export and import -------------------------------------------------------------------------------

def test_export_then_import_into_a_fresh_profile(open_profile, tmp_path):
    a = open_profile().new_page()
    reply_once_with(a, "Paris.")
    send(a, "Capital of France?")
    a.wait_for_selector(DONE)
    reply_once_with(a, "It is Paris.")
    a.click(".message.assistant .regenerate")                 # a tree: two versions of the reply
    a.wait_for_selector(DONE)
    assert a.text_content(".message.assistant .sibling-pos") == "2/2"
    a.click("#new-chat")
    drop(a, "table.csv", "a,b\n1,2\n", "text/csv")
    a.wait_for_selector("#attachments .chip")
    reply_once_with(a, "Two columns.")
    send(a, "Describe the file.")
    a.wait_for_selector(DONE)
    everything = export(a, "#export-all", tmp_path / "all.json")
    assert len(everything) == 2 and all(set(r) == {"conv", "messages"} for r in everything)
    one = export(a, "#conversations li:nth-child(1) .export", tmp_path / "one.json")
    assert one["conv"]["name"] == "Describe the file."
    assert one["messages"][1]["extra"] == [{"type": "textFile", "name": "table.csv", "content": "a,b\n1,2\n"}]

    # a fresh profile (another browser, say) imports the file: the same conversations, every version
    b = open_profile().new_page()
    assert import_file(b, tmp_path / "all.json") == "Imported 2 conversations: 2 new"
    assert b.locator("#conversations .title").all_text_contents() == ["Describe the file.", "Capital of France?"]
    assert canonical(export(b, "#export-all", tmp_path / "again.json")) == canonical(everything)
    b.click("#conversations li:nth-child(2) .title")
    assert b.text_content(".message.assistant .sibling-pos") == "2/2"
    screenshot(b, "import-1280")

    # importing again merges (nothing doubles); a file that disagrees is added beside, never over
    assert import_file(b, tmp_path / "one.json") == "Imported 1 conversation: 0 new, 1 merged with one already here"
    changed = json.loads((tmp_path / "one.json").read_text())
    changed["messages"][1]["content"] = "Something else."
    assert import_file(b, write_json(tmp_path, "changed.json", changed)).endswith("1 added as copies")
    titles = b.locator("#conversations .title").all_text_contents()
    assert sorted(titles) == ["Capital of France?", "Describe the file.", "Describe the file. (imported)"]
    assert canonical([r for r in stored(b) if not r["conv"]["name"].endswith("(imported)")]) == canonical(everything)


LLAMA_SERVER_EXPORT = {   # the shape llama-server's web UI exports ({conv, messages}, a "root" message)
    "conv": {"id": "c0ffee", "name": "From llama-server", "lastModified": 1700000000000, "currNode": "m2"},
    "messages": [
        {"id": "r", "convId": "c0ffee", "type": "root", "timestamp": 1700000000000, "role": "system", "content": "",
         "parent": None, "thinking": "", "children": ["m1"]},
        {"id": "m1", "convId": "c0ffee", "type": "text", "timestamp": 1700000000001, "role": "user",
         "content": "Hello from llama.cpp", "parent": "r", "thinking": "", "children": ["m2"],
         "extra": [{"type": "textFile", "name": "a.txt", "content": "attached"},
                   {"type": "imageFile", "name": "cat.png", "base64Url": "data:image/png;base64,iVBORw0KGgo="}]},
        {"id": "m2", "convId": "c0ffee", "type": "text", "timestamp": 1700000000002, "role": "assistant",
         "content": "Hi! **bold**", "parent": "m1", "thinking": "", "children": [],
         "timings": {"prompt_n": 5, "prompt_ms": 10.0, "predicted_n": 3, "predicted_ms": 30.0}},
    ],
}


def test_import_other_shapes_and_bad_files(open_profile, tmp_path):
    page = open_profile().new_page()
    assert import_file(page, write_json(tmp_path, "llama.json", LLAMA_SERVER_EXPORT)).startswith("Imported 1")
    openai = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                           {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]}]}
    assert import_file(page, write_json(tmp_path, "openai.json", openai)).startswith("Imported 1")
    # broken trees lose nothing: a missing parent and a cycle hang from the root as branches of their own
    tangled = conversation("tangle", "Tangled", [("user", "one"), ("assistant", "two")])
    tangled["messages"] += [
        {"id": "orphan", "type": "text", "role": "user", "content": "orphan", "parent": "nowhere", "children": []},
        {"id": "x", "type": "text", "role": "user", "content": "cycle x", "parent": "y", "children": ["y"]},
        {"id": "y", "type": "text", "role": "assistant", "content": "cycle y", "parent": "x", "children": ["x"]}]
    assert import_file(page, write_json(tmp_path, "tangled.json", tangled)).startswith("Imported 1")
    records = {r["conv"]["name"]: r for r in stored(page)}
    assert set(records) == {"From llama-server", "Hi there", "Tangled"}
    assert len(records["Tangled"]["messages"]) == 6
    assert [m["content"] for m in visible_path(records["Hi there"])] == ["Be brief.", "Hi there", "Hello."]
    page.click("#conversations .title >> text=From llama-server")
    assert page.text_content(".message.user .files summary").startswith("a.txt")
    assert page.text_content(".message.user .files .other") == "cat.png (imageFile: not shown, not sent)"
    assert page.locator(".message img").count() == 0
    assert page.text_content(".message.assistant .body strong") == "bold"

    bad = {"not json": "{", "no messages": '{"conv": {"id": "q"}}', "a number": "42", "empty list": "[]",
           "bad role": json.dumps(conversation("r1", "x", [("wizard", "hi")])),
           "duplicate ids": json.dumps({"conv": {"id": "d"}, "messages": [{"id": "a", "role": "user"}] * 2})}
    for name, text in bad.items():
        path = tmp_path / "bad.json"
        path.write_text(text)
        status = import_file(page, path)
        assert status.startswith("Import of bad.json failed: "), (name, status)
        assert page.get_attribute("#status", "class") == "error"
    assert len(stored(page)) == 3                              # nothing was added or lost


def test_history_beyond_localstorage_lives_in_indexeddb(open_profile, tmp_path):
    big = conversation("big", "Eight megabytes", [("user", "Here is a big log."), ("assistant", "y" * (8 << 20))])
    page = open_profile().new_page()
    assert page.get_attribute("body", "data-ready") == "IndexedDB"
    assert import_file(page, write_json(tmp_path, "big.json", big)).startswith("Imported 1")
    page.reload()
    page.wait_for_selector("#conversations .title")
    assert page.locator("#conversations .title").all_text_contents() == ["Eight megabytes"]
    assert len(stored(page)[0]["messages"][2]["content"]) == 8 << 20


# ---- search ------------------------------------------------------------------------------------------

def test_search_titles_and_text(open_profile, tmp_path):
    branched = conversation("b", "Garden notes", [("user", "What grows in shade?"), ("assistant", "Ferns.")])
    branched["messages"].append({"id": "b-hidden", "convId": "b", "type": "text", "timestamp": 9, "role": "assistant",
                                 "content": "Hostas and astilbe, in a version not shown.", "parent": "b-0", "children": []})
    branched["messages"][1]["children"].append("b-hidden")
    data = [conversation("a", "Trip to Lisbon", [("user", "Plan three days."), ("assistant", "Day 1: Alfama.")]),
            branched,
            conversation("c", "Tax question", [("user", "What is a W-2?"), ("assistant", "A wage statement.")])]
    page = open_profile().new_page()
    import_file(page, write_json(tmp_path, "three.json", data))
    page.keyboard.press("Control+k")
    assert page.evaluate("() => document.activeElement.id") == "search"
    page.keyboard.type("lisbon")
    assert page.locator("#conversations .title").all_text_contents() == ["Trip to Lisbon"]
    page.fill("#search", "ASTILBE")                              # message text, case-insensitive, any version
    titles = page.locator("#conversations .title").all_text_contents()
    assert len(titles) == 1 and titles[0].startswith("Garden notes") and "astilbe" in titles[0]
    screenshot(page, "search-1280")
    page.fill("#search", "nothing like this")
    assert page.text_content("#conversations") == "No conversation matches."
    page.fill("#search", "")
    assert page.locator("#conversations .title").count() == 3


# ---- files -------------------------------------------------------------------------------------------

def drop(page, name: str, content, mime: str = "text/plain") -> None:
    """Drop a file on the page as a person dragging it from their file manager."""
    data = page.evaluate_handle("""([name, content, mime]) => {
        const bytes = typeof content === 'string' ? content : new Uint8Array(content);
        const d = new DataTransfer(); d.items.add(new File([bytes], name, {type: mime})); return d; }""",
                                [name, content, mime])
    page.dispatch_event("#messages", "dragenter", {"dataTransfer": data})
    assert page.is_visible("#drop-overlay")
    page.dispatch_event("#messages", "drop", {"dataTransfer": data})


def test_text_files_dropped_or_picked_reach_the_request(open_profile, tmp_path):
    page = open_profile().new_page()
    notes = "# Notes\n\nUse ```code``` fences.\n"
    drop(page, "notes.md", notes, "text/markdown")
    page.wait_for_selector("#attachments .chip")
    assert page.text_content("#attachments .chip").startswith("notes.md")
    assert not page.is_visible("#drop-overlay")
    (tmp_path / "data.csv").write_text("city,pop\nLisbon,545000\n")
    with page.expect_file_chooser() as chooser:
        page.click("#attach")
    chooser.value.set_files(str(tmp_path / "data.csv"))
    page.wait_for_selector("#attachments .chip:nth-child(2)")
    # refused: binary (a PNG), and text over the stated limit; each named in the status line
    drop(page, "photo.png", [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13], "image/png")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('photo.png')")
    assert "not a text file" in page.text_content("#status")
    drop(page, "huge.log", "z" * (600 * 1024))
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('huge.log')")
    assert "up to 512.0 kB" in page.text_content("#status")
    assert page.locator("#attachments .chip").count() == 2
    screenshot(page, "files-1280")

    body = sent_body(page, lambda: send(page, "Summarize both files."))
    assert body["messages"][-1] == {"role": "user", "content":
                                    "File: notes.md\n````md\n# Notes\n\nUse ```code``` fences.\n````\n\n"
                                    "File: data.csv\n```csv\ncity,pop\nLisbon,545000\n```\n\nSummarize both files."}
    page.wait_for_selector(DONE)
    assert page.locator(".message.user .files summary").all_text_contents() == [
        f"notes.md · {len(notes)} B", f"data.csv · {(tmp_path / 'data.csv').stat().st_size} B"]
    assert page.text_content(".message.user .body") == "Summarize both files."
    assert page.locator("#attachments .chip").count() == 0
    assert page.locator("#conversations .title").all_text_contents() == ["Summarize both files."]


# ---- shortcuts, help, theme, title ---------------------------------------------------------------------

def test_shortcuts_help_theme_and_title(open_profile):
    page = open_profile().new_page()
    page.keyboard.press("Control+/")
    assert page.is_visible("#help")
    help_text = page.text_content("#help")
    for words in ("New chat", "Stop the reply", "Focus the message box", "Search conversations", "up to 512.0 kB"):
        assert words in help_text
    screenshot(page, "help-1280")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")

    assert page.text_content("#theme-toggle") == "Auto"
    page.click("#theme-toggle")
    assert page.get_attribute("html", "data-theme") == "light"
    page.click("#theme-toggle")
    assert page.get_attribute("html", "data-theme") == "dark"
    page.reload()
    page.wait_for_selector("body[data-ready]")
    assert page.text_content("#theme-toggle") == "Dark"
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(13, 17, 23)"

    long_first = "Please explain, in great detail and with examples, how photosynthesis converts light into sugar."
    set_setting(page, "max_tokens", "300")
    send(page, long_first)
    page.wait_for_function("() => document.querySelector('.message.assistant .body')?.textContent.length > 3",
                           timeout=120_000)
    page.keyboard.press("Escape")                               # stops the reply being written
    page.wait_for_selector(".message.assistant .stats")
    assert page.text_content(".message.assistant .stats").startswith("stopped")
    assert page.text_content("#conversations .title") == "Please explain, in great detail and with…"
    screenshot(page, "dark-1280")

    page.click("#conversations .title")
    page.keyboard.press("Control+Shift+O")                      # new chat
    assert page.locator(".message").count() == 0
    page.click("#model-name")
    page.keyboard.press("Shift+Escape")                         # focus the message box
    assert page.evaluate("() => document.activeElement.id") == "input"
    page.click("#theme-toggle")
    assert page.get_attribute("html", "data-theme") is None     # back to following the system


# ---- settings follow the server ------------------------------------------------------------------------

def test_settings_start_from_the_servers_defaults(open_profile):
    page = open_profile().new_page()
    page.click("#settings-toggle")
    page.wait_for_function("() => document.querySelector('#temperature').placeholder === '0.2'")
    placeholders = {f: page.get_attribute(f"#{f}", "placeholder") for f in ("temperature", "top_k", "max_tokens", "seed")}
    assert placeholders == {"temperature": "0.2", "top_k": "7", "max_tokens": "8", "seed": "11"}
    page.click("#settings-toggle")
    body = sent_body(page, lambda: send(page, "Hi"))
    assert set(body) == {"messages", "stream", "stream_options"}        # nothing the user did not set
    page.wait_for_selector(DONE)
    set_setting(page, "top_k", "3")
    set_setting(page, "max_tokens", "1")
    body = sent_body(page, lambda: send(page, "Tell me about Lisbon."))
    assert body["top_k"] == 3 and body["max_tokens"] == 1 and "temperature" not in body
    page.wait_for_selector("body:not([data-saving]) .message:nth-of-type(4).assistant:not(.streaming) .regenerate")
    assert page.text_content(".message:nth-of-type(4) .stats").endswith(" · cut at the token limit")

    # settings saved by older pages kept every field; only values unlike the old defaults were chosen
    page.evaluate("""() => { localStorage.removeItem('chatfile.settings.v2'); localStorage.setItem('chatfile.settings',
        JSON.stringify({system: 'Be terse.', temperature: '0.8', top_p: '0.95', top_k: '20', min_p: '0.05',
                        repeat_penalty: '1', max_tokens: '', seed: ''})); }""")
    page.reload()
    page.wait_for_selector("body[data-ready]")
    page.click("#new-chat")
    body = sent_body(page, lambda: send(page, "Hello"))
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert {k: v for k, v in body.items() if k not in ("messages", "stream", "stream_options")} == {"top_k": 20}
    page.wait_for_selector(DONE)


# ---- tool calls and dropped messages -------------------------------------------------------------------

def test_tool_calls_shown_and_sent_back(open_profile, tmp_path):
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    chat = {"messages": [{"role": "user", "content": "Weather in Paris?"},
                         {"role": "assistant", "content": None, "tool_calls": calls},
                         {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'},
                         {"role": "assistant", "content": "It is 18 °C in Paris."}]}
    page = open_profile().new_page()
    import_file(page, write_json(tmp_path, "tools.json", chat))
    page.click("#conversations .title")
    assert page.text_content(".message.assistant .tool-name") == "Tool call: get_weather · call_1"
    assert json.loads(page.text_content(".message.assistant .tool-call pre")) == {"city": "Paris"}
    assert page.text_content(".message.tool .role") == "Tool result · call_1"
    assert page.text_content(".message.tool .body") == '{"temp_c": 18}'
    screenshot(page, "tools-1280")
    # a streamed reply carrying a tool call is shown the same way, and stored in the conversation
    stream = "".join(f"data: {json.dumps(e)}\n\n" for e in [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_2", "type": "function",
                                                                                 "function": {"name": "get_time", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"tz": '}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"CET"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]) + "data: [DONE]\n\n"
    page.route(CHAT, times=1, handler=lambda r: r.fulfill(status=200, headers={"Content-Type": "text/event-stream"},
                                                           body=stream))
    body = sent_body(page, lambda: send(page, "And the time?"))
    assert body["messages"][1:3] == [{"role": "assistant", "content": "", "tool_calls": calls},
                                     {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'}]
    page.wait_for_selector("body:not([data-saving]) .message:nth-of-type(6).assistant:not(.streaming) .regenerate")
    assert page.text_content(".message:nth-of-type(6) .tool-name") == "Tool call: get_time · call_2"
    assert json.loads(page.text_content(".message:nth-of-type(6) .tool-call pre")) == {"tz": "CET"}


def test_dropped_messages_from_a_small_context(browser, smollm2_model, tmp_path):
    """A long conversation sent to a server whose context is 512 tokens: the page sends the whole visible
    path, the server leaves the oldest turns out and says how many, and the page shows that number."""
    from runtime.sampler import SamplingParams
    small = start_server(smollm2_model, n_ctx=512, max_tokens=8, defaults=SamplingParams(temperature=0.0))
    profile = Profile(browser, small.url, DESKTOP)
    try:
        page = profile.new_page()
        turns = []
        for i in range(8):
            turns += [{"role": "user", "content": f"Tell me fact number {i} about the sea. " + "Waves roll in. " * 12},
                      {"role": "assistant", "content": f"Fact {i}: " + "The sea is deep and wide. " * 12}]
        import_file(page, write_json(tmp_path, "long.json", {"title": "Long chat", "messages": turns}))
        page.click("#conversations .title")
        with page.expect_response(CHAT) as response:
            body = sent_body(page, lambda: send(page, "Which fact was first?"))
        assert len(body["messages"]) == 17                             # the page sends the whole path
        page.wait_for_selector(DONE, timeout=120_000)
        first = next(line for line in response.value.text().splitlines() if line.startswith("data: "))
        dropped = json.loads(first[6:])["dropped_messages"]
        assert 0 < dropped < 17
        assert page.text_content(".message:nth-of-type(18) .notice") == \
            f"{dropped} earlier messages were left out to fit the model's context"
        assert visible_path(stored(page)[0])[-1]["dropped"] == dropped
        page.reload()                                                  # the notice is kept with the reply
        page.click("#conversations .title")
        assert page.text_content(".message:nth-of-type(18) .notice").startswith(f"{dropped} earlier messages")
    finally:
        profile.close()
        small.stop()


def test_tool_calls_from_the_server(open_profile):
    """A real tool call: custom parameters give the server a tool and require a call; the streamed call
    is shown as its function and arguments, and kept with the conversation."""
    page = open_profile().new_page()
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    set_setting(page, "custom-params", json.dumps({"tools": [tool], "tool_choice": "required",
                                                   "parallel_tool_calls": False, "max_tokens": 60}))
    body = sent_body(page, lambda: send(page, "What is the weather in Paris?"))
    assert body["tools"] == [tool] and body["tool_choice"] == "required"
    page.wait_for_selector(DONE, timeout=120_000)
    assert page.text_content(".message.assistant .tool-name").startswith("Tool call: get_weather · call_")
    calls = json.loads(visible_path(stored(page)[0])[1]["toolCalls"])
    assert calls[0]["function"]["name"] == "get_weather" and "city" in json.loads(calls[0]["function"]["arguments"])
    # a custom-parameters box that is not a JSON object is refused, and nothing of it is sent
    set_setting(page, "custom-params", '{"stream": false}')
    assert page.text_content("#status") == "custom parameters: stream cannot be set here"
    set_setting(page, "custom-params", "[1, 2]")
    assert page.get_attribute("#custom-params", "class") == "invalid"
    body = sent_body(page, lambda: send(page, "Thanks."))
    assert "tools" not in body and body["stream"] is True
    page.wait_for_selector("body:not([data-saving]) .message:nth-of-type(4).assistant:not(.streaming) .regenerate", timeout=120_000)


# ---- a reply cut off by closing the page ------------------------------------------------------------------

INCOMPLETE = "incomplete: the page was closed while this reply was written"


def test_a_reply_cut_off_by_closing_the_page_is_kept(open_profile, smollm2_model):
    """A reply being written is saved as it goes (every 2 s): closing the page mid-reply, then opening
    it again, shows what had been written, marked incomplete. The model is kept from ending its reply
    (its end-of-generation tokens biased out through the custom parameters)."""
    profile = open_profile()
    page = profile.new_page()
    never_end = {str(t): -100 for t in smollm2_model.tokenizer.eog_ids}
    set_setting(page, "custom-params", json.dumps({"logit_bias": never_end, "max_tokens": 2000}))
    send(page, "Tell me a long story about a lighthouse keeper.")
    reply = "(r) => r.messages.filter((m) => m.role === 'assistant').map((m) => [m.content, m.stats ?? null])"
    for _ in range(240):                                        # up to a minute on a loaded machine
        draft = stored(page, reply)[0]
        if draft and draft[0][1] == INCOMPLETE and draft[0][0]:
            break
        assert page.is_visible(STOP), "the reply ended before a draft of it was saved"
        page.wait_for_timeout(250)
    else:
        raise AssertionError("no draft of the reply was saved while it was written")
    page.close()                                               # mid-reply, as a person closing the tab

    again = profile.new_page()
    again.click("#conversations .title")
    assert again.text_content(".message.assistant .stats") == INCOMPLETE
    content, stats = stored(again, reply)[0][0]
    assert content.startswith(draft[0][0]) and stats == INCOMPLETE
    assert again.is_visible(".message.assistant .regenerate")


# ---- every feature at phone width --------------------------------------------------------------------

PHONE_MATH = r"""Euler: $e^{i\pi} + 1 = 0$. It costs $5 and $10.

$$\int_0^1 x^2\,dx = \frac{1}{3}$$
"""


def test_each_feature_at_phone_width(open_profile, tmp_path):
    """The features above, at 390 px on a touch screen, tapped as a person with a phone would: a file
    picked with +, a reply with math, an edit making a branch that survives a reload, search, the
    shortcuts panel, the dark theme, export then import into a fresh phone profile. At each step nothing
    scrolls sideways, and a screenshot is saved (out/webui/*-390.png)."""
    def fits(page, name):
        assert overflow(page) == {"page": 0, "body": 0, "messages": 0}, name
        screenshot(page, f"{name}-390")

    page = open_profile(PHONE, **TOUCH).new_page()
    (tmp_path / "notes.txt").write_text("Lisbon has seven hills.\n")
    with page.expect_file_chooser() as chooser:
        page.tap("#attach")
    chooser.value.set_files(str(tmp_path / "notes.txt"))
    page.wait_for_selector("#attachments .chip")
    page.fill(INPUT, "Some math about my notes.")
    fits(page, "files")
    reply_once_with(page, PHONE_MATH)
    body = sent_body(page, lambda: page.tap(SEND))
    notes = "File: notes.txt\n```txt\nLisbon has seven hills.\n```\n\n"
    assert body["messages"] == [{"role": "user", "content": notes + "Some math about my notes."}]
    page.wait_for_selector(DONE)
    assert page.locator(".message.assistant .katex").count() == 2
    assert page.locator(".message.assistant .katex-display").count() == 1
    assert "It costs $5 and $10." in page.text_content(".message.assistant .body")
    fits(page, "math")

    page.tap(".message.user .edit")                              # a second version of the question
    page.fill(".edit-box textarea", "Just the numbers, please.")
    reply_once_with(page, "Seven hills, one formula.")
    body = sent_body(page, lambda: page.tap(".edit-box .save-edit"))
    assert body["messages"] == [{"role": "user", "content": notes + "Just the numbers, please."}]   # file kept
    page.wait_for_selector(DONE)
    page.reload()
    page.wait_for_selector("body[data-ready]")
    page.tap("#sidebar-toggle")
    page.tap("#conversations .title")
    assert not page.is_visible("#sidebar")
    assert page.text_content(".message.user .sibling-pos") == "2/2"
    assert page.text_content(".message.assistant .body").startswith("Seven hills, one formula.")
    fits(page, "branches")
    page.tap(".message.user .sibling-prev")
    assert page.text_content(".message.user .sibling-pos") == "1/2"
    assert page.locator(".message.assistant .katex-display").count() == 1

    page.tap("#sidebar-toggle")                                 # search reaches the file's text too
    page.fill("#search", "seven HILLS")
    page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0")   # slid in
    assert page.locator("#conversations .snippet").all_text_contents() == ["notes.txt Lisbon has seven hills. "]
    fits(page, "search")
    page.tap("#conversations .title")
    assert not page.is_visible("#sidebar")

    page.tap("#help-toggle")
    assert page.is_visible("#help") and "New chat" in page.text_content("#help")
    fits(page, "help")
    page.tap("#help-toggle")
    page.tap("#theme-toggle")
    page.tap("#theme-toggle")
    assert page.get_attribute("html", "data-theme") == "dark"
    fits(page, "dark")

    page.tap("#sidebar-toggle")
    everything = export(page, "#export-all", tmp_path / "phone.json")
    fresh = open_profile(PHONE, **TOUCH).new_page()
    assert import_file(fresh, tmp_path / "phone.json") == "Imported 1 conversation: 1 new"
    assert canonical(stored(fresh)) == canonical(everything)
    fresh.tap("#conversations .title")
    assert fresh.text_content(".message.user .sibling-pos") == "1/2"
    assert fresh.locator(".message.assistant .katex-display").count() == 1
    fits(fresh, "import")
