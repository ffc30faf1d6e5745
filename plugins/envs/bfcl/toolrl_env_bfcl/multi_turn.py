"""BFCL's multi-turn tool classes, run in-process: a `World` of instances, calls, and state snapshots.

BFCL ships file system, math, messaging, posting, ticket, trading, travel and
vehicle APIs as plain Python classes (simulated services, not arbitrary
code). A `World` instantiates the classes a task involves, loads their
initial configuration, and executes calls by name. Only the public methods
that the task offers as tools can be called.

`snapshot()` turns every instance's public attributes into plain JSON data
(objects become dicts of their public attributes; a reference back to an
enclosing object, such as a directory's parent, is left out), which is what
BFCL's state checker compares.
"""

from __future__ import annotations

import ast
import copy
import datetime
import importlib
import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

from toolrl.errors import ToolrlError

from toolrl_env_bfcl.bfcl_data import CLASS_MODULES, FUNC_SOURCE_PACKAGE, class_functions

STATELESS = frozenset({"MathAPI"})


def parse_call(text: str) -> tuple[str, list[Any], dict[str, Any]]:
    """`"mv(source='a', destination='b')"` -> ("mv", [], {"source": "a", "destination": "b"})."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"not a function call: {text!r}") from exc
    if not isinstance(node, ast.Call):
        raise ValueError(f"not a function call: {text!r}")
    func = node.func
    name = func.id if isinstance(func, ast.Name) else \
        func.attr if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
    if name is None:
        raise ValueError(f"cannot read the function name of {text!r}")
    args = [ast.literal_eval(a) for a in node.args]
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
    return name, args, kwargs


def _plain(value: Any, path: tuple[int, ...] = ()) -> Any:
    """Public state as JSON data; references to enclosing objects are dropped (no cycles)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v, path) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, path) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v, path) for v in value), key=lambda x: json.dumps(x, sort_keys=True, default=str))
    if hasattr(value, "__dict__"):
        if id(value) in path:
            return None
        inner = (*path, id(value))
        out = {"__class__": type(value).__name__}
        for k, v in vars(value).items():
            if k.startswith("_") or (hasattr(v, "__dict__") and id(v) in inner):
                continue
            out[k] = _plain(v, inner)
        return out
    return repr(value)


class World:
    """The instances of one multi-turn task.

    Args:
        involved_classes: BFCL class names, e.g. ["GorillaFileSystem", "TwitterAPI"].
        initial_config: per class, the scenario given to `_load_scenario`.
        functions: the function names the task offers (others cannot be called); None = all public methods.
    """

    def __init__(self, involved_classes: Sequence[str], initial_config: Mapping[str, Any],
                 functions: Sequence[str] | None = None):
        self.instances: dict[str, Any] = {}
        self._methods: dict[str, Any] = {}
        allowed = set(functions) if functions is not None else None
        for cls_name in involved_classes:
            if cls_name not in CLASS_MODULES:
                raise ToolrlError(f"unsupported BFCL tool class {cls_name!r}", where="env_args.involved_classes",
                                  fix=f"use any of {', '.join(CLASS_MODULES)}")
            module = importlib.import_module(f"{FUNC_SOURCE_PACKAGE}.{CLASS_MODULES[cls_name]}")
            instance = getattr(module, cls_name)()
            if cls_name not in STATELESS:
                instance._load_scenario(copy.deepcopy(dict(initial_config.get(cls_name, {}))), long_context=False)
            self.instances[cls_name] = instance
            documented = {f["name"] for f in class_functions(cls_name)}
            for name, method in inspect.getmembers(instance, predicate=inspect.ismethod):
                if name.startswith("_") or name not in documented:
                    continue
                if allowed is not None and name not in allowed:
                    continue
                self._methods[name] = method

    @property
    def functions(self) -> list[str]:
        return sorted(self._methods)

    def call(self, name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Any:
        """Run one call. A bad name or argument raises ValueError/TypeError; the API's own errors are its result."""
        method = self._methods.get(name)
        if method is None:
            raise ValueError(f"unknown function {name!r}; available: {', '.join(self.functions)}")
        try:
            inspect.signature(method).bind(*args, **dict(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"{name}: {exc}") from None
        return method(*args, **dict(kwargs or {}))

    def keyword_args(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments all by name (to render a call as a JSON tool call)."""
        bound = inspect.signature(self._methods[name]).bind(*args, **dict(kwargs))
        return dict(bound.arguments)

    def run_text(self, call_text: str) -> Any:
        name, args, kwargs = parse_call(call_text)
        return self.call(name, args, kwargs)

    def snapshot(self) -> dict[str, Any]:
        """Every stateful instance's public attributes as JSON data, by class name."""
        return {name: _plain(inst) for name, inst in self.instances.items() if name not in STATELESS}


def result_text(result: Any) -> str:
    """A call's return value as the tool message (JSON where possible)."""
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(result)


def ground_truth_outcome(env_args: Mapping[str, Any], ground_truth: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """What BFCL expects after a turn: the state of a fresh world that replays the earlier turns and then this
    turn's answer, and the results (as tool-message text) of this turn's answer calls."""
    world = World(env_args["involved_classes"], env_args.get("initial_config") or {})
    for text in env_args.get("replay", ()):
        world.run_text(text)
    results = [result_text(world.run_text(text)) for text in ground_truth]
    return world.snapshot(), results
