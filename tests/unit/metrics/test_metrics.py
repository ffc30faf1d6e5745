"""Metric sinks, diversity, rollout statistics and plots."""

import csv
import io
import json
import math

import pytest

from toolrl.errors import ToolrlError
from toolrl.metrics.diversity import distinct_n, diversity_metrics, ngram_entropy
from toolrl.metrics.plot import plot_command
from toolrl.metrics.rollout_stats import reward_metrics, rollout_metrics
from toolrl.metrics.sinks import ConsoleSink, CsvSink, JsonlSink, MetricLogger, TensorBoardSink, read_jsonl
from toolrl.types import RewardResult, ToolCall, Trajectory


def test_distinct_and_entropy_by_hand():
    texts = ["a b a", "a b"]
    # unigrams a,b,a,a,b: 2 unique / 5; bigrams (a b),(b a),(a b): 2 unique / 3
    assert distinct_n(texts, 1) == pytest.approx(2 / 5)
    assert distinct_n(texts, 2) == pytest.approx(2 / 3)
    # bigram distribution 2/3, 1/3
    assert ngram_entropy(texts, 2) == pytest.approx(-(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3))
    assert distinct_n([], 1) == 0.0 and ngram_entropy([""], 2) == 0.0
    collapsed = diversity_metrics(["same answer"] * 8)
    varied = diversity_metrics([f"answer {i} is {i * 7}" for i in range(8)])
    assert collapsed["rollout/distinct_2"] < varied["rollout/distinct_2"]
    assert collapsed["rollout/entropy_2gram"] == 0.0


def _traj(i, mask, turns=1, calls=0, errors=0, finish="stop", text="x"):
    n = len(mask)
    return Trajectory(
        task_id=f"t{i}", sample_index=0, prompt_ids=(1, 2, 3), response_ids=tuple(range(n)), loss_mask=tuple(mask),
        logprobs=(0.0,) * n, messages=({"role": "user", "content": "q"}, {"role": "assistant", "content": text}),
        num_prompt_messages=1, tool_calls=tuple(ToolCall("f", {}) for _ in range(calls)), finish_reason=finish,
        num_turns=turns, tool_errors=errors,
    )


def test_rollout_metrics():
    trajs = [_traj(0, [1, 1, 0, 0, 1], turns=2, calls=1, errors=1), _traj(1, [1, 1, 1], finish="length")]
    m = rollout_metrics(trajs)
    assert m["rollout/response_length"] == 3.0  # sampled tokens only
    assert m["rollout/total_length"] == 4.0
    assert m["rollout/num_turns"] == 1.5 and m["rollout/tool_calls"] == 0.5 and m["rollout/tool_errors"] == 0.5
    assert m["rollout/finish/length"] == 0.5 and m["rollout/finish/stop"] == 0.5


def test_reward_metrics_and_accuracy():
    binary = [RewardResult(1.0, {"ok": 1.0}), RewardResult(0.0, {"ok": 0.0}), RewardResult(None, {}, "x")]
    m = reward_metrics(binary)
    assert m["reward/mean"] == 0.5 and m["reward/accuracy"] == 0.5
    assert m["reward/std"] == pytest.approx(math.sqrt(0.5))
    shaped = [RewardResult(1.2, {"fmt": 0.2, "ok": 1.0}), RewardResult(0.2, {"fmt": 0.2, "ok": 0.0})]
    assert "reward/accuracy" not in reward_metrics(shaped)  # not binary, no component named
    assert reward_metrics(shaped, accuracy_reward="ok")["reward/accuracy"] == 0.5


