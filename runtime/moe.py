"""Mixture-of-experts feed-forward (qwen3moe; Mixtral and other MoE files of llama, mistral3, granite).

As llama.cpp's `build_moe_ffn` with softmax gating (src/llama-graph.cpp): the router gives each
position probabilities over all experts (softmax of ffn_gate_inp @ x); the n_used largest are
chosen (argsort, descending); their probabilities are renormalised to sum 1 (the sum clamped at
2**-14) and, where the file says so, scaled; each chosen expert runs its own SwiGLU FFN on x, and
the outputs, times their weights, are added in the chosen order. A granite file may add a shared
expert (a plain FFN) to the sum.

The experts are stored as 3-D tensors ([dim, ff, n_experts]); each expert is a zero-copy row view
of its slice, so the ordinary kernels multiply it. Prefill groups the positions by expert, as
ggml's mul_mat_id does, so each expert's weights are read once per call. This costs a few small
numpy allocations per layer and call (the dense path allocates nothing), which the kernels' time
dwarfs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels, ops

F16_MIN_NORMAL = np.float32(6.103515625e-05)     # llama.cpp clamps the weight sum here


@dataclass(frozen=True)
class Experts:
    router: object                  # Tensor [dim -> n_experts] (ffn_gate_inp)
    gate: list | None               # n_experts x Tensor [dim -> ff]; None: no ffn_gate_exps, SiLU(up)
    up: list                        # n_experts x Tensor [dim -> ff]
    down: list                      # n_experts x Tensor [ff -> dim]
    shared: tuple | None            # (gate, up, down) of a shared expert FFN, or None

    @classmethod
    def load(cls, w, p: str, c) -> "Experts":
        """The experts of layer prefix p ("blk.{i}.") from _Weights w, for ModelConfig c."""
        n, ff = c.n_experts, c.hidden_dim

        def split(name, n_in, n_out, required=True):
            t = w.matrix(p + name, n_in, n_out, n, required=required)
            return None if t is None else t.split_rows(*[n_out] * n)

        shared = None
        if c.shared_hidden_dim:
            sh = c.shared_hidden_dim
            shared = (w.matrix(p + "ffn_gate_shexp.weight", c.dim, sh),
                      w.matrix(p + "ffn_up_shexp.weight", c.dim, sh),
                      w.matrix(p + "ffn_down_shexp.weight", sh, c.dim))
        return cls(router=w.matrix(p + "ffn_gate_inp.weight", c.dim, n),
                   gate=split("ffn_gate_exps.weight", c.dim, ff, required=False),
                   up=split("ffn_up_exps.weight", c.dim, ff),
                   down=split("ffn_down_exps.weight", ff, c.dim),
                   shared=shared)


class Buffers:
    """Scratch of one MoE layer call for up to `rows` positions, allocated once per session."""

    def __init__(self, c, rows: int):
        def z(*shape):
            return np.zeros(shape, np.float32)
        ff = max(c.hidden_dim, c.shared_hidden_dim)
        self.probs = z(rows, c.n_experts)
        self.xq = z(rows, c.dim)
        self.xe = z(rows, c.dim)              # the positions routed to one expert, gathered
        self.gate, self.up, self.hq = z(rows, ff), z(rows, ff), z(rows, ff)
        self.down = z(rows, c.dim)
        self.outs = z(rows, c.n_experts_used, c.dim)   # each position's expert outputs, weighted
        self.ones = np.ones((rows, ff), np.float32)    # the "up" of a gate-less SiLU expert
        # a decode row in the integer kernels' 8-bit form (qs, d, s), kept across its chosen experts
        self.x8 = np.zeros(c.dim, np.int8)
        self.x8ds = np.zeros((2, c.dim // 32), np.float32)


def route(probs: np.ndarray, n_used: int, norm: bool, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """probs float32 [T, n_experts] (router logits, softmaxed in place) -> (chosen int [T, n_used],
    weights float32 [T, n_used])."""
    for t in range(probs.shape[0]):
        ops.softmax(probs[t])
    chosen = np.argsort(-probs, axis=1, kind="stable")[:, :n_used]
    weights = np.take_along_axis(probs, chosen, axis=1)
    if norm:      # ggml_sum_rows sums in double; clamp; ggml_div in float32
        total = weights.astype(np.float64).sum(axis=1, keepdims=True).astype(np.float32)
        weights = weights / np.maximum(total, F16_MIN_NORMAL)
    if scale not in (0.0, 1.0):
        weights = weights * np.float32(scale)
    return chosen, weights.astype(np.float32)


def _expert(project, gate, up, down, x, out, buf):
    # x [n, dim] -> out [n, dim]: one SwiGLU FFN (SiLU(up) without a gate) through `project`
    n = x.shape[0]
    g, u, hq = buf.gate[:n, :up.n_rows], buf.up[:n, :up.n_rows], buf.hq[:n, :up.n_rows]
    if gate is None:
        project(x, buf.xq[:n], ((up, g),))
        ops.swiglu(g, g, buf.ones[:n, :up.n_rows])
    else:
        project(x, buf.xq[:n], ((gate, g), (up, u)))
        ops.swiglu(g, g, u)
    project(g, hq, ((down, out),))


def ffn(model, project, E: Experts, xn: np.ndarray, out: np.ndarray, buf: Buffers) -> None:
    """xn [T, dim] (the normalised residual) -> out [T, dim]: the routed experts' weighted sum.
    project(x, xq, ((W, out), ...)): the forward pass's weight products (Model._project)."""
    c = model.config
    T = xn.shape[0]
    probs = buf.probs[:T]
    project(xn, buf.xq[:T], ((E.router, probs),))
    chosen, weights = route(probs, c.n_experts_used, c.expert_norm, c.expert_weights_scale)
    if T == 1:
        _decode(model, project, E, xn, out, buf, chosen[0], weights[0])
        return
    outs = buf.outs[:T]
    for e in np.unique(chosen):
        rows, slots = np.nonzero(chosen == e)
        n = len(rows)
        xe, down = buf.xe[:n], buf.down[:n]
        xe[:] = xn[rows]
        _expert(project, E.gate[e] if E.gate is not None else None, E.up[e], E.down[e], xe, down, buf)
        outs[rows, slots] = down * weights[rows, slots][:, None]
    out[:] = outs[:, 0]
    for i in range(1, c.n_experts_used):          # ggml_add of the views, in the chosen order
        out += outs[:, i]
    if E.shared is not None:
        down = buf.down[:T]
        _expert(project, *E.shared, xn, down, buf)
        out += down


