"""Constrained decoding: JSON Schema, GBNF and Lark grammars, checked token by token with llguidance.

    vocab = vocabulary(model.tokenizer, n_vocab)          # once per model (0.5-4 s at 262k tokens)
    c = compile_spec(Spec("json_schema", schema, "response_format"), vocab)   # per request, ~1 ms
    state = c.start()                                      # per generation (the sampler does this)
    state.allows(token) -> bool; state.mask() -> bool [n_vocab]; state.advance(token) -> complete?

Why llguidance (docs/CONSTRAINTS.md has the measurements): it computes the allowed-token mask over a
262k vocabulary in ~30 us a token (an Earley parser over a token trie, lexemes compiled lazily), it
compiles a schema in about a millisecond, reads JSON Schema, Lark and (through its converter) llama.cpp's
GBNF, has lazy grammars for tool calls that start anywhere in free text, and bounds its own work per
grammar and per token (`LLParserLimits`). It is MIT-licensed, a 3 MB wheel with no dependencies.
outlines-core builds a whole-vocabulary automaton up front (20-75 s for "any JSON object");
xgrammar needs torch at import.

Grammars are user input (SECURITY.md): the text is capped at MAX_GRAMMAR_CHARS, and LIMITS cap the
grammar's size, the lexer's states and the work of building it and of each token's mask. A grammar that
does not compile raises ConstraintError with llguidance's message, which names the construct
("Unimplemented keys: [\"if\"]", "unknown name: \"foo\"" with the line).

Vocabulary: each token's bytes as llama_token_to_piece gives them with special tokens rendered; control
tokens are marked with a leading 0xFF byte, llguidance's convention, so grammar text never matches them
and a grammar names them as `<[id]>`. The end-of-generation tokens count as EOS: a grammar allows them
exactly where it may end.
"""
from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from .special_tokens import Attr

MAX_GRAMMAR_CHARS = 256 * 1024   # a GBNF/Lark text or a serialized JSON schema (or all tools' schemas)
# Whitespace inside generated JSON as llama.cpp's json-schema-to-grammar allows it (one space, or a newline
# and up to 20 spaces/tabs of indentation): a small model cannot run away into blank lines.
JSON_WHITESPACE = {"whitespace_pattern": r"(?:[ \t]?|\n[ \t]{0,20})"}
_CONTROL = int(Attr.CONTROL | Attr.UNKNOWN)


class ConstraintError(ValueError):
    """A schema or grammar that cannot be compiled, or a constraint that broke down while decoding."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Spec:
    """What a request asked for, before the model is known (api_schema builds these)."""
    kind: str          # "json_object" | "json_schema" | "gbnf" | "lark"
    source: object     # the schema (dict) or the grammar text; None for json_object
    param: str         # the request field it came from, for error messages


def _llguidance():
    try:
        import llguidance
    except ImportError:    # a build without it (an architecture PyPI has no wheel for)
        raise ConstraintError("structured output is not available: this build of chatfile lacks the "
                              "llguidance package") from None
    return llguidance


def _limits():
    llguidance = _llguidance()
    # llguidance's defaults, tightened where one request could otherwise hold the worker for long:
    # building the lexer (fuel ~50k/ms) and one token's mask (~14k/ms lexer fuel, ~20k/ms Earley items)
    return llguidance.LLParserLimits(
        max_items_in_row=2000,
        initial_lexer_fuel=1_000_000,    # ~20 ms to build the first lexer states
        step_lexer_fuel=200_000,         # ~15 ms of lexer work per token at most
        step_max_items=50_000,           # ~2.5 ms of parser work per token at most
        max_lexer_states=100_000,        # ~150 MB of lexer states at most
        max_grammar_size=200_000,        # symbols across all productions
        verbose_errors=False)            # errors name the construct, not the parser's internal state


# ---- vocabulary --------------------------------------------------------------------------------------

_vocab_lock = threading.Lock()
_vocabularies: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def vocabulary(tokenizer, n_vocab: int | None = None):
    """llguidance's view of a tokenizer (an LLTokenizer), built once per tokenizer and then cached.
    `n_vocab`: the model's logits size when it differs from the token list."""
    with _vocab_lock:
        vocab = _vocabularies.get(tokenizer)
        if vocab is None:
            vocab = _vocabularies[tokenizer] = _build_vocabulary(tokenizer, n_vocab)
        return vocab


