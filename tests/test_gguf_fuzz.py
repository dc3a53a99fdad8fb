"""Fuzzing the GGUF reader: mutated and truncated GGUFs must open fine or raise GGUFError.

Never another exception, never more than CASE_SECONDS, never a resident-memory peak growing by more
than twice the file size (Linux: the peak is reset through /proc/self/clear_refs before each case).
Mutations: bytes set anywhere, truncation, and header fields (found with gguf_helpers.field_map)
overwritten with absurd or confusing values: counts and string lengths of 2^63 or past the end,
unknown and mismatched value types (metadata of the wrong type for a known key), unknown tensor
types, zero/negative dims, n_dims out of range, tensor offsets misaligned, past the end or equal to
another tensor's (overlap). A file that opens has every tensor of a supported type dequantized too
(random bytes make NaN/Inf scales).

Sources: a small file with every value type, the smallest llama.cpp-written synthetic model, and
SmolLM2 (a full copy, mutated in place in its 1.8 MB header region and restored after each case).

Normal run: FUZZ_EXAMPLES cases per source, derandomized. Long run (documented in the README):
    CHATFILE_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest tests/test_gguf_fuzz.py -q -s
"""
from __future__ import annotations

import collections
import re
import shutil
import signal
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import fuzz_examples, fuzz_settings
from gguf_helpers import FIELD_KINDS, field_map, rebuild, small_valid_gguf, string
from runtime.ggml import SUPPORTED_TYPES, Keys, ValueType, expected_kinds
from runtime.gguf import GGUFError, GGUFFile
from runtime.quants import dequantize

FUZZ_EXAMPLES = fuzz_examples(150)
CASE_SECONDS = 5.0
SYNTHETIC = Path(__file__).resolve().parent.parent / "data" / "synthetic" / "llama-Q2_K.gguf"

FUZZ_SETTINGS = fuzz_settings(FUZZ_EXAMPLES)

INTERESTING_U64 = [0, 1, 2, 7, 8, 31, 32, 33, 255, 2**16, 2**31, 2**32, 2**32 + 1,
                   2**62, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 32, 2**64 - 1]
INTERESTING_U32 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 30, 31, 34, 39, 40, 255,
                   2**16, 2**31, 2**32 - 1, 3 << 24]


MEMORY_ALLOWANCE = 16 << 20         # interpreter-level noise on top of twice the file size


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(field)


def reset_peak_rss() -> int | None:
    """Reset the resident-memory high-water mark; return the current RSS (None off Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmRSS")
    except OSError:
        return None


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"case took more than {CASE_SECONDS} s")


class Source:
    """A valid GGUF to mutate: its bytes (as far as mutations go) and the map of its header fields."""

    def __init__(self, name: str, data: bytes, file_size: int, full_path: Path | None = None):
        self.name, self.data, self.file_size, self.full_path = name, data, file_size, full_path
        self.fields = field_map(data)
        del self.fields["header_end"]
        self.originals = {k: [int.from_bytes(data[o:o + s], "little") for o, s in v]
                          for k, v in self.fields.items()}
        self.outcomes: collections.Counter = collections.Counter()
        self.worst_growth = 0              # largest resident-memory peak growth of one case, bytes
        self.cases = 0


@st.composite
def mutation_lists(draw, src: Source):
    """[("set", offset, bytes) | ("truncate", size)], 1 to 3 of them."""
    mutations = []
    reach = len(src.data)                  # how far set-byte mutations go (all of a small file)
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.integers(0, 9))
        if what <= 5:                       # a header field gets a hostile value
            kind = draw(st.sampled_from([k for k in FIELD_KINDS if src.fields[k]]))
            i = draw(st.integers(0, len(src.fields[kind]) - 1))
            offset, size = src.fields[kind][i]
            original = src.originals[kind][i]
            if size == 8:
                value = draw(st.one_of(
                    st.sampled_from(INTERESTING_U64 + [src.file_size, src.file_size - offset,
                                                       src.file_size - offset - 8]),
                    st.integers(-64, 64).map(lambda d: (original + d) % 2**64),
                    st.sampled_from(src.originals[kind]),          # another tensor's offset: overlap
                    st.integers(0, 2**64 - 1)))
            elif size == 4:
                value = draw(st.one_of(st.sampled_from(INTERESTING_U32), st.integers(0, 2**32 - 1)))
            else:
                value = draw(st.integers(0, 2 ** (8 * size) - 1))
            mutations.append(("set", offset, value.to_bytes(size, "little")))
        elif what <= 8:                     # random bytes somewhere
            offset = draw(st.integers(0, reach - 1))
            mutations.append(("set", offset, draw(st.binary(min_size=1, max_size=8))))
        else:
            mutations.append(("truncate", draw(st.integers(0, len(src.data) - 1))))
    return mutations


def apply(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for m in mutations:
        if m[0] == "set":
            _, offset, raw = m
            buf[offset:offset + len(raw)] = raw[:max(0, len(buf) - offset)]
    size = min([m[1] for m in mutations if m[0] == "truncate"], default=len(buf))
    return bytes(buf[:size])


def error_kind(e: GGUFError) -> str:
    """The message's field part with numbers and names blanked: 'tensor '…': dim N = N at offset N'."""
    field = re.sub(r"'[^']*'", "'…'", str(e))
    return re.sub(r"\d+", "N", field)[:90]


