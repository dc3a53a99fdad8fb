"""The bundle format, `chatfile build --stub`, inspect and verify, on the real SmolLM2 GGUF.

These use a small stand-in stub (a shell script with the real stub footer from bundler/pack.py) so the
format is tested without a PyInstaller build; tests/test_build.py builds and runs the real thing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundler import pack
from runtime import bundle
from runtime.gguf import GGUFError, GGUFFile

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = b"#!/bin/sh\necho 'stand-in stub'\nexit 0\n"


def chatfile(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundler.cli", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str):
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def stub(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stub") / "stub"
    path.write_bytes(LAUNCHER + pack.stub_tail(len(LAUNCHER), platform="test-any", kind="sh",
                                               build_id="0123456789abcdef01234567"))
    return path


@pytest.fixture(scope="module")
def built(stub, smollm2_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "smol"
    r = chatfile("build", smollm2_path, "-o", out, "--stub", stub, "--name", "Smol Test",
                 "--args", "--temp 0.2 --system 'You are terse.'")
    assert r.returncode == 0, r.stderr
    return out


def test_stub_footer_round_trip(stub):
    info = bundle.read_info(stub)
    assert (info.version, info.stub_size, info.has_model) == (bundle.FORMAT_VERSION, len(LAUNCHER), False)
    assert (info.stub_platform, info.build_id) == ("test-any", "0123456789abcdef01234567")
    assert info.payload_sha256 == ""


def test_layout_and_zero_copy_model(built, smollm2_path):
    info = bundle.read_info(built)
    model_bytes = smollm2_path.read_bytes()
    assert info.payload_offset % bundle.PAYLOAD_ALIGNMENT == 0 and info.payload_offset >= len(LAUNCHER)
    assert info.payload_size == len(model_bytes)
    assert info.model_name == "Smol Test"
    assert info.args == ["--temp", "0.2", "--system", "You are terse."]
    assert (info.stub_platform, info.build_id) == ("test-any", "0123456789abcdef01234567")
    assert os.access(built, os.X_OK)
    raw = built.read_bytes()
    assert raw[:len(LAUNCHER)] == LAUNCHER                         # the stub is copied verbatim
    assert raw[len(LAUNCHER):info.payload_offset] == bytes(info.payload_offset - len(LAUNCHER))
    assert raw[info.payload_offset:info.payload_offset + info.payload_size] == model_bytes
    assert raw[-bundle.FOOTER.size:].startswith(bundle.MAGIC)

    # the embedded model parses in place, every tensor a view of the bundle's own mapping
    inner, plain = GGUFFile(built, offset=info.payload_offset), GGUFFile(smollm2_path)
    assert inner.metadata.keys() == plain.metadata.keys()
    assert list(inner.tensors) == list(plain.tensors)
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "output_norm.weight"):
        a, b = inner.tensors[name], plain.tensors[name]
        assert np.array_equal(a.data, b.data)
        assert np.shares_memory(a.data, inner.memmap)
        assert (a.data.ctypes.data - inner.memmap.ctypes.data) % 32 == 0


def test_find_model(built, smollm2_path):
    info = bundle.read_info(built)
    assert bundle.find_model(str(smollm2_path), (str(built), info.payload_offset)) == (str(smollm2_path), 0)
    assert bundle.find_model(None, (str(built), info.payload_offset)) == (str(built), info.payload_offset)
    assert bundle.find_model(str(built), None) == (str(built), info.payload_offset)   # -m BUNDLE
    with pytest.raises(bundle.BundleError, match="no model"):
        bundle.find_model(None, None)


def test_inspect_bundle_and_gguf(built, smollm2_path):
    r = chatfile("inspect", built, "--json")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    info = bundle.read_info(built)
    assert facts["kind"] == "bundle" and facts["format_version"] == bundle.FORMAT_VERSION
    assert facts["bundle_model_name"] == "Smol Test"
    assert facts["architecture"] == "llama"
    assert facts["context_length"] == 8192
    assert facts["tokenizer"] == "gpt2" and facts["chat_template"] is True
    assert facts["quant_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert facts["parameters"] == 134_515_008
    assert facts["payload_offset"] == info.payload_offset and facts["payload_aligned"] is True
    assert facts["payload_size"] == smollm2_path.stat().st_size
    assert facts["payload_sha256"] == info.payload_sha256
    assert facts["args"] == ["--temp", "0.2", "--system", "You are terse."]
    assert facts["stub_platform"] == "test-any" and facts["build_id"] == "0123456789abcdef01234567"

    plain = json.loads(chatfile("inspect", smollm2_path, "--json").stdout)
    assert plain["kind"] == "gguf" and "payload_offset" not in plain
    assert {k: plain[k] for k in ("architecture", "parameters", "quant_types")} == \
           {k: facts[k] for k in ("architecture", "parameters", "quant_types")}

    text = chatfile("inspect", built)
    assert text.returncode == 0
    assert "payload sha256" in text.stdout and info.payload_sha256 in text.stdout
    assert "--temp 0.2 --system 'You are terse.'" in text.stdout


def test_verify_catches_a_flipped_payload_byte(built, tmp_path):
    r = chatfile("verify", built)
    assert r.returncode == 0 and "intact" in r.stdout, r
    damaged = tmp_path / "damaged"
    data = bytearray(built.read_bytes())
    info = bundle.read_info(built)
    data[info.payload_offset + info.payload_size // 2] ^= 0x01
    damaged.write_bytes(data)
    r = chatfile("verify", damaged)
    assert r.returncode == 1 and "DAMAGED" in r.stdout, r


def test_truncated_bundle_is_a_clear_error(built, tmp_path):
    cut = tmp_path / "cut"
    cut.write_bytes(built.read_bytes()[:-10])
    for cmd in ("verify", "inspect"):
        assert_one_line_error(chatfile(cmd, cut))
    with pytest.raises(bundle.BundleError):
        bundle.read_info(cut)


def test_damaged_footer_fields(built, tmp_path):
    raw = bytearray(built.read_bytes())
    end = len(raw) - bundle.FOOTER.size
    fields = list(bundle.FOOTER.unpack_from(raw, end))
    cases = {"version": (1, 99), "meta_size": (3, 2**31), "payload_offset": (5, 12345),
             "payload_size": (6, 2**60)}
    for what, (i, value) in cases.items():
        bad = list(fields)
        bad[i] = value
        path = tmp_path / what
        path.write_bytes(raw[:end] + bundle.FOOTER.pack(*bad))
        with pytest.raises(bundle.BundleError):
            bundle.read_info(path)
        assert_one_line_error(chatfile("verify", path))


def test_refuses_to_overwrite(built, stub, smollm2_path, tmp_path):
    out = tmp_path / "exists"
    out.write_text("precious")
    r = chatfile("build", smollm2_path, "-o", out, "--stub", stub)
    assert_one_line_error(r, "already exists", "--force")
    assert out.read_text() == "precious"
    r = chatfile("build", smollm2_path, "-o", out, "--stub", stub, "--force")
    assert r.returncode == 0, r.stderr
    assert bundle.read_info(out).payload_size == smollm2_path.stat().st_size
    assert not list(tmp_path.glob(".*partial"))


def test_bad_inputs_are_one_line_errors(stub, built, smollm2_path, tmp_path):
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello, I am not a model\n")
    out = tmp_path / "out"
    assert_one_line_error(chatfile("build", not_gguf, "-o", out, "--stub", stub), "magic")
    assert_one_line_error(chatfile("build", tmp_path / "missing.gguf", "-o", out, "--stub", stub),
                          "no such file")
    assert_one_line_error(chatfile("build", smollm2_path, "-o", out, "--stub", smollm2_path),
                          "not a chatfile bundle")
    assert_one_line_error(chatfile("build", smollm2_path, "-o", out, "--stub", built), "not a stub")
    assert_one_line_error(chatfile("build", built, "-o", out, "--stub", stub), "already a chatfile bundle")
    assert_one_line_error(chatfile("build", smollm2_path, "-o", out, "--stub", stub, "--args", "'unclosed"),
                          "--args")
    assert_one_line_error(chatfile("verify", smollm2_path), "not a chatfile bundle")
    assert_one_line_error(chatfile("verify", stub), "stub")
    assert_one_line_error(chatfile("inspect", not_gguf), "magic")
    assert_one_line_error(chatfile("inspect", tmp_path / "nope"), "no such file")
    assert_one_line_error(chatfile("frobnicate"), "invalid choice")
    assert not out.exists()


def test_gguf_errors_inside_a_bundle_name_the_field(stub, smollm2_path, tmp_path):
    """A bundle whose payload is damaged at the GGUF magic: inspect fails with the reader's message."""
    out = tmp_path / "b"
    assert chatfile("build", smollm2_path, "-o", out, "--stub", stub).returncode == 0
    info = bundle.read_info(out)
    with open(out, "r+b") as f:
        f.seek(info.payload_offset)
        f.write(b"GGUX")
    with pytest.raises(GGUFError, match="magic"):
        GGUFFile(out, offset=info.payload_offset)
    assert_one_line_error(chatfile("inspect", out), "magic")
