"""GGUF/GGML facts in one table: value types, tensor types and their block geometry, metadata keys.

Everything that needs a type number or a block size reads it from here (reader, reference
dequantization, kernels, bundler, tests). Provenance: ggml/include/ggml.h (`enum ggml_type`),
gguf-py/gguf/constants.py (`GGML_QUANT_SIZES`, `GGUFValueType`, `Keys`).
"""
from __future__ import annotations

from enum import IntEnum

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)          # v1 used 32-bit counts and is not read
GGUF_DEFAULT_ALIGNMENT = 32     # general.alignment when absent
GGML_MAX_DIMS = 4               # tensor n_dims is 1..4
GGML_MAX_NAME = 64              # tensor names are shorter than this many bytes (gguf.cpp)
# Sanity limits of our reader (llama.cpp has none): far above any real model (Gemma 3: 236 tensors,
# 33 keys, 262,144 tokens), they bound the time and memory a hostile header can cost.
GGUF_MAX_TENSORS = 1 << 16
GGUF_MAX_KV = 1 << 16
GGUF_MAX_STRINGS = 1 << 22          # in all metadata string arrays together

QK_K = 256                      # super-block size of the K-quants


class ValueType(IntEnum):
    """Metadata value types (gguf_type)."""
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct format and size of each fixed-size scalar value type (little endian)
SCALAR_FORMATS = {
    ValueType.UINT8: "<B", ValueType.INT8: "<b",
    ValueType.UINT16: "<H", ValueType.INT16: "<h",
    ValueType.UINT32: "<I", ValueType.INT32: "<i",
    ValueType.FLOAT32: "<f", ValueType.BOOL: "<?",
    ValueType.UINT64: "<Q", ValueType.INT64: "<q",
    ValueType.FLOAT64: "<d",
}

# numpy dtype of each fixed-size scalar value type, for zero-copy numeric arrays
SCALAR_DTYPES = {
    ValueType.UINT8: "<u1", ValueType.INT8: "<i1",
    ValueType.UINT16: "<u2", ValueType.INT16: "<i2",
    ValueType.UINT32: "<u4", ValueType.INT32: "<i4",
    ValueType.FLOAT32: "<f4", ValueType.BOOL: "?",
    ValueType.UINT64: "<u8", ValueType.INT64: "<i8",
    ValueType.FLOAT64: "<f8",
}


class GGMLType(IntEnum):
    """Tensor types (enum ggml_type). Numbers 4 and 5 (Q4_2, Q4_3) were removed upstream."""
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


