"""Scale-out pieces that need no Ray: task shares of engine replicas, loopback addresses, bundles, config checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from toolrl.config import load_config
from toolrl.errors import ConfigError
from toolrl.trainer.cluster import MIN_MEMORY, bundle, is_loopback_address
from toolrl.trainer.engines import share_args, split_tasks
from toolrl.trainer.roles import RolloutJob


@pytest.mark.parametrize(("tasks", "replicas", "sizes"), [
    (4, 2, [2, 2]), (5, 2, [3, 2]), (2, 3, [1, 1]), (7, 3, [3, 2, 2]), (1, 1, [1]),
])
def test_split_tasks_keeps_order_and_balances(tasks, replicas, sizes):
    shares = split_tasks(tasks, replicas)
    assert [len(s) for s in shares] == sizes
    assert [i for s in shares for i in s] == list(range(tasks))  # contiguous: task-major order survives


def test_replica_shares_of_a_job_of_two_steps_keep_each_task_s_seed():
    tasks = tuple(SimpleNamespace(id=f"t{i}") for i in range(5))
    two_steps = share_args(RolloutJob(tasks, 4, 11, task_seeds=(11, 11, 22, 22, 22)), 2)
    assert [([t.id for t in ts], n, seeds) for ts, n, seeds, _ in two_steps] == [
        (["t0", "t1", "t2"], 4, [11, 11, 22]), (["t3", "t4"], 4, [22, 22])]
    one_step = share_args(RolloutJob(tasks, 4, 11, temperature=0.5), 2)
    assert [(len(ts), seeds, temp) for ts, _, seeds, temp in one_step] == [(3, 11, 0.5), (2, 11, 0.5)]


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1:6379", True), ("localhost:6379", True), ("ray://127.0.0.1:10001", True), ("[::1]:6379", True),
    ("127.0.0.2:6379", True), ("10.0.0.5:6379", False), ("head.example.org:6379", False),
    ("ray://10.1.2.3:10001", False),
])
def test_is_loopback_address(address, loopback):
    assert is_loopback_address(address) is loopback


def test_bundle_of_worker_resources():
    cfg = load_config(overrides=["ray.engine.num_cpus=2", "ray.engine.resources={engine_node: 1}"])
    assert bundle(cfg.ray.engine) == {"CPU": 2.0, "engine_node": 1.0}
    assert bundle(cfg.ray.reference) == {"memory": float(MIN_MEMORY)}  # num_cpus=0: no CPU taken from anyone
    assert bundle(SimpleNamespace(num_cpus=0, num_gpus=1, resources={})) == {"GPU": 1.0}


def test_placement_keys_are_checked():
    cfg = load_config(overrides=["rollout.placement=separate", "rollout.replicas=2", "ray.engine.num_gpus=1"])
    assert cfg.rollout.placement == "separate" and cfg.ray.engine.num_gpus == 1
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["rollout.replicas=2"])
    assert "rollout.replicas" in str(e.value) and "rollout.placement=separate" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["rollout.placement=separate", "rollout.replicas=5", "data.prompts_per_step=4"])
    assert "rollout.replicas <= 4" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["rollout.placement=separate", "ray.engine.num_cpus=0"])
    assert "ray.engine.num_cpus" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["ray.policy.resources={GPU: 1}"])
    assert "ray.policy.resources" in str(e.value) and "not a custom resource" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["ray.auth=maybe"])
    assert "ray.auth" in str(e.value)
