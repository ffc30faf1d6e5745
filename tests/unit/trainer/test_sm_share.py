"""trainer.async_rollouts.update_sm_fraction on the CPU: the SM arithmetic, the config's combination checks and
the errors a user meets off the GPU or with a PyTorch without green contexts. The partition itself (a green
context's stream, the same gradients as the default stream, fewer SMs) is tested in tests/gpu."""

import pytest
import torch

from toolrl.config import Config
from toolrl.errors import ToolrlError
from toolrl.trainer import sm_share

KEY = "trainer.async_rollouts.update_sm_fraction"


@pytest.mark.parametrize(("fraction", "total", "sms"), [
    (0.75, 132, 96),   # H100/H200: 99 rounded down to a multiple of 8
    (0.5, 132, 64),
    (0.01, 132, 8),    # at least one granule
    (0.99, 132, 128),  # at most the last multiple of 8 below the total: the engine keeps some
    (0.5, 16, 8),
    (0.9, 16, 8),
])
def test_partition_sms_rounds_to_granules_and_leaves_some_for_the_engine(fraction, total, sms):
    assert sm_share.partition_sms(fraction, total) == sms
    assert sms % 8 == 0 and 8 <= sms < total


@pytest.mark.parametrize(("fraction", "total", "says"), [(0.0, 132, "between 0 and 1"), (1.0, 132, "between 0 and 1"),
                                                        (0.5, 8, "too few")])
def test_partition_sms_refuses_what_cannot_be_split(fraction, total, says):
    with pytest.raises(ToolrlError, match=says) as info:
        sm_share.partition_sms(fraction, total)
    assert info.value.where == KEY


def test_unset_means_the_callers_stream():
    assert sm_share.update_stream(None, torch.device("cpu")) is None
    assert sm_share.sms_of(None) == 0
    ran = []
    with sm_share.on_stream(None):
        ran.append(True)
    assert ran == [True]


def test_off_the_gpu_it_is_an_error_naming_the_key():
    with pytest.raises(ToolrlError, match="CUDA GPUs only") as info:
        sm_share.update_stream(0.75, "cpu")
    assert info.value.where == KEY and "unset" in info.value.fix


def test_without_green_contexts_the_error_says_which_pytorch(monkeypatch):
    """A fault a real part cannot produce here: PyTorch built without green contexts (a stub module)."""
    class NoGreen:
        SUPPORTED = False

    monkeypatch.setattr(torch.cuda, "green_contexts", NoGreen, raising=False)
    with pytest.raises(ToolrlError, match="no CUDA green contexts") as info:
        sm_share._green_context(64, 0)
    assert torch.__version__ in str(info.value) and "CUDA >= 12.8" in info.value.fix


def test_a_failing_driver_call_is_an_error_naming_the_key(monkeypatch):
    class Failing:
        SUPPORTED = True

        class GreenContext:
            @staticmethod
            def create(num_sms, device_id):
                raise RuntimeError("CUDA driver error: operation not supported")

    monkeypatch.setattr(torch.cuda, "green_contexts", Failing, raising=False)
    with pytest.raises(ToolrlError, match="operation not supported") as info:
        sm_share._green_context(64, 0)
    assert info.value.where == KEY and "driver" in info.value.fix


def _cfg(**async_rollouts):
    return {"trainer": {"async_rollouts": async_rollouts}}


def test_config_accepts_it_in_asynchronous_colocated_mode():
    cfg = Config.model_validate(_cfg(max_staleness=1, update_sm_fraction=0.75))
    assert cfg.trainer.async_rollouts.update_sm_fraction == 0.75
    assert Config.model_validate({}).trainer.async_rollouts.update_sm_fraction is None


@pytest.mark.parametrize(("config", "says"), [
    (_cfg(update_sm_fraction=0.75), "max_staleness=0"),
    ({"trainer": {"async_rollouts": {"max_staleness": 1, "update_sm_fraction": 0.75}},
      "rollout": {"placement": "separate"}}, "rollout.placement=separate"),
])
def test_config_refuses_it_where_nothing_overlaps_the_update(config, says):
    with pytest.raises(ValueError, match=KEY.replace(".", r"\.")) as info:
        Config.model_validate(config)
    assert says in str(info.value) and "leave it unset" in str(info.value)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.2])
def test_config_refuses_fractions_outside_zero_one(fraction):
    with pytest.raises(ValueError, match="update_sm_fraction"):
        Config.model_validate(_cfg(max_staleness=1, update_sm_fraction=fraction))


def test_policy_rank_on_the_cpu_refuses_it_before_training(tiny_model_dir):
    from toolrl.trainer.ranks import PolicyRank

    config = Config.model_validate({"model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
                                    **_cfg(max_staleness=1, update_sm_fraction=0.5)}).model_dump()
    with pytest.raises(ToolrlError, match="CUDA GPUs only"):
        PolicyRank(config, str(tiny_model_dir))
