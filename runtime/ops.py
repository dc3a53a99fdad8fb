"""numba kernels for everything in a layer except the weight products: norms, RoPE, attention over
the KV cache, gated activations, and the roundings through which llama.cpp's numbers pass.

Every kernel is a pure function: output (or the array it updates in place) first, every input an
argument, a shape comment on the first line. Each has a plain-numpy twin below (`*_ref`), which the
tests pin it to. Rows are float32 and C-contiguous; T is the number of positions in one call.

Why the roundings: llama.cpp keeps the KV cache in F16 and multiplies q.K and P.V in F16 (flash
attention off), and rounds activations to 8 bits (Q8_0/Q8_1/Q8_K) before each quantized dot product.
Doing the same reproduces its layers to ~1e-7 until one near-tie rounds the other way (our float
sums differ in the last bit); from then on both carry similar 8-bit noise. Measured on the golden
prompts (max |diff| over llama.cpp's top 20): SmolLM2 0.54 with the roundings, 0.87 without;
Gemma 3 0.71 with, 0.73 without.
"""
from __future__ import annotations

import math

import numpy as np

from .kernels.jit import njit, prange
from .kernels.vector_ir import f16_bits, f16_value, fma_f32, pv_rows16, pv_rows64
from .kernels.vexp import exp_sum, silu_mul

from .ggml import GGMLType

# ---- rounding like llama.cpp -----------------------------------------------------------------------

# How the activation vector is rounded before a product with a weight of each type: ggml's
# type_traits_cpu[type].vec_dot_type (Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1 for Q4_1/Q5_1, Q8_K for
# the K-quants and IQ4_XS; Q8_0 and Q8_1 hold the same values).
ACT_F32, ACT_F16, ACT_BF16, ACT_Q8_0, ACT_Q8_K = range(5)
ACT_KIND = {
    GGMLType.F32: ACT_F32, GGMLType.F16: ACT_F16, GGMLType.BF16: ACT_BF16,
    GGMLType.Q4_0: ACT_Q8_0, GGMLType.Q4_1: ACT_Q8_0, GGMLType.Q5_0: ACT_Q8_0,
    GGMLType.Q5_1: ACT_Q8_0, GGMLType.Q8_0: ACT_Q8_0,
    GGMLType.Q2_K: ACT_Q8_K, GGMLType.Q3_K: ACT_Q8_K, GGMLType.Q4_K: ACT_Q8_K,
    GGMLType.Q5_K: ACT_Q8_K, GGMLType.Q6_K: ACT_Q8_K,
    GGMLType.IQ4_NL: ACT_Q8_0, GGMLType.IQ4_XS: ACT_Q8_K,
}


@njit(cache=True, inline="always")
def _f16_round(a):
    # a float32 [n], in place: to the nearest fp16 value, ties to even, inf beyond fp16's range; as
    # ggml converts (F16C's vcvtps2ph, then vcvtph2ps), which fptrunc/fpext are and LLVM vectorizes
    for i in range(a.size):
        a[i] = f16_value(f16_bits(a[i]))


@njit(cache=True)
def f16_round(a):
    # a float32 [n] -> a, each value rounded to fp16 precision in place
    _f16_round(a)


def f16_round_ref(a):
    return a.astype(np.float16).astype(np.float32)


# The KV cache holds fp16 values as their bits (uint16: numba has no float16 arrays), converted one
# value at a time by kernels.vector_ir's f16_bits (float32 -> fp16 bits, to nearest even, overflow to
# inf, as ggml's fp32 -> fp16) and f16_value (fp16 bits -> float32, exact). Their numpy twins:

def f16_bits_ref(a):
    return np.asarray(a, np.float32).astype(np.float16).view(np.uint16)


def f16_value_ref(h):
    return np.asarray(h, np.uint16).view(np.float16).astype(np.float32)


