"""Tool calls without generation: templates that render tools (byte-identical to llama-cpp-python), the
format each template implies, OpenAI messages -> template messages, the call grammars on a real
vocabulary, and the parser, whole and streamed in any chunking."""
from __future__ import annotations

import functools
import json
import random
from datetime import datetime

import pytest

from conftest import GOLDENS, ROOT
from runtime.chat_template import CHATML, ChatTemplate, chat_prompt_ids
from runtime.constraint import Spec, compile_spec, vocabulary
from runtime.tool_calls import (GENERIC, HERMES, LLAMA3, MISTRAL, CallArgs, CallFormat, CallParser, CallStart,
                                Content, Function, ToolRequest, call_grammar)
from runtime.tool_prompt import call_format, capabilities, template_messages
from server_helpers import smollm2_model  # noqa: F401

GOLDEN = json.loads((GOLDENS / "chat_templates.json").read_text(encoding="utf-8"))
TEMPLATES = {name: (ROOT / c["template_file"]).read_text(encoding="utf-8") for name, c in GOLDEN["tool_cases"].items()}
FIXED_NOW = datetime.fromisoformat(GOLDEN["fixed_now"])


def template(name: str) -> ChatTemplate:
    c = GOLDEN["tool_cases"][name]
    return ChatTemplate(TEMPLATES[name], bos_token=c["bos_token"], eos_token=c["eos_token"], now=lambda: FIXED_NOW)


def _tool_renders():
    for name, c in GOLDEN["tool_cases"].items():
        for r in c["renders"]:
            if "prompt" in r:
                yield pytest.param(name, r, id=f"{name}-{r['conversation']}-{'tools' if r['tools'] else 'none'}-"
                                               f"{'gen' if r['add_generation_prompt'] else 'nogen'}")


@pytest.mark.parametrize("name,render", list(_tool_renders()))
def test_tool_templates_render_as_llama_cpp(name, render):
    messages = GOLDEN["tool_conversations"][render["conversation"]]
    tools = GOLDEN["tools"] if render["tools"] else None
    out = template(name).render(messages, add_generation_prompt=render["add_generation_prompt"], tools=tools)
    assert out == render["prompt"]


# ---- formats and capabilities ------------------------------------------------------------------------

GEMMA3_IT = GOLDEN["cases"]["gemma3-it"]["template"]
SMOLLM2 = GOLDEN["cases"]["smollm2"]["template"]


@pytest.mark.parametrize("name,fmt", [
    ("Qwen-Qwen2.5-7B-Instruct", HERMES), ("Qwen-Qwen3-0.6B", HERMES),
    ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", HERMES),
    ("meta-llama-Llama-3.1-8B-Instruct", LLAMA3), ("meta-llama-Llama-3.2-3B-Instruct", LLAMA3),
    ("mistralai-Mistral-Nemo-Instruct-2407", MISTRAL),
])
def test_tool_templates_are_native(name, fmt):
    caps = capabilities(template(name))
    assert caps.tools and caps.tool_calls
    assert call_format(template(name)) is fmt


@pytest.mark.parametrize("source", [SMOLLM2, GEMMA3_IT, CHATML])
def test_templates_without_tools_get_the_generic_format(source):
    t = ChatTemplate(source, bos_token="<bos>", eos_token="<eos>")
    assert not capabilities(t).tools
    assert call_format(t) is GENERIC
    assert capabilities(t).system_role     # Gemma's folds the system prompt into the first user turn


# ---- OpenAI messages -> template messages ------------------------------------------------------------

