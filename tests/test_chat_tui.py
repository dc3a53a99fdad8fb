"""The terminal chat: a whole session driven through a pseudo-terminal (pexpect), and piped stdin."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pexpect
import pytest

import runtime
from conftest import ROOT
from runtime.chat import Terminal
from runtime.chat_template import ChatTemplate, chat_prompt_ids
from runtime.generate import generate
from runtime.sampler import SamplingParams

# the dimmed line after each reply: "[N tokens, R tok/s; prompt P new + C cached tokens in T s...]"
STATS = r"(?:\x1b\[2m)?\[(\d+) tokens, ([\d.]+) tok/s; prompt (\d+) new \+ (\d+) cached"
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           TERM="dumb")


@pytest.fixture(scope="module")
def model(smollm2_path):
    return runtime.load(smollm2_path)


def greedy_reply(model, messages, max_tokens):
    template = ChatTemplate.for_model(model)
    ids = chat_prompt_ids(model, template, messages)
    gen = generate(model, model.new_session(), ids, SamplingParams(temperature=0), max_tokens=max_tokens,
                   stop=[template.eos_token])
    return "".join(p.text for p in gen)


def test_read_message_multiline():
    term = Terminal(stdin=io.StringIO('one\\\ntwo\\\nthree\n"""\nblock a\n\n  block b\n"""\nlast\n'),
                    stdout=io.StringIO(), stderr=io.StringIO())
    assert not term.interactive
    assert term.read_message() == "one\ntwo\nthree"
    assert term.read_message() == "block a\n\n  block b"
    assert term.read_message() == "last"
    with pytest.raises(EOFError):
        term.read_message()


def test_piped_stdin_chat(model, smollm2_path):
    r = subprocess.run([sys.executable, "-m", "runtime", "-m", str(smollm2_path), "--chat", "--temp", "0",
                        "-n", "24", "-c", "1024"], input=b"What is the capital of France?\n/exit\n",
                       capture_output=True, cwd=ROOT, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    reply = greedy_reply(model, [{"role": "user", "content": "What is the capital of France?"}], 24)
    assert r.stdout.decode("utf-8") == reply + "\n"          # replies only; notes and stats go to stderr
    assert b"tok/s" in r.stderr


def test_terminal_session_transcript(model, smollm2_path, tmp_path):
    child = pexpect.spawn(sys.executable, ["-m", "runtime", "-m", str(smollm2_path), "--chat", "--temp", "0",
                                           "-n", "200", "-c", "1024", "--system", "You are a helpful assistant."],
                          cwd=str(ROOT), env=ENV, encoding="utf-8", timeout=300, dimensions=(40, 200))
    child.logfile_read = open(tmp_path / "transcript.txt", "w", encoding="utf-8")
    system = {"role": "system", "content": "You are a helpful assistant."}
    try:
        child.expect_exact("/help for help")
        child.expect_exact(">>> ")

        child.sendline("/help")
        child.expect_exact("/clear")
        child.expect_exact("Ctrl-C")
        child.expect_exact(">>> ")

        # a reply, streamed, then the tokens/s line
        question = "What is the capital of France?"
        child.sendline(question)
        child.expect_exact(question + "\r\n")                  # the terminal echoes the typed line
        child.expect(STATS)
        reply = child.before
        expected = greedy_reply(model, [system, {"role": "user", "content": question}], 200)
        assert reply.replace("\r\n", "\n").strip() == expected.strip()
        child.expect_exact(">>> ")

        # Ctrl-C in the middle of a long reply stops it, not the program
        story = "Write a very long story about a dragon who learns to paint."
        child.sendline(story)
        child.expect_exact(story + "\r\n")
        child.expect(r"\w+\W+\w+\W+\w+")                        # three words of the reply have streamed
        child.sendintr()
        child.expect(r"\[(\d+) tokens, .*; stopped\]")
        assert int(child.match.group(1)) >= 3
        child.expect_exact(">>> ")

        # still chatting afterwards; /clear starts over
        child.sendline("/clear")
        child.expect_exact("(new conversation)")
        child.expect_exact(">>> ")
        child.sendline(question)
        child.expect(STATS)
        after_clear = child.before.split(question + "\r\n", 1)[1]
        assert after_clear.replace("\r\n", "\n").strip() == expected.strip()   # same conversation as before
        assert int(child.match.group(4)) > 0                                   # its system prompt was cached
        child.expect_exact(">>> ")

        # Ctrl-D quits cleanly
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
        child.logfile_read.close()
    assert child.exitstatus == 0, (tmp_path / "transcript.txt").read_text()