def test_jsonl_and_csv_sinks_drop_recomputed_steps_on_resume(tmp_path):
    for s in (JsonlSink(tmp_path), CsvSink(tmp_path)):
        s.begin(5, 0)
        for step in (1, 2, 3):
            s.log(step, {"reward/mean": step / 10})
        s.log(3, {"reward/mean": 0.3, "eval/accuracy": 0.5})  # a new column rewrites the CSV header
        s.close()
    # resume from a checkpoint at step 2: steps 3+ are about to be recomputed
    for s in (JsonlSink(tmp_path), CsvSink(tmp_path)):
        s.begin(5, 3)
        s.log(3, {"reward/mean": 0.33})
        s.close()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["reward/mean"] == 0.33
    with (tmp_path / "metrics.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in table] == [1, 2, 3] and float(table[-1]["reward/mean"]) == 0.33
    assert "eval/accuracy" in table[0]
    # a new run in the same folder starts clean
    for s in (JsonlSink(tmp_path), CsvSink(tmp_path)):
        s.begin(5, 0)
        s.close()
    assert read_jsonl(tmp_path / "metrics.jsonl") == []


def test_tensorboard_sink_writes_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = TensorBoardSink(tmp_path)
    s.begin(3, 1)
    s.log(1, {"reward/mean": 0.25, "actor/kl": float("nan")})
    s.log(2, {"reward/mean": 0.5})
    s.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("reward/mean")] == [(1, 0.25), (2, 0.5)]


def test_console_sink_prints_key_figures(tmp_path):
    from rich.console import Console

    buf = io.StringIO()
    s = ConsoleSink(tmp_path, console=Console(file=buf, width=200, force_terminal=False))
    s.begin(20, 1)
    s.log(1, {"reward/mean": 0.125, "actor/kl": 0.0012, "rollout/response_length": 41.0, "timing/step": 3.2})
    s.close()
    out = buf.getvalue()
    assert "step  1/20" in out and "reward 0.125" in out and "kl 0.0012" in out and "len 41" in out


def test_metric_logger_uses_registered_sinks(tmp_path, plugin_manager):
    ml = MetricLogger.from_names(["jsonl", "csv"], tmp_path)
    ml.begin(2, 1)
    ml.log(1, {"reward/mean": 1.0})
    ml.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["reward/mean"] == 1.0


def test_plot_writes_pngs(tmp_path):
    s = JsonlSink(tmp_path)
    s.begin(4, 1)
    for step in range(1, 5):
        s.log(step, {"reward/mean": step / 4, "reward/std": 0.1, "reward/format": 0.5, "reward/accuracy": step / 8,
                     "actor/kl": 0.001 * step, "rollout/response_length": 30 + step, "loss/policy": -0.01})
    s.close()
    paths = plot_command(str(tmp_path))
    names = {p.name for p in paths}
    assert {"reward.png", "kl.png", "length.png", "accuracy.png", "loss.png"} <= names
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_step_ticks_are_whole_numbers_and_resources_are_drawn(tmp_path):
    import matplotlib.pyplot as plt

    from toolrl.metrics.plot import figures

    s = JsonlSink(tmp_path)
    for step in (1, 2, 3):  # few steps: matplotlib's default locator would put ticks at 1.25, 1.5, ...
        s.log(step, {"reward/mean": step / 3, "resources/driver/rss_mib": 900.0 + step,
                     "resources/actor/rss_mib": 2000.0, "resources/actor/cpu_percent": 150.0,
                     "timing/rollout_tokens_per_s": 40.0 + step})
    s.close()
    figs = figures(tmp_path)
    try:
        assert {"reward", "memory", "utilisation", "throughput"} <= set(figs)
        labels = [line.get_label() for line in figs["memory"].axes[0].get_lines()]
        assert labels == ["resources/actor/rss_mib", "resources/driver/rss_mib"]
        for fig in figs.values():
            fig.canvas.draw()
            ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 3]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    finally:
        for fig in figs.values():
            plt.close(fig)


def test_plot_without_metrics_says_what_to_do(tmp_path):
    with pytest.raises(ToolrlError, match="no metrics found") as exc:
        plot_command(str(tmp_path))
    assert "trainer.output_dir" in str(exc.value)


def test_progress_line_shows_resources_summed_over_processes():
    from toolrl.metrics.sinks import key_figures

    line = key_figures({"reward/mean": 0.5, "resources/driver/rss_mib": 1024.0, "resources/policy/rss_mib": 2048.0,
                        "resources/driver/cpu_percent": 20.0, "resources/policy/cpu_percent": 130.0})
    assert line == "reward 0.500  mem 3.0G  cpu 150%"
    assert "gpu_peak 1.5G" in key_figures({"resources/policy/gpu_mem_peak_mib": 1536.0})
    assert "mem" not in key_figures({"reward/mean": 0.5})