def openai_shaped(messages):
    """The HF-shaped golden conversation as an OpenAI client sends it: arguments as JSON text, no
    `name` on tool results."""
    out = []
    for m in messages:
        m = dict(m)
        if "tool_calls" in m:
            m["content"] = None
            m["tool_calls"] = [{**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                               for c in m["tool_calls"]]
        m.pop("name", None)
        out.append(m)
    return out


WEATHER = Function("get_weather", "Current weather in a city", GOLDEN["tools"][0]["function"]["parameters"])
TIME = Function("get_time", "Local time in a time zone", GOLDEN["tools"][1]["function"]["parameters"])
assert [WEATHER.openai(), TIME.openai()] == GOLDEN["tools"]
TOOLS = ToolRequest((WEATHER, TIME))


@pytest.mark.parametrize("name", ["Qwen-Qwen2.5-7B-Instruct", "mistralai-Mistral-Nemo-Instruct-2407",
                                  "meta-llama-Llama-3.1-8B-Instruct"])
@pytest.mark.parametrize("conv", ["ask", "call_and_result", "two_calls"])
def test_openai_messages_render_as_hugging_face_expects(name, conv):
    """What a client sends, through template_messages, renders exactly as the golden HF-shaped messages."""
    golden = next((r for r in GOLDEN["tool_cases"][name]["renders"] if r["conversation"] == conv
                   and r["tools"] and r["add_generation_prompt"]), None)
    t = template(name)
    messages, extra = template_messages(t, openai_shaped(GOLDEN["tool_conversations"][conv]), TOOLS, call_format(t))
    assert extra["tools"] == GOLDEN["tools"]
    if "prompt" in golden:
        assert t.render(messages, add_generation_prompt=True, **extra) == golden["prompt"]


@pytest.mark.parametrize("source", [SMOLLM2, GEMMA3_IT])
def test_generic_conversation_with_results(source):
    """A template with no tools renders a whole tool conversation: the tools in the system prompt,
    calls in the assistant's text, results as <tool_response> user turns (Gemma's alternation holds)."""
    t = ChatTemplate(source, bos_token="<bos>", eos_token="<eos>")
    conv = openai_shaped(GOLDEN["tool_conversations"]["two_calls"])
    messages, extra = template_messages(t, conv, TOOLS, GENERIC)
    assert extra == {}
    text = t.render(messages, add_generation_prompt=True)
    assert '"name": "get_time"' in text and "<tool_call>" in text
    assert text.count("<tool_response>\n") == 2 and "21:04" in text
    assert "Be brief." in text and "You can call functions" in text
    # tool_choice none: the tools are not described, the history still renders
    messages, _ = template_messages(t, conv, ToolRequest(TOOLS.functions, "none"), GENERIC)
    assert "You can call functions" not in t.render(messages)


# ---- the parser --------------------------------------------------------------------------------------

REPLIES = [
    (HERMES, 'Checking. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
             '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "Asia/Tokyo"}}\n</tool_call>',
     "Checking. ", [("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"tz": "Asia/Tokyo"})]),
    (HERMES, 'No call, but a <tool_ mention and a <b>tag</b>.', 'No call, but a <tool_ mention and a <b>tag</b>.', []),
    (HERMES, '<tool_call>{"name": "say", "arguments": {"text": "a \\"quoted\\" }{ brace\\\\", "n": [1, {"x": null}]}}'
             '</tool_call>', "", [("say", {"text": 'a "quoted" }{ brace\\', "n": [1, {"x": None}]})]),
    (LLAMA3, ' {"name": "get_weather", "parameters": {"city": "Paris"}}', "", [("get_weather", {"city": "Paris"})]),
    (LLAMA3, '<|python_tag|>{"name": "get_time", "parameters": {"tz": "UTC"}}', "", [("get_time", {"tz": "UTC"})]),
    (LLAMA3, 'The answer is {"name": 1}.', 'The answer is {"name": 1}.', []),
    (MISTRAL, '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "abc123XYZ"}, '
              '{"name": "get_time", "arguments": {"tz": "CET"}}]', "",
     [("get_weather", {"city": "Oslo"}), ("get_time", {"tz": "CET"})]),
    (GENERIC, 'Let me see.\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>', "Let me see.\n",
     [("get_time", {})]),
]


def parse(fmt, chunks):
    parser = CallParser(fmt)
    events = [e for c in chunks for e in parser.feed(-1, c)] + parser.finish()
    return parser, events


def splits(text, rng):
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12))))
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


@pytest.mark.parametrize("fmt,text,content,calls", REPLIES, ids=[f"{r[0].name}-{i}" for i, r in enumerate(REPLIES)])
def test_parser_reads_calls_in_any_chunking(fmt, text, content, calls):
    rng = random.Random(7)
    for chunks in [[text], list(text)] + [splits(text, rng) for _ in range(20)]:
        parser, events = parse(fmt, chunks)
        assert parser.content == content
        assert [(c.name, json.loads(c.arguments)) for c in parser.calls] == calls
        # the stream says the same: content pieces, then per call its start and argument fragments
        assert "".join(e.text for e in events if isinstance(e, Content)) == content
        starts = [e for e in events if isinstance(e, CallStart)]
        assert [(s.index, s.name) for s in starts] == [(i, n) for i, (n, _) in enumerate(calls)]
        for i, call in enumerate(parser.calls):
            assert "".join(e.fragment for e in events if isinstance(e, CallArgs) and e.index == i) == call.arguments
            assert call.id == starts[i].id
            assert len(call.id) == (9 if fmt is MISTRAL else 29)


