"""toolrl.trainer.weight_fence off CUDA (no streams to order: both calls are no-ops), and where the policy rank
uses it. The ordering itself is checked on a GPU (tests/gpu/test_update_gpu.py)."""

import inspect

import torch

from toolrl.trainer import ranks
from toolrl.trainer.weight_fence import WeightFence


def test_fence_is_a_no_op_off_cuda():
    fence = WeightFence(torch.device("cpu"))
    fence.written()
    fence.before_read()
    assert fence._event is None


def test_policy_rank_fences_every_weight_write_and_every_read_from_another_thread():
    src = {name: inspect.getsource(getattr(ranks.PolicyRank, name)) for name in
           ("update", "load", "sync_engine", "engine_state")}
    assert "self._fence.written()" in src["update"] and "self._fence.written()" in src["load"]
    assert "self._fence.before_read()" in src["sync_engine"] and "self._fence.before_read()" in src["engine_state"]
