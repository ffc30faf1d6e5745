"""In-container code grader of toolrl-sandbox (standard library only).

Copied into the image next to ``executor.py``.  For a ``grade`` request the
executor forks two processes that share nothing but two pipes:

* the **solution** process runs the solution's code in a fresh ``__main__``
  and then :func:`serve` s calls on its pipes: one JSON line per call in, one
  JSON line per answer out;
* the **grader** process (forked first, non-dumpable, reads the tests from the
  host connection itself, so the tests never exist in the executor's or the
  solution's memory) runs the tests with :class:`Proxy` objects standing in
  for the solution's functions and writes each test's outcome to the
  executor (:func:`grade`).

Values cross the boundary in a tagged JSON form (:func:`encode`,
:func:`decode`) that only ever builds plain built-in values (``None``,
``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``list``,
``tuple``, ``dict``, ``set``, ``frozenset``; a subclass of one travels as
its plain value, converted in the sender's process); anything else the
solution returns is an error, i.e. a failed test, never a value that
compares equal.
Instances of the solution's own classes created by the tests are handles
(:class:`Remote`) whose methods can be called and whose every other use fails.
"""

from __future__ import annotations

import base64
import builtins
import json
import math
import os
import sys

MAX_DEPTH = 64
MAX_LINE = 32 * 1024 * 1024
_ATOMS = (type(None), bool, int, str)
_BUILTIN_NAMES = frozenset(dir(builtins))


_BASES = ((bool, bool), (int, int.__index__), (float, float.__float__), (complex, lambda v: complex(v.real, v.imag)),
          (str, str.__str__), (bytes, lambda v: b"".join([v])), (tuple, tuple), (list, list), (dict, dict),
          (frozenset, frozenset), (set, set))


class NotPlain(TypeError):
    """A value that has no plain form."""