def run_case(src: Source, mutations, tmp_dir: Path) -> None:
    src.cases += 1
    truncated = any(m[0] == "truncate" for m in mutations)
    restore = None
    if src.full_path is not None and not truncated:
        # the big file is mutated in place (its header region) and put back afterwards
        path = src.full_path
        mutated = apply(src.data, mutations)
        restore = src.data
        with open(path, "r+b") as f:
            f.write(mutated)
    else:
        path = tmp_dir / f"case{src.cases}.gguf"
        path.write_bytes(apply(src.data, mutations))
    size = path.stat().st_size
    rss_before = reset_peak_rss()
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    start = time.perf_counter()
    try:
        try:
            f = GGUFFile(path)
        except GGUFError as e:
            src.outcomes[error_kind(e)] += 1
        else:
            src.outcomes["opened"] += 1
            if src.full_path is None:
                for t in f.tensors.values():
                    if t.type in SUPPORTED_TYPES:
                        assert dequantize(t.data, t.type, t.shape[0]).shape == (t.n_rows, t.shape[0])
            del f
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - start
        if restore is not None:
            with open(path, "r+b") as fh:
                fh.write(restore)
        elif path.exists():
            path.unlink()
    assert elapsed < CASE_SECONDS
    if rss_before is not None:
        growth = _status_bytes("VmHWM") - rss_before
        src.worst_growth = max(src.worst_growth, growth)
        assert growth <= 2 * size + MEMORY_ALLOWANCE, f"resident memory +{growth} bytes, {size}-byte file"


def fuzz(src: Source, tmp_dir: Path):
    @FUZZ_SETTINGS
    @given(mutation_lists(src))
    def case(mutations):
        run_case(src, mutations, tmp_dir)

    case()
    total = sum(src.outcomes.values())
    print(f"\n{src.name}: {total} cases, {src.file_size} bytes, largest resident-memory growth in a case "
          f"{src.worst_growth / 1e6:.1f} MB")
    for outcome, n in src.outcomes.most_common():
        print(f"  {n:6d}  {outcome}")
    assert total >= FUZZ_EXAMPLES // 2


def test_fuzz_small_file_every_value_type(tmp_path):
    data = small_valid_gguf()
    fuzz(Source("small every-value-type GGUF", data, len(data)), tmp_path)


def test_fuzz_synthetic_model(tmp_path):
    data = SYNTHETIC.read_bytes()
    fuzz(Source(SYNTHETIC.name, data, len(data)), tmp_path)


def test_fuzz_smollm2_header(smollm2_path, tmp_path):
    copy = tmp_path / "smollm2.gguf"
    shutil.copyfile(smollm2_path, copy)
    header = GGUFFile(copy).data_offset
    with open(copy, "rb") as f:
        data = f.read(header)
    fuzz(Source("SmolLM2 header", data, copy.stat().st_size, full_path=copy), tmp_path)


def test_sources_open_unmutated(smollm2_path, tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(small_valid_gguf())
    assert len(GGUFFile(path).tensors) == 4
    f = GGUFFile(SYNTHETIC)
    for t in f.tensors.values():
        assert np.isfinite(dequantize(t.data, t.type, t.shape[0])).all()
    assert GGUFFile(smollm2_path).data_offset == field_map(open(smollm2_path, "rb").read(2_000_000))["header_end"][0][0]


@pytest.mark.parametrize("n_strings, item", [(2_000_000, b""), (1_000_000, b"ab")], ids=["empty", "2-byte"])
def test_huge_string_array_is_linear(tmp_path, n_strings, item):
    """Millions of tiny strings (a hostile tokenizer section): linear time, bounded memory.

    Each string becomes a Python str, so the 2-byte case costs ~6x its bytes (reported, not capped);
    empty strings share one object and stay within twice the file size."""
    path = tmp_path / "strings.gguf"
    head = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + string("k")
            + struct.pack("<IIQ", ValueType.ARRAY, ValueType.STRING, n_strings))
    path.write_bytes(head + (struct.pack("<Q", len(item)) + item) * n_strings)
    size = path.stat().st_size
    rss_before = reset_peak_rss()
    start = time.perf_counter()
    strings = GGUFFile(path).metadata["k"]
    elapsed = time.perf_counter() - start
    assert len(strings) == n_strings and strings[-1] == item.decode()
    growth = _status_bytes("VmHWM") - rss_before if rss_before is not None else 0
    print(f"\n{n_strings} strings of {len(item)} bytes ({size / 1e6:.0f} MB): {elapsed:.2f} s, "
          f"resident memory +{growth / 1e6:.0f} MB")
    assert elapsed < CASE_SECONDS
    if not item and rss_before is not None:
        assert growth <= 2 * size + MEMORY_ALLOWANCE


