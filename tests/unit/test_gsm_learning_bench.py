"""benchmarks/gpu/gsm_learning.py on the CPU: the learning run's config with `--kv-cache fit` validates as a toolrl
config, seeds run all at once or one after the other, and a child's last result survives its kill at the
timeout."""

from __future__ import annotations

import json
import sys
import time

import pytest

from toolrl.config import Config


@pytest.fixture()
def gsm(load_benchmark, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts its neighbours on the path
    with load_benchmark("gpu/gsm_learning.py") as mod:
        yield mod


def _config(gsm, tmp_path, **kw):
    return gsm.learning_config("some/model", str(tmp_path / "train.jsonl"), str(tmp_path / "out"), seed=1,
                               staleness=1, steps=3, lr=2e-6, prompts=32, group=8, gpu_mem=0.25, dry=False, **kw)


def test_kv_cache_fit_reaches_the_backend_args_of_a_valid_config(gsm, tmp_path):
    fit = Config.model_validate(_config(gsm, tmp_path, kv_cache="fit"))
    assert fit.rollout.backend_args["kv_cache"] == "fit"
    assert fit.rollout.backend_args["max_model_len"] == 4096  # what fit sizes the cache by
    assert fit.trainer.async_rollouts.max_staleness == 1
    share = Config.model_validate(_config(gsm, tmp_path))
    assert "kv_cache" not in share.rollout.backend_args
    dry = gsm.learning_config("m", "t", "o", seed=0, staleness=0, steps=1, lr=1e-6, prompts=2, group=2, gpu_mem=0.2,
                              dry=True, kv_cache="fit")
    assert "kv_cache" not in dry["rollout"]["backend_args"]  # the CPU dry run's hf backend has no KV cache setting


def test_each_mode_is_a_valid_config_with_its_staleness_and_job_size(gsm, tmp_path):
    a = gsm.argparse.Namespace(model="some/model", train=str(tmp_path / "t.jsonl"), steps=3, lr=2e-6, prompts=32,
                               group=8, gpu_mem=0.25, dry_run=False, engine_process=False, kv_cache="fit")
    got = {}
    for mode in gsm.MODES:
        cfg = Config.model_validate(gsm.config_for(a, str(tmp_path / mode), seed=0, mode=mode))
        ar = cfg.trainer.async_rollouts
        got[mode] = (ar.max_staleness, ar.steps_per_rollout, cfg.rollout.max_batch_size)
    # async2's job is two steps' 256 episodes: one engine batch of 512, and a bound that lets it overlap two updates
    assert got == {"sync": (0, 1, 256), "async": (1, 1, 256), "async2": (3, 2, 512)}


def test_an_unknown_mode_is_refused_with_the_modes_there_are(gsm, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["gsm_learning.py", "--modes", "sync,asink"])
    with pytest.raises(SystemExit) as exc:
        gsm.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown mode(s) asink" in err and "sync, async, async2" in err


def test_seeds_run_together_or_one_at_a_time(gsm):
    assert gsm.waves([0, 1, 2], 3) == [[0, 1, 2]]
    assert gsm.waves([0, 1, 2], 1) == [[0], [1], [2]]


def test_a_child_killed_at_the_deadline_keeps_its_last_partial_result(gsm, tmp_path, capsys):
    done = ("import json; print('PARTIAL ' + json.dumps({'seed': 0, 'modes': {}}), flush=True); "
            "print('RESULT ' + json.dumps({'seed': 0, 'ok': True}))")
    hangs = ("import json, time; print('PARTIAL ' + json.dumps({'seed': 1, 'modes': {'sync': 1}}), flush=True); "
             "time.sleep(60)")
    t = time.monotonic()
    last, codes = gsm.run_children({0: [sys.executable, "-c", done], 1: [sys.executable, "-c", hangs]}, tmp_path,
                                   deadline=time.monotonic() + 5, timeout=5)
    assert time.monotonic() - t < 30
    assert json.loads(last[0]) == {"seed": 0, "ok": True} and codes[0] == 0
    assert json.loads(last[1]) == {"seed": 1, "modes": {"sync": 1}} and codes[1] != 0
    assert "seed 1: killed at the 5s timeout" in capsys.readouterr().out
    assert (tmp_path / "child-1.log").read_text().startswith("PARTIAL ")
