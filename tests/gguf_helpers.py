"""A byte-level GGUF writer for the reader's tests: it writes exactly what it is told, malformed or not.

gguf.GGUFWriter refuses to write broken files, so the validation and fuzz tests build theirs here.
Layout as in runtime/gguf.py's docstring.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from runtime.ggml import QUANT_SIZES, SCALAR_DTYPES, SCALAR_FORMATS, GGMLType, ValueType


def string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def value(vtype: ValueType, v) -> bytes:
    """Encode a value; an ARRAY value is (element type, list of elements)."""
    if vtype == ValueType.STRING:
        return string(v)
    if vtype == ValueType.ARRAY:
        etype, items = v
        return struct.pack("<IQ", etype, len(items)) + b"".join(value(etype, x) for x in items)
    return struct.pack(SCALAR_FORMATS[vtype], v)


def kv(key: str | bytes, vtype: int, v) -> bytes:
    return string(key) + struct.pack("<I", vtype) + value(vtype, v)


def tensor_info(name: str | bytes, dims, ttype: int, offset: int) -> bytes:
    return (string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            + struct.pack("<IQ", ttype, offset))


def tensor_nbytes(ttype: int, dims) -> int:
    """Data size of a tensor; 64 for nonsense (no dims, unknown type, over 1 MiB) so malformed
    tensor infos still get some data behind them."""
    if not dims or ttype not in QUANT_SIZES:
        return 64
    block_size, type_size = QUANT_SIZES[GGMLType(ttype)]
    size = math.prod(dims[1:]) * (dims[0] // block_size * type_size)
    return size if 0 < size <= 1 << 20 else 64


def gguf_bytes(kvs=(), tensors=(), *, alignment: int = 32, version: int = 3, magic: bytes = b"GGUF",
               offsets=None) -> bytes:
    """A whole GGUF. kvs: [(key, vtype, value)]; tensors: [(name, dims, type, data bytes or None)].

    Tensor data is laid out in order, each padded to `alignment`, unless `offsets` gives them; with no
    tensors the file ends right after the header. A data
    of None is filled with a deterministic pattern of the right size. Set general.alignment yourself
    in kvs when it is not 32.
    """
    infos, blobs, at = [], [], 0
    for i, (name, dims, ttype, data) in enumerate(tensors):
        if data is None:
            size = tensor_nbytes(ttype, dims)
            data = (np.arange(size, dtype=np.uint32) * 2654435761 >> 24).astype(np.uint8).tobytes()
        off = offsets[i] if offsets is not None else at
        infos.append(tensor_info(name, dims, ttype, off))
        blobs.append((off, data))
        at = -(-(off + len(data)) // alignment) * alignment
    head = (magic + struct.pack("<IQQ", version, len(tensors), len(kvs))
            + b"".join(kv(*x) for x in kvs) + b"".join(infos))
    data_start = -(-len(head) // alignment) * alignment if tensors else len(head)
    end = max((off + len(d) for off, d in blobs), default=0)
    body = bytearray(end)
    for off, d in blobs:
        body[off:off + len(d)] = d
    return head + bytes(data_start - len(head)) + bytes(body)


def small_valid_gguf() -> bytes:
    """A small valid GGUF with every value type and a few tensor types."""
    V = ValueType
    kvs = [
        ("general.architecture", V.STRING, "llama"),
        ("general.alignment", V.UINT32, 64),
        ("test.u8", V.UINT8, 200), ("test.i8", V.INT8, -100),
        ("test.u16", V.UINT16, 60000), ("test.i16", V.INT16, -30000),
        ("test.u32", V.UINT32, 4000000000), ("test.i32", V.INT32, -2000000000),
        ("test.f32", V.FLOAT32, 0.25), ("test.bool", V.BOOL, True),
        ("test.u64", V.UINT64, 2**63 + 5), ("test.i64", V.INT64, -2**62), ("test.f64", V.FLOAT64, -1.5),
        ("test.unicode", V.STRING, "h\u00e9llo \u2603 \U0001F600"),
        ("test.strings", V.ARRAY, (V.STRING, ["a", "", "\u00e9\u00e8", "\U0001F600x", "", "zz"])),
        ("test.empty", V.ARRAY, (V.STRING, [])),
        ("test.floats", V.ARRAY, (V.FLOAT32, [1.0, -2.5, 3.25])),
        ("test.ints", V.ARRAY, (V.INT32, [1, -2, 3, 2**31 - 1])),
        ("test.bools", V.ARRAY, (V.BOOL, [True, False])),
    ]
    tensors = [
        ("norm.weight", [64], GGMLType.F32, None),
        ("a.weight", [64, 3], GGMLType.Q8_0, None),
        ("b.weight", [256, 2, 2], GGMLType.Q4_K, None),
        ("c.weight", [32, 5], GGMLType.F16, None),
    ]
    return gguf_bytes(kvs, tensors, alignment=64)


# ---- where each field of a valid GGUF sits, for targeted mutations ----

FIELD_KINDS = ("version", "count", "strlen", "vtype", "scalar", "ndims", "dim", "ttype", "toffset")


def field_map(data: bytes) -> dict[str, list[tuple[int, int]]]:
    """{kind: [(offset, size)]} for every header field of a valid GGUF (kinds in FIELD_KINDS)."""
    fields: dict[str, list[tuple[int, int]]] = {k: [] for k in FIELD_KINDS}
    pos = 0

    def take(kind, size):
        nonlocal pos
        fields[kind].append((pos, size))
        pos += size
        return int.from_bytes(data[pos - size:pos], "little")

    def skip_string():
        nonlocal pos
        n = take("strlen", 8)
        pos += n

    def skip_value(vtype):
        nonlocal pos
        if vtype == ValueType.STRING:
            skip_string()
        elif vtype == ValueType.ARRAY:
            etype = take("vtype", 4)
            count = take("count", 8)
            if etype == ValueType.STRING:
                for _ in range(count):
                    skip_string()
            else:
                size = count * struct.calcsize(SCALAR_FORMATS[ValueType(etype)])
                pos += size
        else:
            take("scalar", struct.calcsize(SCALAR_FORMATS[ValueType(vtype)]))

    pos = 4
    take("version", 4)
    n_tensors = take("count", 8)
    n_kv = take("count", 8)
    for _ in range(n_kv):
        skip_string()
        skip_value(take("vtype", 4))
    for _ in range(n_tensors):
        skip_string()
        for _ in range(take("ndims", 4)):
            take("dim", 8)
        take("ttype", 4)
        take("toffset", 8)
    fields["header_end"] = [(pos, 0)]
    return fields


# ---- re-serializing a parsed file, with some metadata replaced ----

_ARRAY_ELEMENT_TYPES = {np.dtype(d): t for t, d in SCALAR_DTYPES.items()}


def metadata_item(value, vtype: ValueType):
    """(vtype, value) as value() takes it, from a parsed metadata value."""
    if isinstance(value, list):
        return ValueType.ARRAY, (ValueType.STRING, value)
    if isinstance(value, np.ndarray):
        return ValueType.ARRAY, (_ARRAY_ELEMENT_TYPES[value.dtype], value.tolist())
    return vtype, value


def rebuild(f, overrides=None, *, alignment: int | None = None) -> bytes:
    """The GGUFFile f written again (same tensors, same metadata order), with overrides
    {key: (vtype, value) or None to drop the key} applied; new keys go last."""
    overrides = dict(overrides or {})
    kvs = []
    for key, value in f.metadata.items():
        if key in overrides:
            item = overrides.pop(key)
            if item is not None:
                kvs.append((key, *item))
        else:
            kvs.append((key, *metadata_item(value, f.value_types[key])))
    kvs += [(key, *item) for key, item in overrides.items() if item is not None]
    tensors = [(t.name, list(t.shape), t.type, t.data.tobytes()) for t in f.tensors.values()]
    return gguf_bytes(kvs, tensors, alignment=alignment or f.alignment)