# ---- metadata of the wrong type for a known key ----

V = ValueType
KNOWN_KEYS = sorted({v.format(arch="llama") for k, v in vars(Keys).items() if k.isupper()})
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
TYPED_VALUES = st.one_of(
    st.tuples(st.just(V.UINT8), st.integers(0, 2**8 - 1)),
    st.tuples(st.just(V.INT16), st.integers(-2**15, 2**15 - 1)),
    st.tuples(st.just(V.UINT32), st.sampled_from([0, 1, 3, 16, 64, 2**31, 2**32 - 1])),
    st.tuples(st.just(V.INT32), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.just(V.UINT64), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(V.INT64), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just(V.FLOAT32), st.floats(width=32)),
    st.tuples(st.just(V.FLOAT64), st.floats()),
    st.tuples(st.just(V.BOOL), st.booleans()),
    st.tuples(st.just(V.STRING), _TEXT),
    st.tuples(st.just(V.ARRAY), st.tuples(st.just(V.INT32), st.lists(st.integers(-2**31, 2**31 - 1), max_size=4))),
    st.tuples(st.just(V.ARRAY), st.tuples(st.just(V.FLOAT32), st.lists(st.floats(width=32), max_size=4))),
    st.tuples(st.just(V.ARRAY), st.tuples(st.just(V.STRING), st.lists(_TEXT, max_size=4))),
)


def _kind_of(vtype, value) -> str:
    """ggml.KEY_KINDS' name for a value written as (vtype, value)."""
    if vtype == V.ARRAY:
        return _kind_of(value[0], None) + "[]"
    return {V.FLOAT32: "float", V.FLOAT64: "float", V.BOOL: "bool", V.STRING: "str"}.get(vtype, "int")


def same_value(a, b) -> bool:
    if isinstance(a, np.ndarray):
        a = a.tolist()
    return a == b or (a != a and b != b) or (isinstance(a, list) and
                                             np.array_equal(np.array(a, float), np.array(b, float), equal_nan=True))


@pytest.fixture(scope="module")
def synthetic_file():
    return GGUFFile(SYNTHETIC)


def test_known_key_with_any_type(synthetic_file, tmp_path_factory):
    """A known key holds a kind ggml.KEY_KINDS allows (stored as is) or the reader refuses the file
    with a GGUFError naming the key; general.alignment must be a power-of-two UINT32."""
    tmp = tmp_path_factory.mktemp("keys")

    @FUZZ_SETTINGS
    @given(key=st.sampled_from(KNOWN_KEYS), item=TYPED_VALUES)
    def case(key, item):
        vtype, value = item
        good_alignment = vtype == V.UINT32 and value and not value & (value - 1)
        # the file is laid out for a new alignment up to 4096; a bigger one leaves its tensors misaligned
        alignment = value if key == Keys.ALIGNMENT and good_alignment and value <= 4096 else None
        path = tmp / "k.gguf"
        path.write_bytes(rebuild(synthetic_file, {key: item}, alignment=alignment))
        if key == Keys.ALIGNMENT and not alignment:
            with pytest.raises(GGUFError, match=None if good_alignment else "general.alignment"):
                GGUFFile(path)
            return
        kinds = expected_kinds(key)
        if kinds is not None and _kind_of(vtype, value) not in kinds:
            with pytest.raises(GGUFError, match=re.escape(repr(key)) + " must hold"):
                GGUFFile(path)
            return
        f = GGUFFile(path)
        assert f.value_types[key] == vtype
        expected = value[1] if vtype == V.ARRAY else value
        assert same_value(f.metadata[key], expected), (key, item, f.metadata[key])
        assert len(f.tensors) == len(synthetic_file.tensors)

    case()


def test_string_length_over_the_whole_file_costs_no_copy(tmp_path):
    """A key whose length covers 64 MB of binary data: rejected after the first bad byte, without the
    copy of all 64 MB that a failed one-shot decode puts into its exception (found by the fuzz run)."""
    n = 64 << 20
    path = tmp_path / "bigkey.gguf"
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, n) + b"k" * 1000 + b"\xff")
        f.truncate(24 + 8 + n + 4 + 1)
    rss_before = reset_peak_rss()
    message = r"metadata key #0 at offset 32: not valid UTF-8 \(invalid start byte at byte 1000\)"
    with pytest.raises(GGUFError, match=message):
        GGUFFile(path)
    if rss_before is not None:
        assert _status_bytes("VmHWM") - rss_before < 16 << 20
