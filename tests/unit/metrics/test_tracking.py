"""The wandb and mlflow metric sinks, with the real libraries, offline (no network)."""

import json
import struct
import time

import pytest

from toolrl import plugins
from toolrl.metrics.sinks import MetricLogger

pytest.importorskip("wandb", reason="pip install 'toolrl[wandb]'")  # make setup installs it
pytest.importorskip("mlflow", reason="pip install 'toolrl[mlflow]'")

CONFIG = "model:\n  name: smollm2-135m-instruct\nrollout:\n  n: 4\n  temperature: 1.0\n"


def _wandb_records(path):
    """The protobuf records of an offline .wandb file (a LevelDB-style log of 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, chunks, buf = path.read_bytes(), 7, 32768, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            chunks.append(buf + chunk)
    out = []
    for c in chunks:
        r = pb.Record()
        r.ParseFromString(c)
        out.append(r)
    return out


def _has_exit_record(path):
    from google.protobuf.message import DecodeError

    try:
        return any(r.WhichOneof("record_type") == "exit" for r in _wandb_records(path))
    except (DecodeError, struct.error, AssertionError):  # the header or a record still being written
        return False


def _wandb_history(run_dir, timeout=60.0):
    """History rows and run records of the offline run files, once each holds its exit record.

    `run.finish()` returns when the wandb-core service has the records, not when it has written them: on a
    loaded machine the file was read 17 ms before the service finished it and held no history yet.
    """
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert files, list((run_dir / "wandb").glob("*"))
    deadline = time.monotonic() + timeout
    for f in files:
        while not _has_exit_record(f):
            assert time.monotonic() < deadline, f"{f} got no exit record within {timeout} s"
            time.sleep(0.05)
    rows, runs = [], []
    for f in files:
        for r in _wandb_records(f):
            kind = r.WhichOneof("record_type")
            if kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                row = {k: v for k, v in items.items() if not k.startswith("_")}
                rows.append(row | {"step": r.history.step.num if r.history.HasField("step") else items.get("_step")})
            elif kind == "run":
                runs.append(r.run)
    return rows, runs


def test_wandb_offline_writes_the_steps_and_config(plugin_manager, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "my_run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(CONFIG)
    ml = MetricLogger.from_names(["wandb"], run_dir)
    ml.begin(3, 0)
    for step in (1, 2, 3):
        ml.log(step, {"reward/mean": step / 4, "eval/pass@4": 0.5, "actor/kl": float("nan")})
    ml.close()
    rows, runs = _wandb_history(run_dir)
    assert [(r["step"], r["reward/mean"]) for r in rows] == [(1, 0.25), (2, 0.5), (3, 0.75)]
    assert all("actor/kl" not in r for r in rows)  # NaN is not logged
    assert runs[0].display_name == "my_run" and runs[0].project == "toolrl"
    config = {i.key: json.loads(i.value_json) for i in runs[0].config.update}
    assert config["rollout"] == {"n": 4, "temperature": 1.0}
    assert (run_dir / "wandb_run_id").read_text() == runs[0].run_id


def test_mlflow_local_store_has_metrics_params_and_resumes(plugin_manager, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "my_run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(CONFIG)
    sink = plugins.get("metric_sinks", "mlflow")(run_dir)
    sink.begin(4, 0)
    for step in (1, 2):  # timing/reward and timing/reward/<name> both exist in a real step
        sink.log(step, {"reward/mean": step / 4, "eval/pass@4": 0.5, "actor/kl": float("inf"),
                        "timing/reward": 0.5, "timing/reward/math_equiv": 0.25})
    sink.close()
    resumed = plugins.get("metric_sinks", "mlflow")(run_dir)
    resumed.begin(4, 3)
    resumed.log(3, {"reward/mean": 0.75})
    resumed.close()
    assert resumed.run_id == sink.run_id  # the same MLflow run continues

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    run = client.get_run(sink.run_id)
    assert run.info.run_name == "my_run" and run.info.status == "FINISHED"
    assert run.data.params["rollout.n"] == "4" and run.data.params["model.name"] == "smollm2-135m-instruct"
    assert [(m.step, m.value) for m in client.get_metric_history(sink.run_id, "reward/mean")] == \
        [(1, 0.25), (2, 0.5), (3, 0.75)]
    assert [m.value for m in client.get_metric_history(sink.run_id, "eval/pass_4")] == [0.5, 0.5]
    assert "actor/kl" not in run.data.metrics
    assert run.data.metrics["timing/reward"] == 0.5 and run.data.metrics["timing/reward.math_equiv"] == 0.25


def test_missing_library_names_the_extra(plugin_manager, tmp_path, monkeypatch):
    import sys

    from toolrl.errors import ToolrlError

    monkeypatch.setitem(sys.modules, "wandb", None)  # injects the fault: the package is absent
    with pytest.raises(ToolrlError, match=r"pip install 'toolrl\[wandb\]'"):
        plugins.get("metric_sinks", "wandb")(tmp_path)
