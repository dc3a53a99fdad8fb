"""ModelConfig: the model's blueprint, built once from GGUF metadata and passed explicitly.

`ModelConfig.from_gguf(gguf_file)` is the only place that reads hyperparameters; every key it reads
is named below with its default beside it. Derived sizes (head_dim, n_rep, ...) are computed there
once. What differs between the supported architectures is expressed as plain fields, so the forward
pass in model.py reads the config and never the architecture name.

Provenance: llama.cpp src/llama-model.cpp (`load_hparams`, `llama_model_rope_type`),
src/llama-hparams.cpp (`set_swa_pattern`) and src/models/{llama,qwen2,gemma3}.cpp.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .ggml import Keys

SUPPORTED_ARCHITECTURES = ("gemma3", "llama", "qwen2")


class ModelError(ValueError):
    """The GGUF holds a model this runtime cannot run (architecture, hyperparameter, tensor type)."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str                    # general.architecture
    name: str                    # general.name, for display
    dim: int                     # residual stream width (embedding_length)
    hidden_dim: int              # feed-forward width
    n_layers: int
    n_heads: int                 # query heads
    n_kv_heads: int              # key/value heads (grouped-query attention when < n_heads)
    head_dim: int                # per-head width of q and k (attention.key_length)
    vocab_size: int
    context_length: int          # the context the model was trained with
    n_ctx: int                   # the context this run uses (context_length unless overridden)
    norm_eps: float              # RMS norm epsilon
    # rotary position embedding
    rope_dim: int                # leading dimensions of each head that are rotated (n_rot)
    rope_neox: bool              # pairs (i, i + rope_dim/2) (GPT-NeoX) instead of (2i, 2i+1)
    rope_base: float             # frequency base of the global layers
    rope_scale: float            # linear position scaling of the global layers (1 / scaling.factor)
    rope_base_local: float       # frequency base of the sliding-window layers
    # attention
    sliding_window: int          # window of the local layers in positions; 0 = none
    local_layers: tuple          # per layer: True when it uses the sliding window
    q_scale: float               # queries are multiplied by this before q.k (gemma3), else 1
    kq_scale: float              # q.k is multiplied by this before the softmax (llama), else 1
    # architecture features
    embed_scale: float           # token embeddings are multiplied by this (gemma3: sqrt(dim))
    ffn_gelu: bool               # GELU(tanh)-gated feed-forward (gemma3) instead of SiLU (SwiGLU)
    qk_norm: bool                # per-head RMS norms of q and k (attn_q_norm, attn_k_norm)
    post_norms: bool             # RMS norms on the attention and FFN outputs before the residual add
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

    @classmethod
    def from_gguf(cls, gguf_file, n_ctx: int | None = None) -> "ModelConfig":
        """Read the hyperparameters of `gguf_file` (a runtime.gguf.GGUFFile); n_ctx overrides the
        context length. Raises ModelError for an unsupported architecture or a missing required key."""
        meta = gguf_file.metadata
        arch = meta.get(Keys.ARCHITECTURE)
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ModelError(f"unsupported model architecture {arch!r} "
                             f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")

        def get(key: str, default=None, kind=int):
            full = key.format(arch=arch)
            value = meta.get(full, default)
            if value is None:
                raise ModelError(f"{arch} model: metadata key {full!r} is missing")
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise ModelError(f"{arch} model: metadata key {full!r} has the invalid value {value!r}")

        embd = gguf_file.tensors.get("token_embd.weight")
        if embd is None:
            raise ModelError(f"{arch} model: tensor 'token_embd.weight' is missing")

        dim = get(Keys.EMBEDDING_LENGTH)                                  # required
        n_layers = get(Keys.BLOCK_COUNT)                                  # required
        if n_layers > len(gguf_file.tensors):          # each layer has tensors of its own
            raise ModelError(f"{arch} model: block count {n_layers} is more than the file's "
                             f"{len(gguf_file.tensors)} tensors allow")
        hidden_dim = get(Keys.FEED_FORWARD_LENGTH)                        # required
        n_heads = get(Keys.HEAD_COUNT)                                    # required
        n_kv_heads = get(Keys.HEAD_COUNT_KV, n_heads)                     # default: no GQA
        head_dim = get(Keys.KEY_LENGTH, dim // n_heads if n_heads else 0)
        head_dim_v = get(Keys.VALUE_LENGTH, head_dim)
        vocab_size = get(Keys.VOCAB_SIZE, embd.n_rows)                    # default: embedding rows
        context_length = get(Keys.CONTEXT_LENGTH)                         # required
        norm_eps = get(Keys.LAYERNORM_RMS_EPS, kind=float)                # required
        rope_dim = get(Keys.ROPE_DIMENSION_COUNT, head_dim)               # default: whole head
        rope_base = get(Keys.ROPE_FREQ_BASE, 10000.0, float)              # llama.cpp's default
        rope_scaling = get(Keys.ROPE_SCALING_TYPE, "none", str)
        rope_factor = get(Keys.ROPE_SCALING_FACTOR, 0.0, float)           # 0 = no scaling
        sliding_window = get(Keys.SLIDING_WINDOW, 0) if arch == "gemma3" else 0
        pooling_type = get(Keys.POOLING_TYPE, -1)                         # default: none declared

        if min(dim, n_layers, hidden_dim, n_heads, n_kv_heads, head_dim, vocab_size) <= 0:
            raise ModelError(f"{arch} model: sizes must be positive (dim {dim}, layers {n_layers}, "
                             f"ffn {hidden_dim}, heads {n_heads}/{n_kv_heads}, head_dim {head_dim})")
        if n_heads % n_kv_heads:
            raise ModelError(f"{arch} model: {n_heads} query heads are not a multiple of "
                             f"{n_kv_heads} key/value heads")
        if head_dim_v != head_dim:
            raise ModelError(f"{arch} model: value heads ({head_dim_v}) differ from key heads "
                             f"({head_dim}), which is not supported")
        if rope_dim > head_dim or rope_dim % 2:
            raise ModelError(f"{arch} model: rope dimension count {rope_dim} must be even and at "
                             f"most the head size {head_dim}")
        if vocab_size != embd.n_rows or embd.shape[0] != dim:
            raise ModelError(f"{arch} model: token_embd.weight is {list(embd.shape)}, expected "
                             f"[{dim}, {vocab_size}]")
        if rope_scaling not in ("none", "linear"):
            raise ModelError(f"{arch} model: RoPE scaling {rope_scaling!r} is not supported "
                             f"(supported: none, linear)")
        rope_scale = 1.0 / rope_factor if rope_scaling == "linear" and rope_factor > 0 else 1.0

        gemma = arch == "gemma3"
        if gemma and sliding_window > 0:
            # llama.cpp set_swa_pattern(6): layer il is local unless il % 6 == 5
            local_layers = tuple(il % 6 < 5 for il in range(n_layers))
        else:
            local_layers = (False,) * n_layers
        if gemma:
            # llama.cpp scales q by f_attention_scale, then uses kq_scale 1: 1/sqrt(key_length),
            # except Gemma 3 27B (62 layers), whose query_pre_attn_scalar is dim / n_heads
            q_scale = 1.0 / math.sqrt(dim / n_heads if n_layers == 62 else head_dim)
            kq_scale = 1.0
        else:
            q_scale, kq_scale = 1.0, 1.0 / math.sqrt(head_dim)

        if n_ctx is None:
            n_ctx = context_length
        if n_ctx <= 0:
            raise ModelError(f"context length must be positive, got {n_ctx}")

        return cls(
            arch=arch,
            name=str(meta.get(Keys.NAME, "")),                            # default: no name
            dim=dim, hidden_dim=hidden_dim, n_layers=n_layers,
            n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
            vocab_size=vocab_size, context_length=context_length, n_ctx=int(n_ctx),
            norm_eps=norm_eps,
            rope_dim=rope_dim,
            rope_neox=arch in ("qwen2", "gemma3"),                        # llama_model_rope_type
            rope_base=rope_base, rope_scale=rope_scale,
            rope_base_local=10000.0 if gemma else rope_base,              # rope_freq_base_train_swa
            sliding_window=sliding_window, local_layers=local_layers,
            q_scale=q_scale, kq_scale=kq_scale,
            embed_scale=math.sqrt(dim) if gemma else 1.0,
            ffn_gelu=gemma, qk_norm=gemma, post_norms=gemma,
            # enum llama_pooling_type
            pooling={0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}.get(pooling_type),
        )
