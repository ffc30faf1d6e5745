"""trainer.async_rollouts.update_layers_ahead (toolrl/trainer/pacing.py) on the CPU: the pacer's arithmetic, the
pace points around every decoder layer's forward and backward (eager, checkpointed, compiled), the same
gradients as without them, and the config checks. On the CPU there are no CUDA events, so `_Event` below stands
in for one and records what the pacer does with it; tests/gpu/test_update_gpu.py runs it with real events."""

import pytest
import torch

from toolrl.config import Config
from toolrl.trainer import compiled, pacing
from toolrl.trainer.modeling import enable_checkpointing
from toolrl.trainer.optimize import update_policy

KEY = "trainer.async_rollouts.update_layers_ahead"


class _Log:
    def __init__(self, done=()):
        self.events = []
        self.synced = []
        self.done = set(done)  # events the "GPU" has already passed: no wait for them

    def event(self):
        log = self

        class _Event:
            def __init__(self):
                self.n = len(log.events)
                self.recorded = False
                self.in_backward = torch._C._current_graph_task_id() != -1
                log.events.append(self)

            def record(self):
                self.recorded = True

            def query(self):
                return self.n in log.done

            def synchronize(self):
                assert self.recorded
                log.synced.append(self.n)

        return _Event()


@pytest.mark.parametrize(("ahead", "ticks", "synced"), [(1, 4, [0, 1, 2]), (2, 5, [0, 1, 2]), (3, 2, [])])
def test_the_pacer_waits_for_the_oldest_event_once_more_than_ahead_are_pending(ahead, ticks, synced):
    log = _Log()
    pacer = pacing.LaunchPacer(ahead, log.event)
    for _ in range(ticks):
        pacer.tick()
    assert log.synced == synced  # oldest first, never more than `ahead` left pending
    assert pacer.ticks == ticks and pacer.waits == len(synced)
    pacer.reset()
    pacer.tick()
    assert log.synced == synced  # after a reset the count starts again


def test_events_the_gpu_has_passed_cost_no_wait():
    log = _Log(done={0, 2})
    pacer = pacing.LaunchPacer(1, log.event)
    for _ in range(4):
        pacer.tick()
    assert log.synced == [1] and pacer.waits == 1 and pacer.ticks == 4


def test_ahead_below_one_is_refused():
    with pytest.raises(ValueError, match=KEY):
        pacing.LaunchPacer(0, _Log().event)


def test_unset_or_off_cuda_changes_nothing(tiny_llama):
    model = tiny_llama()
    with pacing.paced_layers(model, None, event=_Log().event) as pacer:
        assert pacer is None
        assert all(layer._compiled_call_impl is None for layer in model.model.layers)
    with pacing.paced_layers(model, 2, device="cpu") as pacer:  # no launch queue to keep short on the CPU
        assert pacer is None
        assert all(layer._compiled_call_impl is None for layer in model.model.layers)


def _batch(make_traj):
    from toolrl.trainer.batch import build_batch

    trajs = [make_traj("a", [3, 4, 5], [10 + i, 11, 12 + i, 13, 7][: 2 + i % 4], [1] * (2 + i % 4), sample=i)
             for i in range(4)]
    b = build_batch(trajs, ["0"] * 4, [True] * 4, 0)
    b.extras["advantages"] = torch.tensor([[1.0], [-0.5], [0.25], [-0.75]]) * b.response_mask
    return b


def _update(model, batch, cfg, ahead=None, log=None):
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with pacing.paced_layers(model, ahead, event=log.event if log else None) as pacer:
        update_policy(model, opt, batch, cfg, kl_coef=0.0, seed=0)
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    return delta, pacer


