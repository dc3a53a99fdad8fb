"""What a chat template may cost. The template comes from the file being run, so it is hostile until
rendered: Jinja2's sandbox keeps it from Python's internals, and this module bounds its time, size and
depth. A template past a limit raises `TemplateLimit` (a ValueError with a one-line message).

The limits (generous: real templates render in about a millisecond and never come near them):
    MAX_SOURCE      256 KiB of template text (the largest real ones are ~20 KiB)
    parse depth     whatever Jinja's parser and Python's compiler take (RecursionError, "too many
                    levels of indentation", "too many statically nested blocks" become one line)
    MAX_CALL_DEPTH  64 calls in progress at once (a macro calling itself)
    MAX_OUTPUT      8 Mi characters: the rendered prompt, and any one string or list the template
                    makes on the way (4x the largest request body)
    MAX_INT_BITS    8192 bits (2466 decimal digits) for an integer made by * or **
    RENDER_SECONDS  5 s of wall-clock time per render

Time: a watchdog thread raises `TemplateLimit` in a render that passes its deadline
(`PyThreadState_SetAsyncExc`, delivered at the next bytecode), so no template loop runs on after its
request. Size: a single C-level operation cannot be interrupted, so every operation that can make a
much larger value than its inputs is checked before it runs: `*`, `**`, `+`, `%` (intercepted
binary operators), `~` and output (their joins), filters, and the str methods that take a width or
expand (`center`, `ljust`, `rjust`, `zfill`, `expandtabs`, `replace`, `join`, `format`).
"""
from __future__ import annotations

import ctypes
import functools
import re
import threading
import time

from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SOURCE = 256 << 10
MAX_CALL_DEPTH = 64
MAX_OUTPUT = 8 << 20
MAX_INT_BITS = 8192
RENDER_SECONDS = 5.0


class TemplateLimit(ValueError):
    """A chat template went past one of this module's limits."""


def _too_big(what: str) -> TemplateLimit:
    return TemplateLimit(f"{what} would be larger than the {MAX_OUTPUT:,} characters a chat template may make")


# ---- sizes ------------------------------------------------------------------------------------------

def weight(value, limit: int = MAX_OUTPUT) -> int:
    """About how many characters str(value) has: strings by their length, containers by their items
    (recursively), anything else 1. Stops counting past `limit`, so it costs O(min(size, limit))."""
    if isinstance(value, str):
        return len(value)
    total, stack = 0, [value]
    while stack and total <= limit:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += len(v) + 1
            stack.extend(v)
        elif isinstance(v, dict):
            total += len(v) + 1
            stack.extend(v.keys())
            stack.extend(v.values())
        else:
            total += 1
    return total


def _check_weight(what: str, *values) -> None:
    if sum(weight(v) for v in values) > MAX_OUTPUT:
        raise _too_big(what)


def _check_count(what: str, n) -> None:
    if isinstance(n, int) and not isinstance(n, bool) and abs(n) > MAX_OUTPUT:
        raise _too_big(what)


# widths and precisions in %-formats ("%99999999d") and format specs ("{:>99999999}"); "*" and nested
# "{}" take them from the arguments
_PERCENT_SPEC = re.compile(r"%[#0 +\-]*(\d+|\*)?(?:\.(\d+|\*))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*:([^{}]*)")
_NESTED_SPEC = re.compile(r"\{[^{}]*:[^{}]*\{")
_NUMBER = re.compile(r"\d+")


def _check_format(fmt: str, args) -> None:
    percent = _PERCENT_SPEC.findall(fmt)
    numbers = [n for spec in percent for n in spec if n not in ("", "*")]
    numbers += [n for spec in _BRACE_SPEC.findall(fmt) for n in _NUMBER.findall(spec)]
    if any(len(n) > 8 or int(n) > MAX_OUTPUT for n in numbers):
        raise _too_big("a format's result")
    if any("*" in spec for spec in percent) or _NESTED_SPEC.search(fmt):
        for a in args:
            _check_count("a format's result", a)
    _check_weight("a format's result", fmt, args)


