"""ModelConfig: the model's blueprint, built once from GGUF metadata and passed explicitly.

`ModelConfig.from_gguf(gguf_file)` is the only place that reads hyperparameters; every key it reads
is named below with its default beside it. Derived sizes (head_dim, n_rep, ...) are computed there
once. What differs between the supported architectures is expressed as plain fields, so the forward
pass in model.py reads the config and never the architecture name; `ARCHITECTURES` holds the fixed
traits of each family, and from_gguf the keys some families read on top.

Provenance: llama.cpp src/llama-model.cpp (`llama_model_base::load_hparams`, `llama_model_rope_type`,
`create_tensor_qkv`), src/llama-context.cpp (RoPE and YaRN parameters), src/llama-hparams.cpp
(`set_swa_pattern`) and src/models/{llama,qwen2,qwen3,qwen3moe,phi3,gemma2,gemma3,granite,granite-moe,mistral3}.cpp.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ggml import SUPPORTED_TYPES, GGMLType, Keys, type_name
from .pretokenize import PRE_TOKENIZERS


class ModelError(ValueError):
    """The GGUF holds a model this runtime cannot run (architecture, hyperparameter, tensor type)."""


@dataclass(frozen=True)
class ArchTraits:
    """What one `general.architecture` fixes in llama.cpp's graph, whatever the file says."""
    label: str                   # the families it covers, for `chatfile inspect` and the README
    rope_neox: bool              # LLAMA_ROPE_TYPE_NEOX: pairs (i, i + rope_dim/2), else (2i, 2i+1)
    rope_factors: str            # "freqs": rope_freqs (or long/short under longrope), "long_short", ""
    qk_norm: bool = False        # attn_q_norm / attn_k_norm on every head before RoPE
    gemma: bool = False          # sqrt(dim) embedding scale, post norms, GELU FFN, tied head, q pre-scaled
    q_prescaled: bool = False    # q *= 1/sqrt(head_dim) before q.k, kq_scale 1 (phi3; gemma below)
    ffn_fused: bool = False      # ffn_up holds gate and up ([dim, 2*ff]), no ffn_gate (phi3)
    moe: str = ""                # "": dense; "optional": experts when expert_count > 0; "required"
    swa_pattern: int = 0         # default period of the sliding-window layers (0: none)
    rope_dim_free: bool = False  # rope.dimension_count may be less than the head (partial RoPE)


ARCHITECTURES: dict[str, ArchTraits] = {
    "llama": ArchTraits("Llama 1-3.x, Mistral, Mixtral, SmolLM, TinyLlama", False, "freqs", moe="optional"),
    "mistral3": ArchTraits("Ministral 3, Mistral Small 3.x", False, "freqs", moe="optional"),
    "granite": ArchTraits("IBM Granite 3.x", False, "freqs", moe="optional"),
    "granitemoe": ArchTraits("IBM Granite 3.x MoE", False, "freqs", moe="optional"),
    "qwen2": ArchTraits("Qwen 2, Qwen 2.5", True, ""),
    "qwen3": ArchTraits("Qwen 3", True, "", qk_norm=True),
    "qwen3moe": ArchTraits("Qwen 3 MoE", True, "", qk_norm=True, moe="required"),
    "phi3": ArchTraits("Phi-3, Phi-3.5, Phi-4-mini", True, "long_short", q_prescaled=True,
                       ffn_fused=True, rope_dim_free=True),
    "gemma2": ArchTraits("Gemma 2", True, "", gemma=True, swa_pattern=2, rope_dim_free=True),
    "gemma3": ArchTraits("Gemma 3", True, "", qk_norm=True, gemma=True, swa_pattern=6, rope_dim_free=True),
}
SUPPORTED_ARCHITECTURES = tuple(sorted(ARCHITECTURES))
GRANITE = ("granite", "granitemoe")      # the logit, residual, embedding and attention multipliers
# keys llama.cpp reads as one value or one per layer (get_key_or_arr)
PER_LAYER_KEYS = (Keys.FEED_FORWARD_LENGTH, Keys.HEAD_COUNT, Keys.HEAD_COUNT_KV)

