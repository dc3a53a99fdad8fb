"""Zero-copy, validating GGUF v2/v3 reader.

One read-only `np.memmap` of the file; metadata arrays and tensor data are views into it, nothing is
copied but the header's strings. The GGUF may start at any byte `offset` of a larger file (the
executable embeds the model): every offset this module reports or stores is relative to that start,
so an embedded GGUF reads, and fails, exactly like the stand-alone file.

Layout (gguf-py/gguf/gguf_reader.py, ggml/src/gguf.cpp), little endian:

    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv x      key string | value type u32 | value
    n_tensors x name string | n_dims u32 | dims u64[n_dims] | type u32 | data offset u64
    padding to general.alignment | tensor data (offsets relative to here)

    string = length u64 | UTF-8 bytes;  array = element type u32 | count u64 | elements

Every field is checked against the bytes that are left before it is used, so a malformed or hostile
file raises `GGUFError` (naming the field and its byte offset) and never another exception; counts
are checked against the bytes left before anything is allocated or looped over, so time and memory
stay linear in the file size (the worst case, millions of tiny strings, is about 0.5 us and one Python
str each). Stricter than gguf.cpp: strings must be UTF-8, tensor data must lie in the
file (llama.cpp checks that later, at model load) and counts have sanity limits (ggml.GGUF_MAX_*).
More lenient: tensor data may leave gaps (gguf.cpp wants it packed in file order); it must still be
aligned and not overlap. A known tensor type without a dequantizer opens; the model names it.
"""
from __future__ import annotations

import codecs
import os
import struct
from dataclasses import dataclass

import numpy as np

from .ggml import (GGML_MAX_DIMS, GGML_MAX_NAME, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_KV,
                   GGUF_MAX_STRINGS, GGUF_MAX_TENSORS, GGUF_VERSIONS, QUANT_SIZES, SCALAR_DTYPES, SCALAR_FORMATS,
                   GGMLType, Keys, ValueType, expected_kinds)

_U32 = struct.Struct("<I")


def _kind(value) -> str:
    """The kind of a metadata value, in ggml.KEY_KINDS' terms."""
    if isinstance(value, np.ndarray):
        return {"f": "float", "b": "bool"}.get(value.dtype.kind, "int") + "[]"
    if isinstance(value, list):
        return "str[]"
    return {bool: "bool", int: "int", float: "float", str: "str"}[type(value)]


_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")             # magic, version, n_tensors, n_kv
_SCALARS = {t: struct.Struct(f) for t, f in SCALAR_FORMATS.items()}

# Smallest possible records, to reject absurd counts before looping over them.
_MIN_KV_BYTES = 8 + 4 + 1                      # empty key, value type, a 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8     # empty name, n_dims, one dim, type, data offset
_MAX_DIM = 2**63 - 1                           # ggml's ne[] is int64_t
_STRING_CHUNK = 1 << 16                        # strings decoded per step of a string array
_FAST_DECODE_BYTES = 1 << 24                   # largest chunk decoded in one piece (temporaries ~3x)
_UTF8_CHECK_BYTES = 1 << 20                    # strings longer than this are validated piecewise


class GGUFError(ValueError):
    """A malformed GGUF file. The message names the field and its byte offset (from the GGUF start)."""


@dataclass(frozen=True, eq=False)
class Tensor:
    """One tensor, zero-copy. shape is in ggml order: shape[0] (ne0) is the row length."""
    name: str
    type: GGMLType
    shape: tuple[int, ...]
    n_rows: int              # product of shape[1:]
    data: np.ndarray         # uint8 [n_rows, row_nbytes], a read-only view into the file's mmap
    offset: int              # byte offset of data from the GGUF start

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def split_rows(self, *sizes: int) -> list["Tensor"]:
        """Consecutive row blocks of the given sizes (summing to n_rows) as 2-D tensors viewing the
        same bytes: a fused attn_qkv as q, k and v; phi3's ffn_up as gate and up; a 3-D expert
        tensor [n, ff, n_experts] as its experts."""
        if sum(sizes) != self.n_rows:
            raise ValueError(f"tensor {self.name}: {self.n_rows} rows do not split into {sizes}")
        parts, start = [], 0
        for k, n in enumerate(sizes):
            parts.append(Tensor(f"{self.name}[{k}]", self.type, (self.shape[0], n), n,
                                self.data[start:start + n], self.offset + start * self.data.shape[1]))
            start += n
        return parts


