"""One real build: `chatfile build` makes the PyInstaller stub and an executable from SmolLM2, which then
runs in a clean environment (`env -i`, a fresh HOME, no virtualenv on PATH).

`chatfile build` takes the stub from the user's stub cache, building it first (one PyInstaller build, a
few minutes) when the runtime sources changed since the last build; every test here re-uses it and the
executable.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from runtime import bundle

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PROMPT = ["-p", "The capital of France is", "-n", "12", "-s", "7", "--temp", "0.7"]
CLEAN_PATH = "/usr/bin:/bin"


def chatfile(*args, env=None, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundler.cli", *map(str, args)], cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def chatfile_run(model, *args) -> bytes:
    """stdout of `chatfile run MODEL ARGS` with the kernels loaded from numba's cache, as bytes (what
    the executable must print too, once its own kernel cache is warm).

    Run twice because the runtime's output with freshly compiled kernels can differ in the last bits
    from the cached kernels' (seen 2026-11-24: same seed, one token apart), which is not the bundle's
    business; the comparisons here are cached against cached.
    """
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "bundler.cli", "run", str(model), *map(str, args)], cwd=ROOT,
                           timeout=600, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.strip()
    return r.stdout


def run_warm(exe, *args, **kw) -> subprocess.CompletedProcess:
    """run_clean twice (the first run may unpack and compile); the second run's result."""
    first = run_clean(exe, *args, **kw)
    assert first.returncode == 0, first.stderr.decode()
    return run_clean(exe, *args, **kw)