@pytest.mark.parametrize("mode", ["eager", "checkpointed", "compiled", "compiled+checkpointed"])
def test_every_layer_is_a_pace_point_in_forward_and_backward_and_the_update_is_unchanged(
        tiny_llama, make_traj, make_config, mode):
    torch._dynamo.reset()
    cfg = make_config(**{"rollout.n": 4, "data.prompts_per_step": 1, "trainer.max_grad_norm": 1e9,
                         "trainer.micro_batch_size": 2, "trainer.compile_layers": "compiled" in mode})
    batch = _batch(make_traj)

    def model():
        m = tiny_llama()
        if "checkpointed" in mode:
            enable_checkpointing(m)
        if "compiled" in mode:
            assert compiled.prepare(m, cfg, backend="aot_eager")
        return m

    plain, _ = _update(model(), batch, cfg)
    log = _Log()
    paced_model = model()
    paced, pacer = _update(paced_model, batch, cfg, ahead=1, log=log)
    torch._dynamo.reset()

    layers = len(paced_model.model.layers)
    # per micro-batch: a pace point before each layer's forward (twice per layer where a group's prompt runs
    # apart from its responses: eager without checkpointing shares it), then one after each layer's backward
    # (a checkpointed layer's recomputation falls between two of them)
    passes = 2 if mode == "eager" else 1
    micro_batches = 2  # 4 samples, micro_batch_size 2
    order = "".join("B" if e.in_backward else "F" for e in log.events)
    assert order == ("F" * passes * layers + "B" * passes * layers) * micro_batches, order
    assert pacer.waits == pacer.ticks - 1 and log.synced == list(range(pacer.ticks - 1))
    assert torch.allclose(paced, plain, atol=1e-6, rtol=1e-5), (paced - plain).abs().max()
    assert plain.abs().sum() > 0
    # outside the block the layers are plain modules again, and nothing is left active
    assert all(layer._compiled_call_impl is None for layer in paced_model.model.layers)
    assert pacing.active_pacer(paced_model) is None


@pytest.mark.parametrize("share_prompt", [False, True])
def test_a_logprob_pass_without_gradients_paces_each_layer_forward_only(tiny_llama, make_traj, share_prompt):
    from toolrl.trainer.forward import batched_logprobs

    model, batch, log = tiny_llama(), _batch(make_traj), _Log()
    plain = batched_logprobs(model, batch, 4, 1.0, share_prompt)
    with pacing.paced_layers(model, 2, event=log.event) as pacer:
        paced = batched_logprobs(model, batch, 4, 1.0, share_prompt)
    # one micro-batch of 4, forward only (the shared prompt runs apart from the responses: two passes)
    assert pacer.ticks == len(model.model.layers) * (2 if share_prompt else 1)
    assert not any(e.in_backward for e in log.events)
    assert torch.equal(paced, plain)


def _cfg(**async_rollouts):
    return {"trainer": {"async_rollouts": async_rollouts}}


def test_config_accepts_it_in_asynchronous_colocated_mode():
    assert Config.model_validate(_cfg(max_staleness=1, update_layers_ahead=2)).trainer.async_rollouts.update_layers_ahead == 2
    assert Config.model_validate({}).trainer.async_rollouts.update_layers_ahead is None


@pytest.mark.parametrize(("config", "says"), [
    (_cfg(update_layers_ahead=2), "max_staleness=0"),
    ({**_cfg(max_staleness=1, update_layers_ahead=2), "rollout": {"placement": "separate"}},
     "rollout.placement=separate"),
])
def test_config_refuses_it_where_nothing_overlaps_the_update(config, says):
    with pytest.raises(ValueError, match=KEY.replace(".", r"\.")) as info:
        Config.model_validate(config)
    assert says in str(info.value) and "leave it unset" in str(info.value)


@pytest.mark.parametrize("ahead", [0, -1])
def test_config_refuses_ahead_below_one(ahead):
    with pytest.raises(ValueError, match="update_layers_ahead"):
        Config.model_validate(_cfg(max_staleness=1, update_layers_ahead=ahead))


def test_a_model_without_decoder_layers_gets_an_error_naming_the_key():
    from toolrl.errors import ToolrlError

    with pytest.raises(ToolrlError) as info:
        with pacing.paced_layers(torch.nn.Linear(2, 2), 2, event=_Log().event):
            pass
    assert info.value.where == KEY and "leave it unset" in info.value.fix
