"""The real command, run as a subprocess: `python -m runtime ...`."""
from __future__ import annotations

import pytest

import runtime
from runtime.generate import generate
from runtime.sampler import SamplingParams
from server_helpers import run_cli

PROMPT = "Once upon a time, in a small village,"


@pytest.fixture(scope="module")
def model(smollm2_path):
    return runtime.load(smollm2_path)


def generator_text(model, prompt, **params):
    max_tokens = params.pop("max_tokens")
    ids = model.tokenize(prompt, add_special=True, parse_special=True)
    gen = generate(model, model.new_session(), ids, SamplingParams(**params), max_tokens=max_tokens)
    return "".join(p.text for p in gen)


def test_one_shot_prints_only_the_completion(model, smollm2_path):
    r = run_cli("-m", smollm2_path, "-p", PROMPT, "--seed", 42, "-n", 16)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode("utf-8") == generator_text(model, PROMPT, seed=42, max_tokens=16)
    assert PROMPT not in r.stdout.decode("utf-8")
    assert b"Traceback" not in r.stderr


def test_sampling_flags_reach_the_sampler(model, smollm2_path):
    r = run_cli("-m", smollm2_path, "-p", PROMPT, "-s", 5, "-n", 12, "--temp", 1.3, "--top-k", 0, "--top-p", 0.9,
                "--min-p", 0.02, "--repeat-penalty", 1.3, "--repeat-last-n", 16, "--presence-penalty", 0.2,
                "--frequency-penalty", 0.1, "-c", 256, "-t", 1)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode("utf-8") == generator_text(
        model, PROMPT, seed=5, max_tokens=12, temperature=1.3, top_k=0, top_p=0.9, min_p=0.02, repeat_penalty=1.3,
        repeat_last_n=16, presence_penalty=0.2, frequency_penalty=0.1)


def test_prompt_from_stdin_and_file(model, smollm2_path, tmp_path):
    expected = generator_text(model, PROMPT, temperature=0, max_tokens=8)
    r = run_cli("-m", smollm2_path, "-p", "-", "--temp", 0, "-n", 8, stdin=(PROMPT + "\n").encode())
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode("utf-8") == expected
    f = tmp_path / "prompt.txt"
    f.write_bytes((PROMPT + "\n").encode())
    r = run_cli("-m", smollm2_path, "-f", f, "--temp", 0, "-n", 8, "--verbose")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode("utf-8") == expected
    assert b"tok/s" in r.stderr                     # --verbose timings go to stderr


def one_error_line(r) -> str:
    assert r.returncode == 2
    assert r.stdout == b""
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_user_errors_exit_2_with_one_line(smollm2_path, tmp_path):
    assert "model file not found" in one_error_line(run_cli("-m", tmp_path / "nope.gguf", "-p", "hi"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    line = one_error_line(run_cli("-m", bad, "-p", "hi"))
    assert line.startswith("chatfile: error: cannot load") and "bad.gguf" in line
    notgguf = tmp_path / "notes.txt"
    notgguf.write_text("just text\n")
    assert "error" in one_error_line(run_cli("-m", notgguf, "-p", "hi"))
    assert "--bogus" in one_error_line(run_cli("-m", smollm2_path, "--bogus"))
    assert "invalid int value" in one_error_line(run_cli("-m", smollm2_path, "-n", "many", "-p", "x"))
    assert "no model" in one_error_line(run_cli("-p", "hi"))
    line = one_error_line(run_cli("-m", smollm2_path, "-f", tmp_path / "missing.txt"))
    assert "cannot read prompt file" in line
    assert "not both" in one_error_line(run_cli("-m", smollm2_path, "-p", "x", "-f", bad))
    assert "ctx-size" in one_error_line(run_cli("-m", smollm2_path, "-p", "x", "-c", -5))
    assert "empty prompt" in one_error_line(run_cli("-m", smollm2_path, "-p", ""))


def test_help_exits_0():
    r = run_cli("--help")
    assert r.returncode == 0
    out = r.stdout.decode()
    for flag in ("--model", "--prompt", "--n-predict", "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
                 "--repeat-last-n", "--presence-penalty", "--frequency-penalty", "--seed", "--ctx-size",
                 "--threads", "--chat", "--system", "--chat-template", "--server", "--host", "--port",
                 "--api-key", "--nobrowser", "--verbose"):
        assert flag in out, flag


def test_prompt_and_system_prompt_that_are_not_utf8(smollm2_path):
    """Bytes that are not UTF-8 on the command line (Python turns them into lone surrogates): one line."""
    for args in ([b"-p", b"caf\xe9"], [b"--chat", b"--system", b"\xff\xfe"]):
        r = run_cli("-m", smollm2_path, *args, stdin=b"hi\n")
        assert r.returncode == 2 and "not UTF-8 text" in one_error_line(r), r.stderr
