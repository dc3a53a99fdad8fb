"""Hostile chat templates (runtime/template_limits.py): a template that nests too deeply, recurses,
loops for ever or grows too large ends with one line (start-up), a ChatTemplateError (a render), a 400
(the server) or a note (the terminal chat), and the process goes on. Real templates still render as
llama-cpp-python does (tests/test_chat_template.py's goldens).

Randomized templates: CHATFILE_FUZZ_EXAMPLES (default 150) examples, derandomized; the long run is
`CHATFILE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_template_limits.py -q`.
"""
from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import fuzz_examples, fuzz_settings
from gguf_helpers import rebuild
from runtime import template_limits
from runtime.chat_template import ChatTemplate, ChatTemplateError
from runtime.ggml import ValueType
from runtime.gguf import GGUFFile
from server_helpers import httpx, run_cli, start_server

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "data" / "synthetic" / "llama-Q8_0.gguf"
MESSAGES = [{"role": "user", "content": "Hi"}]
FUZZ_EXAMPLES = fuzz_examples(150)

NESTING = {        # refused when the template is compiled
    "300 parentheses": "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
    "150 nested ifs": "{% if true %}" * 150 + "x" + "{% endif %}" * 150,
    "30 nested fors": "{% for i in range(1) %}" * 30 + "x" + "{% endfor %}" * 30,
    "1000 brackets": "{{ " + "[" * 1000 + "]" * 1000 + " }}",
    "2000 filters": "{{ 'x'" + "|upper" * 2000 + " }}",
    "5000-digit literal": "{{ " + "9" * 5000 + " }}",
    "a 300 KiB template": "{# " + "x" * 300_000 + " #}",
}
RUNTIME = {        # refused while rendering: (template, the words of the message)
    "10 ** 5000": ("{{ (10 ** 5000) | string }}", "bits"),
    "2 ** 2 ** 20": ("{{ 2 ** (2 ** 20) }}", "bits"),
    "int product": ("{{ ('9' * 4000)|int * ('9' * 4000)|int }}", "bits"),
    "'x' * 300000000": ("{{ 'x' * 300000000 }}", "characters"),
    "list repetition": ("{{ (['x' * 1000000] * 1000) | join }}", "characters"),
    "recursive macro": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nest"),
    "mutual recursion": ("{% macro a(n) %}{{ b(n) }}{% endmacro %}{% macro b(n) %}{{ a(n) }}{% endmacro %}"
                         "{{ a(0) }}", "nest"),
    "nested range loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                           "longer than"),
    "doubling with ~": ("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                        "{% endfor %}{{ ns.s }}", "characters"),
    "doubling with +": ("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
                        "{% endfor %}{{ ns.s }}", "characters"),
    "doubling a block": ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set t %}{{ ns.s }}"
                         "{{ ns.s }}{% endset %}{% set ns.s = t %}{% endfor %}{{ ns.s }}", "characters"),
    "output in a loop": ("{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}", "characters"),
    "a list printed": ("{{ ['x' * 1000000] * 8 * 1000 }}", "characters"),
    "center filter": ("{{ 'x'|center(1000000000) }}", "characters"),
    "ljust method": ("{{ 'x'.ljust(1000000000) }}", "characters"),
    "%-format width": ("{{ '%1000000000d' % 1 }}", "characters"),
    "%-format star": ("{{ '%*d' % (1000000000, 1) }}", "characters"),
    "format width": ("{{ '{:>1000000000}'.format('x') }}", "characters"),
    "nested format width": ("{{ '{:>{w}}'.format('x', w=1000000000) }}", "characters"),
    "replace method": ("{% set s = 'x' * 1000000 %}{{ s.replace('x', 'y' * 1000) }}", "characters"),
    "replace filter": ("{% set s = 'x' * 1000000 %}{{ s|replace('x', 'y' * 1000) }}", "characters"),
    "expandtabs": ("{% set s = '\\t' * 1000000 %}{{ s.expandtabs(1000) }}", "characters"),
    "indent filter": ("{% set s = '\\n' * 1000000 %}{{ s|indent(1000) }}", "characters"),
    "lipsum": ("{{ lipsum(1000000) }}", "characters"),
    "batch filter": ("{{ [1]|batch(1000000000, 'x')|list }}", "characters"),
    "many ~": ("{% set s = 'x' * 8000000 %}{{ s ~ s ~ s ~ s ~ s }}", "characters"),
    "join separator": ("{{ ('x' * 1000000)|list|join('y' * 10) }}", "characters"),
    "translate": ("{% set s = 'a' * 1000000 %}{{ s.translate({97: 'b' * 1000}) }}", "characters"),
    "tojson indent": ("{{ messages|tojson(indent=100000000) }}", "characters"),
    "wordwrap": ("{{ ('x ' * 1000000)|wordwrap(1, true, 'y' * 1000) }}", "characters"),
    "strftime_now": ("{{ strftime_now('%c' * 4000000) }}", "strftime_now"),
}


