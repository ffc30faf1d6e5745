"""The `toolrl` command line, run as a user would (a real subprocess)."""

import json
import subprocess
import sys

import pytest


def toolrl(*args, env=None, check=False):
    import os

    e = dict(os.environ)
    e.update({"COLUMNS": "250"}, **(env or {}))
    r = subprocess.run([sys.executable, "-m", "toolrl.cli", *args], capture_output=True, text=True, env=e, timeout=120)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_version():
    r = toolrl("--version", check=True)
    import toolrl as pkg

    assert pkg.__version__ in r.stdout


def test_subcommands_exist():
    r = toolrl("--help", check=True)
    for cmd in ("train", "eval", "compare", "serve", "plugins", "config", "doctor", "data", "plot"):
        assert cmd in r.stdout


def test_plugins_json_lists_builtins():
    r = toolrl("plugins", "--all", "--json", check=True)
    rows = json.loads(r.stdout)
    backends = next(x for x in rows if x["name"] == "toolrl.default_plugins.backends")
    assert backends["distribution"] == "toolrl" and backends["builtin"] is True
    assert "hf" in backends["registered"]["rollout_backends"]


def test_plugins_table():
    r = toolrl("plugins", "--all", check=True)
    assert "toolrl.default_plugins.backends" in r.stdout and "rollout_backends: hf" in r.stdout


def test_config_show_applies_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("rollout:\n  n: 2\n")
    r = toolrl("config", "show", "--config", str(f), "trainer.lr=3e-6", "rollout.temperature=0.5", check=True)
    assert "n: 2" in r.stdout and "lr: 3.0e-06" in r.stdout and "temperature: 0.5" in r.stdout


def test_config_error_exits_2_with_message():
    r = toolrl("config", "show", "trainer.lrr=1")
    assert r.returncode == 2
    assert "trainer.lrr" in r.stderr and "did you mean 'trainer.lr'" in r.stderr
    assert "Traceback" not in r.stderr


def test_train_with_bad_config_fails_before_loading_anything():
    r = toolrl("train", "rollout.n=1")
    assert r.returncode == 2 and "rollout.n" in r.stderr and "at least 2 per prompt" in r.stderr


def test_doctor_json():
    r = toolrl("doctor", "--json", check=True)
    rep = json.loads(r.stdout)
    assert rep["torch"] and rep["transformers"]
    assert set(rep["engines"]) >= {"ray", "vllm", "sglang"}
    assert "smollm2-135m-instruct" in rep["models"]
    assert "ok" in rep["docker"] and "ok" in rep["gpu"]
    assert "C++ compiler" in rep["compile"]["detail"] and "triton" in rep["compile"]["detail"]
    missing = [m for m in rep["models"].values() if not m["installed"]]
    assert all(m["install"].startswith("pip install") for m in missing)


@pytest.mark.parametrize("cmd", [["serve", "--help"], ["eval", "--help"], ["data", "make", "--help"]])
def test_help_of_feature_commands(cmd):
    toolrl(*cmd, check=True)


def test_toolrl_serve_is_the_serving_distributions_command():
    """One definition: `toolrl serve` and `toolrl-serve` are the same click command, with the same options."""
    import click

    from toolrl.cli import cli
    from toolrl_serving.cli import serve

    ctx = click.Context(cli)
    assert cli.get_command(ctx, "serve") is serve
    a, b = toolrl("serve", "--help", check=True), subprocess.run(
        [sys.executable, "-m", "toolrl_serving", "--help"], capture_output=True, text=True, check=True,
        env={**__import__("os").environ, "COLUMNS": "250"})
    strip = lambda text: text.split("\n", 1)[1]  # noqa: E731 - the usage line names the program
    assert strip(a.stdout) == strip(b.stdout)
    for opt in ("--max-queue", "--device", "--max-prompt-tokens", "--max-n", "--log-level"):
        assert opt in a.stdout


def test_serve_without_the_serving_distribution_says_what_to_install():
    code = ("import sys; sys.modules['toolrl_serving'] = None; from toolrl.cli import main; "
            "main(['serve', 'some-model', '--port', '1'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "needs the toolrl-serving distribution" in r.stderr and "pip install -e ./serving" in r.stderr
