"""The model: weights as views into the GGUF, a Session with the KV cache, and the forward pass.

Three kinds of state, kept apart (as llama2.c's Config / TransformerWeights / RunState):
- `ModelConfig` (config.py): the blueprint, immutable.
- `Model`: the weights, read-only `Tensor` views into the file's mmap (no float32 copy; only the
  small norm and bias vectors are float32 arrays).
- `KVCache` (K and V of every layer for one or more sequences, fp16) and `Session` (one sequence's
  cache, the tokens it holds, and the activation buffers), allocated once and reused for every token.
  A session owns its context size; the model has none.

One forward pass serves every family in config.ARCHITECTURES (llama, mistral3, granite, granitemoe,
qwen2, qwen3, qwen3moe, phi3, gemma2, gemma3); their differences are fields of the config (see src/models/*.cpp in
llama.cpp). Fused tensors (attn_qkv, phi3's gate+up ffn_up, the experts of a MoE layer) are split
into row views of the same bytes, so the kernels see ordinary matrices.

`Model.forward` evaluates a batch of rows, each a token of some sequence at some position: first
`n_decode` rows that the weight products take one row at a time (`kernels.matvec`): one new token of
a sequence each, a prompt run of at most SHORT_RUN tokens, or the last 1-3 tokens of prompts whose
whole 4-row tiles are in the GEMM; then prompt tokens of one or more sequences, in one GEMM
(`kernels.matmul`). A row's numbers do not depend on what else is in the batch, nor on how a prompt
is cut into runs when each run but the last has a multiple of 4 rows (the GEMM's token tile): the
server's batched decode and its prefill of several prompts in one pass give each stream what it would
get alone (MoE layers excepted: an expert multiplies the rows routed to it together). Only the rows
whose logits are wanted go through the output head, one at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels, moe, ops
from .kernels import intgemm
from .config import ModelConfig, ModelError
from .ggml import SUPPORTED_TYPES, GGMLType, type_name
from .gguf import GGUFFile, Tensor
from .memory import lazy_zeros
from .quants import dequantize
from .tokenizer import Tokenizer


# A run of this many tokens or fewer goes through the decode products (one weight pass for up to 4
# rows), not the prompt GEMM, whose 16-row tiles cost a 2-token run 3x the time (0.13 against 0.04 s
# on a 0.4 GB Qwen-shaped Q4_K_M at 2 threads; a 2-token `-p` is a launch's whole first forward
# pass). Only where the bits are the same (Model.gemm_tails_are_rows: the integer GEMM gives the rows
# below 4 matvec's bits, as ggml's gemv does for the rows left over after its 4-column gemm tiles);
# the float tile GEMM sums them in another order, so there a short run stays a GEMM and a prompt's
# rows keep the bits they get when it is read whole.
SHORT_RUN = 3


def prompt_rows(lengths: list[int]) -> tuple[list[tuple[int, int]], int]:
    """The rows of several prompt runs read in one forward pass, as (run, token index) in the order
    Model.forward takes them, and how many of them lead as decode rows: the last len % 4 tokens of
    every run but the last, then one GEMM over every run's whole 4-row tiles and the last run's own
    last tokens. Where Model.gemm_tails_are_rows, every row then has the bits it gets when its prompt
    is read alone (a GEMM row's bits depend only on whether it lies in the GEMM's whole tiles)."""
    tails = [[(k, i) for i in range(n // 4 * 4, n)] for k, n in enumerate(lengths)]
    rows = [r for tail in tails[:-1] for r in tail]
    n_tails = len(rows)
    rows += [(k, i) for k, n in enumerate(lengths) for i in range(n // 4 * 4)] + (tails[-1] if tails else [])
    return rows, n_tails


@dataclass(frozen=True)
class LayerWeights:
    attn_norm: np.ndarray          # [dim]
    wq: Tensor                     # [dim -> q_dim]
    wk: Tensor                     # [dim -> kv_dim]
    wv: Tensor                     # [dim -> kv_dim]
    wo: Tensor                     # [q_dim -> dim]
    bq: np.ndarray | None          # [q_dim]   (qwen2; optional elsewhere)
    bk: np.ndarray | None          # [kv_dim]
    bv: np.ndarray | None          # [kv_dim]
    bo: np.ndarray | None          # [dim]     attn_output.bias (llama, optional)
    q_norm: np.ndarray | None      # [head_dim] (qwen3, gemma3)
    k_norm: np.ndarray | None      # [head_dim]
    post_attn_norm: np.ndarray | None   # [dim] (gemma)
    ffn_norm: np.ndarray           # [dim]
    w_gate: Tensor | None          # [dim -> hidden_dim]   (None in a MoE layer)
    w_up: Tensor | None            # [dim -> hidden_dim]
    w_down: Tensor | None          # [hidden_dim -> dim]
    b_gate: np.ndarray | None      # [hidden_dim] (llama, optional)
    b_up: np.ndarray | None        # [hidden_dim]
    b_down: np.ndarray | None      # [dim]
    experts: moe.Experts | None    # routed experts (qwen3moe, Mixtral)
    post_ffn_norm: np.ndarray | None    # [dim] (gemma)
    local: bool                    # sliding-window layer (gemma)


class _Weights:
    """Looks tensors up by their GGUF names, checking presence, shape and type."""

    def __init__(self, gguf: GGUFFile, config: ModelConfig):
        self.tensors = gguf.tensors
        self.arch = config.arch

    def has(self, name: str) -> bool:
        return name in self.tensors

    def matrix(self, name: str, n_in: int, *n_out: int, required: bool = True) -> Tensor | None:
        """A weight of shape [n_in, *n_out] (ggml order), or None when optional and absent."""
        t = self.tensors.get(name)
        if t is None:
            if required:
                raise ModelError(f"{self.arch} model: tensor {name!r} is missing")
            return None
        if t.type not in SUPPORTED_TYPES:
            supported = ", ".join(sorted(GGMLType(x).name for x in SUPPORTED_TYPES))
            raise ModelError(f"tensor {name!r} has type {type_name(t.type)}, which chatfile does not "
                             f"support (supported: {supported})")
        if tuple(t.shape) != (n_in, *n_out):
            raise ModelError(f"tensor {name!r} has shape {list(t.shape)}, expected {[n_in, *n_out]}")
        return t

    def vector(self, name: str, n: int, required: bool = True) -> np.ndarray | None:
        """A small vector (norm weight, bias) as float32 [n], read-only: a view when stored as F32.
        Read-only either way, so a kernel taking it has one signature, the one a stub precompiles
        (runtime/precompile.py), whatever type the file stores it in."""
        t = self.tensors.get(name)
        if t is None:
            if required:
                raise ModelError(f"{self.arch} model: tensor {name!r} is missing")
            return None
        if t.type not in SUPPORTED_TYPES or t.shape[0] * t.n_rows != n:
            raise ModelError(f"tensor {name!r}: expected {n} values, found shape {list(t.shape)} "
                             f"of type {type_name(t.type)}")
        if t.type == GGMLType.F32:
            return t.data.view(np.float32).reshape(n)          # zero-copy
        values = dequantize(t.data, t.type, t.shape[0]).reshape(n)
        values.flags.writeable = False
        return values



class Model:
    """A loaded GGUF model. `load` to open one; `new_session()` for a KV cache; `logits(ids)`."""

    def __init__(self, gguf: GGUFFile, config: ModelConfig):
        self.gguf = gguf
        self.config = c = config
        self.tokenizer = Tokenizer.from_metadata(gguf.metadata)  # raises TokenizerError
        if self.tokenizer.vocab_size != c.vocab_size:   # an id without a token could be sampled, or one
            raise ModelError(f"the vocabulary has {self.tokenizer.vocab_size} tokens but token_embd.weight "
                             f"has {c.vocab_size} rows; they must match")      # past the rows tokenized
        w = _Weights(gguf, c)
        self.token_embd = w.matrix("token_embd.weight", c.dim, c.vocab_size)
        self.output_norm = w.vector("output_norm.weight", c.dim)
        # no output.weight: the head is tied to the embedding (SmolLM2, Gemma 3; Gemma 2 always)
        output = None if c.tied_output else w.matrix("output.weight", c.dim, c.vocab_size, required=False)
        self.output = output or self.token_embd
        self.output_bias = w.vector("output.bias", c.vocab_size, required=False) if c.output_bias else None
        # RoPE factors: Llama 3.1's rope_freqs, or LongRoPE's pair, chosen per session by its context
        half = c.rope_dim // 2
        self.rope_freqs = self.rope_long = self.rope_short = None
        if c.rope_factors == "freqs":
            self.rope_freqs = w.vector("rope_freqs.weight", half, required=False)
        elif c.rope_factors == "long_short":
            self.rope_long = w.vector("rope_factors_long.weight", half, required=False)
            self.rope_short = w.vector("rope_factors_short.weight", half, required=False)
        self.layers = [self._layer(w, i) for i in range(c.n_layers)]
        # Round activations before each product as llama.cpp does (ops.ACT_KIND): logits land
        # closer to llama.cpp's. False computes in plain float32, where prefill and decode agree to
        # ~1e-3 instead of flipping 8-bit roundings (the tests of the cache use that).
        self.llama_rounding = True
        self._plans: dict = {}                   # Model._plan's cache

    def gemm_tails_are_rows(self) -> bool:
        """Whether every prompt product here gives the rows past a GEMM's whole 4-row tiles the bits
        of a decode row (kernels.matmul's integer GEMM: AVX-512 VNNI, llama.cpp's roundings, every
        weight of a type it takes; no routed experts). Then several prompts can share one pass: their
        whole tiles in one GEMM, their last 1-3 tokens as decode rows (the float tile GEMM sums those
        rows in another order than the decode products: 1e-6 apart on Q2_K)."""
        if not self.llama_rounding or not intgemm.available():
            return False
        for L in self.layers:
            if L.experts is not None:
                return False
            for w in (L.wq, L.wk, L.wv, L.wo, L.w_gate, L.w_up, L.w_down):
                if not (kernels.takes_q8(w.type) and kernels.KERNELS[w.type].matmul_q8 is not None):
                    return False
        return True

    def rope_for(self, n_ctx: int) -> tuple:
        """(global, local) RoPE arguments of ops.rope for a session of n_ctx positions: (theta_scale,
        freq_scale, factors, ext_factor, corr_low, corr_high, mscale), float32 as ggml computes them
        (theta_scale = powf(base, -2.0f/rope_dim)). LongRoPE's long factors apply when the session's
        context exceeds rope_ctx_orig (llama_model::get_rope_factors, n_ctx_seq > n_ctx_orig_yarn)."""
        c = self.config
        factors = self.rope_freqs
        if factors is None:
            factors = self.rope_long if n_ctx > c.rope_ctx_orig else self.rope_short
        if factors is None:
            factors = np.ones(c.rope_dim // 2, np.float32)
        factors = np.ascontiguousarray(factors, np.float32)
        f = np.float32
        exponent = f(-2.0) / f(c.rope_dim)

        def args(r):
            return (np.power(f(r.base), exponent), f(r.freq_scale), factors, f(r.ext_factor),
                    f(r.corr_dims[0]), f(r.corr_dims[1]), f(r.attn_factor))
        return args(c.rope_global), args(c.rope_local)

    def _layer(self, w: _Weights, i: int) -> LayerWeights:
        c = self.config
        p = f"blk.{i}."
        gemma = c.post_norms
        # q/k/v: separate, or one fused attn_qkv (llama_model_base::create_tensor_qkv), whose bias may
        # be fused too or come as three
        if w.has(p + "attn_qkv.weight"):
            wq, wk, wv = w.matrix(p + "attn_qkv.weight", c.dim, c.q_dim + 2 * c.kv_dim).split_rows(
                c.q_dim, c.kv_dim, c.kv_dim)
        else:
            wq = w.matrix(p + "attn_q.weight", c.dim, c.q_dim)
            wk = w.matrix(p + "attn_k.weight", c.dim, c.kv_dim)
            wv = w.matrix(p + "attn_v.weight", c.dim, c.kv_dim)
        bqkv = w.vector(p + "attn_qkv.bias", c.q_dim + 2 * c.kv_dim, required=False)
        if bqkv is not None:
            bq, bk, bv = np.split(bqkv, [c.q_dim, c.q_dim + c.kv_dim])
        else:  # optional in every loader (llama.cpp adds them only when all three exist, if fused)
            bq = w.vector(p + "attn_q.bias", c.q_dim, required=False)
            bk = w.vector(p + "attn_k.bias", c.kv_dim, required=False)
            bv = w.vector(p + "attn_v.bias", c.kv_dim, required=False)
        # feed-forward: gate/up/down; phi3's gate and up fused in ffn_up; or routed experts
        w_gate = w_up = w_down = experts = None
        if c.n_experts:
            experts = moe.Experts.load(w, p, c)
        else:
            if c.ffn_fused:
                w_gate, w_up = w.matrix(p + "ffn_up.weight", c.dim, 2 * c.hidden_dim).split_rows(
                    c.hidden_dim, c.hidden_dim)
            else:
                w_gate = w.matrix(p + "ffn_gate.weight", c.dim, c.hidden_dim)
                w_up = w.matrix(p + "ffn_up.weight", c.dim, c.hidden_dim)
            w_down = w.matrix(p + "ffn_down.weight", c.hidden_dim, c.dim)
        return LayerWeights(
            attn_norm=w.vector(p + "attn_norm.weight", c.dim),
            wq=wq, wk=wk, wv=wv,
            wo=w.matrix(p + "attn_output.weight", c.q_dim, c.dim),
            bq=bq, bk=bk, bv=bv,
            bo=w.vector(p + "attn_output.bias", c.dim, required=False),
            q_norm=w.vector(p + "attn_q_norm.weight", c.head_dim) if c.qk_norm else None,
            k_norm=w.vector(p + "attn_k_norm.weight", c.head_dim) if c.qk_norm else None,
            post_attn_norm=w.vector(p + "post_attention_norm.weight", c.dim) if gemma else None,
            ffn_norm=w.vector(p + "ffn_norm.weight", c.dim),
            w_gate=w_gate, w_up=w_up, w_down=w_down,
            b_gate=w.vector(p + "ffn_gate.bias", c.hidden_dim, required=False) if w_down else None,
            b_up=w.vector(p + "ffn_up.bias", c.hidden_dim, required=False) if w_down else None,
            b_down=w.vector(p + "ffn_down.bias", c.dim, required=False) if w_down else None,
            experts=experts,
            post_ffn_norm=w.vector(p + "post_ffw_norm.weight", c.dim) if gemma else None,
            local=c.local_layers[i],
        )

    @classmethod
    def load(cls, path, offset: int = 0, n_threads: int | None = None) -> "Model":
        """Open a GGUF (stand-alone, or embedded at byte `offset` of a larger file). n_threads: the
        kernels' thread count (default: all CPUs numba may use)."""
        gguf = GGUFFile(path, offset, populate=True)
        model = cls(gguf, ModelConfig.from_gguf(gguf))
        if n_threads is not None:
            kernels.set_threads(n_threads)
        return model

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.tokenizer.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids) -> str:
        """Text of ids, special tokens rendered (llama_detokenize)."""
        return self.tokenizer.detokenize(ids)

    def new_session(self, n_ctx: int | None = None) -> "Session":
        """A session of n_ctx positions (default: the context the model was trained with)."""
        return Session(self, n_ctx or self.config.context_length)

    def logits(self, token_ids) -> np.ndarray:
        """float32 [vocab_size]: the next-token logits after token_ids, from an empty context."""
        ids = list(token_ids)
        return Session(self, max(1, len(ids))).eval(ids)

    def check_ids(self, token_ids) -> np.ndarray:
        """token_ids as int64 [T] (T >= 1), each checked against the vocabulary."""
        ids = np.asarray(list(token_ids), dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            raise ValueError("eval needs at least one token")
        vocab = self.config.vocab_size
        if ids.min() < 0 or ids.max() >= vocab:
            bad = int(ids[(ids < 0) | (ids >= vocab)][0])
            raise ValueError(f"token id {bad} is outside the vocabulary (0..{vocab - 1})")
        return ids

    # ---- the forward pass ----

    def _project(self, x, xq, pairs, n_decode, buf: "Buffers | None" = None):
        """out = x @ W^T for each (W, out) in pairs; x [R, n]. x is rounded as llama.cpp rounds it for
        W's type (once per distinct rounding), then the kernels multiply from the raw blocks: rows
        0..n_decode-1 as decode rows (kernels.matvecs over all of them, the matrices of one type in one
        launch; each row's bits are those it gets alone), the rest in one kernels.matmul. Where the
        kernels take it (kernels.takes_q8) they get x's 8-bit form too (in buf.q8, else a new scratch),
        and multiply with integer dot products."""
        R = x.shape[0]
        B = n_decode
        scratch = buf.q8 if buf is not None else Q8Scratch()
        for lo, hi in ((0, B), (B, R)):
            if hi == lo:
                continue
            xs, xqs = x[lo:hi], xq[lo:hi]
            decode = lo == 0 and B > 0
            q8 = None
            for group, kind, int8 in self._plan(pairs, decode):
                if kind is not None:                 # a new rounding of x for this group's type
                    q8 = self._round(xqs, xs, kind, int8, scratch)
                if decode:
                    kernels.matvecs([pairs[i][0] for i in group], xqs, [pairs[i][1][:B] for i in group], q8)
                else:
                    kernels.matmul(pairs[group[0]][0], xqs, pairs[group[0]][1][B:], q8)

    def _plan(self, pairs, decode: bool):
        """The steps of _project for these weights, worked out once: [(indices of one launch's pairs,
        the rounding kind to compute first or None to keep the last one, int8)]. Decode rows group
        the pairs of one type into one launch; prompt rows take one matmul per pair."""
        rounding = self.llama_rounding
        key = (decode, rounding, *(id(w) for w, _ in pairs))
        hit = self._plans.get(key)
        if hit is not None:
            return hit[1]
        ws = [w for w, _ in pairs]
        if decode:
            by_type: dict = {}
            for i, w in enumerate(ws):
                by_type.setdefault(w.type, []).append(i)
            groups = list(by_type.values())
        else:
            groups = [[i] for i in range(len(ws))]
        steps, done = [], -1
        for group in groups:
            kind = ops.ACT_KIND[ws[group[0]].type] if rounding else ops.ACT_F32
            if kind != done:
                int8 = rounding and any(kernels.takes_q8(w.type) for w in ws if ops.ACT_KIND[w.type] == kind)
                steps.append((tuple(group), kind, int8))
                done = kind
            else:
                steps.append((tuple(group), None, False))
        self._plans[key] = (ws, steps)              # ws keeps the ids of the key alive
        return steps

    @staticmethod
    def _round(xq, x, kind, int8: bool, scratch: "Q8Scratch"):
        """xq = x rounded for `kind`; with int8 (a Q8 kind) also the 8-bit form (qs [T, n], d [T, n /
        32 or 256], s [T, n / 32]) the integer kernels take, in scratch."""
        if not int8:
            ops.round_activations(xq, x, kind)
            return None
        T, n = x.shape
        q8 = scratch.views(T, n, n // (32 if kind == ops.ACT_Q8_0 else 256))
        ops.quantize_activations(xq, *q8, x, kind)
        return q8

    def forward(self, kv: "KVCache", buf: "Buffers", ids, seq, pos, n_decode: int, logit_rows,
                hidden: bool = False) -> np.ndarray:
        """Evaluate R rows: ids, seq, pos int64 [R] (token, sequence of `kv`, position in it). Rows
        0..n_decode-1 are decode rows, each multiplied as a vector (matvec's bits): one new token of a
        sequence, a run of at most SHORT_RUN tokens, or (gemm_tails_are_rows) the last len % 4 tokens
        of a prompt. The rest are prompt rows, multiplied in one GEMM: runs of one or more sequences
        at consecutive positions, each but the last a multiple of 4 rows long (a prompt row's bits
        depend only on whether it lies in the first T // 4 * 4 rows of the GEMM). So the server reads
        several prompts in one pass, their whole 4-row tiles here and their last 1-3 rows among the
        decode rows, and every row has the bits it has alone. Each row's K and V go into the cache
        before any row attends (so rows may come in any order); each attends to its own sequence up
        to its position. -> float32 [L, vocab] logits of the rows `logit_rows` (int64 [L]), a view
        into buf (valid until the next call); with `hidden`, float32 [R, dim]: every row's state
        after the final norm (embeddings), no head."""
        c = self.config
        eps = np.float32(c.norm_eps)
        R = len(ids)
        if R > buf.rows or len(logit_rows) > buf.heads or pos.min() < 0 or pos.max() >= kv.n_ctx \
                or seq.min() < 0 or seq.max() >= kv.n_seqs:     # the kernels do not bounds-check
            raise ValueError(f"batch of {R} rows does not fit: buffers {buf.rows}/{buf.heads}, positions "
                             f"{pos.min()}..{pos.max()} of {kv.n_ctx}, sequences up to {seq.max()} of {kv.n_seqs}")
        x, xn, xq = buf.x[:R], buf.xn[:R], buf.xq[:R]
        q, k, v, att, attq = buf.q[:R], buf.k[:R], buf.v[:R], buf.att[:R], buf.attq[:R]
        o, gate, up, hq = buf.o[:R], buf.gate[:R], buf.up[:R], buf.hq[:R]
        residual_scale = np.float32(c.residual_scale)

        def moe_project(xs, xqs, pairs):
            # the router and shared experts see every row; a routed expert only its rows, which it
            # multiplies as one matrix (or one vector when it got a single row, as alone)
            rows = xs.shape[0]
            self._project(xs, xqs, pairs, n_decode if rows == R else int(rows == 1), buf)

        # token embeddings (gemma scales them by sqrt(dim), granite by embedding_scale)
        kernels.get_rows(self.token_embd, ids, x)
        if c.embed_scale != 1.0:
            x *= np.float32(c.embed_scale)

        for il, L in enumerate(self.layers):
            # attention block: norm, q/k/v, (biases), (per-head norms), RoPE, cache, attend, project
            ops.rms_norm(xn, x, L.attn_norm, eps)
            self._project(xn, xq, ((L.wq, q), (L.wk, k), (L.wv, v)), n_decode, buf)
            if L.bq is not None:
                q += L.bq
            if L.bk is not None:
                k += L.bk
            if L.bv is not None:
                v += L.bv
            if L.q_norm is not None:
                ops.head_rms_norm(q, L.q_norm, c.n_heads, eps)
                ops.head_rms_norm(k, L.k_norm, c.n_kv_heads, eps)
            if c.rope_layers:
                r = kv.rope[1] if L.local else kv.rope[0]
                ops.rope(q, pos, c.n_heads, c.head_dim, r[0], r[1], r[2], c.rope_neox, *r[3:])
                ops.rope(k, pos, c.n_kv_heads, c.head_dim, r[0], r[1], r[2], c.rope_neox, *r[3:])
            if c.attn_temp_scale:
                ops.attn_temperature(q, pos, c.attn_temp_scale, c.attn_temp_floor)
            ops.store_kv(kv.k[il], kv.v[il], k, v, seq, pos)
            window = c.sliding_window if L.local else 0
            ops.attention(att, q, kv.k[il], kv.v[il], seq, pos, window, c.q_scale, c.kq_scale, c.attn_softcap)
            self._project(att, attq, ((L.wo, o),), n_decode, buf)
            if L.bo is not None:
                o += L.bo
            if L.post_attn_norm is not None:
                ops.rms_norm(o, o, L.post_attn_norm, eps)
            if residual_scale != 1:
                o *= residual_scale
            x += o

            # feed-forward block: norm, gate and up, SiLU or GELU gate, down (or routed experts)
            ops.rms_norm(xn, x, L.ffn_norm, eps)
            if L.experts is not None:
                moe.ffn(self, moe_project, L.experts, xn, o, buf.moe)
            else:
                self._project(xn, xq, ((L.w_gate, gate), (L.w_up, up)), n_decode, buf)
                if L.b_gate is not None:
                    gate += L.b_gate
                if L.b_up is not None:
                    up += L.b_up
                if c.ffn_gelu:
                    ops.geglu(gate, gate, up)
                else:
                    ops.swiglu(gate, gate, up)
                self._project(gate, hq, ((L.w_down, o),), n_decode, buf)
                if L.b_down is not None:
                    o += L.b_down
            if L.post_ffn_norm is not None:
                ops.rms_norm(o, o, L.post_ffn_norm, eps)
            if residual_scale != 1:
                o *= residual_scale
            x += o

        if hidden:      # embeddings: every row through the final norm, no head
            ops.rms_norm(xn, x, self.output_norm, eps)
            return xn

        # output head on the wanted rows only, each as one decode row; then granite's scale and
        # gemma2's soft-capping
        n = len(logit_rows)
        hx, hxn, logits = buf.head_x[:n], buf.head_xn[:n], buf.logits[:n]
        np.take(x, logit_rows, axis=0, out=hx)
        ops.rms_norm(hxn, hx, self.output_norm, eps)
        self._project(hxn, buf.head_xq[:n], ((self.output, logits),), n, buf)
        if self.output_bias is not None:
            logits += self.output_bias
        if c.logit_scale != 1.0:
            logits *= np.float32(c.logit_scale)
        if c.final_softcap:
            cap = np.float32(c.final_softcap)
            np.tanh(logits * (np.float32(1) / cap), out=logits)
            logits *= cap
        return logits

    def shift_kv(self, kv: "KVCache", seq: int, n_keep: int, n_discard: int, n_past: int) -> None:
        """Context shift of sequence `seq`: positions n_keep+n_discard..n_past-1 move down by n_discard,
        their keys re-rotated as llama.cpp's K shift does (each layer with its own RoPE)."""
        c = self.config
        src, dst = n_keep + n_discard, n_keep
        for il, L in enumerate(self.layers):
            r = kv.rope[1] if L.local else kv.rope[0]
            ops.shift_kv(kv.k[il], kv.v[il], seq, src, dst, n_past - src, c.rope_neox, r[0], r[1], r[2], *r[3:])


class Buffers:
    """Activations for up to `rows` rows at once (and `heads` rows through the output head); allocated
    once, reused every call."""

    def __init__(self, c: ModelConfig, rows: int, heads: int = 1):
        def z(*shape):
            return np.zeros(shape, np.float32)
        self.rows = rows
        self.heads = heads
        self.x = z(rows, c.dim)               # residual stream
        self.xn = z(rows, c.dim)              # normalised input of a block
        self.xq = z(rows, c.dim)              # xn rounded like llama.cpp's activations
        self.q = z(rows, c.q_dim)
        self.k = z(rows, c.kv_dim)
        self.v = z(rows, c.kv_dim)
        self.att = z(rows, c.q_dim)           # attention output, before attn_output
        self.attq = z(rows, c.q_dim)
        self.o = z(rows, c.dim)               # a block's output, before the residual add
        self.gate = z(rows, c.hidden_dim)
        self.up = z(rows, c.hidden_dim)
        self.hq = z(rows, c.hidden_dim)
        self.head_x = z(heads, c.dim)         # the rows whose logits are wanted
        self.head_xn = z(heads, c.dim)
        self.head_xq = z(heads, c.dim)
        self.logits = z(heads, c.vocab_size)
        self.moe = moe.Buffers(c, rows) if c.n_experts else None
        self.q8 = Q8Scratch()


class Q8Scratch:
    """Room for a product's input in llama.cpp's 8-bit form (Model._round), grown once to the widest
    input seen."""

    def __init__(self):
        self.qs = np.zeros(0, np.int8)
        self.ds = np.zeros((2, 0), np.float32)
        self._views: dict = {}                    # (T, n, nb) -> views(T, n, nb), until it grows

    def views(self, T: int, n: int, nb: int):
        """(qs int8 [T, n], d float32 [T, nb], s float32 [T, n / 32]) over the scratch."""
        key = (T, n, nb)
        hit = self._views.get(key)
        if hit is not None:
            return hit
        if self.qs.size < T * n:
            self.qs = np.zeros(T * n, np.int8)
            self.ds = np.zeros((2, T * n // 32), np.float32)
            self._views = {}                      # views of the old arrays
        views = (self.qs[:T * n].reshape(T, n), self.ds[0, :T * nb].reshape(T, nb),
                 self.ds[1, :T * n // 32].reshape(T, n // 32))
        if T <= 8:                                # decode batches (prompts come in many lengths)
            self._views[key] = views
        return views


class KVCache:
    """K and V of every layer for `n_seqs` sequences of up to `n_ctx` positions each.

    k, v: uint16 [n_layers, n_seqs, n_kv_heads, n_ctx, head_dim], the fp16 bits of the values (llama.cpp's
    default F16 cache: the values were always rounded to fp16, so storing them as fp16 halves the memory
    and changes no number). lazy_zeros maps 4 KiB pages as they are written (runtime/memory.py): memory
    grows with the positions used.
    """

    def __init__(self, model: Model, n_seqs: int, n_ctx: int):
        c = model.config
        if n_ctx <= 0 or n_seqs <= 0:
            raise ValueError(f"a KV cache needs positions and sequences, got {n_ctx} x {n_seqs}")
        self.n_seqs = n_seqs
        self.n_ctx = n_ctx
        self.rope = model.rope_for(n_ctx)     # (global, local) ops.rope arguments for this context
        shape = (c.n_layers, n_seqs, c.n_kv_heads, n_ctx, c.head_dim)
        self.k = lazy_zeros(shape, np.uint16)
        self.v = lazy_zeros(shape, np.uint16)

    @staticmethod
    def bytes_per_position(c: ModelConfig) -> int:
        """K and V of one position of one sequence, every layer."""
        return 2 * c.n_layers * c.n_kv_heads * c.head_dim * 2


class Session:
    """One conversation's run state: its sequence of a KV cache (`tokens` says what it holds) and
    scratch buffers. Sessions made by `Model.new_session` have a cache of their own; the server's
    engine evaluates its slots' sequences of one shared cache through `Model.forward` directly."""

    def __init__(self, model: Model, n_ctx: int, kv: KVCache | None = None, seq: int = 0):
        self.model = model
        self.n_ctx = n_ctx
        self.kv = kv if kv is not None else KVCache(model, 1, n_ctx)
        self.seq = seq
        self.tokens: list[int] = []
        self._one = Buffers(model.config, 1)    # decode
        self._many: Buffers | None = None       # prefill, grown to the longest prompt seen
        self._short_runs = model.gemm_tails_are_rows()   # runs of <= SHORT_RUN tokens as decode rows

    def truncate(self, n: int) -> None:
        """Keep the first n cached positions (prefix reuse); later positions get overwritten."""
        if not 0 <= n <= len(self.tokens):
            raise ValueError(f"cannot truncate {len(self.tokens)} cached tokens to {n}")
        del self.tokens[n:]

    def eval(self, token_ids) -> np.ndarray:
        """Append token_ids to the context; float32 [vocab_size] logits after the last of them."""
        return self._eval(token_ids, hidden=False)[0].copy()

    def hidden(self, token_ids) -> np.ndarray:
        """Append token_ids to the context; float32 [T, dim]: each new position's hidden state after the
        final norm (llama.cpp's t_embd, what embedding pooling reads). No output head is applied."""
        return self._eval(token_ids, hidden=True).copy()

    def _eval(self, token_ids, hidden: bool) -> np.ndarray:
        ids = self.model.check_ids(token_ids)
        T = len(ids)
        pos0 = len(self.tokens)
        if pos0 + T > self.n_ctx:
            raise ValueError(f"context full: {pos0} cached + {T} new tokens exceed n_ctx {self.n_ctx}")
        if T == 1:
            buf = self._one
        else:
            if self._many is None or self._many.rows < T:
                self._many = Buffers(self.model.config, T)
            buf = self._many
        out = self.model.forward(self.kv, buf, ids, np.full(T, self.seq, np.int64),
                                 np.arange(pos0, pos0 + T, dtype=np.int64),
                                 n_decode=T if T == 1 or (T <= SHORT_RUN and self._short_runs) else 0,
                                 logit_rows=np.array([T - 1], np.int64), hidden=hidden)
        self.tokens.extend(int(i) for i in ids)
        return out

    def shift(self, n_keep: int, n_discard: int) -> None:
        """llama.cpp's context shift: drop cached positions n_keep..n_keep+n_discard-1 and move the
        later ones down, their keys re-rotated to their new positions."""
        n_past = len(self.tokens)
        if not (0 <= n_keep and 0 < n_discard and n_keep + n_discard <= n_past):
            raise ValueError(f"cannot discard {n_discard} positions after {n_keep} of {n_past}")
        self.model.shift_kv(self.kv, self.seq, n_keep, n_discard, n_past)
        del self.tokens[n_keep:n_keep + n_discard]
