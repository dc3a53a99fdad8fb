"""`python -m bundler.stub pack-onedir`: packing a runtime onedir built for another platform (the
aarch64 one of scripts/build_arm_stub.sh) into a stub that `chatfile build --stub` takes.

No emulation and no PyInstaller here: the onedir is a stand-in whose bootloader is just an ELF header
saying aarch64 (all the packer reads of it), with one file in each of the stub's two archives. Running
a real aarch64 stub is scripts/build_arm_stub.sh's business (docs/ARM.md).
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from runtime import bundle

zstandard = pytest.importorskip("zstandard")

ROOT = Path(__file__).resolve().parent.parent
BUILD_ID = "feedc0de0123456789abcdef"
EM_AARCH64, EM_X86_64 = 183, 62


def chatfile(*args, module="bundler.cli") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def elf_header(machine: int) -> bytes:
    """The first 64 bytes of a little-endian ELF64 executable for `machine` (e_machine)."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)            # ELFCLASS64, ELFDATA2LSB, EV_CURRENT
    return ident + (2).to_bytes(2, "little") + machine.to_bytes(2, "little") + bytes(44)


def fake_onedir(parent: Path, machine: int) -> Path:
    onedir = parent / "chatfile-rt"
    (onedir / "_internal" / "numpy").mkdir(parents=True)
    (onedir / "chatfile-rt").write_bytes(elf_header(machine))
    (onedir / "chatfile-rt").chmod(0o755)
    (onedir / "_internal" / "base_library.zip").write_bytes(b"part one")
    (onedir / "_internal" / "numpy" / "__init__.py").write_text("# part two\n")
    (onedir / "BUILD_ID").write_text(BUILD_ID + "\n")
    return onedir


def launcher_numbers(stub: Path) -> dict[str, int]:
    head = stub.read_bytes()[:16384].decode("ascii", "replace")
    return {k: int(v) for k, v in re.findall(r"^([A-Z0-9_]+_(?:OFFSET|SIZE))=(\d+)$", head, re.M)}


def test_foreign_onedir_packs_to_a_stub_that_build_takes(tmp_path, smollm2_path):
    onedir = fake_onedir(tmp_path, EM_AARCH64)
    r = chatfile("pack-onedir", onedir, "-o", tmp_path, module="bundler.stub")
    assert r.returncode == 0, r.stderr
    stub = Path(r.stdout.strip())
    assert stub == tmp_path / f"chatfile-stub-linux-aarch64-{BUILD_ID}"
    info = bundle.read_info(stub)
    assert (info.stub_platform, info.build_id, info.has_model) == ("linux-aarch64", BUILD_ID, False)

    # the launcher's numbers point at the two archives, which hold the onedir split as for x86
    n, raw = launcher_numbers(stub), stub.read_bytes()
    assert n["PART2_OFFSET"] == n["ARCHIVE_OFFSET"] + n["ARCHIVE_SIZE"]
    part1 = raw[n["ARCHIVE_OFFSET"]:n["ARCHIVE_OFFSET"] + n["ARCHIVE_SIZE"]]
    with tarfile.open(fileobj=io.BytesIO(part1), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["BUILD_ID", "_internal/base_library.zip", "chatfile-rt"]
        assert tar.extractfile("chatfile-rt").read() == elf_header(EM_AARCH64)
    part2 = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(raw[n["PART2_OFFSET"]:n["PART2_OFFSET"] + n["PART2_SIZE"]]))
    with tarfile.open(fileobj=part2, mode="r|") as tar:
        assert [m.name for m in tar] == ["_internal/numpy/__init__.py"]

    out = tmp_path / "smol-arm64"
    r = chatfile("build", smollm2_path, "-o", out, "--stub", stub)
    assert r.returncode == 0, r.stderr
    assert "for linux-aarch64" in r.stderr
    facts = json.loads(chatfile("inspect", out, "--json").stdout)
    assert (facts["stub_platform"], facts["build_id"]) == ("linux-aarch64", BUILD_ID)
    assert bundle.read_info(out).payload_size == smollm2_path.stat().st_size


def test_platform_must_match_the_bootloader(tmp_path):
    onedir = fake_onedir(tmp_path, EM_X86_64)
    r = chatfile("pack-onedir", onedir, "-o", tmp_path / "stub", "--platform", "linux-aarch64",
                 module="bundler.stub")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"chatfile: {onedir / 'chatfile-rt'} is built for linux-x86_64, "
                                             f"not linux-aarch64"]
    assert not (tmp_path / "stub").exists()

    r = chatfile("pack-onedir", tmp_path, "-o", tmp_path / "stub", module="bundler.stub")   # not a onedir
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_old_stubs_of_this_platform_are_pruned(tmp_path):
    from bundler import stub
    plat = stub.stub_platform()
    files = []
    for i in range(6):                                   # oldest first
        p = tmp_path / f"chatfile-stub-{plat}-{i:024x}"
        p.write_bytes(b"x")
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
        files.append(p)
    foreign = tmp_path / "chatfile-stub-linux-aarch64-0123"
    foreign.write_bytes(b"y")
    os.utime(foreign, (1, 1))
    current = files[0]                                   # the stub just built may have any mtime
    gone = stub.prune_stubs(tmp_path, keep=current, n=3)
    assert sorted(gone) == sorted(files[1:4])           # the two newest others stay, with `keep`
    assert sorted(tmp_path.iterdir()) == sorted([current, files[4], files[5], foreign])