def test_parser_drops_an_unfinished_call_and_releases_held_text():
    parser, _ = parse(HERMES, ['Sure <tool_call>\n{"name": "get_time", "arguments": {"tz": "U'])
    assert parser.content == "Sure " and parser.calls == []
    parser, events = parse(HERMES, ["ends with <tool_c"])
    assert parser.content == "ends with <tool_c" and events[-1] == Content("<tool_c")


def test_parser_control_token_opener():
    """Mistral's [TOOL_CALLS] is a control token: no text of its own, recognized by its id."""
    parser = CallParser(MISTRAL, open_token=5)
    parser.feed(9, "Hm. ")
    parser.feed(5, "")
    for c in '[{"name": "get_time", "arguments": {"tz": "UTC"}}]':
        parser.feed(9, c)
    parser.finish()
    assert parser.content == "Hm. " and [c.name for c in parser.calls] == ["get_time"]


# ---- the grammar, on SmolLM2's real vocabulary ---------------------------------------------------------

@pytest.fixture(scope="module")
def vocab(smollm2_model):
    return vocabulary(smollm2_model.tokenizer, smollm2_model.config.vocab_size)


def accepts(model, vocab, grammar, text, open_token=None):
    """(every token of `text` allowed, the grammar complete or accepting at the end)"""
    state = compile_spec(Spec("lark", grammar, "tools"), vocab).start()
    ids = model.tokenize(text, add_special=False, parse_special=open_token is not None)
    for t in ids:
        if not state.allows(t):
            return False
        state.advance(t)
    return state.is_accepting()


CALL_W = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.mark.parametrize("choice,text,ok", [
    ("auto", "Plain text, and a <tool_ mention.", True),
    ("auto", f"Let me look. <tool_call>\n{CALL_W}\n</tool_call>", True),
    ("auto", f"<tool_call>{CALL_W}</tool_call>\n<tool_call>" + '{"name": "get_time", "arguments": {"tz": "X"}}</tool_call>',
     True),
    ("auto", '<tool_call>{"name": "get_wether", "arguments": {"city": "Paris"}}</tool_call>', False),   # no such tool
    ("auto", '<tool_call>{"name": "get_weather", "arguments": {"town": "Paris"}}</tool_call>', False),  # schema
    ("auto", '<tool_call>{"arguments": {"city": "Paris"}, "name": "get_weather"}</tool_call>', False),  # name first
    ("auto", '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}</tool_call>', False),
    ("auto", f"<tool_call>{CALL_W}</tool_call> and then text", False),
    ("required", f"<tool_call>\n{CALL_W}\n</tool_call>", True),
    ("required", "I would rather talk.", False),
])
def test_hermes_grammar(smollm2_model, vocab, choice, text, ok):
    grammar = call_grammar(HERMES, ToolRequest((WEATHER, TIME), choice), None)
    assert accepts(smollm2_model, vocab, grammar, text) is ok


def test_named_and_single_call_grammar(smollm2_model, vocab):
    named = call_grammar(HERMES, ToolRequest((WEATHER, TIME), "function", "get_time", parallel=False), None)
    assert accepts(smollm2_model, vocab, named, '<tool_call>{"name": "get_time", "arguments": {"tz": "UTC"}}</tool_call>')
    assert not accepts(smollm2_model, vocab, named, f"<tool_call>{CALL_W}</tool_call>")
    assert not accepts(smollm2_model, vocab, named, '<tool_call>{"name": "get_time", "arguments": {"tz": "UTC"}}'
                                                    '</tool_call><tool_call>')
    assert call_grammar(HERMES, ToolRequest((WEATHER,), "none"), None) is None


def test_llama3_and_mistral_grammars(smollm2_model, vocab):
    llama = call_grammar(LLAMA3, ToolRequest((WEATHER, TIME)), None)
    assert accepts(smollm2_model, vocab, llama, '{"name": "get_weather", "parameters": {"city": "Paris"}}')
    assert accepts(smollm2_model, vocab, llama, "Paris is sunny.")
    assert not accepts(smollm2_model, vocab, llama, '{"name": "get_weather", "arguments": {"city": "Paris"}}')
    mistral = call_grammar(MISTRAL, ToolRequest((WEATHER, TIME), parallel=False), None)
    assert accepts(smollm2_model, vocab, mistral, f"[TOOL_CALLS][{CALL_W}]")
    assert not accepts(smollm2_model, vocab, mistral, f"[TOOL_CALLS][{CALL_W}, {CALL_W}]")