def run_clean(exe, *args, home: str | None, cwd=None, user: int | None = None, env=None,
              timeout=300) -> subprocess.CompletedProcess:
    """Run `exe` under `env -i` with only PATH (no venv) and HOME; as `user` (via setpriv) if given."""
    pre = ["env", "-i", f"PATH={CLEAN_PATH}"] + ([f"HOME={home}"] if home is not None else [])
    pre += [f"{k}={v}" for k, v in (env or {}).items()]
    if user is not None:
        pre = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + pre
    return subprocess.run(pre + [str(exe), *map(str, args)], cwd=cwd or "/", capture_output=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def build_dir() -> Path:
    # world-traversable, so the tests that run as an unprivileged user can reach the executable
    d = Path(tempfile.mkdtemp(prefix="chatfile-build-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def exe(build_dir, smollm2_path) -> Path:
    """SmolLM2 bundled by `chatfile build` (no --stub). The stub comes from the user's stub cache like
    any `chatfile build`: built here (one PyInstaller build) whenever the runtime sources changed."""
    out = build_dir / "smollm2"
    r = chatfile("build", smollm2_path, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "chatfile: wrote" in r.stderr
    out.chmod(0o755)
    return out


@pytest.fixture
def home(tmp_path) -> str:
    h = tmp_path / "home"
    h.mkdir()
    return str(h)


@pytest.fixture
def shared_tmp(build_dir, tmp_path) -> Path:
    """A directory an unprivileged user can reach (pytest's tmp_path is private to us)."""
    d = build_dir / tmp_path.name
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d


def stub_of(exe: Path) -> Path:
    from bundler import stub
    info = bundle.read_info(exe)
    return stub.cache_dir() / f"chatfile-stub-{info.stub_platform}-{info.build_id}"


def test_bundle_facts(exe, smollm2_path, build_dir):
    info = bundle.read_info(exe)
    stub_info = bundle.read_info(stub_of(exe))
    assert info.payload_size == smollm2_path.stat().st_size
    assert info.payload_offset % bundle.PAYLOAD_ALIGNMENT == 0
    assert info.build_id == stub_info.build_id and info.stub_platform == stub_info.stub_platform
    assert exe.stat().st_size - info.payload_size <= 90e6          # the size target
    r = chatfile("verify", exe)
    assert r.returncode == 0 and "intact" in r.stdout


def test_help_in_a_clean_environment(exe, home):
    r = run_clean(exe, "--help", home=home)
    assert r.returncode == 0, r.stderr.decode()
    assert b"-p" in r.stdout and b"--server" in r.stdout
    # the first run unpacked the runtime into the fresh HOME's cache, privately
    root = Path(home) / ".cache" / "chatfile"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    (link,) = (p for p in root.glob("rt-*") if p.is_symlink())
    assert (link / "chatfile-rt").is_file() and stat.S_IMODE(link.resolve().stat().st_mode) == 0o700


def test_prompt_output_equals_chatfile_run(exe, home, smollm2_path):
    expected = chatfile_run(smollm2_path, *PROMPT)
    first = run_clean(exe, *PROMPT, home=home)
    assert first.returncode == 0, first.stderr.decode()
    assert b"unpacking the runtime" in first.stderr            # progress on the first launch
    assert b"compiling" not in first.stderr                    # the kernels came precompiled
    assert first.stdout == expected
    again = run_clean(exe, *PROMPT, home=home)
    assert again.stdout == expected
    assert b"unpacking" not in again.stderr and b"compiling" not in again.stderr


def _written_at_run_time(rt: Path) -> list[str]:
    """Files of the unpacked runtime's numba cache that a run wrote: every file unpacked from the stub
    has mtime 0 (bundler/stub.py writes its archives so), so any other is a kernel compiled here."""
    return sorted(str(p.relative_to(rt)) for p in (rt / "numba-cache").rglob("*")
                  if p.is_file() and p.stat().st_mtime != 0)


def test_first_run_compiles_nothing_on_a_supported_cpu_level(exe, home):
    """A machine that never ran chatfile, with a CPU of a level the stub was built for, loads every
    kernel of the first token from the stub: nothing compiled, nothing written to numba's cache, no
    warm-up worker. Then the same for each lower level this machine can also run (chosen the way a
    user would, through NUMBA_CPU_NAME / NUMBA_CPU_FEATURES naming the level)."""
    from runtime.kernels import cpu
    levels = [lv for lv in cpu.platform_levels() if set(lv.requires) <= cpu.host_features()]
    if not levels:
        pytest.skip("this CPU is below every level the stub precompiles for")
    first = run_clean(exe, "-p", "Hi", "-n", "1", home=home)
    assert first.returncode == 0, first.stderr.decode()
    assert b"unpacking the runtime" in first.stderr and b"compiling" not in first.stderr
    rt = Path(home) / ".cache" / "chatfile" / f"rt-{bundle.read_info(exe).build_id}"
    assert _written_at_run_time(rt) == []
    shipped = {p.name for p in (rt / "numba-cache").iterdir()}
    assert len(shipped) == len(cpu.platform_levels()), shipped       # one directory per level
    for lv in levels[:-1]:
        r = run_clean(exe, *PROMPT, home=home, env={"NUMBA_CPU_NAME": lv.cpu, "NUMBA_CPU_FEATURES": lv.features})
        assert r.returncode == 0 and r.stdout.strip(), r.stderr.decode()
        assert b"compiling" not in r.stderr, lv.name
        assert _written_at_run_time(rt) == [], lv.name


def test_any_cwd_symlink_and_path_lookup(exe, home, tmp_path):
    expected = run_warm(exe, *PROMPT, home=home)
    assert expected.returncode == 0, expected.stderr.decode()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = elsewhere / "chat-link"
    link.symlink_to(exe)
    for how in (dict(cwd=elsewhere), dict(cwd="/")):
        r = run_clean(link, *PROMPT, home=home, **how)     # through a symlink, from other directories
        assert r.returncode == 0 and r.stdout == expected.stdout, r.stderr.decode()
    r = subprocess.run(["env", "-i", f"PATH={elsewhere}:{CLEAN_PATH}", f"HOME={home}", "chat-link", *PROMPT],
                       capture_output=True, cwd="/tmp", timeout=300)       # found through PATH
    assert r.returncode == 0 and r.stdout == expected.stdout, r.stderr.decode()
    # relative path from another directory
    rel = os.path.relpath(exe, elsewhere)
    r = run_clean(rel, *PROMPT, home=home, cwd=elsewhere)
    assert r.returncode == 0 and r.stdout == expected.stdout, r.stderr.decode()


def _unprivileged() -> int:
    if os.getuid() != 0:
        return os.getuid()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a directory read-only for ourselves")
    return 65534                                     # nobody


def test_read_only_and_missing_home_fall_back_to_temp(exe, shared_tmp):
    """Run as an unprivileged user (root ignores permission bits), from a read-only directory."""
    uid = _unprivileged()
    ro = shared_tmp / "ro"
    ro.mkdir()
    ro_home = ro / "home"
    ro_home.mkdir()
    shutil.copy2(exe, ro / "chat")
    for p in (ro_home, ro):
        p.chmod(0o555)                              # read-only HOME inside a read-only directory
    tmpdir = shared_tmp / "tmp"                      # our own TMPDIR: the fallback cache goes there
    tmpdir.mkdir()
    tmpdir.chmod(0o1777)
    expected = chatfile_run(exe, *PROMPT)             # -m BUNDLE runs its embedded model
    for home in (str(ro_home), str(ro_home), None):           # the first run unpacks and compiles
        r = run_clean(ro / "chat", *PROMPT, home=home, cwd=ro, user=uid if os.getuid() == 0 else None,
                      env={"TMPDIR": str(tmpdir)})
        assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == expected
    fallback = tmpdir / f"chatfile-{uid}"
    st = fallback.stat()
    assert st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700
    assert list(ro_home.iterdir()) == []


def test_refuses_a_cache_dir_owned_by_someone_else(exe, shared_tmp):
    """A cache root another user could write to is never executed from: the launcher falls back."""
    if os.getuid() != 0:
        pytest.skip("needs root to create a directory owned by someone else")
    uid = _unprivileged()
    planted_home = shared_tmp / "victim"
    (planted_home / ".cache" / "chatfile").mkdir(parents=True)
    planted_home.chmod(0o777)
    (planted_home / ".cache").chmod(0o777)
    (planted_home / ".cache" / "chatfile").chmod(0o777)          # owned by root, world-writable
    tmpdir = shared_tmp / "tmp"
    tmpdir.mkdir()
    tmpdir.chmod(0o1777)
    r = run_clean(exe, "--help", home=str(planted_home), user=uid, env={"TMPDIR": str(tmpdir)})
    assert r.returncode == 0, r.stderr.decode()
    assert not list((planted_home / ".cache" / "chatfile").iterdir())
    assert (tmpdir / f"chatfile-{uid}").is_dir()


def _home_of(uid: int, parent: Path) -> Path:
    home = parent / "home"
    home.mkdir()
    if os.getuid() == 0:
        os.chown(home, uid, uid)
    return home


def test_umask_000_still_makes_every_directory_private(exe, shared_tmp):
    """Under umask 000 the launcher's cache directories (parents included) are created with mode 700
    in one step: there is no moment at which another user could plant a runtime in them."""
    uid = _unprivileged()
    home = _home_of(uid, shared_tmp)
    cmd = ["env", "-i", f"PATH={CLEAN_PATH}", f"HOME={home}", "sh", "-c", 'umask 000 && exec "$@"', "sh", str(exe),
           "--help"]
    if uid != os.getuid():
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + cmd
    r = subprocess.run(cmd, cwd="/", capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    for d in (home / ".cache", home / ".cache" / "chatfile"):
        st = d.lstat()
        assert st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700, (d, oct(st.st_mode))


def test_runtime_planted_while_the_root_was_open_is_never_run(exe, shared_tmp):
    """A cache root of ours that was once open to others (mode 777, as an old launcher or the window
    between mkdir and chmod left it) and holds an rt-BUILD_ID runtime someone else put there: the
    launcher does not run it (it uses its fallback directory instead), and says nothing worrying."""
    if os.getuid() != 0:
        pytest.skip("needs root to plant files owned by someone else")
    uid = _unprivileged()
    home = _home_of(uid, shared_tmp)
    root = home / ".cache" / "chatfile"
    root.mkdir(parents=True)
    for d in (home / ".cache", root):
        os.chown(d, uid, uid)
    root.chmod(0o777)
    build_id = bundle.read_info(exe).build_id
    planted = root / f"rt-{build_id}"
    (planted / "_internal").mkdir(parents=True)                      # owned by root, not by the victim
    marker = shared_tmp / "PLANTED-CODE-RAN"
    (planted / "chatfile-rt").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (planted / "chatfile-rt").chmod(0o755)
    planted.chmod(0o755)
    tmpdir = shared_tmp / "tmp"
    tmpdir.mkdir()
    tmpdir.chmod(0o1777)
    r = run_clean(exe, "--help", home=str(home), user=uid, env={"TMPDIR": str(tmpdir)})
    assert r.returncode == 0, r.stderr.decode()
    assert not marker.exists()
    assert (tmpdir / f"chatfile-{uid}" / f"rt-{build_id}").is_symlink()


def test_runtime_writable_by_others_is_never_run(exe, home, tmp_path):
    """The launcher checks the owner and mode of what it executes, not only of the cache root: a
    runtime directory, executable or _internal directory that group or others could write to (an
    older launcher's, or one left open by a umask) is unpacked afresh, and the code in it never runs."""
    build_id = bundle.read_info(exe).build_id
    root = Path(home) / ".cache" / "chatfile"
    r = run_clean(exe, "--help", home=home)
    assert r.returncode == 0, r.stderr.decode()
    marker = tmp_path / "PLANTED-CODE-RAN"
    for loose in ("", "chatfile-rt", "_internal"):
        rt = (root / f"rt-{build_id}").resolve()
        real = rt / "chatfile-rt"
        real.rename(rt / "chatfile-rt.real")
        real.write_text(f"#!/bin/sh\ntouch {marker}\nexec \"$0.real\" \"$@\"\n")
        real.chmod(0o700)
        (rt / loose).chmod(0o777 if loose != "chatfile-rt" else 0o722)
        r = run_clean(exe, "--help", home=home)
        assert r.returncode == 0 and b"-p" in r.stdout, r.stderr.decode()
        assert b"unpacking the runtime" in r.stderr, loose            # replaced, not used
        assert not marker.exists(), loose
        assert (root / f"rt-{build_id}").resolve() != rt
        shutil.rmtree(rt)


def test_two_copies_at_once_and_a_killed_extraction(exe, home, smollm2_path):
    expected = chatfile_run(smollm2_path, *PROMPT)
    root = Path(home) / ".cache" / "chatfile"
    root.mkdir(parents=True, mode=0o700)
    build_id = bundle.read_info(exe).build_id
    # what a killed first run leaves behind: a half-unpacked temporary directory and no link
    half = root / f"rt-{build_id}.AbCdEf"
    (half / "_internal").mkdir(parents=True)
    (half / "chatfile-rt").write_bytes(b"\x7fELF truncated")
    results = [None, None]

    def one(i):
        results[i] = run_clean(exe, *PROMPT, home=home)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert r.returncode == 0, r.stderr.decode()
    assert results[0].stdout == results[1].stdout
    assert run_clean(exe, *PROMPT, home=home).stdout == expected
    links = [p for p in root.iterdir() if p.is_symlink()]
    assert [p.name for p in links] == [f"rt-{build_id}"]
    assert os.readlink(links[0]) != half.name
    # a dangling link (its directory removed by a temp cleaner) is redone too
    shutil.rmtree(root / os.readlink(links[0]))
    r = run_warm(exe, *PROMPT, home=home)
    assert r.returncode == 0 and r.stdout == expected, r.stderr.decode()


def test_baked_args_and_external_model(exe, build_dir, smollm2_path, gemma3_path, tmp_path, home):
    baked = tmp_path / "baked"
    stub = stub_of(exe)
    r = chatfile("build", smollm2_path, "-o", baked, "--stub", stub, "--args", "-n 3 --temp 0 -s 1")
    assert r.returncode == 0, r.stderr
    three = run_warm(baked, "-p", "Once upon a time", home=home)
    assert three.returncode == 0, three.stderr.decode()
    assert three.stdout == chatfile_run(smollm2_path, "-p", "Once upon a time", "-n", "3", "--temp", "0")
    one = run_clean(baked, "-p", "Once upon a time", "-n", "1", home=home)    # the command line wins
    assert one.stdout == chatfile_run(smollm2_path, "-p", "Once upon a time", "-n", "1", "--temp", "0")
    # -m runs another model: the output matches that model, not the embedded one
    other = run_warm(exe, "-m", gemma3_path, *PROMPT, home=home)
    assert other.returncode == 0, other.stderr.decode()
    assert other.stdout == chatfile_run(gemma3_path, *PROMPT)


def test_user_errors_from_the_executable(exe, home, tmp_path):
    assert run_clean(exe, "--help", home=home).returncode == 0     # unpacked: no progress lines below
    r = run_clean(exe, "-m", tmp_path / "missing.gguf", "-p", "x", home=home)
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    assert len(r.stderr.decode().strip().splitlines()) == 1
    r = run_clean(exe, "--no-such-flag", home=home)
    assert r.returncode == 2 and b"Traceback" not in r.stderr


def test_structured_output_from_the_executable(exe, home):
    """The bundled server compiles grammars (llguidance is in the stub, with the metadata it reads at
    import): a forced tool call and a JSON-schema reply come back valid."""
    import json

    from server_helpers import free_port, httpx, wait_healthy
    port = free_port()
    pre = ["env", "-i", f"PATH={CLEAN_PATH}", f"HOME={home}"]
    proc = subprocess.Popen(pre + [str(exe), "--server", "--port", str(port)], cwd="/", stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}}
        r = httpx.post(url + "/v1/chat/completions", timeout=300, json={
            "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [tool],
            "tool_choice": "required", "parallel_tool_calls": False, "temperature": 0, "max_tokens": 40})
        assert r.status_code == 200, r.text
        call = r.json()["choices"][0]["message"]["tool_calls"][0]["function"]
        assert call["name"] == "get_weather" and isinstance(json.loads(call["arguments"])["city"], str)
        r = httpx.post(url + "/v1/chat/completions", timeout=300, json={
            "messages": [{"role": "user", "content": "A number as JSON."}], "temperature": 0, "max_tokens": 40,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {
                "type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
                "required": ["n"]}}}})
        assert r.json()["choices"][0]["finish_reason"] == "stop", r.text
        assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"])["n"], int)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
