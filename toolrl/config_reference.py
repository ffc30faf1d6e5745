"""Render docs/config.md from the config classes (`toolrl config reference`)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from toolrl.config import Config

HEADER = """# Configuration reference

Generated from `toolrl/config.py` by `toolrl config reference --out docs/config.md`;
`tests/unit/test_config_reference.py` fails when this file is out of date.

A config is a YAML file with the sections below. Any key can be overridden on
the command line with a dotted path: `toolrl train --config run.yaml trainer.lr=1e-6 rollout.n=8`
(list items by index: `rewards.0.weight=0.5`). `toolrl config show --config run.yaml [overrides]`
prints the resolved config.
"""


def _type_name(ann: Any) -> str:
    text = getattr(ann, "__name__", None) if not getattr(ann, "__args__", None) else None
    return text or str(ann).replace("typing.", "").replace("toolrl.config.", "")


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{json.dumps(value)}`"


def _section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    out.append(f"\n## `{prefix}`\n" if prefix else "\n## Top level\n")
    doc = (model.__doc__ or "").strip()
    if doc:
        out.append(doc + "\n")
    out.append("| key | type | default | description |\n| --- | --- | --- | --- |")
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        item = getattr(ann, "__args__", (None,))[0]
        if sub is not None:
            nested.append((sub, key))
        elif isinstance(item, type) and issubclass(item, BaseModel):
            nested.append((item, f"{key}[]"))
        desc = (field.description or "").replace("|", "\\|")
        out.append(f"| `{key}` | {_type_name(ann).replace('|', chr(92) + '|')} | {_default(field)} | {desc} |")
    for sub, key in nested:
        _section(sub, key, out)


def render_reference() -> str:
    out = [HEADER]
    _section(Config, "", out)
    return "\n".join(out).rstrip() + "\n"