@pytest.fixture
def quick(monkeypatch):
    """A 1 s render deadline, so that the loops that must be stopped are stopped quickly."""
    monkeypatch.setattr(template_limits, "RENDER_SECONDS", 1.0)


@pytest.mark.parametrize("name", NESTING)
def test_nesting_and_size_refused_when_compiled(name):
    t0 = time.monotonic()
    with pytest.raises(ChatTemplateError) as e:
        ChatTemplate(NESTING[name])
    assert "\n" not in str(e.value) and len(str(e.value)) < 300, str(e.value)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("name", RUNTIME)
def test_cost_refused_while_rendering(name, quick):
    source, words = RUNTIME[name]
    template = ChatTemplate(source)
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ChatTemplateError, match=words) as e:
            template.render(MESSAGES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "\n" not in str(e.value), str(e.value)
    assert time.monotonic() - t0 < 1.0 + 5            # the deadline, plus slack for a loaded machine
    assert peak < 200 << 20, peak                      # nothing near the sizes asked for


def test_budget_is_per_render_and_the_next_render_is_unaffected(quick):
    """After a render was stopped, the same thread renders normally (no exception left pending)."""
    slow = ChatTemplate(RUNTIME["nested range loops"][0])
    fine = ChatTemplate("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    for _ in range(2):
        with pytest.raises(ChatTemplateError):
            slow.render(MESSAGES)
        for _ in range(1000):
            assert fine.render(MESSAGES) == "user: Hi\n"
        time.sleep(0.05)
    assert fine.render(MESSAGES) == "user: Hi\n"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_deadline_holds_when_the_interrupt_lands_in_a_finalizer():
    """The interrupt can land where Python ignores exceptions (a finalizer, a gc callback: here most of
    the time is spent in one): the watchdog raises it again until the render has stopped."""
    from runtime.template_limits import _WATCHDOG, _Expired

    class Finalized:
        def __del__(self):
            for _ in range(7000):               # Python code, where the interrupt is taken and ignored
                pass

    watch = _WATCHDOG.start(0.2)
    t0 = time.monotonic()
    try:
        with pytest.raises(_Expired):
            while time.monotonic() - t0 < 10:
                Finalized()
                for _ in range(3000):
                    pass
    finally:
        _WATCHDOG.stop(watch)
    assert time.monotonic() - t0 < 5


def test_limits_do_not_refuse_what_real_templates_do():
    """Large but legitimate renders: a long conversation with tools as JSON, numbers, dates."""
    t = ChatTemplate("{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}{{ '%05d' % loop.index }}"
                     "{% endfor %}{{ tools | tojson(indent=2) }}{{ strftime_now('%d %b %Y') }}"
                     "{{ (2 ** 64) ~ ' ' ~ ('ab' * 1000) | length }}")
    messages = [{"role": "user", "content": "word " * 100_000}] * 10          # 5 MB of text
    out = t.render(messages, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert len(out) > 5_000_000 and out.endswith("18446744073709551616 2000")


# ---- randomized templates --------------------------------------------------------------------------

_NUMBERS = st.sampled_from([0, 1, 2, 7, 100, 10**5, 10**6, 10**9, 2**31, 10**20, -1, -(10**9)])
_STRINGS = st.sampled_from(["'x'", "'ab\\n'", "'%s'", "'{}'", "'%*d'", "'{:>{w}}'", "m.content", "'\\t'",
                            "messages|tojson", "(m.content * 3)"])


@st.composite
def expressions(draw, depth=0):
    kind = draw(st.integers(0, 9 if depth < 3 else 2))
    n, s = draw(_NUMBERS), draw(_STRINGS)
    if kind == 0:
        return str(n)
    if kind == 1:
        return s
    if kind == 2:
        return f"({s} * {n})"
    sub = draw(expressions(depth=depth + 1))
    other = draw(expressions(depth=depth + 1))
    return {
        3: f"({sub} ** {n})", 4: f"({sub} + {other})", 5: f"({sub} ~ {other})", 6: f"({s} % {sub})",
        7: f"({sub}|{draw(st.sampled_from(['center', 'indent', 'batch', 'slice', 'truncate', 'wordwrap']))}({n}))",
        8: f"{s}.{draw(st.sampled_from(['ljust', 'center', 'zfill', 'expandtabs']))}({n})",
        9: f"({sub}|{draw(st.sampled_from(['replace(' + s + ', ' + s + ')', 'join(' + s + ')', 'string', 'list', 'tojson', 'format(' + str(n) + ')']))})",
    }[kind]


@st.composite
def templates(draw, depth=0):
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 5 if depth < 3 else 0))
        if kind == 0:
            parts.append("{{ " + draw(expressions()) + " }}")
        elif kind == 1:
            parts.append(f"{{% for i in range({draw(_NUMBERS)}) %}}{draw(templates(depth=depth + 1))}{{% endfor %}}")
        elif kind == 2:
            parts.append(f"{{% for m in messages %}}{draw(templates(depth=depth + 1))}{{% endfor %}}")
        elif kind == 3:
            parts.append(f"{{% if {draw(expressions())} %}}{draw(templates(depth=depth + 1))}{{% endif %}}")
        elif kind == 4:
            parts.append(f"{{% macro f(n) %}}{draw(templates(depth=depth + 1))}{{{{ f(n) }}}}{{% endmacro %}}"
                         "{{ f(1) }}")
        else:
            parts.append(f"{{% set ns = namespace(s={draw(_STRINGS)}) %}}{{% for i in range({draw(_NUMBERS)}) %}}"
                         f"{{% set ns.s = ns.s ~ {draw(expressions())} %}}{{% endfor %}}{{{{ ns.s|length }}}}")
    return "".join(parts)


@fuzz_settings(FUZZ_EXAMPLES)
@given(templates())
def test_random_templates_render_or_stop_with_one_line(source):
    template_limits.RENDER_SECONDS, saved = 0.5, template_limits.RENDER_SECONDS
    try:
        t0 = time.monotonic()
        try:
            out = ChatTemplate(source).render(MESSAGES)
            assert len(out) <= template_limits.MAX_OUTPUT
        except ChatTemplateError as e:
            assert "\n" not in str(e), str(e)
        assert time.monotonic() - t0 < 0.5 + 5
    finally:
        template_limits.RENDER_SECONDS = saved


# ---- the real thing: a model whose file carries the template ---------------------------------------

def _model_with_template(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "hostile.gguf"
    path.write_bytes(rebuild(GGUFFile(SYNTHETIC), {"tokenizer.chat_template": (ValueType.STRING, source)}))
    return path


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


@pytest.mark.slow
def test_server_answers_400_and_stops_the_render(tmp_path, monkeypatch):
    """A template that loops for ever: the request gets a 400 naming the limit once the deadline passes,
    the process stops spending CPU on it, and the server goes on serving."""
    import runtime
    monkeypatch.setattr(template_limits, "RENDER_SECONDS", 2.0)
    source = "{% if messages[0].content == 'loop' %}" + RUNTIME["nested range loops"][0] + "{% endif %}" + \
             "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    server = start_server(runtime.load(_model_with_template(tmp_path, source)), request_timeout=30.0)
    try:
        t0 = time.monotonic()
        r = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "loop"}], "max_tokens": 1})
        assert r.status_code == 400 and "longer than 2 s" in r.json()["error"]["message"], r.text
        assert time.monotonic() - t0 < 2 + 10
        cpu = _cpu_seconds()
        time.sleep(2)
        assert _cpu_seconds() - cpu < 1.0              # nothing runs on after the request
        assert server.health().status_code == 200
        r = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1})
        assert r.status_code == 200, r.text
    finally:
        server.stop()


@pytest.mark.slow
def test_startup_with_a_template_that_does_not_compile(tmp_path):
    """The model's own template nests too deeply: one warning line, then the chat runs on ChatML."""
    model = _model_with_template(tmp_path, NESTING["150 nested ifs"])
    r = run_cli("-m", model, "--chat", "-n", "2", "--temp", "0", stdin=b"Hi\n")
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 0, r.stderr.decode()
    assert [line for line in lines if "template" in line] == [
        "chatfile: warning: the model's chat template refused: the chat template nests too deeply to compile "
        "(too many levels of indentation); using ChatML instead"], lines
    assert "Traceback" not in r.stderr.decode()


@pytest.mark.slow
def test_terminal_chat_with_a_template_that_recurses(tmp_path):
    """The template fails at every message: one note per message, and the chat keeps reading."""
    model = _model_with_template(tmp_path, RUNTIME["recursive macro"][0])
    r = run_cli("-m", model, "--chat", "-n", "2", stdin=b"Hi\nagain\n")
    err = r.stderr.decode()
    assert r.returncode == 0 and "Traceback" not in err, err
    assert err.count("nest more than 64 deep") == 2, err
