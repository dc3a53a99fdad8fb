"""Chat templates: byte-identical to llama.cpp (goldens from scripts/make_template_goldens.py), sandboxed."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

from conftest import GOLDENS
from runtime.chat_template import CHATML, ChatTemplate, ChatTemplateError, chat_prompt_ids, load_override

GOLDEN = json.loads((GOLDENS / "chat_templates.json").read_text(encoding="utf-8"))
FIXED_NOW = datetime.fromisoformat(GOLDEN["fixed_now"])


def _renders():
    for case, c in GOLDEN["cases"].items():
        for r in c["renders"]:
            agp = "gen" if r["add_generation_prompt"] else "nogen"
            yield pytest.param(case, r, id=f"{case}-{r['conversation']}-{agp}")


@pytest.mark.parametrize("case,render", list(_renders()))
def test_render_matches_llama_cpp(case, render):
    c = GOLDEN["cases"][case]
    source = c["template"] if c["template"] is not None else CHATML
    tmpl = ChatTemplate(source, bos_token=c["bos_token"], eos_token=c["eos_token"], now=lambda: FIXED_NOW)
    messages = GOLDEN["conversations"][render["conversation"]]
    agp = render["add_generation_prompt"]
    if "prompt" in render:
        assert tmpl.render(messages, add_generation_prompt=agp) == render["prompt"]
    else:
        with pytest.raises(ChatTemplateError) as e:
            tmpl.render(messages, add_generation_prompt=agp)
        if render["raised"]:   # the template's own raise_exception message, verbatim
            assert str(e.value) == render["error"]


def test_goldens_cover_both_models_and_refusals():
    cases = GOLDEN["cases"]
    assert {"smollm2", "gemma3-it", "smollm2-chatml", "gemma3-chatml"} <= set(cases)
    assert any("error" in r and r["raised"] for r in cases["gemma3-it"]["renders"])
    assert all(len(c["renders"]) >= 16 for c in cases.values())


def test_unsafe_template_is_refused():
    for source in ["{{ ''.__class__.__mro__[1].__subclasses__() }}",
                   "{{ messages.__class__.__init__.__globals__ }}",
                   "{{ messages.append(1) }}",                       # immutable sandbox: no mutation
                   "{{ cycler.__init__.__globals__.os.popen('id').read() }}"]:
        with pytest.raises(ChatTemplateError, match="Python internals"):
            ChatTemplate(source).render([{"role": "user", "content": "x"}])


def test_syntax_error_names_the_line():
    with pytest.raises(ChatTemplateError, match=r"does not parse \(line 2\)"):
        ChatTemplate("ok\n{% for m in messages %}{{ m }")


def test_hf_globals_and_filters():
    tmpl = ChatTemplate(
        "{{ bos_token }}{{ strftime_now('%d %b %Y') }}|{{ messages | tojson }}|"
        "{{ {'a': [1, 2]} | tojson(indent=2) }}"
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}"
        "{% set ns.n = ns.n + 1 %}{% if ns.n > 1 %}{% break %}{% endif %}[{{ m.content }}]{% endfor %}"
        "{% generation %}G{% endgeneration %}{{ eos_token }}{{ add_generation_prompt }}",
        bos_token="<s>", eos_token="</s>", now=lambda: FIXED_NOW)
    out = tmpl.render([{"role": "user", "content": "é<b>"}, {"role": "assistant", "content": "2"},
                       {"role": "user", "content": "3"}], add_generation_prompt=False)
    assert out == ('<s>14 Mar 2026|[{"role": "user", "content": "é<b>"}, {"role": "assistant", "content": "2"}, '
                   '{"role": "user", "content": "3"}]|{\n  "a": [\n    1,\n    2\n  ]\n}[2]G</s>False')


def test_raise_exception_message_is_kept():
    tmpl = ChatTemplate("{{ raise_exception('Only user and assistant roles are supported!') }}")
    with pytest.raises(ChatTemplateError, match="^Only user and assistant roles are supported!$"):
        tmpl.render([])


def test_load_override(tmp_path):
    f = tmp_path / "t.jinja"
    f.write_text("{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}", encoding="utf-8")
    assert ChatTemplate(load_override(str(f))).render([{"role": "user", "content": "hi"}]) == "user:hi;"
    assert load_override("chatml") == CHATML
    assert load_override("{{ 1 + 1 }}") == "{{ 1 + 1 }}"


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    import runtime
    return runtime.load(smollm2_path)


def test_model_template_and_prompt_ids_match_llama_cpp(smollm2):
    tmpl = ChatTemplate.for_model(smollm2)
    c = GOLDEN["cases"]["smollm2"]
    assert tmpl.source == c["template"] and tmpl.bos_token == c["bos_token"] and tmpl.eos_token == c["eos_token"]
    for r in c["renders"]:
        if "prompt_ids" in r:
            messages = GOLDEN["conversations"][r["conversation"]]
            assert chat_prompt_ids(smollm2, tmpl, messages, r["add_generation_prompt"]) == r["prompt_ids"]


@pytest.fixture(scope="module")
def gemma3(gemma3_path):
    import runtime
    return runtime.load(gemma3_path)


def test_gemma3_fallback_and_override_prompt_ids(gemma3, tmp_path):
    # The Gemma 3 270M GGUF (base model) has no template: ChatML, with BOS as llama.cpp adds it
    fallback = ChatTemplate.for_model(gemma3)
    assert fallback.source == CHATML
    for case, tmpl in [("gemma3-chatml", fallback)]:
        for r in GOLDEN["cases"][case]["renders"]:
            messages = GOLDEN["conversations"][r["conversation"]]
            assert chat_prompt_ids(gemma3, tmpl, messages, r["add_generation_prompt"]) == r["prompt_ids"]
    # --chat-template FILE with Google's instruct template: the template writes <bos>, no second one
    f = tmp_path / "gemma3-it.jinja"
    f.write_text(GOLDEN["cases"]["gemma3-it"]["template"], encoding="utf-8")
    override = ChatTemplate.for_model(gemma3, override=str(f))
    for r in GOLDEN["cases"]["gemma3-it"]["renders"]:
        if "prompt_ids" in r:
            messages = GOLDEN["conversations"][r["conversation"]]
            assert chat_prompt_ids(gemma3, override, messages, r["add_generation_prompt"]) == r["prompt_ids"]


class VocabOnly:
    """A vocabulary-only GGUF (data/vocab/): the real tokenizer and metadata, no weights to run."""

    def __init__(self, path):
        from runtime.gguf import GGUFFile
        from runtime.tokenizer import Tokenizer
        self.gguf = GGUFFile(path)
        self.tokenizer = Tokenizer.from_metadata(self.gguf.metadata)

    def tokenize(self, text, add_special=True, parse_special=True):
        return self.tokenizer.tokenize(text, add_special, parse_special)


@pytest.mark.parametrize("name", ["llama3-vocab", "llama2-vocab", "qwen3-vocab", "phi4mini-vocab", "phi3-vocab",
                                  "mistral-vocab", "tekken-vocab", "gemma2-vocab"])
def test_vocab_models_template_and_prompt_ids(name):
    from conftest import ROOT
    path = ROOT / "data" / "vocab" / f"{name}.gguf"
    if name not in GOLDEN["cases"] or not path.exists():
        pytest.fail(f"{path} or its goldens are missing: run scripts/make_template_goldens.py")
    vocab = VocabOnly(path)
    for case in (name, f"{name}-chatml"):
        c = GOLDEN["cases"][case]
        tmpl = ChatTemplate.for_model(vocab, override=None if c["template"] else "chatml")
        assert (tmpl.bos_token, tmpl.eos_token) == (c["bos_token"], c["eos_token"])
        for r in c["renders"]:
            if "prompt_ids" in r:
                messages = GOLDEN["conversations"][r["conversation"]]
                assert chat_prompt_ids(vocab, tmpl, messages, r["add_generation_prompt"]) == r["prompt_ids"], r


def test_system_message_goes_into_the_next_message_where_the_template_refuses_it():
    # Gemma 2's template raises on a system message; llama-server (common/chat.cpp) puts the system
    # text in front of the next message instead, and so does chat_prompt_ids. Templates that take a
    # system message (every other one in the goldens) get the conversation unchanged.
    from conftest import ROOT
    vocab = VocabOnly(ROOT / "data" / "vocab" / "gemma2-vocab.gguf")
    tmpl = ChatTemplate.for_model(vocab)
    system = [{"role": "system", "content": "Be brief."}]
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Bye"}]
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        tmpl.render(system + turns)                    # the template itself, as llama-cpp-python runs it
    assert not tmpl.supports_system_role
    expected = ("<bos><start_of_turn>user\nBe brief.\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
                "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")
    assert chat_prompt_ids(vocab, tmpl, system + turns) == vocab.tokenize(expected, False, True)
    assert tmpl.prepare(system) == [] and tmpl.prepare(turns) == turns
    for case, c in GOLDEN["cases"].items():
        if c["template"] is not None and case != "gemma2-vocab":
            assert ChatTemplate(c["template"], c["bos_token"], c["eos_token"]).supports_system_role, case
