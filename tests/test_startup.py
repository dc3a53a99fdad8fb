"""What a launch does before the first token that is not loading: the weights' pages mapped ahead on
another core (memory.populate_in_background), and the garbage collector off until the model is loaded
(runtime.cli.loaded). The launch figures themselves are measured by scripts/launch_bench.py, not here.
"""
from __future__ import annotations

import gc
import mmap

import numpy as np
import pytest

from runtime import cli
from runtime.gguf import GGUFFile
from runtime.memory import populate, populate_in_background


def _pages_mapped(array: np.ndarray) -> tuple[int, int]:
    """(pages of `array` present in this process's page tables, pages of `array`): /proc/self/pagemap,
    bit 63 of each page's entry. A fresh mapping has none until they are touched or populated."""
    first = array.__array_interface__["data"][0] // mmap.PAGESIZE
    last = (array.__array_interface__["data"][0] + array.size - 1) // mmap.PAGESIZE
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = np.frombuffer(f.read((last - first + 1) * 8), dtype=np.uint64)
    return int((entries >> np.uint64(63)).sum()), len(entries)


def test_the_weights_are_mapped_before_the_kernels_read_them(smollm2_path):
    GGUFFile(smollm2_path)._array.sum()              # the file in the page cache, as on a warm launch
    if not populate(GGUFFile(smollm2_path)._array[:mmap.PAGESIZE]):
        pytest.skip("this kernel has no MADV_POPULATE_READ (Linux < 5.14): the kernels fault pages in")
    cold = GGUFFile(smollm2_path)                        # only the metadata's pages were read
    mapped, pages = _pages_mapped(cold._array)
    assert mapped < pages // 4, (mapped, pages)          # the weights: 96 of SmolLM2's 98 MB

    ahead = GGUFFile(smollm2_path)
    thread = populate_in_background(ahead._array)
    assert thread is not None
    thread.join(timeout=60)
    mapped, pages = _pages_mapped(ahead._array)
    assert mapped == pages, (mapped, pages)              # every page, before any kernel reads one


def test_nothing_is_populated_that_would_not_fit(monkeypatch, smollm2_path):
    monkeypatch.setattr("runtime.memory.available_bytes", lambda: 1 << 20)     # 1 MiB free
    assert populate_in_background(GGUFFile(smollm2_path)._array) is None


def test_the_collector_is_back_on_once_the_model_is_loaded(smollm2_path, capsysbinary):
    frozen = gc.get_freeze_count()
    gc.disable()                                         # as stubs/entry.py and runtime/__main__.py start
    try:
        assert cli.main(["-m", str(smollm2_path), "-p", "Hi", "-n", "2", "--temp", "0"]) == 0
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen            # what the load made is out of later collections
    finally:
        gc.enable()
        gc.unfreeze()
    assert capsysbinary.readouterr().out                 # and the run went on to generate