class _TokenizerView:
    """What llguidance's TokenizerWrapper reads: token bytes, EOS/BOS ids, and a tokenize function."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_id if tokenizer.eos_id is not None else min(tokenizer.eog_ids, default=0)
        self.bos_token_id = tokenizer.bos_id
        self.tokens = [b"\xff" + tokenizer.tokens[i].encode() if int(tokenizer.attrs[i]) & _CONTROL
                       else tokenizer.token_to_piece(i, special=True) for i in range(tokenizer.vocab_size)]
        self.special_token_ids = [i for i in range(tokenizer.vocab_size) if int(tokenizer.attrs[i]) & _CONTROL]

    def __call__(self, text) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return self._tokenizer.tokenize(text, add_special=False, parse_special=False)


def _build_vocabulary(tokenizer, n_vocab):
    llguidance = _llguidance()
    view = _TokenizerView(tokenizer)
    eos = sorted(tokenizer.eog_ids) or [view.eos_token_id]
    # slices=[]: the default slices (a mask shortcut for free text) cost ~2 s more to build at 262k
    # tokens and buy nothing here, since the sampler checks the sampled token before computing a mask
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(view), n_vocab=n_vocab or tokenizer.vocab_size,
                                  eos_token=eos, slices=[])


# ---- compiling ---------------------------------------------------------------------------------------

def grammar_text(spec: Spec) -> str:
    """The llguidance grammar (its JSON form) for a Spec; ConstraintError for text that cannot be read."""
    llguidance = _llguidance()
    if spec.kind == "json_object":
        return llguidance.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_WHITESPACE)
    if spec.kind == "json_schema":
        text = json.dumps(closed(spec.source))
        _check_size(text, spec.param)
        try:
            return llguidance.LLMatcher.grammar_from_json_schema(text, defaults=JSON_WHITESPACE)
        except ValueError as e:
            raise ConstraintError(f"'{spec.param}' is not a usable JSON schema: {e}", spec.param) from None
    if spec.kind == "gbnf":
        from llguidance.gbnf_to_lark import any_to_lark
        _check_size(spec.source, spec.param)
        try:
            lark = any_to_lark(spec.source)
        except Exception as e:    # the converter raises plain Exception for an undefined rule
            raise ConstraintError(f"'{spec.param}' is not a valid GBNF grammar: {e}", spec.param) from None
        return llguidance.LLMatcher.grammar_from_lark(lark)
    if spec.kind == "lark":
        _check_size(spec.source, spec.param)
        return llguidance.LLMatcher.grammar_from_lark(spec.source)
    raise ValueError(f"unknown constraint kind {spec.kind!r}")


# keywords whose value is one subschema, a list of them, or a name -> subschema map
_ONE = ("additionalProperties", "items", "not", "if", "then", "else", "contains", "propertyNames",
        "additionalItems", "unevaluatedItems", "unevaluatedProperties")
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


INT_BOUND = 10**16 - 1    # llama.cpp's JSON grammar writes integers of at most 16 digits


def closed(schema):
    """The schema as llama.cpp's json-schema-to-grammar reads it (common/json-schema.cpp): an object that
    lists `properties` and says nothing of `additionalProperties` is closed to other keys (a model asked
    for {"city"} writes {"city"}, not {"city", "country", ...}), and an integer has at most 16 digits
    (a small model cannot run away into "1000000..."). What is written still validates against the
    original schema."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if out.get("type") == "integer":
        out.setdefault("maximum", INT_BOUND)
        out.setdefault("minimum", -INT_BOUND)
    for key in _ONE:
        if isinstance(out.get(key), (dict, list)):
            out[key] = [closed(s) for s in out[key]] if isinstance(out[key], list) else closed(out[key])
    for key in _LIST:
        if isinstance(out.get(key), list):
            out[key] = [closed(s) for s in out[key]]
    for key in _MAP:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(s) for name, s in out[key].items()}
    if "properties" in out and not any(k in out for k in ("additionalProperties", "patternProperties",
                                                            "unevaluatedProperties")):
        out["additionalProperties"] = False
    return out


def _check_size(text: str, param: str) -> None:
    if len(text) > MAX_GRAMMAR_CHARS:
        raise ConstraintError(f"'{param}' is {len(text)} characters; the limit is {MAX_GRAMMAR_CHARS}", param)


def compile_spec(spec: Spec, vocab) -> "Constraint":
    return compile_grammar(grammar_text(spec), vocab, spec.param)


def compile_grammar(grammar: str, vocab, param: str) -> "Constraint":
    """A grammar from grammar_text (or LLMatcher.grammar_from_*) checked and compiled against `vocab`."""
    llguidance = _llguidance()
    limits = _limits()
    matcher = llguidance.LLMatcher(vocab, grammar, log_level=0, limits=limits)
    if matcher.is_error():
        raise ConstraintError(f"'{param}' cannot be used: {_first_lines(matcher.get_error())}", param)
    return Constraint(matcher, param)


def _first_lines(message: str, limit: int = 400) -> str:
    message = message.replace("<non-verbose/>", "").strip()    # llguidance's mark of a shortened error
    return message if len(message) <= limit else message[:limit] + "..."


class Constraint:
    """A compiled grammar: immutable, shared by nothing; `start()` gives each generation its own state."""

    def __init__(self, matcher, param: str):
        self._matcher = matcher       # never advanced: the state every generation starts from
        self.param = param

    def start(self) -> "ConstraintState":
        return ConstraintState(self._matcher.deep_copy(), self.param)


class ConstraintState:
    """Where one generation is in its grammar."""

    def __init__(self, matcher, param: str):
        self._m = matcher
        self.param = param
        self.n_vocab = None
        self._bits = None             # int32 [ceil(n_vocab / 32)], reused for every mask

    def allows(self, token: int) -> bool:
        """May `token` come next? (a cheap check of one token: no mask is computed)"""
        return self._m.validate_tokens([token]) == 1

    def mask(self, n_vocab: int) -> np.ndarray:
        """bool [n_vocab]: the tokens allowed next."""
        if self._bits is None or self.n_vocab != n_vocab:
            self.n_vocab = n_vocab
            self._bits = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
        self._m.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        self._raise_on_error()
        return np.unpackbits(self._bits.view(np.uint8), bitorder="little")[:n_vocab].view(bool)

    def advance(self, token: int) -> bool:
        """Take `token` (one the mask allowed); True when the grammar is complete and nothing may follow."""
        if not self._m.consume_token(token):
            self._raise_on_error()
        return self._m.is_stopped()

    def is_accepting(self) -> bool:
        return self._m.is_accepting()

    def _raise_on_error(self) -> None:
        if self._m.is_error():
            message = _first_lines(self._m.get_error())
            if any(w in message for w in ("too many", "fuel", "limit", "too big")):
                # one of LIMITS ran out while decoding: a grammar too costly to follow
                message += " (the grammar needs more work per token than this server allows: simplify it)"
            raise ConstraintError(f"'{self.param}' could not be followed: {message}", self.param)