# ---- operators, calls and filters ------------------------------------------------------------------

def _binop(operator: str, left, right):
    """The intercepted operators, checked before they run."""
    if operator == "+" and isinstance(left, str) and isinstance(right, str):   # the common case
        if len(left) + len(right) > MAX_OUTPUT:
            raise _too_big("a concatenation")
        return left + right
    numbers = (int, float)
    if operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and \
                max(left.bit_length(), 1) * right > MAX_INT_BITS and abs(left) > 1:
            raise TemplateLimit(f"a number over {MAX_INT_BITS} bits ({left} ** {right})"[:200])
        return left ** right
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateLimit(f"a number over {MAX_INT_BITS} bits (a product)")
        elif isinstance(right, int) and not isinstance(left, numbers):
            if right > 0 and weight(left) * right > MAX_OUTPUT:
                raise _too_big("a repetition")
        elif isinstance(left, int) and not isinstance(right, numbers):
            if left > 0 and weight(right) * left > MAX_OUTPUT:
                raise _too_big("a repetition")
        return left * right
    if operator == "+":
        if not isinstance(left, numbers) and not isinstance(right, numbers):
            _check_weight("a concatenation", left, right)
        return left + right
    if operator == "%":
        if isinstance(left, str):
            _check_format(left, right if isinstance(right, tuple) else (right,))
        return left % right
    raise AssertionError(operator)


# str methods that can make a much larger string than they are given: the check for each
def _check_str_method(name: str, s: str, args, kwargs) -> None:
    if name in ("center", "ljust", "rjust", "zfill"):
        for n in (*args, *kwargs.values()):
            _check_count(f"str.{name}'s result", n)
    elif name == "expandtabs":
        size = max([8, *[n for n in (*args, *kwargs.values()) if isinstance(n, int)]])
        if len(s) + s.count("\t") * size > MAX_OUTPUT:
            raise _too_big("str.expandtabs's result")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _check_replace(s, args[0], args[1])
    elif name == "join" and args:
        _check_weight("a join", s, args[0])
        if hasattr(args[0], "__len__") and len(s) * len(args[0]) > MAX_OUTPUT:
            raise _too_big("a join")
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        if len(s) * longest > MAX_OUTPUT:
            raise _too_big("str.translate's result")


def _check_replace(s: str, old: str, new: str) -> None:
    n = s.count(old) if old else len(s) + 1
    if len(s) + n * max(len(new) - len(old), 0) > MAX_OUTPUT:
        raise _too_big("a replace")


# filters that never turn their input into one string, so need no look at its size
_COUNTING_FILTERS = frozenset({
    "abs", "attr", "batch", "bool", "count", "d", "default", "dictsort", "first", "float", "groupby",
    "int", "items", "last", "length", "list", "map", "max", "min", "random", "reject", "rejectattr",
    "reverse", "round", "select", "selectattr", "slice", "sort", "sum", "unique"})


def _checked_filter(name: str, f):
    """A filter with its arguments checked before it runs and its result after."""
    counting = name in _COUNTING_FILTERS
    passes_first = getattr(f, "jinja_pass_arg", None) is not None    # context/environment comes first

    @functools.wraps(f)
    def checked(*args, **kwargs):
        values = args[1:] if passes_first else args
        if values:
            _check_filter_args(name, values[0], values[1:], kwargs)
        if not counting:
            _check_weight(f"the {name} filter's result", *values, *kwargs.values())
        result = f(*args, **kwargs)
        if isinstance(result, (str, list, tuple)) and len(result) > MAX_OUTPUT:
            raise _too_big(f"the {name} filter's result")
        return result

    return checked


