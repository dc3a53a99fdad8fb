#!/usr/bin/env python3
"""Write data/goldens/chat_templates.json: chat prompts as llama.cpp renders them, for our tests.

Run with the llama.cpp oracle venv (llama-cpp-python==0.3.36):
    /work/llcpp/bin/python scripts/make_template_goldens.py [--out data/goldens/chat_templates.json]

For each model the template source and the BOS/EOS token texts come from llama.cpp itself (`Llama(...,
vocab_only=True)`: `metadata["tokenizer.chat_template"]`, `token_get_text(token_bos())`), exactly what
llama-cpp-python hands to `Jinja2ChatFormatter`. Each conversation is rendered with the generation prompt
on and off. Cases:

- `<model>`: the template in the GGUF, rendered by `llama_cpp.llama_chat_format.Jinja2ChatFormatter`.
- `gemma3-it`: the Gemma 3 270M GGUF we test with is the base model and carries no template; this case
  renders Google's published Gemma 3 instruct template (`tokenizer_config.json` of google/gemma-3-*-it,
  kept below) with that GGUF's BOS/EOS, which is also what `--chat-template FILE` does.
- `<model>-chatml`: our fallback for GGUFs without a template, rendered by llama.cpp's own C++ "chatml"
  template (`llama_chat_apply_template`, no Jinja involved).
- `tool_cases`: templates that render tools (data/templates/*.jinja, as published with Qwen 2.5/3,
  Hermes 2 Pro, Llama 3.1/3.2 and Mistral Nemo), rendered by `Jinja2ChatFormatter` with `tools` and
  with conversations that hold tool calls and tool results (TOOL_CONVERSATIONS: the messages as
  Hugging Face templates take them, arguments as objects). No token ids: these are not our GGUFs.
- `tool_token_cases`: the same tool conversations through the templates of the vocabulary GGUFs that
  render tool calls natively (TOOL_TOKEN_VOCABS), with llama.cpp's token ids.

Each prompt also records its token ids as llama.cpp makes them: llama-cpp-python's chat handler
(special tokens parsed, no BOS added: the template writes it) for Jinja cases, and llama.cpp's
`add_special` rule (BOS when the model's `add_bos_token` says so) for ChatML.

Templates that call `strftime_now` see a fixed clock (FIXED_NOW, recorded in the JSON). A conversation
the template refuses records the error: the message for `raise_exception`, the exception type otherwise.
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import sys
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

FIXED_NOW = "2026-03-14T15:09:26"

# Google's Gemma 3 instruct chat template (tokenizer_config.json of google/gemma-3-270m-it).
GEMMA3_IT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

S = lambda c: {"role": "system", "content": c}      # noqa: E731
U = lambda c: {"role": "user", "content": c}        # noqa: E731
A = lambda c: {"role": "assistant", "content": c}   # noqa: E731

CONVERSATIONS = {
    "user": [U("Hello! Who are you?")],
    "system_user": [S("You are a terse assistant. Answer in one sentence."), U("What is a GGUF file?")],
    "multi_turn": [S("You are helpful."), U("Name a prime number."), A("7 is prime."),
                   U("And one larger than 100?")],
    "no_system_multi_turn": [U("Hi"), A("Hello! How can I help?"), U("Tell me a joke."),
                             A("Why did the chicken cross the road?")],
    "whitespace_unicode": [S("  Réponds en français.\n"),
                           U("\tПривет, κόσμε! 你好 👋🏽 👩‍👩‍👧\r\n  trailing   "),
                           A("\n\nBonjour !  "), U("é\u0301 e\u0300 \u200b\u00a0end\n")],
    "special_token_text": [U("Print <|im_start|> and <|im_end|> and <start_of_turn> and <eos> literally.")],
    "empty_content": [S(""), U("")],
    "code_turns": [U("Write f."), A("Sure.\n" * 20),
                   U("```python\ndef f(x):\n    return {'a': x}\n```\nExplain.")],
    "not_alternating": [U("first"), U("second")],
    "content_parts": [S([{"type": "text", "text": "Be brief."}]),
                      U([{"type": "text", "text": "Describe "}, {"type": "text", "text": " the sea."}])],
    # Qwen 3's template drops the reasoning of earlier assistant turns and keeps the last one's
    "thinking_turns": [U("What is 2+2?"), A("<think>\nSimple arithmetic.\n</think>\n\n4"), U("And 3+3?"),
                       A("<think>\nAlso simple.\n</think>\n\n6")],
}


# Tool use, in the shapes Hugging Face templates read (what runtime/tool_prompt.py hands them). Ids are
# 9 characters: Mistral's template refuses any other length.
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Local time in a time zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
]
CALL = lambda i, name, args: {"id": i, "type": "function", "function": {"name": name, "arguments": args}}  # noqa: E731
TOOL_CONVERSATIONS = {
    "ask": [U("What is the weather in Paris?")],
    "system_ask": [S("You are a weather bot."), U("Weather in Rome, in fahrenheit?")],
    "call_and_result": [
        U("What is the weather in Paris?"),
        {"role": "assistant", "content": "", "tool_calls": [CALL("abc123XYZ", "get_weather", {"city": "Paris"})]},
        {"role": "tool", "tool_call_id": "abc123XYZ", "name": "get_weather", "content": '{"temp": 18, "sky": "clear"}'},
    ],
    "two_calls": [
        S("Be brief."), U("Weather in Paris and time in Tokyo?"),
        {"role": "assistant", "content": "", "tool_calls": [
            CALL("abc123XYZ", "get_weather", {"city": "Paris", "unit": "celsius"}),
            CALL("def456UVW", "get_time", {"tz": "Asia/Tokyo"})]},
        {"role": "tool", "tool_call_id": "abc123XYZ", "name": "get_weather", "content": "18 C"},
        {"role": "tool", "tool_call_id": "def456UVW", "name": "get_time", "content": "21:04"},
        A("It is 18 C in Paris and 21:04 in Tokyo."), U("Thanks!"),
    ],
}
TOOL_TEMPLATES = {   # file in data/templates -> (bos_token, eos_token) of that model family
    "Qwen-Qwen2.5-7B-Instruct": ("", "<|im_end|>"),
    "Qwen-Qwen3-0.6B": ("", "<|im_end|>"),
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": ("<|begin_of_text|>", "<|im_end|>"),
    "meta-llama-Llama-3.1-8B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.2-3B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistralai-Mistral-Nemo-Instruct-2407": ("<s>", "</s>"),
}


# Vocabulary GGUFs whose own template writes tool calls in a format we render natively (Qwen 3: Hermes,
# Mistral 7B v0.3: [TOOL_CALLS]): their tool conversations are recorded with llama.cpp's token ids too.
# (tekken-vocab carries Ministral 3's template, whose [ARGS] calls we treat as generic; phi4mini-vocab's
# template shows tools but not past calls.)
TOOL_TOKEN_VOCABS = ("qwen3-vocab", "mistral-vocab")


def tool_token_cases(vocabs: dict) -> dict:
    """TOOL_CONVERSATIONS with TOOLS through each vocabulary GGUF's own template, as llama-cpp-python's
    chat handler renders and tokenizes them (special tokens parsed, no BOS added: the template writes it)."""
    cases = {}
    for name in TOOL_TOKEN_VOCABS:
        llm, template, bos, eos = vocabs[name]
        renders = []
        for conv, messages in TOOL_CONVERSATIONS.items():
            for agp in (True, False):
                r = with_ids(llm, render_jinja(template, bos, eos, messages, agp, tools=TOOLS), add_bos=False)
                renders.append({"conversation": conv, "add_generation_prompt": agp, **r})
        cases[name] = {"model": name, "renders": renders}
    return cases


def tool_cases():
    cases = {}
    for name, (bos, eos) in TOOL_TEMPLATES.items():
        with open(os.path.join(ROOT, "data", "templates", name + ".jinja"), encoding="utf-8") as f:
            tmpl = f.read()
        renders = []
        for conv, messages in TOOL_CONVERSATIONS.items():
            for tools in (TOOLS, None):
                for agp in (True, False):
                    r = render_jinja(tmpl, bos, eos, messages, agp, tools=tools)
                    renders.append({"conversation": conv, "tools": tools is not None,
                                    "add_generation_prompt": agp, **r})
        cases[name] = {"template_file": f"data/templates/{name}.jinja", "bos_token": bos, "eos_token": eos,
                       "renders": renders}
    return cases


def llama_cpp_vocab(path):
    """(Llama, template or None, bos text, eos text) as llama-cpp-python computes them in Llama.__init__."""
    import llama_cpp
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    bos, eos = llm.token_bos(), llm.token_eos()
    bos_text = llm._model.token_get_text(bos) if bos != -1 else ""
    eos_text = llm._model.token_get_text(eos) if eos != -1 else ""
    return llm, llm.metadata.get("tokenizer.chat_template"), bos_text, eos_text


def with_ids(llm, render, add_bos):
    """Add the prompt's token ids: special tokens parsed; BOS as llama.cpp adds it (only if add_bos)."""
    if "prompt" in render:
        render["prompt_ids"] = llm.tokenize(render["prompt"].encode("utf-8"), add_bos=add_bos, special=True)
    return render


