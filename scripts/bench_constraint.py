#!/usr/bin/env python3
"""Decode speed with and without a constraint (response_format json_object), on the real models.

    .venv/bin/python scripts/bench_constraint.py [--models smollm2 gemma3] [--tokens 96] [--repeats 5]
                                                 [--temperature 0]

For each model, runs alternate between json_object and unconstrained generation of the same prompt
(greedy by default, else llama.cpp's other sampling defaults with --temperature and a fixed seed; the
same chat prompt, cache not reused; the unconstrained run stops at the length the constrained one
reached, so both cover the same positions), and report per run the decode rate ((n - 1) / decode
time, as llama.cpp's timings count it) and the time spent in the sampler per token (Sampler.sample +
accept: the constraint's whole cost lives there), and the process's CPU time per decoded token (all
threads; it moves much less with the machine's load than the wall-clock rate). Prints the medians, the spread, and the ratio
constrained / unconstrained. The machine's load is printed beside them: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import fetch_models  # noqa: E402
import runtime  # noqa: E402
from runtime import generate as generate_module  # noqa: E402
from runtime.chat_template import ChatTemplate, chat_prompt_ids  # noqa: E402
from runtime.constraint import Spec, compile_spec, vocabulary  # noqa: E402
from runtime.sampler import Sampler, SamplingParams  # noqa: E402

PROMPT = "Describe three people (name, age, city, job, hobbies) as a JSON object."
GEMMA3_IT = "gemma3"


class TimedSampler(Sampler):
    """The real Sampler, timing its two calls."""
    spent = 0.0

    def sample(self, logits, history):
        t0 = time.perf_counter()
        try:
            return super().sample(logits, history)
        finally:
            TimedSampler.spent += time.perf_counter() - t0

    def accept(self, token):
        t0 = time.perf_counter()
        try:
            return super().accept(token)
        finally:
            TimedSampler.spent += time.perf_counter() - t0


def run(model, session, ids, constraint, max_tokens, temperature=0.0):
    session.truncate(0)
    TimedSampler.spent = 0.0
    g = generate_module.generate(model, session, ids, SamplingParams(temperature=temperature, seed=1),
                                 max_tokens=max_tokens, constraint=constraint)
    cpu0 = None
    for _ in g:
        if cpu0 is None:          # the first token is out: from here on, one decode step per token
            cpu0 = time.process_time()
    n = g.n_generated
    cpu_ms = (time.process_time() - cpu0) / max(n - 1, 1) * 1e3
    return (n - 1) / g.t_generate, TimedSampler.spent / n * 1e3, n, cpu_ms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2", "gemma3"])
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=0.0)
    args = ap.parse_args()
    generate_module.Sampler = TimedSampler
    for name in args.models:
        model = runtime.load(fetch_models.model_path(name))
        if name == GEMMA3_IT:    # the GGUF is the base model: render Google's instruct template
            from make_template_goldens import GEMMA3_IT_TEMPLATE
            tok = model.tokenizer
            template = ChatTemplate(GEMMA3_IT_TEMPLATE, tok.tokens[tok.bos_id], tok.tokens[tok.eos_id])
        else:
            template = ChatTemplate.for_model(model)
        ids = chat_prompt_ids(model, template, [{"role": "user", "content": PROMPT}])
        session = model.new_session(1024)
        t0 = time.perf_counter()
        vocab = vocabulary(model.tokenizer, model.config.vocab_size)
        t_vocab = time.perf_counter() - t0
        t0 = time.perf_counter()
        constraint = compile_spec(Spec("json_object", None, "response_format"), vocab)
        t_compile = time.perf_counter() - t0
        run(model, session, ids, None, 8)                       # warm up the kernels
        rates = {"none": [], "json_object": []}
        sampler_ms = {"none": [], "json_object": []}
        lengths = {"none": [], "json_object": []}
        cpu = {"none": [], "json_object": []}
        for _ in range(args.repeats):
            n = args.tokens
            # the constrained run first: when its JSON closes early, the unconstrained run stops at the same
            # length, so both rates cover the same positions (attention grows with them)
            for kind, c in (("json_object", constraint), ("none", None)):
                rate, ms, n, cpu_ms = run(model, session, ids, c, n, args.temperature)
                rates[kind].append(rate)
                sampler_ms[kind].append(ms)
                lengths[kind].append(n)
                cpu[kind].append(cpu_ms)
        print(f"{name} (temperature {args.temperature:g}): vocab {model.config.vocab_size}, vocabulary built in "
              f"{t_vocab:.2f} s, json_object compiled in {t_compile * 1e3:.1f} ms; load average {os.getloadavg()[0]:.1f}")
        for kind in rates:
            r = rates[kind]
            print(f"  {kind:12s} decode {statistics.median(r):6.1f} tok/s (min {min(r):.1f}, max {max(r):.1f}), "
                  f"CPU {statistics.median(cpu[kind]):.2f} ms/token (min {min(cpu[kind]):.2f}, max "
                  f"{max(cpu[kind]):.2f}), sampler {statistics.median(sampler_ms[kind]):.3f} ms/token, "
                  f"tokens {lengths[kind]}")
        ratio = statistics.median(rates["json_object"]) / statistics.median(rates["none"])
        pairs = [c / u for c, u in zip(rates["json_object"], rates["none"])]
        print(f"  ratio json_object / none: {ratio:.3f} (per pair: {', '.join(f'{p:.2f}' for p in pairs)})")
        cpu_ratio = statistics.median(cpu["none"]) / statistics.median(cpu["json_object"])
        print(f"  ratio by CPU time per token (none / json_object, steadier on a loaded machine): {cpu_ratio:.3f}")


if __name__ == "__main__":
    main()