# -------------------------------------------------------------------- codec
def encode(value, depth=0):
    """The JSON-able tagged form of a plain value; :class:`NotPlain` otherwise.

    Subclasses of the plain types are converted to their base type first (by the
    base type's own conversion), so what arrives is always a plain value."""
    if depth > MAX_DEPTH:
        raise NotPlain("value nested deeper than %d levels" % MAX_DEPTH)
    t = type(value)
    if t in _ATOMS:
        return value
    if t is float:
        return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
    if t is list:
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"t": "tuple", "v": [encode(v, depth + 1) for v in value]}
    if t is dict:
        return {"t": "dict", "v": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {"t": t.__name__, "v": [encode(v, depth + 1) for v in value]}
    if t is bytes:
        return {"t": "bytes", "v": base64.b64encode(value).decode("ascii")}
    if t is complex:
        return {"t": "complex", "v": [repr(value.real), repr(value.imag)]}
    for base, plain in _BASES:  # a subclass travels as its plain value (Counter -> dict, namedtuple -> tuple)
        if isinstance(value, base):
            try:
                converted = plain(value)
            except Exception as exc:  # noqa: BLE001 - a subclass that breaks its own conversion
                raise NotPlain("%s could not be converted to %s: %s" % (t.__name__, base.__name__, exc)) from None
            if type(converted) is not base:
                break
            return encode(converted, depth)
    raise NotPlain("%s is not a plain value (allowed: None, bool, int, float, complex, str, bytes, list, "
                   "tuple, dict, set, frozenset)" % t.__name__)


def decode(obj, depth=0):
    """Build plain built-in values from :func:`encode`'s form; ``ValueError`` for anything else."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = type(obj)
    if t in _ATOMS or t is float:
        return obj
    if t is list:
        return [decode(v, depth + 1) for v in obj]
    if t is not dict or set(obj) != {"t", "v"}:
        raise ValueError("malformed value")
    tag, v = obj["t"], obj["v"]
    if tag == "float" and v in ("nan", "inf", "-inf"):
        return float(v)
    if tag == "bytes" and type(v) is str:
        return base64.b64decode(v.encode("ascii"), validate=True)
    if type(v) is not list:
        raise ValueError("malformed value")
    if tag == "tuple":
        return tuple(decode(x, depth + 1) for x in v)
    if tag == "set":
        return {decode(x, depth + 1) for x in v}
    if tag == "frozenset":
        return frozenset(decode(x, depth + 1) for x in v)
    if tag == "dict":
        out = {}
        for pair in v:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("malformed dict item")
            out[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
        return out
    if tag == "complex" and len(v) == 2 and all(type(x) is str for x in v):
        return complex(float(v[0]), float(v[1]))
    raise ValueError("unknown value tag %r" % (tag,))


class LineReader:
    """Newline-delimited messages from a pipe (``None`` at EOF)."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()

    def readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                raise ValueError("message longer than %d bytes" % MAX_LINE)
            try:
                data = os.read(self.fd, 1 << 16)
            except InterruptedError:
                continue
            if not data:
                return None
            self.buf += data


def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue


def _send(fd, msg):
    write_all(fd, (json.dumps(msg, separators=(",", ":")) + "\n").encode("utf-8", "surrogatepass"))


# ---------------------------------------------------- the solution's side
def hello(ns, error=None):
    """What the solution exposes: its callables (not shadowing builtins) and the modules it imported."""
    if error is not None:
        return {"hello": False, "error": error}
    funcs, modules = [], {}
    for name, value in list(ns.items()):
        if name.startswith("__") or name in _BUILTIN_NAMES:
            continue
        if type(value).__name__ == "module":
            modules[name] = getattr(value, "__name__", "")
        elif callable(value):
            funcs.append(name)
    return {"hello": True, "functions": funcs, "modules": modules}


def serve(ns, in_fd, out_fd):
    """Answer calls until the grader closes the pipe (runs in the solution's process)."""
    reader = LineReader(in_fd)
    objects = {}
    while True:
        line = reader.readline()
        if line is None:
            return
        req = json.loads(line)
        rid = req.get("id")
        try:
            if "r" in req:
                target = getattr(objects[req["r"]], req["m"])
            else:
                target = ns[req["f"]]
            args = decode(req.get("a", []))
            kwargs = decode(req.get("k", {"t": "dict", "v": []}))
            value = target(*args, **kwargs)
            if "r" not in req and isinstance(target, type) and type(value) is target:
                objects[len(objects) + 1] = value
                reply = {"id": rid, "ref": len(objects)}
            else:
                reply = {"id": rid, "v": encode(value)}
        except BaseException as exc:  # noqa: BLE001 - every failure of the call goes back as an error
            try:
                text = str(exc)[:2000]
            except BaseException:  # noqa: BLE001
                text = "?"
            reply = {"id": rid, "e": [type(exc).__name__, text]}
        _send(out_fd, reply)


# ------------------------------------------------------- the grader's side
class SolutionDied(BaseException):
    """The solution process exited, hung up or broke the protocol: every test from now on fails.

    A ``BaseException`` so that ``except Exception`` in a test cannot swallow it."""


class SolutionRaised(Exception):
    """The solution raised an exception that is not a built-in one (its type name is in the message)."""


class NonPlainUse(BaseException):
    """A handle to a solution object was compared, hashed or converted; never equal to anything."""


class Channel:
    def __init__(self, call_fd, reply_fd):
        self.call_fd = call_fd
        self.reader = LineReader(reply_fd)
        self.dead = None
        self.next_id = 0

    def hello(self):
        try:
            line = self.reader.readline()
            msg = json.loads(line) if line is not None else None
        except ValueError:
            msg = None
        if type(msg) is not dict or "hello" not in msg:
            self.dead = "the solution process ended before its code finished running"
        elif msg["hello"] is not True:
            self.dead = "the solution failed: %s" % str(msg.get("error"))[:1500]
        if self.dead:
            return None
        funcs = msg.get("functions") if type(msg.get("functions")) is list else []
        mods = msg.get("modules") if type(msg.get("modules")) is dict else {}
        return [f for f in funcs if type(f) is str], {k: v for k, v in mods.items() if type(v) is str}

    def call(self, req):
        if self.dead:
            raise SolutionDied(self.dead)
        self.next_id += 1
        req["id"] = self.next_id
        try:
            req["a"] = encode(list(req["a"]))
            req["k"] = encode(dict(req["k"]))
        except NotPlain as exc:
            raise TypeError("a test passed a value the grader cannot send to the solution: %s" % exc) from None
        try:
            _send(self.call_fd, req)
            line = self.reader.readline()
        except (OSError, ValueError) as exc:
            line, why = None, str(exc)
        else:
            why = "the solution process ended or hung up during a call"
        if line is None:
            self.dead = why
            raise SolutionDied(why)
        try:
            msg = json.loads(line)
            if type(msg) is not dict or msg.get("id") != self.next_id:
                raise ValueError("an answer out of order")
            if "e" in msg:
                etype, text = msg["e"]
                error = _exception(str(etype), str(text))
            elif type(msg.get("ref")) is int:
                return Remote(self, msg["ref"], req.get("f", "?"))
            else:
                return decode(msg["v"])
        except (ValueError, KeyError, TypeError) as exc:
            self.dead = "the solution broke the call protocol (%s)" % (str(exc)[:200],)
            raise SolutionDied(self.dead) from None
        if isinstance(error, SolutionDied):
            self.dead = str(error)
        raise error


def _exception(name, text):
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, (AssertionError, Warning)):
        try:
            exc = cls(text)
        except Exception:  # noqa: BLE001 - exotic constructors (UnicodeDecodeError...)
            exc = SolutionRaised("%s: %s" % (name, text))
    elif isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, Exception):
        return SolutionDied("the solution raised %s: %s" % (name, text))
    else:
        exc = SolutionRaised("%s: %s" % (name, text))
    return exc


