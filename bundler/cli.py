"""`chatfile build | run | inspect | verify | bench`.

User mistakes (a missing file, not a GGUF, an existing OUT) end in one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

USAGE_ERROR = 2


@dataclass(frozen=True)
class BuildOptions:
    model: Path
    out: Path
    name: str | None
    args: list[str]
    stub: Path | None
    force: bool


class _Parser(argparse.ArgumentParser):
    def error(self, message):                 # one line, not argparse's usage block
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser(with_bench: bool) -> argparse.ArgumentParser:
    p = _Parser(prog="chatfile", description="Turn a GGUF model into one executable file.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="bundle MODEL.gguf into one executable",
                       description="Bundle MODEL.gguf into one executable OUT.")
    b.add_argument("model", metavar="MODEL.gguf", type=Path)
    b.add_argument("-o", "--out", required=True, type=Path, metavar="OUT", help="executable to write")
    b.add_argument("--name", help="model name recorded in the bundle (default: the GGUF's general.name)")
    b.add_argument("--args", default="", metavar='"FLAGS"',
                   help='default flags baked into the bundle, e.g. "--temp 0.2 -c 4096"; '
                        "flags given when running it override them")
    b.add_argument("--stub", type=Path, help="launcher stub to use (e.g. one built on another platform); "
                                             "default: this platform's, built and cached on first use")
    b.add_argument("--force", action="store_true", help="overwrite OUT if it exists")

    r = sub.add_parser("run", help="run MODEL.gguf exactly as its bundle would", add_help=False,
                       description="Run MODEL.gguf with the runtime's flags, exactly as a bundle runs.")
    r.add_argument("model", metavar="MODEL.gguf")
    r.add_argument("rest", nargs=argparse.REMAINDER, help="runtime flags (-p, --chat, --server, ...)")

    i = sub.add_parser("inspect", help="describe a bundle, stub or GGUF file")
    i.add_argument("file", type=Path)
    i.add_argument("--json", action="store_true", help="print the facts as JSON")

    v = sub.add_parser("verify", help="re-hash a bundle's embedded model and say whether it is intact")
    v.add_argument("file", type=Path)

    bench = sub.add_parser("bench", help="benchmark the runtime", add_help=not with_bench)
    if with_bench:
        from . import bench as bench_module
        bench_module.add_arguments(bench)
    else:
        bench.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    with_bench = bool(argv) and argv[0] == "bench"
    if with_bench:
        try:
            from . import bench  # noqa: F401  (imported only when asked for: it pulls in the runtime)
        except ImportError as e:
            return _fail(f"the bench command is not available: {e}")
    args = _parser(with_bench).parse_args(argv)

    from runtime.bundle import BundleError
    from runtime.gguf import GGUFError
    from .pack import UserError
    try:
        if args.command == "build":
            return build(BuildOptions(model=args.model, out=args.out, name=args.name,
                                      args=_split_args(args.args), stub=args.stub, force=args.force))
        if args.command == "run":
            return run(args.model, args.rest)
        if args.command == "inspect":
            return inspect(args.file, as_json=args.json)
        if args.command == "verify":
            return verify(args.file)
        from . import bench
        return bench.run(args)
    except (UserError, BundleError, GGUFError) as e:
        return _fail(str(e))
    except FileNotFoundError as e:
        return _fail(f"{e.filename}: no such file")
    except OSError as e:
        return _fail(f"{e.filename or ''}: {e.strerror}" if e.strerror else str(e))
    except KeyboardInterrupt:
        return 130


def _fail(message: str) -> int:
    print(f"chatfile: {message}", file=sys.stderr)
    return USAGE_ERROR


def _split_args(text: str) -> list[str]:
    from .pack import UserError
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UserError(f"--args {text!r}: {e}") from None


def build(opts: BuildOptions) -> int:
    """Validate the model, get a stub (cached or built), write OUT."""
    from runtime.bundle import is_bundle, read_info
    from runtime.gguf import GGUFFile
    from . import pack, stub as stubs

    if not opts.model.is_file():
        raise pack.UserError(f"{opts.model}: no such file")
    if is_bundle(opts.model):
        raise pack.UserError(f"{opts.model} is already a chatfile bundle; build from the .gguf file")
    gguf = GGUFFile(opts.model)          # raises GGUFError with the field and offset if it is not a GGUF
    name = opts.name or gguf.metadata.get("general.name") or opts.model.stem
    del gguf
    if opts.out.exists() and not opts.force:   # before a possibly long stub build
        raise pack.UserError(f"{opts.out} already exists; pass --force to overwrite it")
    if opts.stub is not None:
        info = read_info(opts.stub)
        if info.has_model:
            raise pack.UserError(f"{opts.stub} is a bundle with a model, not a stub")
        stub_path = opts.stub
    else:
        stub_path = stubs.get_stub()
    info = pack.pack(stub_path, opts.model, opts.out, model_name=str(name), args=opts.args, force=opts.force)
    stub_mb = info.payload_offset / 1e6
    print(f"chatfile: wrote {opts.out} ({info.file_size / 1e6:.1f} MB: {stub_mb:.1f} MB runtime "
          f"for {info.stub_platform} + {info.payload_size / 1e6:.1f} MB model '{info.model_name}')",
          file=sys.stderr)
    return 0


def run(model: str, rest: list[str]) -> int:
    """What the bundle runs (stubs/entry.py), minus the frozen-app set-up."""
    if not Path(model).is_file():
        return _fail(f"{model}: no such file")
    try:
        from runtime.cli import main as runtime_main
    except ImportError as e:
        return _fail(f"the runtime CLI is not available: {e}")
    return runtime_main(["-m", model, *rest])


def inspect(path: Path, as_json: bool = False) -> int:
    from .facts import format_facts, inspect as facts_of
    if not path.is_file():
        return _fail(f"{path}: no such file")
    facts = facts_of(path)
    print(json.dumps(facts, indent=2) if as_json else format_facts(facts))
    return 0


def verify(path: Path) -> int:
    """Exit 0 when every byte matches its checksum, 1 when some do not (each damaged part named), 2 when
    the footer or meta is damaged (read_info's one-line error)."""
    from runtime.bundle import read_info
    from .pack import UserError, damaged_parts
    if not path.is_file():
        return _fail(f"{path}: no such file")
    info = read_info(path)
    if not info.has_model:
        raise UserError(f"{path} is a stub: it holds no model to verify")
    damaged = damaged_parts(info)
    if not damaged:
        unchecked = "" if info.stub_sha256 else "; its launcher has no checksum (built before they had one)"
        print(f"{path}: intact (sha256 {info.payload_sha256} of {info.payload_size} payload bytes{unchecked})")
        return 0
    print(f"{path}: DAMAGED: {'; '.join(damaged)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
