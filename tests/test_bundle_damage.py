"""A real SmolLM2 executable with one flipped or missing byte in each region of its layout (issue 6).

For every case, `chatfile verify` must say the file is damaged, and the damaged executable, run the way
a user runs it (`env -i`, a fresh HOME: nothing unpacked or compiled yet), must either print exactly
what the intact one prints or exit non-zero with one `chatfile: ...` line on stderr (besides the
first-run progress lines): never a traceback, a shell error, a signal or a hang. Each case also pins
which of the two happens, so losing a defence fails the test.

Layout (runtime/bundle.py): launcher script (self-checked with cksum) | newline padding | runtime part 1,
tar.gz | part 2, tar.zst | zero padding | GGUF payload | meta JSON | footer.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_helpers import ROOT, build_bundle, launcher_fields, run_clean
from runtime import bundle

pytestmark = pytest.mark.slow

ARGS = ("-p", "Hi", "-n", "2", "--temp", "0")
RUN_TIMEOUT = 300          # a hang, not a slow machine: a first run here takes ~15 s
PROGRESS = (b"chatfile: first run of this build: unpacking", b"chatfile: runtime ready",
            b"chatfile: first run on this machine: compiling")


def chatfile(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundler.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def intact(smollm2_path, tmp_path_factory) -> Path:
    return build_bundle(smollm2_path, tmp_path_factory.mktemp("intact") / "smol")


@pytest.fixture(scope="module")
def layout(intact) -> dict[str, int]:
    info = bundle.read_info(intact)
    fields = launcher_fields(intact)
    assert fields["PART2_OFFSET"] + fields["PART2_SIZE"] == info.stub_size
    assert info.payload_offset > info.stub_size, "no padding between runtime and model to damage"
    raw_meta = intact.read_bytes()[info.meta_offset:info.file_size - bundle.FOOTER.size]
    return {**fields, "stub_size": info.stub_size, "payload_offset": info.payload_offset,
            "payload_size": info.payload_size, "meta_offset": info.meta_offset,
            "model_name": info.meta_offset + raw_meta.index(b'"model_name":"') + len(b'"model_name":"'),
            "footer": info.file_size - bundle.FOOTER.size, "file_size": info.file_size}


@pytest.fixture(scope="module")
def first_run(intact, tmp_path_factory) -> tuple[bytes, Path]:
    """What the intact executable prints on its first run in a fresh HOME, and that HOME (now warm)."""
    home = tmp_path_factory.mktemp("home-intact")
    r = run_clean(intact, *ARGS, home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr.decode()
    assert b"unpacking the runtime" in r.stderr and r.stdout.strip()
    return r.stdout, home


@pytest.fixture(scope="module")
def expected(first_run) -> bytes:
    return first_run[0]


def script_offset(exe: Path, text: bytes) -> int:
    with open(exe, "rb") as f:
        return f.read(1 << 16).index(text)


# (what is damaged, how) -> (where, "flip" a bit | "drop" the byte | "cut" the file there), the outcome
# ("runs" | "refused") and a fragment of the refusal message
CASES = {
    "script: a command": (lambda exe, l: ("flip", script_offset(exe, b"private_dir() {") + 3),
                          "refused", "launcher script does not match its checksum"),
    "script: a number": (lambda exe, l: ("flip", script_offset(exe, b"\nPART2_OFFSET=") + 14),
                         "refused", "numbers do not add up"),
    "script: its padding": (lambda exe, l: ("flip", l["ARCHIVE_OFFSET"] - 1),
                            "refused", "launcher and runtime do not match their sha256"),
    "runtime: tar.gz": (lambda exe, l: ("flip", l["ARCHIVE_OFFSET"] + l["ARCHIVE_SIZE"] // 2),
                        "refused", "runtime archive fails its checksum"),
    "runtime: tar.zst": (lambda exe, l: ("flip", l["PART2_OFFSET"] + l["PART2_SIZE"] // 2),
                         "refused", "launcher and runtime do not match their sha256"),
    "runtime: cut in tar.zst": (lambda exe, l: ("cut", l["PART2_OFFSET"] + l["PART2_SIZE"] // 2),
                                "refused", "truncated"),
    "zero padding": (lambda exe, l: ("flip", (l["stub_size"] + l["payload_offset"]) // 2), "runs", None),
    "model: GGUF header": (lambda exe, l: ("flip", l["payload_offset"] + 4),
                           "refused", "embedded model does not match its sha256"),
    "model: tensor data": (lambda exe, l: ("flip", l["payload_offset"] + l["payload_size"] // 2),
                           "refused", "embedded model does not match its sha256"),
    "model: a missing byte": (lambda exe, l: ("drop", l["payload_offset"] + l["payload_size"] // 2),
                              "refused", "truncated or damaged bundle"),
    "meta: model name": (lambda exe, l: ("flip", l["model_name"] + 1),
                         "refused", "metadata or footer does not match its checksum"),
    "footer: stub size": (lambda exe, l: ("flip", l["footer"] + 16),
                          "refused", "metadata or footer does not match its checksum"),
    "footer: last byte missing": (lambda exe, l: ("cut", l["file_size"] - 1), "refused", "truncated"),
}


def damaged_copy(src: Path, dst: Path, how: str, at: int) -> Path:
    """SRC with the bit 0 of byte AT flipped ("flip"), that byte left out ("drop"), the file cut there
    ("cut"), or intact ("copy")."""
    if how == "copy":
        shutil.copyfile(src, dst)
        dst.chmod(0o755)
        return dst
    data = memoryview(src.read_bytes())
    with open(dst, "wb") as f:
        f.write(data[:at])
        if how == "flip":
            f.write(bytes([data[at] ^ 0x01]))
        if how in ("flip", "drop"):
            f.write(data[at + 1:])
    dst.chmod(0o755)
    return dst


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_bundle(case, intact, layout, expected, tmp_path):
    where, outcome, message = CASES[case]
    how, at = where(intact, layout)
    exe = damaged_copy(intact, tmp_path / "smol", how, at)
    home = tmp_path / "home"
    home.mkdir()
    try:
        v = chatfile("verify", exe)
        assert v.returncode != 0, v.stdout
        if v.returncode == 1:
            assert "DAMAGED" in v.stdout, v.stdout
        else:                               # the footer or meta: read_info's one line
            assert v.returncode == 2 and "Traceback" not in v.stderr, v.stderr
            assert len(v.stderr.strip().splitlines()) == 1, v.stderr
            assert "damaged" in v.stderr or "truncated" in v.stderr, v.stderr

        r = run_clean(exe, *ARGS, home=home, timeout=RUN_TIMEOUT)
        stderr = r.stderr.decode(errors="replace")
        assert r.returncode >= 0, f"killed by signal {-r.returncode}: {stderr}"
        assert "Traceback" not in stderr, stderr
        if outcome == "runs":
            assert r.returncode == 0 and r.stdout == expected, stderr
        else:
            assert r.returncode != 0, (r.stdout, stderr)
            lines = [line for line in r.stderr.splitlines() if not line.startswith(PROGRESS)]
            assert len(lines) == 1 and lines[0].startswith(b"chatfile: "), stderr
            assert message in lines[0].decode(), stderr
            assert not r.stdout
    finally:
        shutil.rmtree(home, ignore_errors=True)
        exe.unlink()


def test_intact_and_damaged_after_a_checked_launch(intact, first_run, tmp_path):
    """verify passes the intact file; the model is hashed on a file's first launch, and a file changed
    after that is hashed (and refused) again."""
    v = chatfile("verify", intact)
    assert v.returncode == 0 and "intact" in v.stdout and "no checksum" not in v.stdout, v.stdout
    expected, home = first_run

    def stamps() -> set[Path]:       # the runtime's "checked" files (rt-BUILD_ID is a link to rt-BUILD_ID.xxxxxx)
        return {p.resolve() for p in (home / ".cache" / "chatfile").glob("rt-*/checked/*")}

    before = stamps()
    assert len(before) == 1                                        # the intact file's first launch
    exe = damaged_copy(intact, tmp_path / "smol", "copy", 0)      # a new file: checked on its first launch
    try:
        for _ in range(2):
            r = run_clean(exe, *ARGS, home=home)
            assert r.returncode == 0 and r.stdout == expected, r.stderr.decode()
            assert len(stamps() - before) == 1
        info = bundle.read_info(exe)
        with open(exe, "r+b") as f:                                # damaged in place, after the check
            f.seek(info.payload_offset + info.payload_size // 3)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x01]))
        r = run_clean(exe, *ARGS, home=home)
        assert r.returncode == 2 and not r.stdout, r
        assert r.stderr.decode().strip().splitlines() == [
            f"chatfile: {exe}: damaged file: the embedded model does not match its sha256 "
            "(download or build it again)"]
    finally:
        exe.unlink()


def test_launcher_self_check_value_is_current():
    """Line 2 of stubs/launcher.sh holds the cksum of lines 9 to the end; an edit must update it."""
    script = ROOT / "stubs" / "launcher.sh"
    lines = script.read_bytes().splitlines(keepends=True)
    r = subprocess.run(["cksum"], input=b"".join(lines[8:]), capture_output=True, check=True)
    want = f'head -n {len(lines)} "$0" | tail -n +9 | cksum)" != "{r.stdout.decode().strip()}"'
    assert want.encode() in lines[1], f"stubs/launcher.sh line 2 must read: ... {want} ..."
    assert not re.search(rb"@[A-Z_]+@", b"".join(lines[8:]))     # the numbers filled in stay out of it


def test_meta_and_footer_bytes_are_all_checked(intact, tmp_path):
    """read_info refuses a flipped bit anywhere in the meta and footer, the flag bit that turns the
    check on included; `verify` prints it as one line."""
    info = bundle.read_info(intact)
    assert json.loads(intact.read_bytes()[info.meta_offset:info.file_size - bundle.FOOTER.size])["meta_sha256"]
    footer = info.file_size - bundle.FOOTER.size
    copy = damaged_copy(intact, tmp_path / "copy", "copy", 0)
    assert bundle.read_info(copy) == dataclasses.replace(info, path=str(copy))     # undamaged, it reads
    spots = {"meta text": info.meta_offset + 2, "meta checksum": footer - 3, "flags": footer + 10,
             "meta size": footer + 12, "payload offset": footer + 26, "payload size": footer + 32,
             "payload sha256": info.file_size - 1}
    for what, at in spots.items():
        path = damaged_copy(intact, tmp_path / "bad", "flip", at)
        with pytest.raises(bundle.BundleError, match="damaged|truncated"):
            bundle.read_info(path)
        v = chatfile("verify", path)
        assert v.returncode == 2 and len(v.stderr.strip().splitlines()) == 1, (what, v)
        path.unlink()