class GGUFFile:
    """A GGUF file (or one embedded at byte `offset` of a larger file), parsed and validated.

    version, alignment, data_offset (from the GGUF start), metadata {key: value}, tensors {name: Tensor}
    in file order, memmap (the one np.memmap, uint8, starting at `offset`), size (bytes from `offset`
    to the end of the file).
    """

    def __init__(self, path, offset: int = 0, populate: bool = False):
        """populate: map the file's pages on another core while it is read (memory.populate_in_background;
        for a model about to run, whose first forward pass reads every weight)."""
        self.path = os.fspath(path)
        self.offset = offset
        file_size = os.stat(self.path).st_size
        if not 0 <= offset <= file_size:
            raise GGUFError(f"GGUF offset {offset} lies outside the file ({file_size} bytes)")
        self.size = file_size - offset
        if self.size < _HEADER.size:
            raise GGUFError(f"header at offset 0: file too short for a GGUF header "
                            f"({self.size} bytes, need {_HEADER.size})")
        self.memmap = np.memmap(self.path, dtype=np.uint8, mode="r", offset=offset, shape=(self.size,))
        self._array = self.memmap.view(np.ndarray)       # plain ndarray views for numba and numpy
        if populate:
            from .memory import populate_in_background
            populate_in_background(self._array)
        self._buf = memoryview(self._array)
        self._pos = 0
        self._n_strings = 0                              # in string arrays so far, for GGUF_MAX_STRINGS
        self.value_types: dict[str, ValueType] = {}      # key -> its value type as stored
        self.metadata: dict[str, object] = {}
        self.tensors: dict[str, Tensor] = {}
        try:
            self._read()
        except GGUFError:
            raise
        except (struct.error, UnicodeDecodeError, OverflowError, ValueError) as e:
            # every length is checked before use; this is a safety net so nothing else escapes
            raise GGUFError(f"malformed GGUF near offset {self._pos}: {e}") from None
        finally:
            del self._buf

    def __repr__(self) -> str:
        where = f" at offset {self.offset}" if self.offset else ""
        return (f"GGUFFile({self.path!r}{where}: v{self.version}, {len(self.metadata)} metadata keys, "
                f"{len(self.tensors)} tensors)")

    # ---- the file, top to bottom ----

    def _read(self) -> None:
        magic, version, n_tensors, n_kv = _HEADER.unpack_from(self._buf, 0)
        if magic != GGUF_MAGIC:
            raise GGUFError(f"magic at offset 0: expected {GGUF_MAGIC!r}, found {magic!r} (not a GGUF file)")
        if version not in GGUF_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            hint = " (a big-endian GGUF; only little-endian files are read)" if swapped in GGUF_VERSIONS else ""
            raise GGUFError(f"version at offset 4: GGUF version {version} is not supported{hint}; "
                            f"supported versions: {', '.join(map(str, GGUF_VERSIONS))}")
        self.version = version
        self._pos = _HEADER.size
        left = self.size - self._pos
        if n_tensors * _MIN_TENSOR_INFO_BYTES > left:
            raise GGUFError(f"tensor count at offset 8: {n_tensors} tensors cannot fit in the "
                            f"{self.size}-byte file")
        if n_tensors > GGUF_MAX_TENSORS:
            raise GGUFError(f"tensor count at offset 8: {n_tensors} tensors is more than this reader "
                            f"accepts ({GGUF_MAX_TENSORS})")
        if n_kv * _MIN_KV_BYTES > left:
            raise GGUFError(f"metadata count at offset 16: {n_kv} key-value pairs cannot fit in the "
                            f"{self.size}-byte file")
        if n_kv > GGUF_MAX_KV:
            raise GGUFError(f"metadata count at offset 16: {n_kv} key-value pairs is more than this "
                            f"reader accepts ({GGUF_MAX_KV})")

        for i in range(n_kv):
            self._read_kv(i)
        self.alignment = self._read_alignment()

        names: set[str] = set()
        infos = [self._read_tensor_info(i, names) for i in range(n_tensors)]
        self.data_offset = -(-self._pos // self.alignment) * self.alignment
        self._place_tensors(infos)

    def _read_kv(self, i: int) -> None:
        key_at = self._pos
        key = self._string(f"metadata key #{i}")
        if key in self.metadata:
            raise GGUFError(f"metadata key #{i} at offset {key_at}: duplicate key {key!r}")
        field = f"metadata {key!r}"
        vtype = self._value_type(field)
        self.value_types[key] = vtype
        self.metadata[key] = value = self._value(vtype, field)
        kinds = expected_kinds(key)
        if kinds is not None and _kind(value) not in kinds:
            raise GGUFError(f"metadata key #{i} at offset {key_at}: {key!r} must hold "
                            f"{' or '.join(sorted(kinds))}, found {_kind(value)}")

    def _read_alignment(self) -> int:
        if Keys.ALIGNMENT not in self.metadata:
            return GGUF_DEFAULT_ALIGNMENT
        alignment = self.metadata[Keys.ALIGNMENT]
        vtype = self.value_types[Keys.ALIGNMENT]
        if vtype != ValueType.UINT32:      # gguf.cpp reads it with gguf_get_val_u32
            raise GGUFError(f"metadata {Keys.ALIGNMENT!r}: must be UINT32, found {vtype.name}")
        if alignment == 0 or alignment & (alignment - 1):
            raise GGUFError(f"metadata {Keys.ALIGNMENT!r}: {alignment} is not a power of two")
        return alignment

    def _read_tensor_info(self, i: int, names: set[str]) -> tuple[str, GGMLType, tuple[int, ...], int, int]:
        name_at = self._pos
        name = self._string(f"tensor #{i} name")
        if len(name.encode()) >= GGML_MAX_NAME:
            raise GGUFError(f"tensor #{i} name at offset {name_at}: {name[:80]!r}... is longer than "
                            f"{GGML_MAX_NAME - 1} bytes")
        if name in names:
            raise GGUFError(f"tensor #{i} name at offset {name_at}: duplicate tensor name {name!r}")
        field = f"tensor {name!r}"
        n_dims_at = self._pos
        n_dims = self._u32(f"{field} n_dims")
        if not 1 <= n_dims <= GGML_MAX_DIMS:
            raise GGUFError(f"{field}: n_dims {n_dims} at offset {n_dims_at} is not in 1..{GGML_MAX_DIMS}")
        shape = []
        for d in range(n_dims):
            dim_at = self._pos
            ne = self._u64(f"{field} dim {d}")
            if not 1 <= ne <= _MAX_DIM:
                shown = ne - 2**64 if ne > _MAX_DIM else ne      # a negative int64 as written
                raise GGUFError(f"{field}: dim {d} = {shown} at offset {dim_at} must be positive")
            shape.append(ne)
        type_at = self._pos
        type_number = self._u32(f"{field} type")
        try:
            qtype = GGMLType(type_number)
        except ValueError:
            raise GGUFError(f"{field}: unknown tensor type {type_number} at offset {type_at}") from None
        block_size, _ = QUANT_SIZES[qtype]
        if shape[0] % block_size:
            raise GGUFError(f"{field}: row length {shape[0]} at offset {n_dims_at + 4} is not a multiple "
                            f"of the {qtype.name} block size {block_size}")
        data_at = self._pos
        data_offset = self._u64(f"{field} data offset")
        names.add(name)
        return name, qtype, tuple(shape), data_offset, data_at

    def _place_tensors(self, infos) -> None:
        """Check each tensor's data range (aligned, inside the file, no overlaps) and make its view."""
        spans = []
        for name, qtype, shape, rel, info_at in infos:
            block_size, type_size = QUANT_SIZES[qtype]
            row_nbytes = shape[0] // block_size * type_size
            n_rows = 1
            for ne in shape[1:]:
                n_rows *= ne
            nbytes = row_nbytes * n_rows
            start = self.data_offset + rel
            field = f"tensor {name!r}"
            if rel % self.alignment:
                raise GGUFError(f"{field}: data offset {rel} (at offset {info_at}) is not a multiple of "
                                f"the alignment {self.alignment}")
            if start + nbytes > self.size:
                raise GGUFError(f"{field}: data [offset {start}, {nbytes} bytes] extends past end of file "
                                f"({self.size} bytes)")
            data = self._array[start:start + nbytes].reshape(n_rows, row_nbytes)
            self.tensors[name] = Tensor(name, qtype, shape, n_rows, data, start)
            spans.append((start, nbytes, name))
        spans.sort()
        for (a_start, a_len, a_name), (b_start, b_len, b_name) in zip(spans, spans[1:]):
            if a_start + a_len > b_start:
                raise GGUFError(f"tensor {b_name!r}: data [offset {b_start}, {b_len} bytes] overlaps "
                                f"tensor {a_name!r} [offset {a_start}, {a_len} bytes]")

    # ---- primitives: each checks the bytes left before reading ----

    def _need(self, nbytes: int, what: str) -> int:
        pos = self._pos
        if nbytes > self.size - pos:
            raise GGUFError(f"{what} at offset {pos}: {nbytes} bytes run past end of file ({self.size} bytes)")
        self._pos = pos + nbytes
        return pos

    def _u32(self, what: str) -> int:
        return _U32.unpack_from(self._buf, self._need(4, what))[0]

    def _u64(self, what: str) -> int:
        return _U64.unpack_from(self._buf, self._need(8, what))[0]

    def _string(self, what: str) -> str:
        n = self._u64(f"{what} length")
        at = self._need(n, f"{what} ({n}-byte string)")
        return self._utf8(at, n, what)

    def _utf8(self, at: int, n: int, what: str) -> str:
        view = self._buf[at:at + n]
        done = 0
        try:
            if n > _UTF8_CHECK_BYTES:
                # a failed decode copies its whole input into the exception: check big strings
                # piecewise first, so a hostile length over the tensor data costs no copy of it
                decoder = codecs.getincrementaldecoder("utf-8")()
                for done in range(0, n, _UTF8_CHECK_BYTES):
                    decoder.decode(view[done:done + _UTF8_CHECK_BYTES], final=done + _UTF8_CHECK_BYTES >= n)
                done = 0
            return str(view, "utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"{what} at offset {at}: not valid UTF-8 ({e.reason} at byte "
                            f"{done + e.start})") from None

    def _value_type(self, what: str) -> ValueType:
        at = self._pos
        number = self._u32(f"{what} value type")
        try:
            return ValueType(number)
        except ValueError:
            raise GGUFError(f"{what}: unknown value type {number} at offset {at}") from None

    def _value(self, vtype: ValueType, what: str):
        if vtype == ValueType.STRING:
            return self._string(what)
        if vtype == ValueType.ARRAY:
            return self._array_value(what)
        scalar = _SCALARS[vtype]
        value = scalar.unpack_from(self._buf, self._need(scalar.size, what))[0]
        return value

    def _array_value(self, what: str):
        etype = self._value_type(f"{what} array element")
        count_at = self._pos
        count = self._u64(f"{what} array count")
        if etype == ValueType.ARRAY:
            raise GGUFError(f"{what}: nested arrays are not supported (at offset {count_at - 4})")
        if etype == ValueType.STRING:
            if count * 8 > self.size - self._pos:
                raise GGUFError(f"{what}: array count {count} at offset {count_at} runs past end of file "
                                f"({self.size} bytes)")
            self._n_strings += count
            if self._n_strings > GGUF_MAX_STRINGS:
                raise GGUFError(f"{what}: array count {count} at offset {count_at} makes more strings than "
                                f"this reader accepts ({GGUF_MAX_STRINGS} in all arrays)")
            return self._string_array(count, what)
        dtype = np.dtype(SCALAR_DTYPES[etype])
        at = self._need(count * dtype.itemsize, f"{what} ({count} x {etype.name} array)")
        return self._array[at:at + count * dtype.itemsize].view(dtype)

    def _string_array(self, count: int, what: str) -> list[str]:
        """count length-prefixed strings, decoded a chunk at a time so temporaries stay small."""
        strings: list[str] = [""] * count        # count * 8 <= bytes left, checked by the caller
        for first_index in range(0, count, _STRING_CHUNK):
            n = min(_STRING_CHUNK, count - first_index)
            strings[first_index:first_index + n] = self._string_chunk(n, first_index, what)
        return strings

    def _string_ends(self, first: int, count: int) -> list[int] | None:
        """The end offset of each of `count` strings from `first`, found without a Python step per
        string (the walk cost 0.04 s for a 262k vocabulary), or None: then `_walk_string_ends` decides.
        A string's length prefix is a candidate where its bytes 2..7 are zero (length < 65536) and the
        byte after it is not (a non-empty string not starting with NUL); the candidates must be exactly
        the chain the lengths walk (each length leads to the next candidate), else None."""
        window = min(self.size - first, 24 * count + 8)
        if count < 2 or window < 9 * count:
            return None
        b = self._array[first:first + window]
        n = window - 8                                  # candidates at 0..n-1
        zero = b == 0
        cand = ~zero[8:8 + n]
        for j in range(2, 8):
            cand &= zero[j:j + n]
        at = np.flatnonzero(cand)[:count]
        if len(at) < count or at[0] != 0:
            return None
        nxt = at + 8 + b[at].astype(np.int64) + (b[at + 1].astype(np.int64) << 8)
        if not np.array_equal(nxt[:-1], at[1:]) or first + int(nxt[-1]) > self.size:
            return None
        return (nxt + first).tolist()

    def _walk_string_ends(self, first: int, count: int, what: str, first_index: int) -> tuple[list[int], int]:
        """The end offset of each of `count` strings from `first`, one length prefix at a time."""
        unpack, buf, end = _U64.unpack_from, self._buf, self.size
        pos = first
        ends = [0] * count                       # ends[k]: offset just past string k
        k = 0
        try:
            for k in range(count):
                pos += unpack(buf, pos)[0] + 8
                ends[k] = pos
        except (struct.error, OverflowError):
            if pos <= end:
                raise GGUFError(f"{what}: length of string #{first_index + k} at offset {pos} runs past "
                                f"end of file ({end} bytes)") from None
            k -= 1                                   # string k-1 was too long
        if pos > end:
            at = first if k == 0 else ends[k - 1]
            raise GGUFError(f"{what}: string #{first_index + k} at offset {at} ({pos - at - 8} bytes) runs "
                            f"past end of file ({end} bytes)")
        return ends, pos

    def _string_chunk(self, count: int, first_index: int, what: str) -> list[str]:
        """count strings: one pass over the length prefixes, then one UTF-8 decode.

        Tokenizer vocabularies hold 50k-260k strings, and decoding them one by one costs as much as
        the walk itself. The top byte of every u64 length is zero (lengths are below the file size),
        so dropping the other 7 prefix bytes leaves the strings separated by NULs: one decode and one
        split. A string holding a NUL or bad UTF-8 falls back to decoding one by one.
        """
        first = self._pos
        ends = self._string_ends(first, count)
        if ends is not None:
            pos = ends[-1]
        else:
            ends, pos = self._walk_string_ends(first, count, what, first_index)
        self._pos = pos
        prefixes = np.empty(count, dtype=np.int64)     # offset of each string's length prefix
        prefixes[0] = first
        prefixes[1:] = ends[:-1]
        if pos - first <= _FAST_DECODE_BYTES:          # else few long strings: one by one is as fast
            keep = np.ones(pos - first, dtype=bool)
            low = prefixes - first
            for j in range(7):
                keep[low + j] = False
            try:
                strings = str(self._array[first:pos][keep].data, "utf-8").split("\x00")
                if len(strings) == count + 1:
                    return strings[1:]
            except UnicodeDecodeError:
                pass
        return [self._utf8(at + 8, stop - at - 8, f"{what}: string #{first_index + k}")
                for k, (at, stop) in enumerate(zip(prefixes.tolist(), ends))]
