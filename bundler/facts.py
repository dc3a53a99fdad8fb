"""What `chatfile inspect` reports about a bundle, a stub or a plain GGUF, as an ordered dict."""
from __future__ import annotations

import math
import os
import shlex
from collections import Counter

from runtime.bundle import PAYLOAD_ALIGNMENT, BundleInfo, is_bundle, read_info
from runtime.config import ARCHITECTURES, support_problem
from runtime.escapes import printable
from runtime.ggml import Keys, type_name
from runtime.gguf import GGUFFile


def gguf_facts(g: GGUFFile) -> dict:
    """Model facts from GGUF metadata and tensor infos (nothing is dequantized or read in bulk)."""
    md = g.metadata
    arch = md.get(Keys.ARCHITECTURE, "")
    key = (lambda k: k.format(arch=arch))
    types = Counter(type_name(t.type) for t in g.tensors.values())
    n_params = sum(math.prod(t.shape) for t in g.tensors.values())
    return {
        "gguf_version": g.version,
        "model_name": md.get(Keys.NAME, ""),
        "architecture": arch,
        "family": ARCHITECTURES[arch].label if arch in ARCHITECTURES else "(not one chatfile runs)",
        "supported": f"no: {problem}" if (problem := support_problem(g)) else "yes",
        "parameters": n_params,
        "tensors": len(g.tensors),
        "quant_types": dict(types.most_common()),
        "context_length": md.get(key(Keys.CONTEXT_LENGTH)),
        "tokenizer": md.get(Keys.TOKENIZER_MODEL, ""),
        "tokenizer_pre": md.get(Keys.TOKENIZER_PRE, ""),
        "chat_template": isinstance(md.get(Keys.CHAT_TEMPLATE), str),
    }


def bundle_facts(info: BundleInfo) -> dict:
    facts = {
        "kind": "bundle" if info.has_model else "stub",
        "format_version": info.version,
        "file_size": info.file_size,
        "stub_size": info.stub_size,
        "stub_platform": info.stub_platform,
        "stub_kind": info.stub_kind,
        "stub_sha256": info.stub_sha256 or None,        # None: written before bundles carried it
        "build_id": info.build_id,
        "bundle_model_name": info.model_name,
        "args": info.args,
    }
    if info.has_model:
        facts.update(payload_offset=info.payload_offset, payload_size=info.payload_size,
                     payload_aligned=info.payload_offset % PAYLOAD_ALIGNMENT == 0,
                     payload_sha256=info.payload_sha256)
    return facts


def inspect(path) -> dict:
    """Facts about a bundle (footer + embedded model), a stub (footer) or a GGUF file (model).

    Raises runtime.bundle.BundleError or runtime.gguf.GGUFError for anything else.
    """
    if is_bundle(path):
        info = read_info(path)
        facts = bundle_facts(info)
        if info.has_model:
            facts.update(gguf_facts(GGUFFile(path, offset=info.payload_offset)))
        return facts
    facts = {"kind": "gguf", "file_size": os.path.getsize(path)}
    facts.update(gguf_facts(GGUFFile(path)))
    return facts


def format_facts(facts: dict) -> str:
    """Aligned `key: value` lines for humans (`--json` prints the dict itself)."""
    def show(v):
        if isinstance(v, dict):
            return printable(", ".join(f"{k} x{n}" for k, n in v.items()))
        if isinstance(v, list):
            return printable(shlex.join(v)) if v else "(none)"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, int) and v >= 10_000:
            return f"{v:,}"
        return printable(str(v)) if v not in ("", None) else "(none)"   # the file's strings: no escapes

    width = max(map(len, facts))
    return "\n".join(f"{k.replace('_', ' '):<{width}}  {show(v)}" for k, v in facts.items())
