#!/usr/bin/env python3
"""Start chatfile the way llama.cpp's server test suite starts `llama-server`, so that suite can be run
against chatfile (scripts/run_llamacpp_server_tests.sh does that and counts the results).

    llama_server_shim.py --port 8080 --temp 0.8 --seed 42 --hf-repo ggml-org/test-model-stories260K \
        --ctx-size 512 --n-predict 64 --no-slots ...
    -> python -m runtime --server --nobrowser -m SmolLM2.gguf --port 8080 --temp 0.8 -s 42 -c 512 -n 64

Models: the suite downloads tiny test models from Hugging Face, which this machine cannot reach. Every
model it names runs as SmolLM2 (the Gemma 3 presets as Gemma 3), and the FIM test model as a copy of
SmolLM2 given FIM token ids (written once into the shim's work directory). Tests that check the exact
text of llama.cpp's own tiny models therefore fail by design; the runner's report says which.

Flags: those chatfile has are passed on (port, host, sampling defaults, context, -n, API key, chat
template file, threads, pooling, embeddings, --parallel, --context-shift, --slots, --alias, --tags,
--verbose); llama-server's -c is the whole cache split between the slots, so each slot gets
-c / --parallel (all of it with --kv-unified). The rest (GPU layers, batch sizes, speculative
decoding, ...) are dropped, and the suite's tests of those features fail.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# the chatfile tree to run (default: this one; CHATFILE_ROOT=another checkout, e.g. to count "before")
ROOT = Path(os.environ.get("CHATFILE_ROOT") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

# the llama-server flags that take a value, so that the ones dropped do not swallow the next flag
VALUE_FLAGS = ["--port", "--temp", "--seed", "--host", "--model", "-m", "--model-url", "--model-draft",
               "--hf-repo", "--hf-file", "--models-dir", "--models-max", "--models-preset", "--cors-origins",
               "--batch-size", "--ubatch-size", "--threads", "--n-gpu-layers", "--pooling", "--alias", "--tags",
               "--ctx-size", "--parallel", "-ctk", "-ctv", "-fa", "--n-predict", "--slot-save-path",
               "--grp-attn-n", "--grp-attn-w", "--lora", "--spec-type", "--api-key", "--spec-draft-n-max",
               "--spec-draft-n-min", "--spec-synth-len", "--spec-synth-rates", "--reasoning-format",
               "--reasoning", "--chat-template", "--chat-template-file", "--mmproj-url", "--media-path",
               "--sleep-idle-seconds", "--cache-ram", "--tools", "--tools-runtime", "--mcp-servers-config",
               "--mcp-servers-json", "--log-file"]


def fim_copy(smollm2: Path, work: Path) -> Path:
    """SmolLM2 with FIM prefix/suffix/middle/separator ids, for the infill presets."""
    from gguf_helpers import rebuild
    from runtime.ggml import ValueType
    from runtime.gguf import GGUFFile
    out = work / "smollm2-fim.gguf"
    if not out.exists():
        ids = {"fim_pre": 8, "fim_suf": 9, "fim_mid": 10, "fim_sep": 5}
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(rebuild(GGUFFile(smollm2), {f"tokenizer.ggml.{k}_token_id": (ValueType.UINT32, v)
                                                    for k, v in ids.items()}))
        tmp.rename(out)
    return out


def model_for(args, work: Path) -> Path:
    import fetch_models
    if args.model and os.path.isfile(args.model):
        return Path(args.model)
    name = f"{args.hf_repo or ''}/{args.hf_file or ''}".lower()
    if "gemma" in name:
        return fetch_models.model_path("gemma3")
    smollm2 = fetch_models.model_path("smollm2")
    if "infill" in name:
        return fim_copy(smollm2, work)
    return smollm2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(add_help=False)
    for flag in VALUE_FLAGS:
        ap.add_argument(flag, dest=flag.lstrip("-").replace("-", "_"))
    ap.add_argument("--embedding", "--embeddings", action="store_true")
    for flag in ("--kv-unified", "--context-shift", "--slots", "--verbose"):
        ap.add_argument(flag, action="store_true")
    args, _dropped = ap.parse_known_args(argv)
    work = Path(os.environ.get("CHATFILE_SHIM_WORK", "/tmp/chatfile-shim"))
    work.mkdir(parents=True, exist_ok=True)

    args.model = args.model or args.m
    cli = (ROOT / "runtime" / "cli.py").read_text()      # flags an older chatfile lacks are not passed
    cmd = [sys.executable, "-m", "runtime", "--server", "--nobrowser", "-m", str(model_for(args, work))]
    # llama-server's -c is the whole cache, split evenly between the --parallel slots (unless
    # --kv-unified); chatfile's -c is per slot
    ctx = args.ctx_size
    if ctx is not None and args.parallel and not args.kv_unified:
        ctx = str(max(int(ctx) // int(args.parallel), 1))
    for ours, value in (("--port", args.port), ("--host", args.host), ("--temp", args.temp), ("-s", args.seed),
                        ("-c", ctx), ("-n", args.n_predict), ("--api-key", args.api_key),
                        ("-t", args.threads), ("--pooling", args.pooling), ("--parallel", args.parallel),
                        ("--alias", args.alias), ("--tags", args.tags)):
        if value is not None and f'"{ours}"' in cli:
            cmd += [ours, value]
    for flag, given in (("--context-shift", args.context_shift), ("--slots", args.slots), ("--verbose", args.verbose)):
        if given and f'"{flag}"' in cli:
            cmd.append(flag)
    if args.chat_template_file:     # relative to the suite's directory, which this process leaves below
        cmd += ["--chat-template", os.path.abspath(args.chat_template_file)]
    elif args.chat_template == "chatml":
        cmd += ["--chat-template", "chatml"]
    if args.embedding and '"--embeddings"' in cli:
        cmd.append("--embeddings")
    os.chdir(ROOT)
    os.execv(sys.executable, cmd)


if __name__ == "__main__":
    sys.exit(main())