def test_control_token_opener_grammar(smollm2_model, vocab):
    """An opener that is one control token is named by id (<[id]>): text cannot spell it."""
    tok = smollm2_model.tokenizer
    opener = "<|im_start|>"
    fmt = CallFormat("test", opener, "", "arguments", as_list=True)
    grammar = call_grammar(fmt, ToolRequest((WEATHER,)), tok.token_to_id[opener])
    assert f"<[{tok.token_to_id[opener]}]>" in grammar
    assert accepts(smollm2_model, vocab, grammar, f"Text first {opener}[{CALL_W}]", open_token=True)
    assert accepts(smollm2_model, vocab, grammar, "Just text.", open_token=True)


def test_parameters_with_defs(smollm2_model, vocab):
    """Pydantic-style parameters ($defs, $ref) keep resolving once nested inside a call object."""
    params = {"$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}},
                                  "required": ["city"], "additionalProperties": False}},
              "type": "object", "properties": {"where": {"$ref": "#/$defs/Place"}}, "required": ["where"]}
    grammar = call_grammar(HERMES, ToolRequest((Function("find", None, params),), "required"), None)
    assert accepts(smollm2_model, vocab, grammar, '<tool_call>{"name": "find", "arguments": {"where": {"city": "X"}}}'
                                                  '</tool_call>')
    assert not accepts(smollm2_model, vocab, grammar, '<tool_call>{"name": "find", "arguments": {"where": {"town": '
                                                      '"X"}}}</tool_call>')


# ---- the whole path on real tool-calling vocabularies (Qwen 3, Mistral v0.3: metadata-only GGUFs) -------

class VocabOnly:
    """A model's tokenizer and chat template without its weights: enough to plan a request and to play a
    reply through the constraint and the parser token by token."""

    def __init__(self, path):
        from runtime.gguf import GGUFFile
        from runtime.tokenizer import Tokenizer
        self.gguf = GGUFFile(path)
        self.tokenizer = Tokenizer(self.gguf.metadata)
        self.config = type("Config", (), {"vocab_size": self.tokenizer.vocab_size})

    def tokenize(self, text, add_special=True, parse_special=True):
        return self.tokenizer.tokenize(text, add_special=add_special, parse_special=parse_special)


def play(model, plan, reply):
    """Feed `reply` (as the model would emit it: special tokens as themselves) through the plan's
    constraint and parser, with the text the generation loop would give each token."""
    from runtime.tokenizer import StreamDecoder
    state = plan.gen.constraint.start()
    parser, decoder = plan.parser(), StreamDecoder(model.tokenizer)
    for t in model.tokenize(reply, add_special=False, parse_special=True):
        assert state.allows(t), (reply, model.tokenizer.tokens[t])
        complete = state.advance(t)
        parser.feed(t, decoder.feed(t))
    parser.feed(-1, decoder.flush())
    parser.finish()
    return state, parser, complete


@pytest.mark.parametrize("vocab,reply,fmt", [
    ("qwen3", '<think>\nThe user wants weather.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
              '{"city": "Paris", "unit": "celsius"}}\n</tool_call>', HERMES),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]', MISTRAL),
])
def test_real_vocabulary_round_trip(vocab, reply, fmt):
    from runtime.structured import plan_chat
    from runtime.api_schema import GenOptions
    from runtime.sampler import SamplingParams
    model = VocabOnly(ROOT / "data" / "vocab" / f"{vocab}-vocab.gguf")
    t = ChatTemplate.for_model(model)
    assert call_format(t) is fmt
    conv = openai_shaped(GOLDEN["tool_conversations"]["call_and_result"]) + [
        {"role": "assistant", "content": "It is 18 degrees."}, {"role": "user", "content": "And in Rome?"}]
    plan = plan_chat(model, t, conv, GenOptions(SamplingParams(), -1), TOOLS)
    prompt = model.tokenizer.detokenize(plan.prompt_ids)
    assert "get_time" in prompt and '"city": "Paris"' in prompt and "18, " in prompt   # tools, call, result
    if fmt is MISTRAL:
        assert plan.open_token == model.tokenizer.token_to_id["[TOOL_CALLS]"]
    state, parser, complete = play(model, plan, reply)
    assert [(c.name, json.loads(c.arguments)) for c in parser.calls] == [("get_weather", {"city": "Paris",
                                                                                          "unit": "celsius"})]
    assert state.is_accepting()
    # the reply ends here: the grammar is complete (generation stops), or allows an end-of-generation token
    assert complete or any(state.allows(e) for e in model.tokenizer.eog_ids)
    assert complete == (fmt is MISTRAL)       # after "]" nothing may follow; after </tool_call> another call may
    assert parser.content == (reply[:reply.index("<tool_call>")] if fmt is HERMES else "")


