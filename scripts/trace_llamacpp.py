#!/usr/bin/env python3
"""Trace llama.cpp's intermediates on a golden prompt and compare them with ours, layer by layer.

Two interpreters: llama.cpp lives in its own venv (/work/llcpp), our runtime in .venv.

    /work/llcpp/bin/python scripts/trace_llamacpp.py dump gemma3 long_prose 1 /tmp/ll.npz
    .venv/bin/python scripts/trace_llamacpp.py ours gemma3 long_prose 1 /tmp/ours.npz
    .venv/bin/python scripts/trace_llamacpp.py compare /tmp/ll.npz /tmp/ours.npz gemma3 long_prose 1
    /work/llcpp/bin/python scripts/trace_llamacpp.py variants gemma3 long_prose 1
    .venv/bin/python scripts/trace_llamacpp.py gelu-table /work/llcpp/lib/python3.11/site-packages/llama_cpp/lib/libggml-cpu.so
    .venv/bin/python scripts/trace_llamacpp.py goldens gemma3 smollm2

`dump` replays the golden run with make_goldens.py's settings (the prompt in one batch, then one
greedy token per llama_decode) and, on the call that produces greedy step STEP's logits (STEP 0: the
prompt batch itself), copies every F32/F16 tensor of llama.cpp's graph through the scheduler's eval
callback (llama_context_params.cb_eval), including the KV cache views a decode step reads.
`ours` runs our Session the same way and records our intermediates (and caches) under llama.cpp's
tensor names, by standing in for runtime.model's `ops` and `kernels` modules: no hook in model.py.
`compare` prints per tensor the max |difference|, so the first one beyond float rounding stands out.
`variants` runs llama.cpp against itself (other batch sizes, threads, the prompt token by token):
how far its own logits move is the prompt's sensitivity to float summation order.
`gelu-table` checks runtime.ops' GELU table against the one inside llama.cpp's libggml-cpu.so (loaded
with ctypes, so it runs in our .venv).
`goldens` applies tests/test_goldens.py's rules to every golden prompt and prints, per prompt, the
max |difference| and how far greedy decoding agrees. To try a fix before it lands, monkeypatch
runtime.ops before `ours` or `goldens` load the model (the GELU fix was checked that way).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = ROOT / "data" / "goldens"
MODELS = {"gemma3": "gemma-3-270m-q4_k_m.gguf", "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf"}
MODEL_DIR = Path.home() / ".cache" / "chatfile" / "models"


def golden_prompt(which: str, name: str) -> dict:
    entry, = json.loads((GOLDENS / f"logits_{which}.json").read_text())["models"]
    prompt, = [p for p in entry["prompts"] if p["name"] == name]
    return prompt


# ---- llama.cpp side ----------------------------------------------------------------------------------

GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_OP_PARAMS, GGML_MAX_NAME = 4, 10, 64, 64


class GGMLTensor(ctypes.Structure):
    # struct ggml_tensor of the bundled ggml (include/ggml.h of llama-cpp-python 0.3.36)
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def tensor_array(t: GGMLTensor) -> np.ndarray | None:
    """A copy of an F32 / F16 tensor as a numpy array, shape (ne3, ne2, ne1, ne0)."""
    dtype = {0: np.float32, 1: np.float16}.get(t.type)
    if dtype is None or not t.data:
        return None
    ne = [int(t.ne[i]) for i in range(4)]
    nb = [int(t.nb[i]) for i in range(4)]
    span = sum((n - 1) * s for n, s in zip(ne, nb)) + np.dtype(dtype).itemsize
    raw = np.ctypeslib.as_array(ctypes.cast(t.data, ctypes.POINTER(ctypes.c_uint8)), shape=(span,))
    size = np.dtype(dtype).itemsize
    view = np.lib.stride_tricks.as_strided(raw, shape=ne[::-1] + [size], strides=nb[::-1] + [1])
    return np.ascontiguousarray(view).view(dtype)[..., 0].astype(np.float32)


def dump(which: str, name: str, step: int, out: Path) -> None:
    import llama_cpp
    from llama_cpp import llama_cpp as low   # llama.py calls low.llama_context_default_params()

    prompt = golden_prompt(which, name)
    captured: dict[str, np.ndarray] = {}
    state = {"on": False}

    def callback(ptr, ask, _user):
        if not state["on"]:
            return False                      # ask: "do you want this one?" no -> one graph run
        t = GGMLTensor.from_address(ptr)
        if ask:
            return True
        key = t.name.decode(errors="replace")
        if step == 0 and key.startswith(("kq-", "kq_soft_max", "cache_")):
            return True                       # a prompt's scores and caches: too big to keep
        arr = tensor_array(t)
        if arr is not None:
            while key in captured:
                key += "'"
            captured[key] = arr
        return True

    cb = low.ggml_backend_sched_eval_callback(callback)
    default_params = low.llama_context_default_params

    def params_with_callback():
        p = default_params()
        p.cb_eval = cb
        return p

    low.llama_context_default_params = params_with_callback
    try:
        llm = llama_cpp.Llama(model_path=str(MODEL_DIR / MODELS[which]), n_ctx=2048, n_batch=2048,
                              n_ubatch=2048, n_threads=2, n_threads_batch=2, logits_all=False,
                              flash_attn=False, seed=0, verbose=False)
    finally:
        low.llama_context_default_params = default_params

    def last_logits():
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                     shape=(llm.n_vocab(),)).copy()

    llm.reset()
    state["on"] = step == 0
    llm.eval(prompt["ids"])
    logits = last_logits()
    for s in range(step):
        assert int(np.argmax(logits)) == prompt["greedy"][s]["id"], "run differs from the golden"
        state["on"] = s == step - 1
        llm.eval([prompt["greedy"][s]["id"]])
        logits = last_logits()
    g = prompt["greedy"][step]
    print(f"llama.cpp step {step}: top {int(np.argmax(logits))} {logits.max():.4f}, golden {g['id']} "
          f"{g['logit']:.4f}; {len(captured)} tensors", file=sys.stderr)
    captured["__logits"] = logits
    np.savez(out, **captured)


def variants(which: str, name: str, step: int) -> None:
    """llama.cpp against itself: the same prompt under other batch sizes / thread counts. How far
    its own logits move measures how sensitive the prompt is to float summation order."""
    import llama_cpp

    prompt = golden_prompt(which, name)
    g = prompt["greedy"][step]
    ids = prompt["ids"] + [prompt["greedy"][s]["id"] for s in range(step)]
    settings = [("golden: one 2048 batch, 2 threads", 2048, 2), ("n_ubatch 512", 512, 2),
                ("n_ubatch 256", 256, 2), ("n_ubatch 64", 64, 2), ("1 thread", 2048, 1),
                ("prompt token by token", 1, 2)]
    golden_logits = None
    for label, ubatch, threads in settings:
        llm = llama_cpp.Llama(model_path=str(MODEL_DIR / MODELS[which]), n_ctx=2048, n_batch=ubatch,
                              n_ubatch=ubatch, n_threads=threads, n_threads_batch=threads,
                              logits_all=False, flash_attn=False, seed=0, verbose=False)
        llm.reset()
        if ubatch == 1:
            for i in ids:
                llm.eval([i])
        else:
            llm.eval(prompt["ids"])
            for s in range(step):
                llm.eval([prompt["greedy"][s]["id"]])
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                       shape=(llm.n_vocab(),)).copy()
        if golden_logits is None:
            golden_logits = logits
        top = np.argsort(-golden_logits)[:20]
        print(f"{label:36} top {int(np.argmax(logits)):6d}  {g['id']}: {logits[g['id']]:.4f}  "
              f"{g['second_id']}: {logits[g['second_id']]:.4f}  margin "
              f"{logits[g['id']] - logits[g['second_id']]:+.3f}  max|d| top-20 vs golden run "
              f"{np.abs(logits[top] - golden_logits[top]).max():.3f}", flush=True)
        del llm


# ---- our side -------------------------------------------------------------------------------------

class _Recorder:
    """Stands in for runtime.model's `ops` and `kernels` modules: forwards every call, and while
    `on`, keeps a copy of the last position of what the call wrote, under llama.cpp's tensor name."""

    def __init__(self, module, names: dict[int, str]):
        self._module = module
        self._names = names               # id(weight array or Tensor) -> llama.cpp name
        self.on = False
        self.out: dict[str, np.ndarray] = {}
        self.layer = -1

    def _keep(self, name, arr):
        if self.on:
            self.out[name] = np.array(arr, np.float32)

    def __getattr__(self, attr):
        fn = getattr(self._module, attr)
        if not callable(fn):
            return fn

        def wrapped(*args):
            name = self._names.get(id(args[0] if attr in ("matvec", "matmul") else
                                      args[1] if attr == "head_rms_norm" else
                                      args[2] if attr == "rms_norm" else None))
            if attr == "rms_norm" and name and name.startswith("attn_norm-"):
                il = int(name.split("-")[1])
                self.layer = il
                if il > 0:
                    self._keep(f"l_out-{il - 1}", args[1])
            if attr == "rms_norm" and name and name.startswith("ffn_norm-"):
                self._keep(f"sa_out-{self.layer}", args[1])
            if attr == "rms_norm" and name == "result_norm":
                self._keep(f"l_out-{self.layer}", args[1])
            result = fn(*args)
            il = self.layer
            if attr in ("matvec", "matmul") and name:
                self._keep(name, args[2])
            elif attr == "matvecs":
                for w, out in zip(args[0], args[2]):
                    self._keep(self._names[id(w)], out)
            elif attr in ("rms_norm", "head_rms_norm") and name:
                self._keep(name, args[0])
            elif attr == "rope":
                self._keep(f"Qcur-{il}''" if f"Qcur-{il}''" not in self.out else f"Kcur-{il}''",
                           args[0])
            elif attr == "attention":
                self._keep(f"kqv_out-{il}", args[0])
            elif attr in ("geglu", "swiglu"):
                self._keep(f"ffn_geglu-{il}", args[0])
            return result
        return wrapped