class Proxy:
    """Stands in for one of the solution's functions or classes in the tests' namespace."""

    def __init__(self, chan, name):
        self._chan, self.__name__ = chan, name
        self.__qualname__ = name

    def __call__(self, *args, **kwargs):
        return self._chan.call({"f": self.__name__, "a": args, "k": kwargs})

    def __repr__(self):
        return "<solution function %s>" % self.__name__


class Remote:
    """A solution object made by calling one of its classes: methods can be called, nothing else."""

    def __init__(self, chan, ref, cls):
        object.__setattr__(self, "_ref", (chan, ref, cls))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        chan, ref, _ = object.__getattribute__(self, "_ref")
        return lambda *a, **k: chan.call({"r": ref, "m": name, "a": a, "k": k})

    def _refuse(self, *_a, **_k):
        raise NonPlainUse("an instance of the solution's class %s is not a plain value"
                          % object.__getattribute__(self, "_ref")[2])

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = __bool__ = __len__ = __iter__ = _refuse
    __contains__ = __getitem__ = __int__ = __float__ = __index__ = __str__ = __setattr__ = _refuse

    def __repr__(self):
        return "<solution object of class %s>" % object.__getattribute__(self, "_ref")[2]


def _describe(exc):
    import traceback

    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-600:]


def grade(spec, call_fd, reply_fd, emit):
    """Run ``spec["tests"]`` against the solution behind the pipes; ``emit`` each outcome.  Returns the exit code."""
    import unittest

    tests, entry = spec["tests"], spec.get("entry_point")
    is_list = type(tests) is list
    total = len(tests) if is_list else 1
    emit({"total": total})
    chan = Channel(call_fd, reply_fd)
    exposed = chan.hello()
    if exposed is None:
        for i in range(total):
            emit({"i": i, "ok": False, "msg": chan.dead})
        return 1
    funcs, modules = exposed
    ns = {"__name__": "__main__", "__builtins__": builtins}
    for alias, modname in modules.items():
        if alias in _BUILTIN_NAMES or alias.startswith("__") or alias not in (modname, modname.rsplit(".", 1)[-1]):
            continue
        try:
            __import__(modname)
            ns[alias] = sys.modules[modname]
        except BaseException:  # noqa: BLE001 - not importable here: the tests must import it themselves
            pass
    for name in funcs:
        ns[name] = Proxy(chan, name)
    passed = 0

    def outcome(i, ok, msg=""):
        if ok and chan.dead:
            ok, msg = False, "passed, but the solution died: " + chan.dead
        emit({"i": i, "ok": ok} if ok else {"i": i, "ok": False, "msg": msg[-800:]})
        return 1 if ok else 0

    if is_list:
        for i, src in enumerate(tests):
            head = src.strip().splitlines()[0][:200] if src.strip() else ""
            try:
                exec(compile(src, "<test %d>" % i, "exec"), ns)
                passed += outcome(i, True)
            except BaseException as exc:  # noqa: BLE001 - a failed test, whatever it raised
                passed += outcome(i, False, "%s: %s" % (head, _describe(exc)))
        return 0 if passed == total else 1
    before = set(ns)
    try:
        exec(compile(tests, "<tests>", "exec"), ns)
    except BaseException as exc:  # noqa: BLE001
        outcome(0, False, "tests: " + _describe(exc))
        return 1
    if entry is not None:
        try:
            check = ns["check"]
            candidate = ns[entry] if isinstance(ns.get(entry), Proxy) else Proxy(chan, entry)
            check(candidate)
            passed = outcome(0, True)
        except BaseException as exc:  # noqa: BLE001
            outcome(0, False, "check(%s): %s" % (entry, _describe(exc)))
        return 0 if passed else 1
    cases = [v for k, v in ns.items() if k not in before and isinstance(v, type) and issubclass(v, unittest.TestCase)]
    if not cases:
        return 0 if outcome(0, True) else 1
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for case in cases:
        suite.addTests(loader.loadTestsFromTestCase(case))
    total = suite.countTestCases()
    emit({"total": total})
    result = _Result(outcome)
    try:
        suite.run(result)
    except BaseException as exc:  # noqa: BLE001 - the run itself broke: the rest count as failed
        emit({"error": "unittest: " + _describe(exc)})
    return 0 if result.passed == total else 1