@njit(cache=True, inline="always")
def _quantize_q8_0(out, qs, d, s, x):
    # x float32 [n] -> qs int8 [n], d [n / 32], s [n / 32], out = qs * d: quantize_row_q8_0 / q8_1 on
    # x86 (d = amax/127 stored as fp16, q = round-half-even(x * 127/amax); Q8_1's s = fp16(d * sum q)
    # with d before its fp16 rounding)
    d16 = np.empty(1, np.float32)
    for b in range(x.shape[0] // 32):
        b0 = 32 * b
        amax = np.float32(0.0)
        for i in range(b0, b0 + 32):
            amax = max(amax, abs(x[i]))
        draw = amax / np.float32(127.0)
        d16[0] = draw
        _f16_round(d16)
        d[b] = d16[0]
        iscale = np.float32(127.0) / amax if amax != 0 else np.float32(0.0)
        total = np.int32(0)
        for i in range(b0, b0 + 32):
            q = np.float32(np.rint(x[i] * iscale))
            qs[i] = np.int8(q)
            total += np.int32(q)
            out[i] = q * d16[0]
        d16[0] = draw * np.float32(total)
        _f16_round(d16)
        s[b] = d16[0]


@njit(cache=True, inline="always")
def _quantize_q8_k(out, qs, d, x):
    # x float32 [n] -> qs int8 [n], d [n / 256], out = qs * d: quantize_row_q8_K_ref (iscale =
    # -127/max, d = 1/iscale in float32)
    for b in range(x.shape[0] // 256):
        b0 = 256 * b
        amax = np.float32(0.0)
        vmax = np.float32(0.0)
        for i in range(b0, b0 + 256):
            if abs(x[i]) > amax:
                amax = abs(x[i])
                vmax = x[i]
        if amax == 0:
            d[b] = 0
            for i in range(b0, b0 + 256):
                out[i] = 0
                qs[i] = 0
            continue
        iscale = np.float32(-127.0) / vmax
        d[b] = np.float32(1.0) / iscale
        for i in range(b0, b0 + 256):
            q = np.float32(min(np.float32(127.0), np.rint(iscale * x[i])))
            qs[i] = np.int8(q)
            out[i] = q * d[b]


@njit(cache=True)
def quantize_activations(out, qs, d, s, x, kind):
    # x float32 [T, n] -> qs int8 [T, n], d float32 [T, n / 32 (ACT_Q8_0) or n / 256 (ACT_Q8_K)],
    # s float32 [T, n / 32] (ACT_Q8_0: Q8_1's fp16 d * sum of each block's q; ACT_Q8_K: not written)
    # and out [T, n] = the rounded values round_activations gives (qs * d): the 8-bit form the
    # integer kernels multiply with
    for t in range(x.shape[0]):
        if kind == ACT_Q8_0:
            _quantize_q8_0(out[t], qs[t], d[t], s[t], x[t])
        else:
            _quantize_q8_k(out[t], qs[t], d[t], x[t])


@njit(cache=True)
def round_activations(out, x, kind):
    # x float32 [T, n] -> out [T, n]: the values llama.cpp's dot product sees for a weight whose
    # vec_dot_type is `kind` (quantize_row_q8_0 / q8_1 on x86, quantize_row_q8_K_ref, both as in
    # quantize_activations; GGML_FP32_TO_BF16 ties to even)
    # (element loops rather than `out[:] = x`: a slice assignment drags numba's shape-mismatch error
    # formatting into the compile, ~3 s of a first launch)
    T, n = x.shape
    qs = np.empty(n, np.int8)                 # the 8-bit form, not kept here
    d = np.empty(n // 32, np.float32)
    s = np.empty(n // 32, np.float32)
    for t in range(T):
        row = out[t]
        if kind == ACT_F32 or kind == ACT_F16:
            for i in range(n):
                row[i] = x[t, i]
            if kind == ACT_F16:
                _f16_round(row)
        elif kind == ACT_BF16:
            src = x[t].view(np.uint32)
            dst = row.view(np.uint32)
            for i in range(n):
                b = src[i]
                dst[i] = ((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1)))
                          >> np.uint32(16)) << np.uint32(16)
        elif kind == ACT_Q8_0:
            _quantize_q8_0(row, qs, d, s, x[t])
        else:  # ACT_Q8_K
            _quantize_q8_k(row, qs, d, x[t])


def round_activations_ref(x, kind):
    x = np.asarray(x, np.float32)
    if kind == ACT_F32:
        return x.copy()
    if kind == ACT_F16:
        return f16_round_ref(x)
    if kind == ACT_BF16:
        b = x.view(np.uint32).astype(np.uint64)
        return (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
    return quantize_activations_ref(x, kind)[0]


def quantize_activations_ref(x, kind):
    """x float32 [T, n] -> (out, qs, d, s) as quantize_activations writes them (s: ACT_Q8_0 only)."""
    x = np.asarray(x, np.float32)
    T, n = x.shape
    if kind == ACT_Q8_0:
        blocks = x.reshape(T, n // 32, 32)
        amax = np.abs(blocks).max(axis=2)
        draw = (amax / np.float32(127)).astype(np.float32)
        d = f16_round_ref(draw)
        with np.errstate(divide="ignore"):
            iscale = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
        q = np.rint(blocks * iscale[..., None])
        s = f16_round_ref((draw * q.sum(axis=2)).astype(np.float32))
        return ((q * d[..., None]).astype(np.float32).reshape(T, n), q.astype(np.int8).reshape(T, n),
                d, s)
    blocks = x.reshape(T, n // 256, 256)
    where = np.abs(blocks).argmax(axis=2)[..., None]
    vmax = np.take_along_axis(blocks, where, axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = (np.float32(-127) / vmax).astype(np.float32)
        d = (np.float32(1) / iscale).astype(np.float32)
        q = np.where(vmax != 0, np.minimum(np.float32(127), np.rint(iscale * blocks)), 0)
        out = np.where(vmax != 0, (q * d).astype(np.float32), np.float32(0))
    return (out.reshape(T, n), q.astype(np.int8).reshape(T, n), np.where(vmax != 0, d, 0)[..., 0],
            np.zeros((T, n // 32), np.float32))


# ---- normalisation ---------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _rms_scale(x, eps):
    # 1 / sqrt(mean(x^2) + eps) as ggml_compute_forward_rms_norm_f32: float32 squares summed in
    # double, the mean rounded to float32, then float32 arithmetic (not fastmath: the order matters)
    ss = 0.0
    for i in range(x.shape[0]):
        ss += np.float64(x[i] * x[i])
    mean = np.float32(ss / x.shape[0])
    return np.float32(1.0) / np.float32(math.sqrt(mean + eps))


@njit(cache=True)
def rms_norm(out, x, w, eps):
    # x [T, n], w [n], eps float32 -> out [T, n] = (x * rms_scale) * w   (out may be x)
    T, n = x.shape
    for t in range(T):
        scale = _rms_scale(x[t], eps)
        for i in range(n):
            out[t, i] = (x[t, i] * scale) * w[i]


def rms_norm_ref(x, w, eps):
    mean = (x * x).astype(np.float64).mean(axis=-1, keepdims=True).astype(np.float32)
    scale = np.float32(1) / np.sqrt(mean + np.float32(eps))
    return (x * scale) * w


@njit(cache=True)
def head_rms_norm(x, w, n_heads, eps):
    # x [T, n_heads * hd], w [hd]: RMS norm of every head in place (gemma3 attn_q_norm / attn_k_norm)
    T = x.shape[0]
    hd = w.shape[0]
    for t in range(T):
        for h in range(n_heads):
            seg = x[t, h * hd:(h + 1) * hd]
            scale = _rms_scale(seg, eps)
            for i in range(hd):
                seg[i] = (seg[i] * scale) * w[i]


def head_rms_norm_ref(x, w, n_heads, eps):
    T = x.shape[0]
    return rms_norm_ref(x.reshape(T, n_heads, -1), w, eps).reshape(T, -1)


# ---- rotary position embedding ---------------------------------------------------------------------

@njit(cache=True, inline="always")
def _rope_angles(cos, sin, p, theta_scale, freq_scale, factors, ext_factor, corr_low, corr_high, mscale):
    # cos, sin float32 [rope_dim/2] for position p, as ggml_rope_cache_init computes them in float32:
    # theta_i = p * theta_scale^i by repeated multiplication, divided by the rope factor, times the
    # linear scale; under YaRN (ext_factor != 0) blended back towards the unscaled angle over the
    # correction range and the magnitude raised by 1 + 0.1 ln(1/freq_scale) (rope_yarn); cos and
    # sin times mscale (the attention factor of YaRN and LongRoPE, else 1)
    theta = np.float32(p)
    for i in range(cos.shape[0]):
        extrap = theta / factors[i]
        angle = freq_scale * extrap
        m = mscale
        if ext_factor != 0.0:
            y = (np.float32(i) - corr_low) / max(np.float32(0.001), corr_high - corr_low)
            ramp = (np.float32(1.0) - min(np.float32(1.0), max(np.float32(0.0), y))) * ext_factor
            angle = angle * (np.float32(1.0) - ramp) + extrap * ramp
            m = m * (np.float32(1.0) + np.float32(0.1) * np.float32(math.log(np.float32(1.0) / freq_scale)))
        cos[i] = np.float32(math.cos(angle)) * m
        sin[i] = np.float32(math.sin(angle)) * m
        theta = theta * theta_scale


@njit(cache=True)
def rope(x, pos, n_heads, head_dim, theta_scale, freq_scale, factors, neox,
         ext_factor, corr_low, corr_high, mscale):
    # x [T, n_heads * head_dim] in place; row t is at position pos[t] (int64 [T]; rows of a batch may
    # belong to different sequences; a negative position rotates back, as llama.cpp's K shift does);
    # theta_scale float32
    # (base^(-2/rope_dim)), freq_scale float32 (1 / linear factor), factors float32 [rope_dim/2]
    # (rope_freqs or LongRoPE factors, else ones), ext_factor, corr_low, corr_high, mscale float32
    # (YaRN; 0, 0, 0, 1 without). Pairs (2i, 2i+1) in llama.cpp's NORM mode, (i, i + rope_dim/2) in
    # NEOX mode; dimensions past rope_dim are left alone.
    T = x.shape[0]
    half = factors.shape[0]
    cos = np.empty(half, np.float32)
    sin = np.empty(half, np.float32)
    for t in range(T):
        _rope_angles(cos, sin, pos[t], theta_scale, freq_scale, factors, ext_factor, corr_low,
                     corr_high, mscale)
        for h in range(n_heads):
            base = h * head_dim
            for i in range(half):
                if neox:
                    a, b = base + i, base + i + half
                else:
                    a, b = base + 2 * i, base + 2 * i + 1
                x0 = x[t, a]
                x1 = x[t, b]
                # as rotate_pairs compiles (gcc contracts into one fma each, the other product
                # rounded): x0 cos - x1 sin, x0 sin + x1 cos
                x[t, a] = fma_f32(x0, cos[i], -(x1 * sin[i]))
                x[t, b] = fma_f32(x0, sin[i], x1 * cos[i])


def rope_ref(x, pos, n_heads, head_dim, theta_scale, freq_scale, factors, neox,
             ext_factor=0.0, corr_low=0.0, corr_high=0.0, mscale=1.0):
    f = np.float32
    T = x.shape[0]
    half = len(factors)
    theta = np.empty((T, half), np.float32)
    for t in range(T):                           # p * theta_scale^i by repeated float32 products
        th = f(pos[t])
        for i in range(half):
            theta[t, i] = th
            th = f(th * f(theta_scale))
    extrap = theta / factors.astype(np.float32)
    angle = f(freq_scale) * extrap
    m = f(mscale)
    if ext_factor:
        y = (np.arange(half, dtype=np.float32) - f(corr_low)) / max(f(0.001), f(corr_high) - f(corr_low))
        ramp = (f(1) - np.clip(y, 0, 1)).astype(np.float32) * f(ext_factor)
        angle = angle * (f(1) - ramp) + extrap * ramp
        m = f(m * (f(1) + f(0.1) * f(np.log(f(1) / f(freq_scale)))))
    cos = (np.cos(angle.astype(np.float64)).astype(np.float32) * m)[:, None, :]
    sin = (np.sin(angle.astype(np.float64)).astype(np.float32) * m)[:, None, :]
    h = x.reshape(T, n_heads, head_dim).copy()
    if neox:
        a, b = h[..., :half].copy(), h[..., half:2 * half].copy()
        h[..., :half], h[..., half:2 * half] = a * cos - b * sin, a * sin + b * cos
    else:
        a, b = h[..., 0:2 * half:2].copy(), h[..., 1:2 * half:2].copy()
        h[..., 0:2 * half:2], h[..., 1:2 * half:2] = a * cos - b * sin, a * sin + b * cos
    return h.reshape(T, -1)


# ---- attention -------------------------------------------------------------------------------------

@njit(cache=True)
def store_kv(k_cache, v_cache, k, v, seq, pos):
    # k, v float32 [T, n_kv * hd] -> k_cache, v_cache uint16 [n_seqs, n_kv, n_ctx, hd] (fp16 bits, as
    # llama.cpp's default F16 cache): row t goes to sequence seq[t] at position pos[t]
    _, n_kv, _, hd = k_cache.shape
    T = k.shape[0]
    for t in range(T):
        for h in range(n_kv):
            kr = k_cache[seq[t], h, pos[t]]
            vr = v_cache[seq[t], h, pos[t]]
            for i in range(hd):
                kr[i] = f16_bits(k[t, h * hd + i])
                vr[i] = f16_bits(v[t, h * hd + i])


def store_kv_ref(k_cache, v_cache, k, v, seq, pos):
    n_kv, hd = k_cache.shape[1], k_cache.shape[3]
    for t in range(k.shape[0]):
        k_cache[seq[t], :, pos[t]] = f16_bits_ref(k[t].reshape(n_kv, hd))
        v_cache[seq[t], :, pos[t]] = f16_bits_ref(v[t].reshape(n_kv, hd))


@njit(cache=True)
def shift_kv(k_cache, v_cache, seq, src, dst, n, neox, theta_scale, freq_scale, factors, ext_factor, corr_low,
             corr_high, mscale):
    # llama.cpp's context shift for one layer: positions src..src+n-1 of sequence `seq` move to
    # dst..dst+n-1 (dst < src) in k_cache, v_cache uint16 [n_seqs, n_kv, n_ctx, hd]; each moved key is
    # rotated by dst - src positions (rope at that negative position with the layer's RoPE arguments,
    # in float32, stored back as fp16: ggml's K shift). Moving in increasing order never overwrites a
    # position still to be read.
    _, n_kv, _, head_dim = k_cache.shape
    k_rot = np.empty((1, n_kv * head_dim), np.float32)
    pos = np.empty(1, np.int64)
    pos[0] = dst - src
    for j in range(n):
        for h in range(n_kv):
            for i in range(head_dim):
                k_rot[0, h * head_dim + i] = f16_value(k_cache[seq, h, src + j, i])
        rope(k_rot, pos, n_kv, head_dim, theta_scale, freq_scale, factors, neox, ext_factor, corr_low,
             corr_high, mscale)
        for h in range(n_kv):
            for i in range(head_dim):
                k_cache[seq, h, dst + j, i] = f16_bits(k_rot[0, h * head_dim + i])
                v_cache[seq, h, dst + j, i] = v_cache[seq, h, src + j, i]


@njit(cache=True, fastmath=False)
def _softmax(x):
    # x [n] in place (the row of one query's scores). fastmath=False said explicitly: a callee that
    # leaves it unset inherits its caller's (attention's) fast flags, which would then reach
    # kernels.vexp's operations, whose rounding steps must stay as written
    # (ggml_compute_forward_soft_max_f32: ggml_vec_soft_max_f32, whose exp is kernels.vexp's, then
    # times the float of 1 / the double sum)
    m = x[0]
    for i in range(1, x.size):
        m = max(m, x[i])
    inv = np.float32(1.0 / exp_sum(x, m))
    for i in range(x.size):
        x[i] *= inv


@njit(cache=True)
def softmax(x):
    # x [n] in place -> exp(x - max) / sum
    _softmax(x)


def softmax_ref(x):
    e = np.exp(x.astype(np.float64) - x.max())
    return (e / e.sum()).astype(np.float32)


@njit(cache=True, fastmath=True)
def _attend(out, q, k_cache, v_cache, t, h, s, last, window, q_scale, kq_scale, softcap):
    # one (query t, head h) of `attention`, over sequence s up to position `last`, in its own function:
    # inlined into the prange body it took numba's parallel lowering 3 s to compile on a first launch
    hd = k_cache.shape[3]
    kv = h // (q.shape[1] // hd // k_cache.shape[1])
    first = max(0, last - window + 1) if window > 0 else 0
    qh = np.empty(hd, np.float32)
    for i in range(hd):
        qh[i] = q[t, h * hd + i] * q_scale
    _f16_round(qh)
    scores = np.empty(last + 1 - first, np.float32)
    for j in range(first, last + 1):
        kr = k_cache[s, kv, j]
        dot = np.float32(0.0)
        for i in range(hd):
            dot += qh[i] * f16_value(kr[i])
        if softcap != 0.0:
            dot = np.float32(math.tanh(dot * (np.float32(1.0) / softcap))) * softcap
        scores[j - first] = dot * kq_scale
    _softmax(scores)
    _f16_round(scores)
    acc = np.zeros(hd, np.float32)
    values = v_cache[s, kv]                       # P.V with the accumulators in registers
    c = 0
    while c + 64 <= hd:
        pv_rows64(acc, scores, values, first, c)
        c += 64
    while c + 16 <= hd:
        pv_rows16(acc, scores, values, first, c)
        c += 16
    for j in range(first, last + 1):              # head sizes that are not a multiple of 16
        p = scores[j - first]
        for i in range(c, hd):
            acc[i] += p * f16_value(values[j, i])
    for i in range(hd):
        out[t, h * hd + i] = acc[i]


@njit(parallel=True, cache=True)
def attention(out, q, k_cache, v_cache, seq, pos, window, q_scale, kq_scale, softcap):
    # q [T, n_heads * hd], k_cache/v_cache uint16 [n_seqs, n_kv, n_ctx, hd] (fp16 bits),
    # seq, pos int64 [T] -> out [T, n_heads * hd]
    # Row t is the query at position pos[t] of sequence seq[t] (rows of one batch may belong to
    # different sequences). Causal: it sees keys 0..pos[t] of its sequence, or only the last `window`
    # of them (window > 0; llama.cpp masks p1 - p0 >= n_swa). Query head h reads key/value head
    # h // (n_heads / n_kv). As llama.cpp without flash attention: q is scaled and rounded to fp16
    # for q.K (the cache is F16), the softmax of kq_scale * q.K is rounded to fp16 for P.V.
    # softcap float32 > 0 (gemma2) caps q.K first: softcap * tanh(q.K / softcap), as ggml_scale,
    # ggml_tanh, ggml_scale in llama.cpp's build_attn_mha.
    # Jobs take rows from both ends in turn (t = 0, T-1, 1, T-2, ...): numba's prange hands each
    # thread one contiguous range of jobs, and a causal row's work grows with t, so in plain order
    # the last thread got three quarters of a prefill's attention.
    T = q.shape[0]
    n_heads = q.shape[1] // k_cache.shape[3]
    for job in prange(T * n_heads):
        i = job // n_heads
        t = i // 2 if i % 2 == 0 else T - 1 - i // 2
        _attend(out, q, k_cache, v_cache, t, job % n_heads, seq[t], pos[t], window, q_scale, kq_scale,
                softcap)


def attention_ref(q, k_cache, v_cache, seq, pos, window, q_scale, kq_scale, softcap=0.0):
    T = q.shape[0]
    _, n_kv, _, hd = k_cache.shape
    n_heads = q.shape[1] // hd
    out = np.zeros((T, n_heads * hd), np.float32)
    for t in range(T):
        last = pos[t]
        first = max(0, last - window + 1) if window > 0 else 0
        keys = f16_value_ref(k_cache[seq[t], :, first:last + 1])
        values = f16_value_ref(v_cache[seq[t], :, first:last + 1])
        for h in range(n_heads):
            kv = h // (n_heads // n_kv)
            qh = f16_round_ref(q[t, h * hd:(h + 1) * hd] * np.float32(q_scale))
            scores = keys[kv] @ qh
            if softcap:
                scores = np.tanh(scores * (np.float32(1) / np.float32(softcap))) * np.float32(softcap)
            scores = scores * np.float32(kq_scale)
            p = f16_round_ref(softmax_ref(scores))
            out[t, h * hd:(h + 1) * hd] = p @ values[kv]
    return out


def attn_temperature(q, pos, scale, floor):
    # q [T, n] in place, pos int64 [T]: row t times 1 + scale * log(floor(pos[t] / floor) + 1), the
    # Llama 4 temperature tuning of mistral3 (llm_graph_input_attn_temp, computed in double there)
    steps = np.floor(np.asarray(pos).astype(np.float32) / np.float32(floor)).astype(np.float64)
    temp = np.log(steps + 1.0) * np.float64(np.float32(scale)) + 1.0
    q *= temp.astype(np.float32)[:, None]


# ---- gated feed-forward activations ----------------------------------------------------------------

GELU_COEF_A = 0.044715
SQRT_2_OVER_PI = 0.79788456080286535587989211986876


@njit(cache=True, fastmath=False)
def swiglu(out, gate, up):
    # gate, up [T, n] -> out [T, n] = silu(gate) * up
    # (ggml_vec_swiglu_f32: ggml_v_silu on whole vectors, x / (1 + expf(-x)) on the rest; kernels.vexp)
    for t in range(gate.shape[0]):
        silu_mul(out[t], gate[t], up[t])


def swiglu_ref(gate, up):
    g = gate.astype(np.float64)
    return (g / (1.0 + np.exp(-g)) * up).astype(np.float32)


def _gelu_f16_table():
    # float32 [65536]: ggml_table_gelu_f16 (built by ggml_cpu_init), indexed by the fp16 bits of x.
    # ggml_gelu_f32 computes 0.5f*x*(1.0f + tanhf(SQRT_2_OVER_PI*x*(1.0f + GELU_COEF_A*x*x))) in
    # float32, and GCC (-march=native, FMA) contracts 1.0f + GELU_COEF_A*x*x into
    # fma(GELU_COEF_A*x, x, 1.0f). Below x = -2, 1 + tanh(..) keeps few float32 digits, so a float64
    # GELU rounds to another fp16 value on 269 of the 63488 finite inputs, a bias Gemma 3's large
    # post-FFN norms amplify. This equals llama.cpp's table (libggml-cpu.so of llama-cpp-python
    # 0.3.36) on every finite entry (scripts/trace_llamacpp.py).
    x = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(all="ignore"):
        ax = np.float32(GELU_COEF_A) * x
        inner = (ax.astype(np.float64) * x + 1.0).astype(np.float32)   # the fma (exact in float64)
        arg = (np.float32(SQRT_2_OVER_PI) * x) * inner
        t = np.tanh(arg.astype(np.float64)).astype(np.float32)           # tanhf, correctly rounded
        y = (np.float32(0.5) * x) * (np.float32(1.0) + t)
    return y.astype(np.float16).astype(np.float32)


GELU_F16_TABLE = _gelu_f16_table()


@njit(cache=True)
def geglu_table(out, gate, up, table):
    # gate, up [T, n], table float32 [65536] -> out [T, n] = gelu(gate) * up, as ggml_vec_geglu_f32
    # with GGML_GELU_FP16: x rounded to fp16 indexes ggml's GELU table; x <= -10 gives 0, x >= 10 x
    T, n = gate.shape
    for t in range(T):
        for i in range(n):
            g = gate[t, i]
            if g <= -10.0:
                out[t, i] = 0.0
            elif g >= 10.0:
                out[t, i] = g * up[t, i]
            else:
                out[t, i] = table[f16_bits(g)] * up[t, i]


def geglu(out, gate, up):
    # gate, up [T, n] -> out [T, n] = gelu(gate) * up with ggml's table
    geglu_table(out, gate, up, GELU_F16_TABLE)


def geglu_ref(gate, up):
    y = GELU_F16_TABLE[gate.astype(np.float16).view(np.uint16)]
    y = np.where(gate <= -10, np.float32(0), np.where(gate >= 10, gate, y))
    return (y * up).astype(np.float32)