def _arg(args: tuple, kwargs: dict, i: int, name: str, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _check_filter_args(name: str, value, args: tuple, kwargs: dict) -> None:
    """Jinja's filters that can make much more than they are given, by their arguments."""
    what = f"the {name} filter's result"
    if name in ("center", "batch", "slice"):              # a width, or a number of items or lists
        _check_count(what, _arg(args, kwargs, 0, "width" if name == "center" else "linecount"))
    elif name == "indent":
        width = _arg(args, kwargs, 0, "width", 4)
        width = len(width) if isinstance(width, str) else width
        _check_count(what, width)                          # Jinja makes " " * width whatever the value
        if isinstance(width, int) and isinstance(value, str) and (value.count("\n") + 1) * width > MAX_OUTPUT:
            raise _too_big(what)
    elif name == "replace":
        old, new = _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new")
        if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
            _check_replace(value, old, new)
    elif name == "join":
        sep = _arg(args, kwargs, 0, "d", "")
        if isinstance(sep, str) and hasattr(value, "__len__") and len(sep) * len(value) > MAX_OUTPUT:
            raise _too_big(what)
    elif name == "wordwrap":
        wrap = _arg(args, kwargs, 2, "wrapstring")
        if isinstance(wrap, str) and isinstance(value, str) and len(wrap) * len(value) > MAX_OUTPUT:
            raise _too_big(what)
    elif name == "tojson":
        indent = _arg(args, kwargs, 1, "indent")
        if isinstance(indent, int) and indent * weight(value) > MAX_OUTPUT:
            raise _too_big(what)
    elif name == "format":
        if isinstance(value, str):
            _check_format(value, (*args, *kwargs.values()))


def _checked_join(join):
    """Jinja's `~` operator (str_join / markup_join in the compiled template)."""
    def checked(seq):
        seq = tuple(seq)
        _check_weight("a ~ concatenation", seq)
        return join(seq)
    return checked


def _checked_concat(pieces) -> str:
    """environment.concat: the rendered output, and every {% set %}/macro/call block's."""
    out, size = [], 0
    for piece in pieces:
        size += len(piece)
        if size > MAX_OUTPUT:
            raise _too_big("the rendered text")
        out.append(piece)
    return "".join(out)


def _finalize(value):
    """Every {{ expression }}'s value, before it is made a string."""
    if not isinstance(value, str) and weight(value) > MAX_OUTPUT:
        raise _too_big("an {{ expression }}'s text")
    return value


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with this module's limits on operators, calls, filters and output."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options):
        super().__init__(finalize=_finalize, **options)
        self.concat = _checked_concat
        self.globals["lipsum"] = _checked_lipsum
        self._depth = threading.local()

    def call_binop(self, context, operator, left, right):
        return _binop(operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):   # noqa: N805 (Jinja's spelling)
        if isinstance(__obj, Macro):                           # only macros can recurse
            depth = getattr(__self._depth, "n", 0)
            if depth >= MAX_CALL_DEPTH:
                raise TemplateLimit(f"calls nest more than {MAX_CALL_DEPTH} deep (a macro that calls itself?)")
            __self._depth.n = depth + 1
            try:
                return super().call(__context, __obj, *args, **kwargs)
            finally:
                __self._depth.n = depth
        owner = getattr(__obj, "__self__", None)
        if owner is None:                                      # the sandbox's wrapper of str.format
            owner = getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        if isinstance(owner, str):
            name = __obj.__name__
            if name in ("format", "format_map"):
                _check_format(owner, (*args, *kwargs.values()))
            else:
                _check_str_method(name, owner, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, (str, list, tuple)) and len(result) > MAX_OUTPUT:
            raise _too_big("a call's result")
        return result

    def limit_filters(self) -> None:
        """Check every filter registered so far (call after adding the environment's own filters)."""
        self.filters = {name: _checked_filter(name, f) for name, f in self.filters.items()}


def _checked_lipsum(n=5, html=True, min=20, max=100):
    from jinja2.utils import generate_lorem_ipsum
    for k in (n, min, max):
        _check_count("lipsum's text", k)
    if n * max * 16 > MAX_OUTPUT:
        raise _too_big("lipsum's text")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def compile_template(env: LimitedEnvironment, source: str):
    """env.from_string(source), within MAX_SOURCE and with the `~` operator checked; Jinja's
    TemplateError passes through, anything that nests too deeply for the parser or for Python's
    compiler becomes a TemplateLimit."""
    if len(source) > MAX_SOURCE:
        raise TemplateLimit(f"the chat template is {len(source):,} characters; at most {MAX_SOURCE:,} are allowed")
    try:
        template = env.from_string(source)
    except RecursionError:
        raise TemplateLimit("the chat template nests too deeply to parse") from None
    except SyntaxError as e:          # Python's compiler: too many levels of indentation or blocks
        raise TemplateLimit(f"the chat template nests too deeply to compile ({e.msg})") from None
    except (MemoryError, OverflowError) as e:
        raise TemplateLimit(f"the chat template is too large to compile ({type(e).__name__})") from None
    namespace = template.root_render_func.__globals__    # the compiled module's names
    for name in ("str_join", "markup_join"):
        if name in namespace:
            namespace[name] = _checked_join(namespace[name])
    return template


# ---- time ------------------------------------------------------------------------------------------

class _Watchdog:
    """One daemon thread that interrupts renders past their deadline. It sleeps until the earliest
    deadline it knows of; a render only wakes it when its deadline comes sooner, so a render that ends
    in time costs a lock and two dict operations. An exception raised in a thread can land where it is
    ignored (a finalizer or a gc callback that happens to run there), so the watchdog raises it again
    every REFIRE seconds until the render has stopped."""

    REFIRE = 0.1

    def __init__(self):
        self.cond = threading.Condition()
        self.renders: dict[int, list] = {}     # id(record) -> [thread ident, next firing, fired, stopping]
        self.wake: float | None = None         # when the thread looks next (None: not started)
        self.thread: threading.Thread | None = None

    def run(self) -> None:
        with self.cond:
            while True:
                now = time.monotonic()
                wake = None
                for record in self.renders.values():
                    if record[1] <= now and not record[3]:
                        record[2] = True
                        record[1] = now + self.REFIRE
                        _raise_in(record[0], _Expired)
                    if wake is None or record[1] < wake:
                        wake = record[1]
                # idle, it still looks every RENDER_SECONDS: then a new render's deadline is never
                # sooner than its next look, and starting one needs no notify (no thread switch)
                self.wake = wake if wake is not None else now + RENDER_SECONDS
                self.cond.wait(self.wake - now)

    def start(self, seconds: float) -> list:
        """Watch the calling thread for `seconds`; pass the result to `stop`, in a finally."""
        record = [threading.get_ident(), time.monotonic() + seconds, False, False]
        with self.cond:
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name="chatfile-template-watchdog", daemon=True)
                self.thread.start()
            self.renders[id(record)] = record
            if self.wake is None or record[1] < self.wake:
                self.wake = record[1]
                self.cond.notify()
        return record

    def stop(self, record: list) -> None:
        """No more firing at this render, and none pending: whatever lands while this runs is caught here."""
        while True:
            try:
                record[3] = True
                with self.cond:
                    self.renders.pop(id(record), None)
                    if record[2]:
                        _raise_in(record[0], None)
                return
            except _Expired:
                continue


class _Expired(BaseException):
    """Raised in a rendering thread by the watchdog and caught by `render`: a BaseException, so that no
    `except Exception` on the way (Jinja's, a filter's) swallows it."""


def _raise_in(thread_id: int, exc) -> None:
    """CPython's PyThreadState_SetAsyncExc: `exc` (None: clear it) at the thread's next bytecode."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc is not None else None)


_WATCHDOG = _Watchdog()


def render(template, **variables) -> str:
    """template.render(**variables) within RENDER_SECONDS and MAX_CALL_DEPTH; past them, TemplateLimit.
    Every other exception of the render passes through."""
    try:
        watch = _WATCHDOG.start(RENDER_SECONDS)
        try:
            return template.render(**variables)
        finally:
            _WATCHDOG.stop(watch)
    except _Expired:
        raise TemplateLimit(f"rendering the chat template took longer than {RENDER_SECONDS:g} s") from None
    except RecursionError:
        raise TemplateLimit("the chat template recursed too deeply") from None
    except MemoryError:
        raise TemplateLimit("the chat template ran out of memory") from None
    except OverflowError as e:
        raise TemplateLimit(f"the chat template made a number too large ({e})") from None

