"""The config a checkpoint was trained with, as the default for `toolrl eval` and `toolrl serve`.

Every checkpoint's `trainer_state.json` holds the run's full config. Evaluating
or serving a checkpoint with other prompt, parsing or sampling settings than
training used is the classic way to measure (or ship) a different model than
the one trained, so these commands start from the training config:

* no `--config`: the checkpoint's config is the config (its rewards, envs,
  tool parser, turn and token limits, sampling); `key=value` overrides apply on
  top, and one that changes a training setting is a warning naming the field.
* with `--config`: what the file (and the overrides) set wins, each setting in
  `TRAINING_SETTINGS` that differs from training is a warning naming the
  field, and what the file leaves unset comes from the checkpoint.

The chat template travels with the checkpoint's tokenizer, so the prompt is
rendered exactly as in training.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"

TRAINING_SETTINGS: tuple[str, ...] = (
    "rollout.tool_parser", "rollout.max_turns", "rollout.max_new_tokens", "rollout.max_total_tokens",
    "rollout.temperature", "rollout.top_p", "rollout.top_k", "rollout.stop", "rollout.max_tool_result_chars",
    "model.dtype",
)
"""The settings that shape what the model sees and how it samples: a mismatch with training is warned about."""


@dataclass(frozen=True)
class ResolvedConfig:
    """The config to use, where its defaults came from, and the warnings to show."""

    config: Any  # toolrl.config.Config
    state_file: Path | None
    inherited: dict[str, Any]
    warnings: tuple[str, ...]


def find_state_file(model: str | Path) -> Path | None:
    """`trainer_state.json` of a checkpoint given as its folder, `latest`, or its `policy/` / `merged/` folder."""
    p = Path(model).expanduser()
    if not p.is_dir():
        return None
    for d in (p, p.parent):
        f = d / STATE_FILE
        if f.is_file():
            return f
    return None


def training_config(model: str | Path) -> tuple[dict[str, Any], Path] | None:
    """(the config dict a checkpoint was trained with, its state file), or None for a plain model."""
    f = find_state_file(model)
    if f is None:
        return None
    try:
        cfg = json.loads(f.read_text(encoding="utf-8")).get("config")
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("cannot read the training config from %s (%s); using the defaults", f, exc)
        return None
    return (cfg, f) if isinstance(cfg, dict) else None


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            yield from _leaves(v, key + ".")
        else:
            yield key


def _get(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def resolve_config(model: str, config_path: str | None = None, overrides: Sequence[str] = ()) -> ResolvedConfig:
    """The config for evaluating or serving `model` (see the module docstring)."""
    from toolrl.config import _read_yaml, load_config, parse_override, set_dotted, validate
    from toolrl.errors import ConfigError

    found = training_config(model)
    if found is None:
        return ResolvedConfig(load_config(config_path, overrides), None, {}, ())
    trained, state_file = found
    try:
        validate(copy.deepcopy(trained))
    except ConfigError as exc:  # a checkpoint from another toolrl version whose config no longer validates
        logger.warning("the training config in %s does not load with this toolrl version, so the defaults (and "
                       "--config) are used instead:\n%s", state_file, exc)
        return ResolvedConfig(load_config(config_path, overrides), None, {}, ())
    raw = copy.deepcopy(trained)
    explicit: dict[str, tuple[Any, str]] = {}
    if config_path is not None:
        user = _read_yaml(config_path)
        _merge(raw, user)
        explicit.update({k: (_get(user, k), f"--config {config_path}") for k in _leaves(user)})
    problems = []
    for ov in overrides:
        try:
            key, value = parse_override(ov)
        except Exception as exc:  # the same message load_config gives
            problems.append(getattr(exc, "problem", None) or exc)
            continue
        set_dotted(raw, key, value)
        explicit[key] = (value, f"command line: {ov}")
    if problems:
        raise ConfigError(problems)
    cfg = validate(raw)
    flat = cfg.model_dump(mode="json")
    warnings = []
    for key in TRAINING_SETTINGS:
        if key in explicit and _get(flat, key) != _get(trained, key):
            warnings.append(f"{key}={_get(flat, key)!r} ({explicit[key][1]}) differs from the checkpoint's training "
                            f"value {_get(trained, key)!r}; using {_get(flat, key)!r}")
    inherited = {k: _get(flat, k) for k in TRAINING_SETTINGS if k not in explicit}
    return ResolvedConfig(cfg, state_file, inherited, tuple(warnings))


def announce(resolved: ResolvedConfig, command: str, console: Any = None) -> None:
    """Say where the settings came from, and print each mismatch as a warning naming the field."""
    if resolved.state_file is None:
        return
    from rich.console import Console

    console = console or Console(stderr=True)
    shown = ", ".join(f"{k}={v!r}" for k, v in resolved.inherited.items())
    rewards = ", ".join(r.name for r in getattr(resolved.config, "rewards", []) or [])
    console.print(f"{command}: using the training config of the checkpoint ({resolved.state_file}): {shown}"
                  + (f"; rewards: {rewards}" if rewards else ""), highlight=False, soft_wrap=True)
    for w in resolved.warnings:
        logger.warning("%s", w)
        console.print(f"[bold yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