@functools.lru_cache(maxsize=None)
def vocab_model(name: str) -> VocabOnly:
    return VocabOnly(ROOT / "data" / "vocab" / f"{name}.gguf")


@pytest.mark.parametrize("name,render", [
    pytest.param(name, r, id=f"{name}-{r['conversation']}-{'gen' if r['add_generation_prompt'] else 'nogen'}")
    for name, c in GOLDEN["tool_token_cases"].items() for r in c["renders"]])
def test_tool_prompt_ids_match_llama_cpp(name, render):
    """A conversation with tools, calls and results, as an OpenAI client sends it, through the prompt path
    of plan_chat, gives llama.cpp's token ids for the same conversation through the same template."""
    model = vocab_model(name)
    t = ChatTemplate.for_model(model)
    messages, extra = template_messages(t, openai_shaped(GOLDEN["tool_conversations"][render["conversation"]]),
                                        TOOLS, call_format(t))
    assert chat_prompt_ids(model, t, messages, render["add_generation_prompt"], **extra) == render["prompt_ids"]


def test_tool_use_template_from_the_gguf():
    """A GGUF may carry a second template for requests with tools (tokenizer.chat_template.tool_use, as
    Hermes 2 Pro's do): used for those, as llama.cpp does; --chat-template still wins."""
    from runtime.api_schema import GenOptions
    from runtime.sampler import SamplingParams
    from runtime.structured import plan_chat
    model = VocabOnly(ROOT / "data" / "vocab" / "qwen3-vocab.gguf")
    model.gguf.metadata["tokenizer.chat_template.tool_use"] = TEMPLATES["NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use"]
    t = ChatTemplate.for_model(model)
    ask = [{"role": "user", "content": "Weather?"}]
    gen = GenOptions(SamplingParams(), -1)

    def prompt(template, tools):
        return model.tokenizer.detokenize(plan_chat(model, template, ask, gen, tools).prompt_ids)
    assert "You are a function calling AI model" in prompt(t, TOOLS)
    assert "function calling" not in prompt(t, None) and "function calling" not in prompt(t, ToolRequest(
        TOOLS.functions, "none"))
    override = ChatTemplate(TEMPLATES["Qwen-Qwen2.5-7B-Instruct"])
    assert "You are Qwen" in prompt(override, TOOLS)


def test_request_messages_with_tool_calls():
    """Assistant tool calls come back as OpenAI sends them (arguments as JSON text, content null) or as
    ollama's clients do (arguments as an object); tool results need the id of their call."""
    from runtime.api_schema import APIError, Limits, chat_request
    limits = Limits(n_ctx=512, vocab_size=100)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": "é"}}}
    req = chat_request({"messages": [{"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": None, "tool_calls": [call]},
                                     {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "ok"}]}],
                        "tools": [{"type": "function", "function": {"name": "f"}}]}, limits)
    assert req.messages[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": "é"}'}}]}
    assert req.messages[2] == {"role": "tool", "content": "ok", "tool_call_id": "c1"}
    assert req.tools.functions[0].parameters == {"type": "object", "properties": {}}
    with pytest.raises(APIError, match="tool_call_id"):
        chat_request({"messages": [{"role": "tool", "content": "ok"}]}, limits)
    with pytest.raises(APIError, match="content"):
        chat_request({"messages": [{"role": "assistant", "content": None}]}, limits)


@pytest.mark.parametrize("template_text,fmt", [
    # GLM's <tool_call> holds XML arguments, not JSON: the marker alone does not make the Hermes format
    ("{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }}"
     "{% for k, v in c.function.arguments.items() %}<arg_key>{{ k }}</arg_key><arg_value>{{ v }}</arg_value>"
     "{% endfor %}</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}{% endfor %}"
     "{% if tools %}{{ tools | tojson }}{% endif %}", GENERIC),
    # a template written from scratch in Hermes's shape is Hermes, whatever else it says
    ("{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}{% for m in messages %}"
     "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n{{ {'name': c.function.name, 'arguments': "
     "c.function.arguments} | tojson }}\n</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}{% endfor %}",
     HERMES),
])
def test_format_is_read_from_how_the_template_writes_a_call(template_text, fmt):
    assert call_format(ChatTemplate(template_text)) is fmt
