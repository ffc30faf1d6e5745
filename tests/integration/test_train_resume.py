"""A run killed with SIGKILL mid-step and resumed with trainer.resume=auto logs the same metrics as an
uninterrupted run with the same seed (real SmolLM2 workers, a local Ray instance per run)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import train_support as S  # tests/support, on the path through pytest's `pythonpath` (pyproject.toml)

pytestmark = pytest.mark.integration

SUPPORT = Path(S.__file__)

DRIVER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("support", {support!r})
S = importlib.util.module_from_spec(spec); spec.loader.exec_module(S)
from toolrl import plugins
plugins.get_manager().register(S.AnswerTagPlugin(), name="answer-tag-test")
import toolrl
toolrl.train(json.load(open(sys.argv[1])), sys.argv[2:])
"""


def _config(tmp: Path, out: str, save: bool = True) -> Path:
    """`save=False`: the same run without checkpoints (the uninterrupted reference run needs none)."""
    checkpoints = {"save_freq": 1, "keep_checkpoints": 0} if save else {"save_freq": 0, "save_last": False}
    cfg = S.base_config(
        tmp,
        trainer={"total_steps": 2, "lr": 2e-5, "warmup_steps": 2, "lr_schedule": "linear",
                 "ppo_epochs": 2, "micro_batch_size": 2, "output_dir": str(tmp / out), "seed": 5,
                 "metric_sinks": ["jsonl", "console"], **checkpoints},
    )
    path = tmp / f"{out}.json"
    path.write_text(json.dumps(cfg))
    return path


def _driver(tmp: Path) -> Path:
    p = tmp / "driver.py"
    p.write_text(DRIVER.format(support=str(SUPPORT)))
    return p


def _env():
    env = dict(os.environ)
    env["TOOLRL_NO_ENTRYPOINTS"] = "1"
    return env


def _run(tmp: Path, cfg: Path, *overrides: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(_driver(tmp)), str(cfg), *overrides], env=_env(), capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _kill_mid_step(tmp: Path, cfg: Path, run_dir: Path, step: int) -> None:
    """Start a run in its own session and SIGKILL the whole session once `step` is in flight."""
    proc = subprocess.Popen([sys.executable, str(_driver(tmp)), str(cfg)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    progress = run_dir / "progress.json"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            if progress.exists():
                try:
                    state = json.loads(progress.read_text())
                except json.JSONDecodeError:
                    state = {}
                if state.get("step") == step and state.get("state") == "running":
                    break
            time.sleep(0.05)
        else:
            pytest.fail(f"step {step} never started")
        time.sleep(0.5)  # inside the step: rollout or update
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray instance it started
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _comparable(row: dict) -> dict:
    """Everything but measurements of the processes themselves (wall time, CPU and memory use)."""
    return {k: v for k, v in row.items() if not k.startswith(("timing/", "resources/")) and k != "time"}


def test_sigkill_mid_step_then_resume_matches_uninterrupted(tmp_path, smollm2_path):
    straight_cfg = _config(tmp_path, "straight", save=False)
    _run(tmp_path, straight_cfg)
    straight = S.read_metrics(tmp_path / "straight")
    assert [r["step"] for r in straight] == [1, 2]
    # the reference run saves nothing: the killed and resumed runs, which save every step, must still match it
    assert not (tmp_path / "straight" / "checkpoints").exists()

    killed_dir = tmp_path / "killed"
    killed_cfg = _config(tmp_path, "killed")
    _kill_mid_step(tmp_path, killed_cfg, killed_dir, step=2)
    ckpts = sorted(p.name for p in (killed_dir / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert ckpts == ["step_000001"]  # nothing of step 2 looks like a checkpoint
    assert (killed_dir / "checkpoints" / "latest").resolve().name == "step_000001"

    resumed = _run(tmp_path, killed_cfg, "trainer.resume=auto")
    assert "steps 2..2" in resumed.stdout  # it continued from the checkpoint, not from scratch
    after = S.read_metrics(killed_dir)
    assert [r["step"] for r in after] == [1, 2]
    for a, b in zip(straight, after):
        a, b = _comparable(a), _comparable(b)
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    # step 2 depends on the restored optimizer (Adam moments), LR schedule and data order
    assert after[1]["actor/lr"] == pytest.approx(straight[1]["actor/lr"]) and after[1]["actor/lr"] > 0
    assert after[1]["actor/grad_norm"] == pytest.approx(straight[1]["actor/grad_norm"], rel=1e-4)