def ours(which: str, name: str, step: int, out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import runtime
    from runtime import model as model_mod, ops

    prompt = golden_prompt(which, name)
    model = runtime.load(MODEL_DIR / MODELS[which])
    names = {id(model.output_norm): "result_norm", id(model.output): "result_output"}
    for il, L in enumerate(model.layers):
        for attr, llname in (("attn_norm", "attn_norm"), ("post_attn_norm", "attn_post_norm"),
                             ("ffn_norm", "ffn_norm"), ("post_ffn_norm", "ffn_post_norm"),
                             ("q_norm", "Qcur_normed"), ("k_norm", "Kcur_normed"),
                             ("wq", "Qcur"), ("wk", "Kcur"), ("wv", "Vcur"), ("wo", "attn_proj"),
                             ("w_gate", "ffn_gate"), ("w_up", "ffn_up"), ("w_down", "ffn_out")):
            if getattr(L, attr) is not None:
                names[id(getattr(L, attr))] = f"{llname}-{il}"
    rec_ops, rec_kernels = _Recorder(model_mod.ops, names), _Recorder(model_mod.kernels, names)
    model_mod.ops, model_mod.kernels = rec_ops, rec_kernels
    session = model.new_session(len(prompt["ids"]) + step + 2)
    rec_ops.on = rec_kernels.on = step == 0
    logits = session.eval(prompt["ids"])
    for s in range(step):
        rec_ops.on = rec_kernels.on = s == step - 1
        logits = session.eval([prompt["greedy"][s]["id"]])
    captured = {**rec_ops.out, **rec_kernels.out}
    n = len(session.tokens)
    for il in range(model.config.n_layers):          # the caches, as llama.cpp's decode reads them
        captured[f"cache_k_l{il}"] = ops.f16_value_ref(session.kv.k[il, session.seq, :, :n])
        captured[f"cache_v_l{il}"] = ops.f16_value_ref(session.kv.v[il, session.seq, :, :n])
    top2 = np.argsort(-logits)[:2]
    print(f"ours step {step}: top {top2[0]} {logits[top2[0]]:.4f}, second {top2[1]} "
          f"{logits[top2[1]]:.4f}", file=sys.stderr)
    captured["__logits"] = logits
    np.savez(out, **captured)


# ---- GELU (issue 8) ---------------------------------------------------------------------------------

def check_gelu_table(libggml_cpu: str) -> None:
    """llama.cpp's own GELU table (ggml_table_gelu_f16, exported by libggml-cpu.so) against
    runtime.ops.GELU_F16_TABLE and against the float64 GELU runtime/ops.py used before."""
    sys.path.insert(0, str(ROOT))
    from runtime import ops

    cpu = ctypes.CDLL(libggml_cpu)
    cpu.ggml_cpu_init()
    theirs = np.array((ctypes.c_uint16 * 65536).in_dll(cpu, "ggml_table_gelu_f16")[:], np.uint16)
    x = np.arange(65536, dtype=np.uint16).view(np.float16)
    finite = np.isfinite(x)
    ours = ops.GELU_F16_TABLE.astype(np.float16).view(np.uint16)
    g = x.astype(np.float64)
    with np.errstate(all="ignore"):
        f64 = (0.5 * g * (1.0 + np.tanh(ops.SQRT_2_OVER_PI * g * (1.0 + ops.GELU_COEF_A * g * g))))
    f64 = f64.astype(np.float32).astype(np.float16).view(np.uint16)
    for label, table in (("float32 + fma (runtime)", ours), ("float64 (before)", f64)):
        bad = finite & (table != theirs)
        print(f"{label:26} differs from llama.cpp's table on {bad.sum()} of {finite.sum()} finite "
              f"fp16 inputs{'' if not bad.any() else ', e.g. x = ' + str(x[bad][:6])}")


def goldens(which_list) -> None:
    """Our check of the golden prompts (tests/test_goldens.py's rules)."""
    sys.path.insert(0, str(ROOT))
    import runtime
    for which in which_list:
        entry, = json.loads((GOLDENS / f"logits_{which}.json").read_text())["models"]
        model = runtime.load(MODEL_DIR / MODELS[which])
        errors = []                       # |ours - llama.cpp| of every logit llama.cpp recorded
        for prompt in entry["prompts"]:
            session = model.new_session(len(prompt["ids"]) + len(prompt["greedy"]) + 1)
            logits = session.eval(prompt["ids"])
            ref_ids = np.array([i for i, _ in prompt["top20"]])
            ref = np.array([v for _, v in prompt["top20"]])
            diff = float(np.abs(logits[ref_ids] - ref).max())
            errors.extend(np.abs(logits[ref_ids] - ref))
            agree, note = 0, "all 16 steps agree"
            for step, g in enumerate(prompt["greedy"]):
                ours_id = int(np.argmax(logits))
                errors.append(abs(logits[g["id"]] - g["logit"]))
                errors.append(abs(logits[g["id"]] - logits[g["second_id"]] - g["margin"]))
                if ours_id != g["id"]:
                    note = (f"step {step} differs: ours {ours_id}, llama.cpp {g['id']} (its margin "
                            f"{g['margin']:.3f}, ours {logits[ours_id] - logits[g['id']]:+.3f})")
                    break
                agree += 1
                logits = session.eval([g["id"]])
            first_small = next((s for s, g in enumerate(prompt["greedy"]) if g["margin"] < 0.3), 16)
            verdict = "ok" if agree >= first_small else "FAIL"
            print(f"{which:8} {prompt['name']:13} max|d| {diff:.3f}  greedy agrees {agree:2d}/16 "
                  f"(needed {first_small:2d}) {verdict}; {note}", flush=True)
        e = np.array(errors)
        print(f"{which}: {e.size} recorded logits and margins: mean |d| {e.mean():.4f}, "
              f"median {np.median(e):.4f}, 95% {np.quantile(e, 0.95):.4f}, max {e.max():.3f}")


# ---- comparison ---------------------------------------------------------------------------------------

def compare(ll_path: Path, ours_path: Path, which: str, name: str, step: int) -> None:
    ll, us = np.load(ll_path), np.load(ours_path)
    for key in us.files:
        if key not in ll.files:
            print(f"{key:24} (not in llama.cpp's dump)")
            continue
        a = ll[key].reshape(-1)
        b = us[key].reshape(-1)
        if a.size != b.size:
            print(f"{key:24} sizes differ: {ll[key].shape} vs {us[key].shape}")
            continue
        d = np.abs(a.astype(np.float64) - b)
        i = int(d.argmax())
        rel = d.max() / max(np.abs(a).max(), 1e-30)
        print(f"{key:24} max|d| {d.max():.3e} rel {rel:.1e} at {i} ({a[i]:.6g} vs {b[i]:.6g}) "
              f"n_diff {(d > 0).sum()}/{d.size}")
    g = golden_prompt(which, name)["greedy"][step]
    lo, uo = ll["__logits"], us["__logits"]
    for tid in (g["id"], g["second_id"], int(np.argmax(uo))):
        print(f"logit {tid}: llama.cpp {lo[tid]:.4f} ours {uo[tid]:.4f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd in ("dump", "ours"):
        p = sub.add_parser(cmd)
        p.add_argument("which", choices=sorted(MODELS))
        p.add_argument("prompt")
        p.add_argument("step", type=int)
        p.add_argument("out", type=Path)
    p = sub.add_parser("variants")
    p.add_argument("which", choices=sorted(MODELS))
    p.add_argument("prompt")
    p.add_argument("step", type=int)
    p = sub.add_parser("goldens")
    p.add_argument("which", nargs="+", choices=sorted(MODELS))
    p = sub.add_parser("gelu-table")
    p.add_argument("libggml_cpu", help="path of llama-cpp-python's lib/libggml-cpu.so")
    p = sub.add_parser("compare")
    p.add_argument("llama", type=Path)
    p.add_argument("ours", type=Path)
    p.add_argument("which", choices=sorted(MODELS))
    p.add_argument("prompt")
    p.add_argument("step", type=int)
    args = ap.parse_args(argv)
    if args.cmd == "dump":
        dump(args.which, args.prompt, args.step, args.out)
    elif args.cmd == "variants":
        variants(args.which, args.prompt, args.step)
    elif args.cmd == "gelu-table":
        check_gelu_table(args.libggml_cpu)
    elif args.cmd == "goldens":
        goldens(args.which)
    elif args.cmd == "ours":
        ours(args.which, args.prompt, args.step, args.out)
    else:
        compare(args.llama, args.ours, args.which, args.prompt, args.step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
