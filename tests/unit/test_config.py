"""Config loading: YAML + overrides, and errors that name the key, value, reason and fix."""

import pytest

from toolrl.config import Config, load_config, parse_override
from toolrl.errors import ConfigError


def problems(exc: ConfigError) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in exc.problems:
        out[p.key] = (out[p.key] + "\n" if p.key in out else "") + str(p)
    return out


def test_defaults_are_valid():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.batch_size == cfg.data.prompts_per_step * cfg.rollout.n


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  name_or_path: smollm2-135m-instruct\ntrainer:\n  lr: 2.0e-6\nrollout:\n  n: 4\n"
                 "rewards:\n  - {name: math_equiv, weight: 0.6}\n  - {name: format_answer_tag, weight: 0.4}\n")
    cfg = load_config(str(f), ["trainer.lr=1e-6", "rollout.n=8", "rewards.1.weight=0.5", "ray.address=auto"])
    assert cfg.trainer.lr == pytest.approx(1e-6)  # YAML 1.1 reads "1e-6" as a string; we mean a float
    assert cfg.rollout.n == 8
    assert [(r.name, r.weight) for r in cfg.rewards] == [("math_equiv", 0.6), ("format_answer_tag", 0.5)]
    assert cfg.ray.address == "auto"


def test_unknown_key_names_key_and_suggests_the_right_one():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["trainer.lrr=1e-6"])
    msg = problems(exc.value)["trainer.lrr"]
    assert "unknown key" in msg
    assert "did you mean 'trainer.lr'?" in msg
    assert "command line: trainer.lrr=1e-6" in msg


def test_unknown_key_in_file_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("rollout:\n  temprature: 0.7\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(f))
    msg = problems(exc.value)["rollout.temprature"]
    assert "did you mean 'rollout.temperature'" in msg and str(f) in msg


def test_wrong_type_names_key_value_reason_and_fix():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["rollout.n=many"])
    msg = problems(exc.value)["rollout.n"]
    assert "'many'" in msg
    assert "valid integer" in msg
    assert "Fix: set rollout.n to a value of type int" in msg


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["rollout.n=x", "trainer.lr=-1", "model.dtype=float64"])
    assert set(problems(exc.value)) == {"rollout.n", "trainer.lr", "model.dtype"}
    assert "3 problem(s)" in str(exc.value)


def test_batch_not_a_multiple_of_group_size_is_rejected():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["data.prompts_per_step=2", "rollout.n=4", "trainer.mini_batch_size=6",
                           "trainer.micro_batch_size=2"])
    p = problems(exc.value)["trainer.mini_batch_size"]
    assert "8 trajectories" in p and "Fix:" in p


def test_grpo_needs_a_group():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["rollout.n=1"])
    assert "at least 2 per prompt" in problems(exc.value)["rollout.n"]


def test_eval_freq_without_eval_file():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["trainer.eval_freq=5"])
    assert "data.eval_file" in problems(exc.value)["trainer.eval_freq"]


def test_a_config_file_given_as_an_override_points_to_config(tmp_path):
    """`toolrl train run.yaml` (without --config): the error names the file and says to pass it with --config."""
    (tmp_path / "settings").write_text("trainer: {lr: 1.0e-6}\n")  # an existing file without an extension
    for text in ("examples/demo/config.yaml", "run.yml", str(tmp_path / "settings")):
        with pytest.raises(ConfigError) as exc:
            load_config(None, [text])
        assert f"--config {text}" in str(exc.value) and "a config file given where an override" in str(exc.value)


def test_override_syntax_errors():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["trainer.lr"])
    assert "key.subkey=value" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["rewards.3.weight=1"])
    assert "not a valid index" in str(exc.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("trainer:\n  lr: 1e-6\n   seed: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(f))
    assert "line 3" in str(exc.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/run.yaml")


@pytest.mark.parametrize(
    "text,expected",
    [("a.b=1", ("a.b", 1)), ("a.b=1e-6", ("a.b", 1e-6)), ("a=[x, y]", ("a", ["x", "y"])), ("a=null", ("a", None)),
     ("a=true", ("a", True)), ("a=runs/x", ("a", "runs/x")), ("a=e5", ("a", "e5"))],
)
def test_parse_override_values(text, expected):
    assert parse_override(text) == expected


def test_config_does_not_import_heavy_modules():
    import subprocess
    import sys

    code = ("import sys, toolrl.config as c; c.load_config(None, ['rollout.n=4']); "
            "bad=[m for m in ('torch','transformers','ray') if m in sys.modules]; print(bad); assert not bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
