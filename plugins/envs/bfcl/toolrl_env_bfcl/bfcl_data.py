"""Reading the Berkeley Function-Calling Leaderboard data shipped in `bfcl-eval`.

Questions are in `bfcl_eval/data/BFCL_v4_<category>.json` (one JSON object per
line), answers in `possible_answer/` with the same ids, multi-turn tool docs in
`multi_turn_func_doc/`. BFCL writes JSON schemas with its own type names
(`dict`, `float`, `tuple`, `any`); `to_openai_schema` maps them to JSON Schema
so chat templates and toolrl's format rewards read them.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError

SINGLE_TURN: dict[str, str] = {
    # category name in toolrl -> BFCL file stem
    "simple": "simple_python",
    "parallel": "parallel",
    "multiple": "multiple",
    "parallel_multiple": "parallel_multiple",
    "live_simple": "live_simple",
    "live_multiple": "live_multiple",
    "live_parallel": "live_parallel",
    "live_parallel_multiple": "live_parallel_multiple",
    "irrelevance": "irrelevance",
}
MULTI_TURN: dict[str, str] = {"multi_turn": "multi_turn_base"}
CATEGORIES: tuple[str, ...] = (*SINGLE_TURN, *MULTI_TURN)

FUNC_DOC_FILES: dict[str, str] = {
    "GorillaFileSystem": "gorilla_file_system.json",
    "MathAPI": "math_api.json",
    "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json",
    "TicketAPI": "ticket_api.json",
    "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json",
    "VehicleControlAPI": "vehicle_control.json",
}
CLASS_MODULES: dict[str, str] = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
FUNC_SOURCE_PACKAGE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"

_TYPES = {"dict": "object", "float": "number", "tuple": "array"}


def data_dir() -> Path:
    """`bfcl_eval/data`, found without importing bfcl_eval (its package imports many SDKs)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ToolrlError("the BFCL data needs the 'bfcl-eval' package, which is not installed",
                          fix="pip install --no-deps bfcl-eval==2026.3.23")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not d.is_dir():
        raise ToolrlError("bfcl-eval is installed but has no data folder", where=str(d),
                          fix="reinstall: pip install --no-deps --force-reinstall bfcl-eval==2026.3.23")
    return d


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@lru_cache(maxsize=None)
def load_category(category: str) -> tuple[dict[str, Any], ...]:
    """The entries of one category, each with its `ground_truth` added (None for irrelevance)."""
    stem = SINGLE_TURN.get(category) or MULTI_TURN.get(category)
    if stem is None:
        raise ToolrlError(f"unknown BFCL category {category!r}", where="toolrl data make bfcl",
                          fix=f"use any of {', '.join(CATEGORIES)}")
    d = data_dir()
    questions = _jsonl(d / f"BFCL_v4_{stem}.json")
    answer_file = d / "possible_answer" / f"BFCL_v4_{stem}.json"
    answers = {a["id"]: a["ground_truth"] for a in _jsonl(answer_file)} if answer_file.exists() else {}
    out = []
    for q in questions:
        q = dict(q)
        q["ground_truth"] = answers.get(q["id"])
        out.append(q)
    return tuple(out)


@lru_cache(maxsize=None)
def class_functions(class_name: str) -> tuple[dict[str, Any], ...]:
    """BFCL's function docs of one multi-turn tool class."""
    if class_name not in FUNC_DOC_FILES:
        raise ToolrlError(f"unsupported BFCL tool class {class_name!r}", fix=f"use any of {', '.join(FUNC_DOC_FILES)}")
    return tuple(_jsonl(data_dir() / "multi_turn_func_doc" / FUNC_DOC_FILES[class_name]))


def to_openai_schema(node: Any) -> Any:
    """BFCL's schema dialect -> JSON Schema (dict->object, float->number, tuple->array, any->no type)."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "type" and isinstance(v, str):
                if v == "any":
                    continue
                out[k] = _TYPES.get(v, v)
            elif k == "properties" and isinstance(v, Mapping):
                out[k] = {name: to_openai_schema(p) for name, p in v.items()}
            else:
                out[k] = to_openai_schema(v)
        return out
    if isinstance(node, list):
        return [to_openai_schema(v) for v in node]
    return node


def to_tool(fn: Mapping[str, Any]) -> dict[str, Any]:
    """One BFCL function doc as an OpenAI function tool (the `response` doc is dropped)."""
    params = to_openai_schema(fn.get("parameters") or {"type": "dict", "properties": {}})
    return {"type": "function",
            "function": {"name": fn["name"], "description": fn.get("description", ""), "parameters": params}}