def _decode(model, project, E: Experts, xn, out, buf, chosen, weights) -> None:
    # ffn for one position: x is rounded once for every chosen expert's gate and up (they share a
    # type in any file llama.cpp writes), not once per expert; no gathering
    ff = E.up[0].n_rows
    g, u, hq, down = buf.gate[:1, :ff], buf.up[:1, :ff], buf.hq[:1, :ff], buf.down[:1]
    kind = ops.ACT_KIND[E.up[0].type] if model.llama_rounding else ops.ACT_F32
    xq = buf.xq[:1]
    q8 = _round_row(xq, xn, kind, model.llama_rounding and kernels.takes_q8(E.up[0].type), buf)
    for slot, e in enumerate(chosen):
        ws = [E.up[e]] if E.gate is None else [E.gate[e], E.up[e]]
        if any(w.type != E.up[0].type for w in ws):            # mixed types: round per product
            _expert(project, None if E.gate is None else E.gate[e], E.up[e], E.down[e], xn, down, buf)
            q8 = _round_row(xq, xn, kind, q8 is not None, buf)  # _expert used xq as its scratch
        else:
            kernels.matvecs(ws, xq[0], [g[0]] if E.gate is None else [g[0], u[0]], q8)
            ops.swiglu(g, g, buf.ones[:1, :ff] if E.gate is None else u)
            project(g, hq, ((E.down[e], down),))
        if slot == 0:
            np.multiply(down, weights[0], out=out)
        else:
            out += down * weights[slot]
    if E.shared is not None:
        _expert(project, *E.shared, xn, down, buf)
        out += down


def _round_row(xq, xn, kind, int8: bool, buf: Buffers):
    # xq [1, dim] = xn rounded for `kind`; with int8 also its 8-bit form (qs [dim], d [dim / 32 or 256],
    # s [dim / 32]) for the integer kernels, as Model._round makes it for the dense products
    if not int8:
        ops.round_activations(xq, xn, kind)
        return None
    n = xn.shape[1]
    nb = n // (32 if kind == ops.ACT_Q8_0 else 256)
    qs, d, s = buf.x8[None], buf.x8ds[0, None, :nb], buf.x8ds[1, None, :n // 32]
    ops.quantize_activations(xq, qs, d, s, xn, kind)
    return qs[0], d[0], s[0]


def ffn_ref(E: Experts, xn: np.ndarray, c, dequantize_rows) -> np.ndarray:
    """Plain-numpy twin of `ffn` without llama.cpp's activation roundings: dequantize_rows(tensor)
    -> float32 [rows, n]."""
    probs = np.stack([dequantize_rows(E.router) @ x for x in xn]).astype(np.float32)
    chosen, weights = route(probs, c.n_experts_used, c.expert_norm, c.expert_weights_scale)
    out = np.zeros_like(xn)
    for t, x in enumerate(xn):
        for e, wt in zip(chosen[t], weights[t]):
            up = dequantize_rows(E.up[e]) @ x
            g = dequantize_rows(E.gate[e]) @ x if E.gate is not None else up
            h = ops.swiglu_ref(g[None], (up if E.gate is not None else np.ones_like(up))[None])[0]
            out[t] += wt * (dequantize_rows(E.down[e]) @ h)
        if E.shared is not None:
            gate, up, down = (dequantize_rows(w) for w in E.shared)
            out[t] += down @ ops.swiglu_ref((gate @ x)[None], (up @ x)[None])[0]
    return out
