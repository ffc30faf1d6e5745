"""A checkpoint carries its training config: `toolrl eval CKPT` with no --config renders the same token ids."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from toolrl.checkpoint_config import resolve_config
from toolrl.config import load_config
from toolrl.evaluation.metrics import eval_temperature
from toolrl.rollout.base import BackendSettings
from toolrl.rollout.hf_backend import HFBackend
from toolrl.trainer.checkpoint import write_run_state
from toolrl.trainer.rollout import run_rollouts
from toolrl.types import Task

TRAINING = {
    "model": {"name_or_path": "smollm2-135m-instruct"},
    "rollout": {"n": 2, "max_turns": 1, "max_new_tokens": 5, "max_total_tokens": 300, "temperature": 0.0,
                "tool_parser": "hermes", "max_tool_result_chars": 150},
    "rewards": [{"name": "gsm8k_exact"}],
    "trainer": {"output_dir": "runs/ckpt_config_test", "seed": 3},
}
TASK = Task(id="t0", messages=({"role": "system", "content": "Answer after ####."},
                               {"role": "user", "content": "What is 6 * 7?"}), metadata={"answer": "42"})


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("run") / "checkpoints" / "step_000002"
    shutil.copytree(tiny_model_dir, ckpt / "policy")
    cfg = load_config(data=TRAINING)
    write_run_state(ckpt, {"step": 2, "config": cfg.model_dump(mode="json")})  # what the trainer writes
    os.symlink(ckpt.name, ckpt.parent / "latest")
    return ckpt


def _ids(ckpt, cfg, temperature):
    backend = HFBackend(BackendSettings(model_path=str(ckpt / "policy"), device="cpu", max_batch_size=4))
    try:
        [t] = run_rollouts(backend, backend.tokenizer, [TASK], 1, cfg, seed=cfg.trainer.seed, temperature=temperature)
    finally:
        backend.close()
    return list(t.prompt_ids) + list(t.response_ids)


def test_eval_without_config_renders_the_training_token_ids(checkpoint):
    trained = load_config(data=TRAINING)
    training_ids = _ids(checkpoint, trained, None)  # training samples with cfg.rollout (greedy here)
    resolved = resolve_config(str(checkpoint.parent / "latest"))  # toolrl eval CKPT, no --config
    assert resolved.state_file.resolve() == (checkpoint / "trainer_state.json").resolve()
    assert resolved.warnings == ()
    assert resolved.inherited["rollout.tool_parser"] == "hermes" and resolved.inherited["rollout.max_new_tokens"] == 5
    eval_ids = _ids(checkpoint, resolved.config, eval_temperature(resolved.config, 1))
    assert eval_ids == training_ids
    # the pitfall this guards against: the defaults sample with other limits and render other ids
    defaults = load_config(data={"rewards": TRAINING["rewards"]})
    assert _ids(checkpoint, defaults, eval_temperature(defaults, 1)) != training_ids


def test_a_differing_setting_is_a_warning_naming_the_field(checkpoint, tmp_path):
    r = resolve_config(str(checkpoint), None, ["rollout.max_new_tokens=64"])
    assert r.config.rollout.max_new_tokens == 64
    assert len(r.warnings) == 1 and r.warnings[0].startswith("rollout.max_new_tokens=64 (command line") and \
        "training value 5" in r.warnings[0]
    user = tmp_path / "eval.yaml"
    user.write_text("rollout:\n  tool_parser: auto\n  max_new_tokens: 5\nrewards:\n  - {name: math_equiv}\n")
    r = resolve_config(str(checkpoint / "policy"), str(user))
    assert [w.split("=")[0] for w in r.warnings] == ["rollout.tool_parser"] and "--config" in r.warnings[0]
    assert r.config.rollout.max_turns == 1 and r.config.rollout.temperature == 0.0  # unset in the file: training's
    assert [x.name for x in r.config.rewards] == ["math_equiv"]
    plain = resolve_config("smollm2-135m-instruct", None, ["rollout.max_new_tokens=64"])  # not a checkpoint
    assert plain.state_file is None and plain.warnings == ()
    old = tmp_path / "old_ckpt"  # a checkpoint whose config this version no longer accepts
    old.mkdir()
    (old / "trainer_state.json").write_text(json.dumps({"step": 1, "config": {"rollout": {"retired_key": 1}}}))
    fallback = resolve_config(str(old), None, ["rollout.max_new_tokens=64"])
    assert fallback.state_file is None and fallback.config.rollout.max_new_tokens == 64


def test_toolrl_eval_says_where_the_settings_came_from(checkpoint, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(TASK.to_dict()) + "\n")
    env = {**os.environ, "TOOLRL_NO_ENTRYPOINTS": "", "COLUMNS": "250"}
    r = subprocess.run([sys.executable, "-m", "toolrl.cli", "eval", "--model", str(checkpoint), "--tasks", str(tasks),
                        "model.device=cpu", "rollout.max_new_tokens=3"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    err = " ".join(r.stderr.split())
    assert "using the training config of the checkpoint" in err and "'rollout.tool_parser': 'hermes'" not in err
    assert "rollout.tool_parser='hermes'" in err and "rewards: gsm8k_exact" in err
    assert "warning: rollout.max_new_tokens=3 (command line: rollout.max_new_tokens=3) differs" in err


def test_serve_takes_the_checkpoint_tool_parser_dtype_and_turn_length(checkpoint):
    from toolrl_serving.cli import build_settings, checkpoint_defaults

    options = {}
    parser, dtype, notes = checkpoint_defaults(str(checkpoint / "policy"), None, None, options)
    assert (parser, dtype, options["default_max_tokens"]) == ("hermes", "float32", 5)
    assert notes[0].startswith("toolrl serve: using the training config of the checkpoint")
    assert "rollout.tool_parser='hermes'" in notes[0]
    s = build_settings(model=str(checkpoint / "policy"), tool_parser=parser, dtype=dtype, **options)
    assert s.tool_parser == "hermes" and s.limits.default_max_tokens == 5
    parser, _, notes = checkpoint_defaults(str(checkpoint), "auto", None, {})
    assert parser == "auto" and notes[1].startswith("warning: --tool-parser 'auto' differs") and \
        "rollout.tool_parser='hermes'" in notes[1]
    assert checkpoint_defaults("smollm2-135m-instruct", None, None, {}) == ("auto", "float32", [])
