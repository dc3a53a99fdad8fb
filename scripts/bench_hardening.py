#!/usr/bin/env python3
"""What the hardening costs on the paths users meet: CPU time, median and range of repeated runs.

    python scripts/bench_hardening.py [--repeat 7] [--only tokenize,templates,terminal,memory]

Run it in two checkouts (before / after a change) and compare; it times whichever `runtime` sits next
to it and skips what that tree does not have.
- tokenize: plain text (this repository's Markdown, ~200k characters) and Gemma's newline-heavy text,
  with SmolLM2's and Gemma 3's vocabularies, word cache emptied before each run: prompt processing's
  share of the tokenizer (special-token splitting, word cache, merges).
- templates: every chat-template golden (data/goldens/chat_templates.json) rendered: the template
  limits' cost per render.
- terminal: the escape filter (runtime/escapes.py) over every piece of SmolLM2's vocabulary, as the
  terminal chat and `-p` on a terminal feed it: its cost per generated token.
- memory: the KV memory check at start-up (runtime/memory.py: /proc/meminfo and the cgroup limit).
Models come from scripts/fetch_models.py's cache. CPU time (time.process_time), so a busy machine
disturbs the figures less than wall time would; the load average is printed beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def timed(fn, repeat: int) -> tuple[float, float, float]:
    """(median, min, max) CPU seconds of fn() over `repeat` runs, after one untimed run."""
    fn()
    runs = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        runs.append(time.process_time() - t0)
    return statistics.median(runs), min(runs), max(runs)


def show(name: str, stats: tuple[float, float, float], per: int = 1, unit: str = "ms", scale: float = 1e3):
    med, lo, hi = (s * scale / per for s in stats)
    print(f"{name:<44} {med:10.3f} {unit}  (range {lo:.3f}-{hi:.3f})", flush=True)


def tokenizer_of(name: str):
    from fetch_models import model_path
    from runtime.gguf import GGUFFile
    from runtime.tokenizer import Tokenizer
    return Tokenizer.from_metadata(GGUFFile(model_path(name)).metadata)


def bench_tokenize(repeat: int):
    prose = "\n\n".join((ROOT / f).read_text(encoding="utf-8") for f in ("README.md", "ARCHITECTURE.md", "SECURITY.md"))
    prose = (prose * (200_000 // len(prose) + 1))[:200_000]
    lines = "a\n" * 100_000
    for model in ("smollm2", "gemma3"):
        tok = tokenizer_of(model)
        for label, text in (("prose 200k chars", prose), ("'a\\n' x 100k", lines)):
            def run():
                getattr(tok, "_cache", {}).clear()
                if hasattr(tok, "_cache_bytes"):
                    tok._cache_bytes = 0
                tok.tokenize(text, add_special=False)
            show(f"tokenize {model}: {label}", timed(run, repeat))


def bench_templates(repeat: int):
    from datetime import datetime
    from runtime.chat_template import CHATML, ChatTemplate, ChatTemplateError
    golden = json.loads((ROOT / "data" / "goldens" / "chat_templates.json").read_text(encoding="utf-8"))
    now = datetime.fromisoformat(golden["fixed_now"])
    jobs = []
    for c in golden["cases"].values():
        tmpl = ChatTemplate(c["template"] if c["template"] is not None else CHATML,
                            bos_token=c["bos_token"], eos_token=c["eos_token"], now=lambda: now)
        jobs += [(tmpl, golden["conversations"][r["conversation"]], {}, r["add_generation_prompt"])
                 for r in c["renders"]]
    for c in golden.get("tool_cases", {}).values():
        source = (ROOT / c["template_file"]).read_text(encoding="utf-8")
        tmpl = ChatTemplate(source, bos_token=c["bos_token"], eos_token=c["eos_token"], now=lambda: now)
        jobs += [(tmpl, golden["tool_conversations"][r["conversation"]],
                  {"tools": golden["tools"]} if r["tools"] else {}, r["add_generation_prompt"])
                 for r in c["renders"]]

    def run():
        for tmpl, messages, kw, agp in jobs:
            try:
                tmpl.render(messages, add_generation_prompt=agp, **kw)
            except ChatTemplateError:
                pass                      # a golden conversation the template refuses
    show(f"render {len(jobs)} golden prompts, per render", timed(run, repeat), per=len(jobs), unit="us", scale=1e6)


def bench_terminal(repeat: int):
    try:
        from runtime.escapes import TerminalFilter
    except ImportError:
        print("terminal: this tree has no runtime/escapes.py (nothing filtered)")
        return
    tok = tokenizer_of("smollm2")
    pieces = [tok.detokenize([i]) for i in range(tok.vocab_size)]

    def run():
        f = TerminalFilter()
        for p in pieces:
            f.feed(p)
    show(f"escape filter, per token ({len(pieces)} pieces)", timed(run, repeat), per=len(pieces), unit="us",
         scale=1e6)


def bench_memory(repeat: int):
    try:
        from runtime.memory import available_bytes
    except ImportError:
        print("memory: this tree has no KV memory check")
        return
    show("KV memory check (available_bytes)", timed(lambda: [available_bytes() for _ in range(100)], repeat),
         per=100, unit="us", scale=1e6)


BENCHES = {"tokenize": bench_tokenize, "templates": bench_templates, "terminal": bench_terminal,
           "memory": bench_memory}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--only", default=",".join(BENCHES))
    args = ap.parse_args()
    print(f"tree: {ROOT}   load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name in args.only.split(","):
        BENCHES[name](args.repeat)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