class _Result:
    """A minimal unittest result that reports each test once, when it stops."""

    def __init__(self, outcome):
        import unittest

        self._base = unittest.TestResult()
        self._outcome = outcome
        self._bad = None
        self.passed = 0
        self.index = 0

    def __getattr__(self, name):  # shouldStop, failfast, buffer, ... from a real TestResult
        return getattr(self._base, name)

    def startTest(self, test):
        self._bad = None
        self._base.testsRun += 1

    def _fail(self, test, err, kind):
        if self._bad is None:
            etype, value, _ = err
            self._bad = "%s %s: %s" % (test.id(), kind, _describe(value) if value is not None else etype)

    def addError(self, test, err):
        self._fail(test, err, "error")

    def addFailure(self, test, err):
        self._fail(test, err, "failed")

    def addSubTest(self, test, subtest, err):
        if err is not None:
            self._fail(subtest, err, "failed")

    def addSkip(self, test, reason):
        self._bad = self._bad or "%s skipped: %s" % (test.id(), reason)

    def addUnexpectedSuccess(self, test):
        self._bad = self._bad or "%s: unexpected success" % test.id()

    def addSuccess(self, test):
        pass

    def addExpectedFailure(self, test, err):
        pass

    def addDuration(self, test, elapsed):
        pass

    def stopTest(self, test):
        self.passed += self._outcome(self.index, self._bad is None, self._bad or "")
        self.index += 1