# rope.scaling.type values (llama_rope_scaling_type_from_string); absent means "linear"
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")
# YaRN correction range as llama-cpp-python passes it (Llama(yarn_beta_fast=32.0, yarn_beta_slow=1.0)),
# which overrides any value in the file
YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0


@dataclass(frozen=True)
class RopeConfig:
    """One kind of layer's rotary embedding, as ggml_rope_ext receives it."""
    base: float                  # frequency base
    freq_scale: float            # 1 / linear factor (positions are multiplied by it)
    ext_factor: float            # YaRN extrapolation mix: 1 under YaRN, else 0
    attn_factor: float           # cos and sin are multiplied by it (YaRN and LongRoPE magnitude)
    corr_dims: tuple             # YaRN correction range (low, high) in dimensions


@dataclass(frozen=True)
class ModelConfig:
    arch: str                    # general.architecture
    name: str                    # general.name, for display
    dim: int                     # residual stream width (embedding_length)
    hidden_dim: int              # feed-forward width (of one expert's FFN under MoE)
    n_layers: int
    n_heads: int                 # query heads
    n_kv_heads: int              # key/value heads (grouped-query attention when < n_heads)
    head_dim: int                # per-head width of q and k (attention.key_length)
    vocab_size: int
    context_length: int          # the context the model was trained with (a run's own: Session.n_ctx)
    norm_eps: float              # RMS norm epsilon
    # rotary position embedding
    rope_dim: int                # leading dimensions of each head that are rotated (n_rot)
    rope_neox: bool              # pairs (i, i + rope_dim/2) (GPT-NeoX) instead of (2i, 2i+1)
    rope_global: RopeConfig      # full-attention layers
    rope_local: RopeConfig       # sliding-window layers
    rope_ctx_orig: int           # n_ctx_orig_yarn: a context above it selects rope_factors_long
    rope_layers: bool            # False: no RoPE at all (granite with rope.scaling.finetuned = false)
    rope_factors: str            # which factor tensors the family reads: "freqs", "long_short", ""
    # attention
    sliding_window: int          # window of the local layers in positions; 0 = none
    local_layers: tuple          # per layer: True when it uses the sliding window
    q_scale: float               # queries are multiplied by this before q.k (gemma, phi3), else 1
    kq_scale: float              # q.k is multiplied by this before the softmax (llama), else 1
    attn_softcap: float          # q.k -> cap * tanh(q.k / cap) before the softmax (gemma2); 0 = none
    attn_temp_scale: float       # q *= 1 + scale * log(floor(pos / attn_temp_floor) + 1) (mistral3); 0 = none
    attn_temp_floor: int
    # architecture features
    embed_scale: float           # token embeddings are multiplied by this (gemma: sqrt(dim), granite)
    residual_scale: float        # block outputs are multiplied by this before the residual add (granite)
    logit_scale: float           # logits are multiplied by this (granite: 1 / logit_scale)
    final_softcap: float         # logits -> cap * tanh(logits / cap) (gemma2); 0 = none
    ffn_gelu: bool               # GELU(tanh)-gated feed-forward (gemma) instead of SiLU (SwiGLU)
    ffn_fused: bool              # ffn_up holds gate and up rows (phi3)
    qk_norm: bool                # per-head RMS norms of q and k (attn_q_norm, attn_k_norm)
    post_norms: bool             # RMS norms on the attention and FFN outputs before the residual add
    tied_output: bool            # the head is always token_embd (gemma2 ignores output.weight)
    output_bias: bool            # output.bias is read (qwen2)
    # mixture of experts (n_experts = 0: a dense FFN)
    n_experts: int
    n_experts_used: int
    expert_norm: bool            # the chosen experts' softmax weights are renormalised to sum 1
    expert_weights_scale: float  # and then multiplied by this (0 or 1 = not)
    shared_hidden_dim: int       # width of a shared expert FFN added to the routed ones (granite); 0 = none
    # embeddings
    pooling: str | None = None   # pooling_type the GGUF declares ("none", "mean", "cls", "last", "rank")

    @property
    def n_rep(self) -> int:
        """Query heads sharing one key/value head."""
        return self.n_heads // self.n_kv_heads

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def family(self) -> str:
        return ARCHITECTURES[self.arch].label

    @classmethod
    def from_gguf(cls, gguf_file) -> "ModelConfig":
        """Read the hyperparameters of `gguf_file` (a runtime.gguf.GGUFFile). Raises ModelError for an
        unsupported architecture or a missing required key."""
        meta = gguf_file.metadata
        arch = meta.get(Keys.ARCHITECTURE)
        traits = ARCHITECTURES.get(arch)
        if traits is None:
            raise ModelError(f"unsupported model architecture {arch!r} "
                             f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")

        def get(key: str, default=None, kind=int):
            full = key.format(arch=arch)
            value = meta.get(full, default)
            if value is None:
                raise ModelError(f"{arch} model: metadata key {full!r} is missing")
            if isinstance(value, (np.ndarray, list)) and key in PER_LAYER_KEYS:
                value = _per_layer(full, value, meta.get(Keys.BLOCK_COUNT.format(arch=arch)), arch)
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise ModelError(f"{arch} model: metadata key {full!r} has the invalid value "
                                 f"{str(value)[:40]!r}")

        def has(key: str) -> bool:
            return key.format(arch=arch) in meta

        embd = gguf_file.tensors.get("token_embd.weight")
        if embd is None:
            raise ModelError(f"{arch} model: tensor 'token_embd.weight' is missing")

        # ---- common keys (llama_model_base::load_hparams) ----
        dim = get(Keys.EMBEDDING_LENGTH)                                  # required
        n_layers = get(Keys.BLOCK_COUNT)                                  # required
        if n_layers > len(gguf_file.tensors):          # each layer has tensors of its own
            raise ModelError(f"{arch} model: block count {n_layers} is more than the file's "
                             f"{len(gguf_file.tensors)} tensors allow")
        hidden_dim = get(Keys.FEED_FORWARD_LENGTH, 0)                     # MoE files may omit it
        n_heads = get(Keys.HEAD_COUNT)                                    # required
        n_kv_heads = get(Keys.HEAD_COUNT_KV, n_heads)                     # default: no GQA
        head_dim = get(Keys.KEY_LENGTH, dim // n_heads if n_heads else 0)
        head_dim_v = get(Keys.VALUE_LENGTH, dim // n_heads if n_heads else 0)
        vocab_size = get(Keys.VOCAB_SIZE, embd.n_rows)                    # default: embedding rows
        context_length = get(Keys.CONTEXT_LENGTH)                         # required
        norm_eps = get(Keys.LAYERNORM_RMS_EPS, kind=float)                # required by every family here
        rope_dim = get(Keys.ROPE_DIMENSION_COUNT, head_dim)               # default: whole head
        rope_base = get(Keys.ROPE_FREQ_BASE, 10000.0, float)              # llama.cpp's default
        rope_scaling = get(Keys.ROPE_SCALING_TYPE, "linear", str)         # llama.cpp's default
        rope_factor = get(Keys.ROPE_SCALING_FACTOR, get(Keys.ROPE_SCALE_LINEAR, 0.0, float), float)
        rope_attn_factor = get(Keys.ROPE_SCALING_ATTN_FACTOR, 1.0, float)
        rope_ctx_orig = get(Keys.ROPE_SCALING_ORIG_CTX_LEN, context_length)
        yarn_log_mul = get(Keys.ROPE_SCALING_YARN_LOG_MUL, 0.0, float) if arch == "mistral3" else 0.0
        n_experts = get(Keys.EXPERT_COUNT, 0)
        n_experts_used = get(Keys.EXPERT_USED_COUNT, 0) if n_experts else 0
        pooling_type = get(Keys.POOLING_TYPE, -1)                         # default: none declared

        if min(dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size) <= 0:
            raise ModelError(f"{arch} model: sizes must be positive (dim {dim}, layers {n_layers}, "
                             f"heads {n_heads}/{n_kv_heads}, head_dim {head_dim})")
        if n_heads % n_kv_heads:
            raise ModelError(f"{arch} model: {n_heads} query heads are not a multiple of "
                             f"{n_kv_heads} key/value heads")
        if head_dim_v != head_dim:
            raise ModelError(f"{arch} model: value heads ({head_dim_v}) differ from key heads "
                             f"({head_dim}), which is not supported")
        if rope_dim > head_dim or rope_dim % 2 or rope_dim <= 0:
            raise ModelError(f"{arch} model: rope dimension count {rope_dim} must be even, positive "
                             f"and at most the head size {head_dim}")
        if rope_dim != head_dim and not traits.rope_dim_free:
            # llama.cpp: "invalid n_rot" (llama) or GGML_ASSERT(n_embd_head == n_rot) in the graph
            raise ModelError(f"{arch} model: rope dimension count {rope_dim} differs from the head "
                             f"size {head_dim}, which llama.cpp does not run for {arch}")
        if vocab_size != embd.n_rows or embd.shape[0] != dim:
            raise ModelError(f"{arch} model: token_embd.weight is {list(embd.shape)}, expected "
                             f"[{dim}, {vocab_size}]")
        if rope_scaling not in ROPE_SCALING_TYPES:
            raise ModelError(f"{arch} model: RoPE scaling {rope_scaling!r} is not supported "
                             f"(supported: {', '.join(ROPE_SCALING_TYPES)})")

        # ---- mixture of experts ----
        expert_norm, expert_weights_scale, shared_hidden_dim = True, 0.0, 0
        if traits.moe == "required" and (n_experts <= 0 or n_experts_used <= 0):
            raise ModelError(f"{arch} model: {arch}.expert_count and {arch}.expert_used_count must be "
                             f"positive (found {n_experts}, {n_experts_used})")
        if n_experts and not traits.moe:
            raise ModelError(f"{arch} model: expert_count {n_experts} given, but chatfile runs {arch} "
                             f"as a dense model only (as llama.cpp does)")
        if n_experts:
            if not 0 < n_experts_used <= n_experts:
                raise ModelError(f"{arch} model: expert_used_count {n_experts_used} must be 1.."
                                 f"{n_experts}")
            if arch == "qwen3moe":           # n_ff_exp, else n_ff / n_expert_used
                hidden_dim = get(Keys.EXPERT_FEED_FORWARD_LENGTH,
                                 hidden_dim // n_experts_used if hidden_dim else None)
            if arch in GRANITE:
                shared_hidden_dim = get(Keys.EXPERT_SHARED_FEED_FORWARD_LENGTH, 0)
        if hidden_dim <= 0:
            raise ModelError(f"{arch} model: metadata key {Keys.FEED_FORWARD_LENGTH.format(arch=arch)!r} "
                             f"is missing or not positive")

        # ---- RoPE (llama_context: rope_freq_scale, yarn_ext_factor, yarn_attn_factor) ----
        freq_scale_train = 1.0 / rope_factor if rope_factor != 0.0 else 1.0
        freq_scale = 1.0 if rope_scaling == "none" else freq_scale_train
        ext_factor = 1.0 if rope_scaling == "yarn" else 0.0
        attn_factor = np.float32(1.0)
        if ext_factor:
            attn_factor = _yarn_attn_factor(freq_scale, yarn_log_mul)
        attn_factor = float(np.float32(attn_factor) * np.float32(rope_attn_factor))
        rope_base_local, freq_scale_local = 10000.0, 1.0              # rope_freq_*_train_swa defaults
        if arch == "gemma2":
            rope_base_local, freq_scale_local = rope_base, freq_scale_train
        rope_base_local = get(Keys.ROPE_FREQ_BASE_SWA, rope_base_local, float)
        rope_layers = bool(meta.get(Keys.ROPE_SCALING_FINETUNED.format(arch=arch), True)) \
            if arch == "granite" else True

        def rope(base, scale):
            return RopeConfig(base=base, freq_scale=scale, ext_factor=ext_factor, attn_factor=attn_factor,
                              corr_dims=_yarn_corr_dims(rope_dim, rope_ctx_orig, base) if ext_factor
                              else (0.0, 0.0))

        # ---- sliding window (per family: gemma2 always, gemma3 when set; llama and phi3 ignore it) ----
        sliding_window, local_layers = 0, (False,) * n_layers
        if arch == "gemma2":
            sliding_window = get(Keys.SLIDING_WINDOW, 4096)           # Gemma 2's default
        elif arch == "gemma3":
            sliding_window = get(Keys.SLIDING_WINDOW, 0)
        if sliding_window > 0:
            local_layers = _swa_layers(meta.get(Keys.SLIDING_WINDOW_PATTERN.format(arch=arch)),
                                       traits.swa_pattern, n_layers, arch)

        # ---- attention scaling ----
        attn_softcap, final_softcap, attn_temp_scale, attn_temp_floor = 0.0, 0.0, 0.0, 0
        if traits.gemma:
            # q scaled by f_attention_scale, then kq_scale 1: 1/sqrt(key_length), except the 27B
            # models (Gemma 2: 46 layers, Gemma 3: 62), whose query_pre_attn_scalar is dim / n_heads
            big = n_layers == (46 if arch == "gemma2" else 62)
            q_scale = _inv_sqrt(dim // n_heads if big else head_dim)
            kq_scale = 1.0
            final_softcap = get(Keys.FINAL_LOGIT_SOFTCAPPING, 30.0 if arch == "gemma2" else 0.0, float)
            if arch == "gemma2":
                attn_softcap = get(Keys.ATTN_LOGIT_SOFTCAPPING, 50.0, float)
        elif traits.q_prescaled:
            q_scale, kq_scale = _inv_sqrt(head_dim), 1.0
        else:
            q_scale, kq_scale = 1.0, _inv_sqrt(head_dim)
        if arch in GRANITE:
            kq_scale = get(Keys.ATTENTION_SCALE, 0.0, float) or kq_scale
        if arch == "mistral3":
            attn_temp_scale = get(Keys.ATTENTION_TEMPERATURE_SCALE, 0.0, float)
            attn_temp_floor = rope_ctx_orig
            if attn_temp_scale and attn_temp_floor <= 0:
                raise ModelError("mistral3 model: attention temperature scaling needs a positive "
                                 "rope.scaling.original_context_length")

        # ---- output and residual multipliers (granite) ----
        embed_scale = math.sqrt(dim) if traits.gemma else 1.0
        residual_scale = logit_scale = 1.0
        if arch in GRANITE:
            logit_scale = float(np.float32(1.0) / np.float32(get(Keys.LOGIT_SCALE, kind=float)))  # required
            residual_scale = get(Keys.RESIDUAL_SCALE, 0.0, float) or 1.0
            embed_scale = get(Keys.EMBEDDING_SCALE, 0.0, float) or 1.0

        if context_length <= 0:
            raise ModelError(f"{arch} model: context length must be positive, got {context_length}")

        return cls(
            arch=arch,
            name=str(meta.get(Keys.NAME, "")),                            # default: no name
            dim=dim, hidden_dim=hidden_dim, n_layers=n_layers,
            n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
            vocab_size=vocab_size, context_length=context_length,
            norm_eps=norm_eps,
            rope_dim=rope_dim, rope_neox=traits.rope_neox,
            rope_global=rope(rope_base, freq_scale), rope_local=rope(rope_base_local, freq_scale_local),
            rope_ctx_orig=rope_ctx_orig, rope_layers=rope_layers,
            rope_factors=("long_short" if traits.rope_factors == "freqs" and rope_scaling == "longrope"
                          else traits.rope_factors),
            sliding_window=sliding_window, local_layers=local_layers,
            q_scale=q_scale, kq_scale=kq_scale, attn_softcap=attn_softcap,
            attn_temp_scale=attn_temp_scale, attn_temp_floor=attn_temp_floor,
            embed_scale=embed_scale, residual_scale=residual_scale, logit_scale=logit_scale,
            final_softcap=final_softcap,
            ffn_gelu=traits.gemma, ffn_fused=traits.ffn_fused, qk_norm=traits.qk_norm,
            post_norms=traits.gemma, tied_output=arch == "gemma2", output_bias=arch == "qwen2",
            n_experts=n_experts, n_experts_used=n_experts_used, expert_norm=expert_norm,
            expert_weights_scale=expert_weights_scale, shared_hidden_dim=shared_hidden_dim,
            # enum llama_pooling_type
            pooling={0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}.get(pooling_type),
        )


def _inv_sqrt(n: int) -> float:
    """1.0f / sqrtf(float(n)): the attention scales llama.cpp computes in float32."""
    return float(np.float32(1.0) / np.sqrt(np.float32(n)))


def _per_layer(key: str, values, n_layers, arch: str):
    """A key given as one value per layer (llama_model_loader::get_key_or_arr: head_count,
    head_count_kv and feed_forward_length may be arrays of block_count entries). The forward pass
    has one width for all layers, so the entries must agree; one line says so when they do not."""
    values = list(values)
    if not values or (isinstance(n_layers, int) and len(values) != n_layers):
        raise ModelError(f"{arch} model: metadata key {key!r} has {len(values)} entries, expected one "
                         f"per layer ({n_layers})")
    if any(v != values[0] for v in values):
        raise ModelError(f"{arch} model: metadata key {key!r} differs between layers "
                         f"({min(values)}..{max(values)}), which chatfile does not support")
    return values[0]


def _swa_layers(pattern, default: int, n_layers: int, arch: str) -> tuple:
    """Which layers slide (llama_model_base::load_swa_pattern, llama_hparams::set_swa_pattern):
    an array in the file names them; else with period n (the file's or the family's), layer il
    slides unless il % n == n - 1 (n = 0: every layer)."""
    if isinstance(pattern, np.ndarray):
        flags = [bool(x) for x in pattern[:n_layers]]
        return tuple(flags + [False] * (n_layers - len(flags)))
    n = default if pattern is None else int(pattern)
    if n < 0:
        raise ModelError(f"{arch} model: sliding window pattern {n} must not be negative")
    return tuple(n == 0 or il % n < n - 1 for il in range(n_layers))


def _yarn_corr_dims(n_dims: int, n_ctx_orig: int, base: float) -> tuple:
    """ggml_rope_yarn_corr_dims in float32: the dimensions where YaRN blends interpolation into
    extrapolation, from beta_fast (start) to beta_slow (end)."""
    f = np.float32

    def corr_dim(n_rot):
        return f(n_dims) * np.log(f(n_ctx_orig) / (f(n_rot) * f(2) * f(math.pi))) / (f(2) * np.log(f(base)))
    start = math.floor(corr_dim(YARN_BETA_FAST))
    end = math.ceil(corr_dim(YARN_BETA_SLOW))
    return float(max(0, start)), float(min(n_dims - 1, end))


def _yarn_attn_factor(freq_scale: float, log_mul: float) -> np.float32:
    """llama_context's yarn_attn_factor under YaRN (ext_factor != 0), in float32: the mscale that
    ggml's rope_yarn multiplies in again is cancelled here, and a yarn_log_multiplier divides."""
    f = np.float32
    factor = f(1.0) / f(freq_scale)

    def mscale(scale, m):
        return f(1.0) if scale <= 1 else f(0.1) * f(m) * np.log(scale) + f(1.0)
    a = mscale(factor, 1.0) / mscale(factor, log_mul) if log_mul else mscale(factor, 1.0)
    return f(a) * (f(1.0) / (f(1.0) + f(0.1) * np.log(factor)))


def support_problem(gguf) -> str | None:
    """Why chatfile cannot run this GGUF, in one line, or None when it can, without loading it: the
    architecture and hyperparameters (ModelConfig.from_gguf), each tensor's type, the tokenizer's
    kind and pre-tokenizer. Shapes are checked only by a real load (runtime.model.Model). Cheap
    (no numba): `chatfile inspect` shows it."""
    try:
        ModelConfig.from_gguf(gguf)
    except ModelError as e:
        return str(e)
    for t in gguf.tensors.values():
        if t.type not in SUPPORTED_TYPES:
            supported = ", ".join(sorted(GGMLType(x).name for x in SUPPORTED_TYPES))
            return (f"tensor {t.name!r} has type {type_name(t.type)}, which chatfile does not support "
                    f"(supported: {supported})")
    kind = gguf.metadata.get(Keys.TOKENIZER_MODEL)
    if kind not in ("gpt2", "llama"):
        return (f"tokenizer {Keys.TOKENIZER_MODEL}={kind!r} is not supported (supported: 'gpt2' "
                f"byte-level BPE, 'llama' SentencePiece)")
    pre = gguf.metadata.get(Keys.TOKENIZER_PRE) or "default"
    if kind == "gpt2" and pre not in PRE_TOKENIZERS:
        return f"unknown pre-tokenizer {Keys.TOKENIZER_PRE}={pre!r}"
    return None