def render_jinja(template, bos, eos, messages, add_generation_prompt, tools=None):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                              add_generation_prompt=add_generation_prompt)
    try:
        return {"prompt": fmt(messages=messages, tools=tools).prompt}
    except ValueError as e:   # raise_exception() in the template
        return {"error": str(e), "raised": True}
    except Exception as e:    # the template choked on the messages (e.g. str + list)
        return {"error": type(e).__name__, "raised": False}


def render_chatml_cpp(messages, add_generation_prompt):
    """llama.cpp's built-in C++ chatml template (not Jinja)."""
    import llama_cpp
    if any(not isinstance(m["content"], str) for m in messages):
        return None
    keep = [(m["role"].encode(), m["content"].encode()) for m in messages]
    chat = (llama_cpp.llama_chat_message * len(keep))(*[llama_cpp.llama_chat_message(r, c) for r, c in keep])
    size = 1024 + 4 * sum(len(r) + len(c) for r, c in keep)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(b"chatml", chat, len(keep), add_generation_prompt, buf, size)
    assert 0 <= n <= size, n
    return {"prompt": buf.raw[:n].decode("utf-8")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "data", "goldens", "chat_templates.json"))
    args = ap.parse_args()

    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    fixed = datetime.fromisoformat(FIXED_NOW)
    Jinja2ChatFormatter.strftime_now = staticmethod(lambda f: fixed.strftime(f))

    import fetch_models
    models = {"smollm2": str(fetch_models.model_path("smollm2")),
              "gemma3": str(fetch_models.model_path("gemma3"))}
    # Vocabulary-only GGUFs (Llama 3 BPE, Llama 2 SentencePiece) written by the tokenizer work, if present
    for path in sorted(glob.glob(os.path.join(ROOT, "data", "vocab", "*.gguf"))):
        models[os.path.splitext(os.path.basename(path))[0]] = path

    cases, vocabs = {}, {}
    for name, path in models.items():
        llm, template, bos, eos = vocabs[name] = llama_cpp_vocab(path)
        plans = []
        if template is not None:
            plans.append((name, "gguf", template))
        if name == "gemma3":
            plans.append(("gemma3-it", "gemma3-it", GEMMA3_IT_TEMPLATE))
        for case, source, tmpl in plans:
            cases[case] = {"model": name, "template_source": source, "template": tmpl,
                           "bos_token": bos, "eos_token": eos, "renders": []}
            for conv, messages in CONVERSATIONS.items():
                for agp in (True, False):
                    # llama-cpp-python's chat handler: tokenize(prompt, add_bos=False, special=True)
                    r = with_ids(llm, render_jinja(tmpl, bos, eos, messages, agp), add_bos=False)
                    cases[case]["renders"].append({"conversation": conv, "add_generation_prompt": agp, **r})
        chatml = {"model": name, "template_source": "chatml", "template": None,
                  "bos_token": bos, "eos_token": eos, "renders": []}
        for conv, messages in CONVERSATIONS.items():
            for agp in (True, False):
                r = render_chatml_cpp(messages, agp)
                r = r and with_ids(llm, r, add_bos=True)
                if r is not None:
                    # llama.cpp's server: the model's own add_bos rule (BOS for Gemma, none for SmolLM2)
                    chatml["renders"].append({"conversation": conv, "add_generation_prompt": agp, **r})
        cases[f"{name}-chatml"] = chatml
        print(f"{name}: {path} template={'yes' if template else 'no'} bos={bos!r} eos={eos!r}", file=sys.stderr)

    import llama_cpp
    out = {"generator": "scripts/make_template_goldens.py", "llama_cpp_python": llama_cpp.__version__,
           "fixed_now": FIXED_NOW, "conversations": CONVERSATIONS, "cases": cases,
           "tools": TOOLS, "tool_conversations": TOOL_CONVERSATIONS, "tool_cases": tool_cases(),
           "tool_token_cases": tool_token_cases(vocabs)}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    n = sum(len(c["renders"]) for c in cases.values())
    print(f"wrote {args.out}: {len(cases)} cases, {n} renders", file=sys.stderr)


if __name__ == "__main__":
    main()
