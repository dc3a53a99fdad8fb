"""Terminal escape sequences from the model file (general.name) and from the model's output never reach
a terminal (runtime/escapes.py); a pipe still gets the model's exact bytes from -p.

The model: the synthetic llama with an output norm of zeros (every logit equal, so greedy decoding
picks token 0 every time) and token 0 a user-defined token whose text sets the window title, writes
the clipboard (OSC 52), clears the screen and rings the bell.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pexpect
import pytest

from gguf_helpers import gguf_bytes, metadata_item
from runtime.escapes import TerminalFilter, printable
from runtime.ggml import GGMLType, TokenType, ValueType
from runtime.gguf import GGUFFile
from server_helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "data" / "synthetic" / "llama-Q8_0.gguf"
EVIL = "\x1b]0;pwned\x07\x1b]52;c;cm0gLXJmIH4K\x1b\\\x1b[2J\x1b[H\x9b31m\x07XX"
NAME = "Evil\x1b]0;owned\x07 \x1b[31mModel\x1b[0m"
ESCAPES = ("\x1b", "\x07", "\x9b", "\x9d")


@pytest.fixture(scope="module")
def evil_model(tmp_path_factory) -> Path:
    f = GGUFFile(SYNTHETIC)
    tokens = list(f.metadata["tokenizer.ggml.tokens"])
    types = np.array(f.metadata["tokenizer.ggml.token_type"])
    tokens[0], types[0] = EVIL, int(TokenType.USER_DEFINED)
    kvs = []
    for key, value in f.metadata.items():
        value = {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types, "general.name": NAME}.get(key, value)
        kvs.append((key, *metadata_item(value, f.value_types[key])))
    tensors = [(t.name, list(t.shape), t.type,
                bytes(t.data.nbytes) if t.name == "output_norm.weight" else t.data.tobytes())
               for t in f.tensors.values()]
    path = tmp_path_factory.mktemp("evil") / "evil.gguf"
    path.write_bytes(gguf_bytes(kvs, tensors, alignment=f.alignment))
    return path


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm")


def test_pipe_gets_the_exact_bytes(evil_model):
    r = subprocess.run([sys.executable, "-m", "runtime", "-m", str(evil_model), "-p", "Hi", "-n", "2", "--temp", "0"],
                       capture_output=True, cwd=ROOT, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == (EVIL * 2).encode()          # what the model wrote, byte for byte


def test_terminal_gets_no_escape_sequences_from_p(evil_model):
    child = pexpect.spawn(sys.executable, ["-m", "runtime", "-m", str(evil_model), "-p", "Hi", "-n", "2", "--temp", "0"],
                          cwd=str(ROOT), env=_env(), timeout=600, encoding="utf-8")
    out = child.read()
    child.close()
    assert child.exitstatus == 0, out
    assert "XXXX" in out and not any(e in out for e in ESCAPES), repr(out)


def test_terminal_chat_transcript_has_only_our_own_escapes(evil_model):
    """The whole session as the terminal saw it: the name in the greeting and the replies carry none of
    the file's sequences; the only escapes are the chat's own dim notes."""
    log = []

    class Log:
        def write(self, s):
            log.append(s)

        def flush(self):
            pass

    child = pexpect.spawn(sys.executable, ["-m", "runtime", "-m", str(evil_model), "--chat", "-n", "3", "--temp", "0"],
                          cwd=str(ROOT), env=_env(), timeout=600, encoding="utf-8")
    child.logfile_read = Log()
    child.expect(">>> ")
    child.sendline("Hi")
    child.expect(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    seen = "".join(log)
    assert "Evil Model" in seen and "XXXXXX" in seen, repr(seen)
    for allowed in ("\x1b[2m", "\x1b[0m"):
        seen = seen.replace(allowed, "")
    readline = ("\x1b[?1034h", "\x1b[?2004h", "\x1b[?2004l")          # line editing's own mode switches
    for allowed in readline:
        seen = seen.replace(allowed, "")
    assert not any(e in seen for e in ESCAPES), repr(seen)


def test_server_start_line_and_inspect_strip_the_name(evil_model):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "-m", str(evil_model), "--server", "--port", str(port)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=ROOT, env=_env())
    try:
        line = proc.stderr.readline().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert line.startswith("chatfile: Evil Model at http://127.0.0.1:"), repr(line)
    r = subprocess.run([sys.executable, "-m", "bundler.cli", "inspect", str(evil_model)], capture_output=True, cwd=ROOT,
                       env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    assert "Evil Model" in r.stdout.decode() and not any(e in r.stdout.decode() for e in ESCAPES)


def test_filter_on_a_stream_split_anywhere():
    """Every way of cutting EVIL into pieces (the model's tokens) gives the same text as the whole."""
    whole = printable(EVIL + "tail")
    assert whole == "XXtail"
    for cut in range(len(EVIL)):
        for cut2 in range(cut, len(EVIL)):
            f = TerminalFilter()
            assert f.feed(EVIL[:cut]) + f.feed(EVIL[cut:cut2]) + f.feed(EVIL[cut2:] + "tail") == whole
    assert printable("tab\tand\nnewline kept; \r\x08\x7f\x85 gone") == "tab\tand\nnewline kept;  gone"
    f = TerminalFilter()
    out = f.feed("\x1b]0;" + "x" * 10_000)            # a sequence never ended swallows 4096 characters, no more
    assert set(out) == {"x"} and abs(len(out) - (10_000 - 4096)) <= 4, len(out)
