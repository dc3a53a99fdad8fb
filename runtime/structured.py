"""Requests with tools or an output format -> the prompt, the compiled constraint, and the reply's parser.

    plan = plan_chat(model, template, messages, gen, tools, structure)    # any thread; APIError on bad input
    plan = plan_request(model, template, chat_request)                     # the same for api_schema.ChatRequest
    engine.submit(plan.prompt_ids, plan.gen)                              # plan.gen carries the constraint
    parser = plan.parser()                                                # None unless tool calls are parsed
    gen = constrain(model, gen, structure)                                # raw completions: just the constraint

Independent of the API family: the OpenAI handlers use it, and so can any other API that maps its tool
use onto OpenAI-shaped messages and a ToolRequest. The pieces: runtime/tool_prompt.py (messages and
`tools` for the template), runtime/tool_calls.py (formats, grammar, parser), runtime/constraint.py
(llguidance).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .api_schema import APIError, GenOptions
from .chat_template import ChatTemplate, ChatTemplateError, rendered_ids
from .constraint import ConstraintError, Spec, compile_spec, vocabulary
from .ggml import Keys
from .special_tokens import Attr
from .tool_calls import CallFormat, CallParser, ToolRequest, call_grammar
from .tool_prompt import call_format, template_messages


TOOL_USE_TEMPLATE = "tokenizer.chat_template.tool_use"   # llama.cpp: llama_model_chat_template(model, "tool_use")


@dataclass(frozen=True)
class ChatPlan:
    prompt_ids: list[int]
    gen: GenOptions                    # the request's options, with the constraint compiled in
    fmt: CallFormat | None = None      # tool calls are parsed from the reply in this format
    open_token: int | None = None      # the control token that opens calls in `fmt`, if it is one

    def parser(self) -> CallParser | None:
        return CallParser(self.fmt, self.open_token) if self.fmt is not None else None


def plan_chat(model, template: ChatTemplate, messages: list[dict], gen: GenOptions,
              tools: ToolRequest | None = None, structure: Spec | None = None, *,
              add_generation_prompt: bool = True, continue_final: bool = False,
              template_kwargs: dict | None = None) -> ChatPlan:
    """continue_final: the last message is an assistant's to continue (api_schema decides it)."""
    template, text = chat_text(model, template, messages, tools, add_generation_prompt=add_generation_prompt,
                               continue_final=continue_final, template_kwargs=template_kwargs)
    ids = rendered_ids(model, text)
    fmt = call_format(template)
    if tools is None or not tools.callable():
        return ChatPlan(ids, constrain(model, gen, structure))
    if structure is not None and structure.kind not in ("json_object", "json_schema"):
        raise APIError(400, f"'{structure.param}' cannot be combined with 'tools': give a JSON schema in "
                            "'response_format' for answers that are not tool calls", param=structure.param)
    answer = None if structure is None else (structure.source if structure.kind == "json_schema"
                                             else {"type": "object"})
    open_token = _control_token(model.tokenizer, fmt.open)
    grammar = call_grammar(fmt, tools, open_token, answer_schema=answer)
    gen = dataclasses.replace(gen, constraint=_compile(model, Spec("lark", grammar, "tools")))
    return ChatPlan(ids, gen, fmt, open_token)


def plan_request(model, template: ChatTemplate, req, messages: list[dict] | None = None) -> ChatPlan:
    """plan_chat for a checked chat request (api_schema.ChatRequest, whatever API it came in by);
    `messages`: the conversation shortened to fit the context (its last message kept)."""
    return plan_chat(model, template, req.messages if messages is None else messages, req.gen, req.tools,
                     req.structure, add_generation_prompt=req.add_generation_prompt,
                     continue_final=req.continue_final, template_kwargs=req.template_kwargs)


def chat_text(model, template: ChatTemplate, messages: list[dict], tools: ToolRequest | None = None, *,
              add_generation_prompt: bool = True, continue_final: bool = False,
              template_kwargs: dict | None = None) -> tuple[ChatTemplate, str]:
    """(the template used, the prompt text) of a conversation: the tool-use template when tools are
    offered, tools as this template wants them. A continued last message (llama-server's assistant
    prefill) is rendered as llama.cpp does it: the conversation before it with the generation prompt,
    then its text, so the reply goes on from there."""
    if tools is not None and tools.choice != "none":
        template = tool_use_template(model, template)
    prefill = ""
    if continue_final:
        prefill = messages[-1].get("content") or ""
        messages, add_generation_prompt = messages[:-1], True
    try:
        rendered, extra = template_messages(template, messages, tools, call_format(template))
        text = template.render(template.prepare(rendered), add_generation_prompt=add_generation_prompt,
                               **{**(template_kwargs or {}), **extra})
    except ChatTemplateError as e:
        raise APIError(400, str(e), param="messages") from None
    return template, text + prefill


def tool_use_template(model, template: ChatTemplate) -> ChatTemplate:
    """The GGUF's `tokenizer.chat_template.tool_use` (Hermes 2 Pro's GGUFs carry one) for requests with
    tools, as llama.cpp picks it, unless --chat-template replaced the model's own template."""
    meta = model.gguf.metadata
    source = meta.get(TOOL_USE_TEMPLATE)
    if not isinstance(source, str) or template.source != meta.get(Keys.CHAT_TEMPLATE):
        return template
    cached = getattr(model, "_tool_use_template", None)
    if cached is None or cached.source != source:
        cached = ChatTemplate(source, bos_token=template.bos_token, eos_token=template.eos_token)
        model._tool_use_template = cached
    return cached


def constrain(model, gen: GenOptions, structure: Spec | None) -> GenOptions:
    """`gen` with `structure` compiled into its constraint."""
    if structure is None:
        return gen
    return dataclasses.replace(gen, constraint=_compile(model, structure))


def _compile(model, spec: Spec):
    try:
        return compile_spec(spec, vocabulary(model.tokenizer, model.config.vocab_size))
    except ConstraintError as e:
        raise APIError(400, str(e), param=e.param) from None


def _control_token(tokenizer, text: str) -> int | None:
    tid = tokenizer.token_to_id.get(text)
    if tid is not None and int(tokenizer.attrs[tid]) & int(Attr.CONTROL):
        return tid
    return None