# type -> (weights per block, bytes per block); ggml.c type_traits / gguf-py GGML_QUANT_SIZES
QUANT_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 2 + 16),
    GGMLType.Q4_1: (32, 2 + 2 + 16),
    GGMLType.Q5_0: (32, 2 + 4 + 16),
    GGMLType.Q5_1: (32, 2 + 2 + 4 + 16),
    GGMLType.Q8_0: (32, 2 + 32),
    GGMLType.Q8_1: (32, 4 + 4 + 32),
    GGMLType.Q2_K: (256, 2 + 2 + QK_K // 16 + QK_K // 4),
    GGMLType.Q3_K: (256, 2 + QK_K // 4 + QK_K // 8 + 12),
    GGMLType.Q4_K: (256, 2 + 2 + QK_K // 2 + 12),
    GGMLType.Q5_K: (256, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    GGMLType.Q6_K: (256, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    GGMLType.Q8_K: (256, 4 + QK_K + QK_K // 8),
    GGMLType.IQ2_XXS: (256, 2 + QK_K // 4),
    GGMLType.IQ2_XS: (256, 2 + QK_K // 4 + QK_K // 32),
    GGMLType.IQ3_XXS: (256, 2 + QK_K // 4 + QK_K // 8),
    GGMLType.IQ1_S: (256, 2 + QK_K // 8 + QK_K // 16),
    GGMLType.IQ4_NL: (32, 2 + 16),
    GGMLType.IQ3_S: (256, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    GGMLType.IQ2_S: (256, 2 + QK_K // 4 + QK_K // 16),
    GGMLType.IQ4_XS: (256, 2 + 2 + QK_K // 2 + QK_K // 64),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (256, QK_K // 8 + QK_K // 16 + QK_K // 32),
    GGMLType.BF16: (1, 2),
    GGMLType.TQ1_0: (256, 2 + 4 * 13),
    GGMLType.TQ2_0: (256, 2 + 64),
    GGMLType.MXFP4: (32, 1 + 16),
    GGMLType.NVFP4: (64, 4 + 32),
    GGMLType.Q1_0: (128, 2 + 16),
}

# The types this runtime computes with (reference dequantization and numba kernels).
SUPPORTED_TYPES = frozenset({
    GGMLType.F32, GGMLType.F16, GGMLType.BF16,
    GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0,
    GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K,
    GGMLType.IQ4_NL, GGMLType.IQ4_XS,
})


def type_name(t: int) -> str:
    """Human name of a tensor type number, also for numbers this table does not know."""
    try:
        return GGMLType(t).name
    except ValueError:
        return f"unknown type {t}"


def row_nbytes(t: GGMLType, n: int) -> int:
    """Bytes in one row of n weights of type t; n must be a multiple of the block size."""
    block, size = QUANT_SIZES[t]
    return n // block * size


class Keys:
    """Metadata key names (gguf-py Keys). `{arch}` is general.architecture."""
    ARCHITECTURE = "general.architecture"
    NAME = "general.name"
    ALIGNMENT = "general.alignment"
    FILE_TYPE = "general.file_type"
    QUANT_VERSION = "general.quantization_version"

    CONTEXT_LENGTH = "{arch}.context_length"
    EMBEDDING_LENGTH = "{arch}.embedding_length"
    BLOCK_COUNT = "{arch}.block_count"
    FEED_FORWARD_LENGTH = "{arch}.feed_forward_length"
    VOCAB_SIZE = "{arch}.vocab_size"
    HEAD_COUNT = "{arch}.attention.head_count"
    HEAD_COUNT_KV = "{arch}.attention.head_count_kv"
    KEY_LENGTH = "{arch}.attention.key_length"
    VALUE_LENGTH = "{arch}.attention.value_length"
    LAYERNORM_RMS_EPS = "{arch}.attention.layer_norm_rms_epsilon"
    SLIDING_WINDOW = "{arch}.attention.sliding_window"
    SLIDING_WINDOW_PATTERN = "{arch}.attention.sliding_window_pattern"
    ATTENTION_SCALE = "{arch}.attention.scale"
    ATTENTION_TEMPERATURE_SCALE = "{arch}.attention.temperature_scale"
    ATTN_LOGIT_SOFTCAPPING = "{arch}.attn_logit_softcapping"
    FINAL_LOGIT_SOFTCAPPING = "{arch}.final_logit_softcapping"
    LOGIT_SCALE = "{arch}.logit_scale"
    RESIDUAL_SCALE = "{arch}.residual_scale"
    EMBEDDING_SCALE = "{arch}.embedding_scale"
    EXPERT_COUNT = "{arch}.expert_count"
    EXPERT_USED_COUNT = "{arch}.expert_used_count"
    EXPERT_FEED_FORWARD_LENGTH = "{arch}.expert_feed_forward_length"
    EXPERT_SHARED_FEED_FORWARD_LENGTH = "{arch}.expert_shared_feed_forward_length"
    ROPE_DIMENSION_COUNT = "{arch}.rope.dimension_count"
    ROPE_FREQ_BASE = "{arch}.rope.freq_base"
    ROPE_FREQ_BASE_SWA = "{arch}.rope.freq_base_swa"
    ROPE_SCALE_LINEAR = "{arch}.rope.scale_linear"
    ROPE_SCALING_TYPE = "{arch}.rope.scaling.type"
    ROPE_SCALING_FACTOR = "{arch}.rope.scaling.factor"
    ROPE_SCALING_ATTN_FACTOR = "{arch}.rope.scaling.attn_factor"
    ROPE_SCALING_ORIG_CTX_LEN = "{arch}.rope.scaling.original_context_length"
    ROPE_SCALING_FINETUNED = "{arch}.rope.scaling.finetuned"
    ROPE_SCALING_YARN_LOG_MUL = "{arch}.rope.scaling.yarn_log_multiplier"
    POOLING_TYPE = "{arch}.pooling_type"

    TOKENIZER_MODEL = "tokenizer.ggml.model"
    TOKENIZER_PRE = "tokenizer.ggml.pre"
    TOKENS = "tokenizer.ggml.tokens"
    TOKEN_TYPE = "tokenizer.ggml.token_type"
    SCORES = "tokenizer.ggml.scores"
    MERGES = "tokenizer.ggml.merges"
    BOS_ID = "tokenizer.ggml.bos_token_id"
    EOS_ID = "tokenizer.ggml.eos_token_id"
    EOT_ID = "tokenizer.ggml.eot_token_id"
    EOM_ID = "tokenizer.ggml.eom_token_id"
    UNK_ID = "tokenizer.ggml.unknown_token_id"
    PAD_ID = "tokenizer.ggml.padding_token_id"
    ADD_BOS = "tokenizer.ggml.add_bos_token"
    ADD_EOS = "tokenizer.ggml.add_eos_token"
    ADD_SPACE_PREFIX = "tokenizer.ggml.add_space_prefix"
    CHAT_TEMPLATE = "tokenizer.chat_template"


class TokenType(IntEnum):
    """tokenizer.ggml.token_type values (llama_token_type)."""
    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# What each known metadata key must hold, checked by the reader so that code reading a known key
# can trust its type ("int" = any integer type, "float" = float or integer, "x[]" = array of x).
# Keys of the form "{arch}.…" match any architecture prefix.
_INT, _FLOAT, _STR, _BOOL = {"int"}, {"float", "int"}, {"str"}, {"bool"}
KEY_KINDS: dict[str, set[str]] = {
    Keys.ARCHITECTURE: _STR, Keys.NAME: _STR, Keys.FILE_TYPE: _INT, Keys.QUANT_VERSION: _INT,
    Keys.CONTEXT_LENGTH: _INT, Keys.EMBEDDING_LENGTH: _INT, Keys.BLOCK_COUNT: _INT,
    Keys.FEED_FORWARD_LENGTH: {"int", "int[]"}, Keys.VOCAB_SIZE: _INT,
    Keys.HEAD_COUNT: {"int", "int[]"}, Keys.HEAD_COUNT_KV: {"int", "int[]"},
    Keys.KEY_LENGTH: _INT, Keys.VALUE_LENGTH: _INT, Keys.SLIDING_WINDOW: _INT,
    Keys.LAYERNORM_RMS_EPS: _FLOAT, Keys.ROPE_DIMENSION_COUNT: _INT, Keys.ROPE_FREQ_BASE: _FLOAT,
    Keys.ROPE_SCALING_TYPE: _STR, Keys.ROPE_SCALING_FACTOR: _FLOAT,
    Keys.SLIDING_WINDOW_PATTERN: {"int", "bool[]", "int[]"}, Keys.ATTENTION_SCALE: _FLOAT,
    Keys.ATTENTION_TEMPERATURE_SCALE: _FLOAT, Keys.ATTN_LOGIT_SOFTCAPPING: _FLOAT,
    Keys.FINAL_LOGIT_SOFTCAPPING: _FLOAT, Keys.LOGIT_SCALE: _FLOAT, Keys.RESIDUAL_SCALE: _FLOAT,
    Keys.EMBEDDING_SCALE: _FLOAT, Keys.EXPERT_COUNT: _INT, Keys.EXPERT_USED_COUNT: {"int", "int[]"},
    Keys.EXPERT_FEED_FORWARD_LENGTH: {"int", "int[]"}, Keys.EXPERT_SHARED_FEED_FORWARD_LENGTH: _INT,
    Keys.ROPE_FREQ_BASE_SWA: _FLOAT, Keys.ROPE_SCALE_LINEAR: _FLOAT, Keys.ROPE_SCALING_ATTN_FACTOR: _FLOAT,
    Keys.ROPE_SCALING_ORIG_CTX_LEN: _INT, Keys.ROPE_SCALING_FINETUNED: _BOOL,
    Keys.ROPE_SCALING_YARN_LOG_MUL: _FLOAT,
    Keys.TOKENIZER_MODEL: _STR, Keys.TOKENIZER_PRE: _STR, Keys.TOKENS: {"str[]"},
    Keys.TOKEN_TYPE: {"int[]"}, Keys.SCORES: {"float[]", "int[]"}, Keys.MERGES: {"str[]"},
    Keys.BOS_ID: _INT, Keys.EOS_ID: _INT, Keys.EOT_ID: _INT, Keys.EOM_ID: _INT, Keys.UNK_ID: _INT,
    Keys.PAD_ID: _INT, Keys.ADD_BOS: _BOOL, Keys.ADD_EOS: _BOOL, Keys.ADD_SPACE_PREFIX: _BOOL,
    Keys.CHAT_TEMPLATE: _STR,
}


def expected_kinds(key: str) -> set[str] | None:
    """The kinds a known key may hold, or None for a key this table does not know."""
    if key in KEY_KINDS:
        return KEY_KINDS[key]
    arch, _, rest = key.partition(".")
    if arch in ("general", "tokenizer") or not rest:
        return None
    return KEY_KINDS.get("{arch}." + rest)
