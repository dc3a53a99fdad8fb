"""Constrained decoding through runtime.generate on the real models: JSON that parses and validates,
GBNF, logit_bias, finish reasons, errors that name the construct, and hostile grammars that stay cheap."""
from __future__ import annotations

import json
import re
import time

import jsonschema
import pytest

from runtime.chat_template import ChatTemplate, chat_prompt_ids
from runtime.constraint import MAX_GRAMMAR_CHARS, ConstraintError, Spec, compile_spec, vocabulary
from runtime.generate import generate
from runtime.sampler import SamplingParams
from server_helpers import smollm2_model  # noqa: F401

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags"],
          "properties": {"name": {"type": "string", "maxLength": 40},
                         "age": {"type": "integer", "minimum": 0, "maximum": 130},
                         "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3}}}


@pytest.fixture(scope="module")
def smol(smollm2_model):
    m = smollm2_model
    return m, m.new_session(1024), vocabulary(m.tokenizer, m.config.vocab_size)


def run(model, session, vocab, prompt, spec=None, max_tokens=120, **params):
    ids = chat_prompt_ids(model, ChatTemplate.for_model(model), [{"role": "user", "content": prompt}])
    session.truncate(0)
    constraint = compile_spec(spec, vocab) if spec is not None else None
    g = generate(model, session, ids, SamplingParams(**{"temperature": 0, **params}), max_tokens=max_tokens,
                 constraint=constraint)
    text = "".join(p.text for p in g)
    return text, g


def test_json_object_parses(smol):
    text, g = run(*smol, 'Return a JSON object with keys "city" and "country" for Paris.',
                  Spec("json_object", None, "response_format"), max_tokens=80)
    assert g.finish_reason == "stop"
    assert json.loads(text)["city"] == "Paris"


@pytest.mark.parametrize("seed", [1, 2])
def test_json_schema_validates_when_sampling(smol, seed):
    """Sampled (not greedy) output still validates: the grammar masks every refused token."""
    text, g = run(*smol, "Invent a person.", Spec("json_schema", PERSON, "response_format"), max_tokens=150,
                  temperature=1.0, seed=seed, top_k=0, top_p=1.0, min_p=0.0)
    assert g.finish_reason == "stop", text
    jsonschema.validate(json.loads(text), PERSON)


def test_constraint_ends_generation_when_complete(smol):
    """Once the grammar allows nothing more the generation stops ("stop") without sampling an EOS."""
    text, g = run(*smol, "Is the sky blue?", Spec("gbnf", 'root ::= ("yes" | "no") "."', "grammar"))
    assert text in ("yes.", "no.") and g.finish_reason == "stop" and g.n_generated <= 3


def test_gbnf_grammar(smol):
    gbnf = 'root ::= item ("," " "? item){2}\nitem ::= [a-z]+'
    text, g = run(*smol, "List three fruits.", Spec("gbnf", gbnf, "grammar"), max_tokens=40)
    assert re.fullmatch(r"[a-z]+(, ?[a-z]+){2}", text), text


def test_max_tokens_cuts_json_with_length(smol):
    text, g = run(*smol, "Describe a cat in JSON.", Spec("json_object", None, "response_format"), max_tokens=5)
    assert g.finish_reason == "length" and g.n_generated == 5
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_logit_bias_bans_and_forces(smol):
    model, session, vocab = smol
    ids = chat_prompt_ids(model, ChatTemplate.for_model(model), [{"role": "user", "content": "Say hello."}])

    def first(bias):
        session.truncate(0)
        return next(iter(generate(model, session, ids, SamplingParams(temperature=0), max_tokens=1,
                                  logit_bias=bias))).token_id
    best = first(None)
    assert first({best: float("-inf")}) != best
    assert first({best: -100.0}) != best
    forced = model.tokenize(" banana", add_special=False)[0]
    assert first({forced: 100.0}) == forced


@pytest.mark.parametrize("spec,words", [
    (Spec("json_schema", {"type": "object", "if": {"required": ["a"]}, "then": {}}, "response_format"), "if"),
    (Spec("json_schema", {"type": "objekt"}, "json_schema"), "objekt"),
    (Spec("json_schema", {"$ref": "#/$defs/missing"}, "json_schema"), "missing"),
    (Spec("gbnf", "root ::= undefined-rule", "grammar"), "undefined-rule"),
    (Spec("gbnf", 'root ::= "a" (', "grammar"), "Expected"),
    (Spec("lark", "start: nope", "grammar"), "nope"),
])
def test_bad_grammars_name_the_construct(smol, spec, words):
    with pytest.raises(ConstraintError) as e:
        compile_spec(spec, smol[2])
    assert words in str(e.value) and e.value.param == spec.param


def test_grammar_size_is_bounded(smol):
    huge = "root ::= " + " | ".join(f'"w{i}"' for i in range(MAX_GRAMMAR_CHARS // 6))
    with pytest.raises(ConstraintError, match="limit"):
        compile_spec(Spec("gbnf", huge, "grammar"), smol[2])


HOSTILE = [
    Spec("json_schema", {"type": "string", "pattern": "^((a|b|c|d)*(a|b|c|d)*)*e$"}, "json_schema"),
    Spec("json_schema", {"type": "string", "pattern": "^(.{0,80}){0,80}x$"}, "json_schema"),
    Spec("json_schema", {"type": "array", "minItems": 5000, "items": {"type": "string", "minLength": 500}},
         "json_schema"),
    Spec("json_schema", {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"},
         "json_schema"),
    Spec("gbnf", "root ::= " + "(" * 200 + '"x"' + ")" * 200, "grammar"),
    Spec("gbnf", 'root ::= [a-z]{0,5000} [0-9]{0,5000} "!"', "grammar"),
    Spec("gbnf", "root ::= a\n" + "".join(f"{c} ::= {d} {d} | \"{c}\"\n" for c, d in zip("abcdefghijklmnop",
                                                                                        "bcdefghijklmnopq"))
         + 'q ::= "q"', "grammar"),
]


@pytest.mark.parametrize("spec", HOSTILE, ids=[f"{s.kind}-{i}" for i, s in enumerate(HOSTILE)])
def test_hostile_grammars_stay_cheap(smol, spec):
    """A grammar is user input: compiling it and every token's mask are bounded (or refused cleanly)."""
    model, session, vocab = smol
    t0 = time.perf_counter()
    try:
        c = compile_spec(spec, vocab)
    except ConstraintError:
        return
    assert time.perf_counter() - t0 < 2.0
    state = c.start()
    worst = 0.0
    for _ in range(30):
        t0 = time.perf_counter()
        try:
            allowed = state.mask(model.config.vocab_size)
        except ConstraintError:
            return
        worst = max(worst, time.perf_counter() - t0)
        ids = allowed.nonzero()[0]
        if len(ids) == 0 or state.advance(int(ids[len(ids) // 2])):
            break
    assert worst < 0.25, f"a token's mask took {worst * 1e3:.0f} ms"


@pytest.mark.slow
def test_json_schema_at_gemma_vocab(gemma3_path):
    """262k tokens: the vocabulary is built once, and the output validates."""
    import runtime
    model = runtime.load(gemma3_path)
    session = model.new_session(512)
    vocab = vocabulary(model.tokenizer, model.config.vocab_size)
    assert vocabulary(model.tokenizer, model.config.vocab_size) is vocab
    text, g = run(model, session, vocab, "A person as JSON:", Spec("json_schema", PERSON, "json_schema"),
                  max_tokens=80)
    assert g.finish_reason == "stop", text
    jsonschema.validate(json.loads(text), PERSON)
