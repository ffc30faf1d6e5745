"""The optimisation loop over a real 2-process gloo group (a tiny Llama, no Ray): the same loss statistics,
gradient norms and updated weights as one process on the same batch.

Tolerance: rel 1e-5 on statistics, abs 1e-6 on weights (float32; only the order in which per-sample
gradients are summed differs). The Ray-level version with SmolLM2 is tests/integration/test_train_data_parallel.py.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from toolrl.trainer.batch import build_batch
from toolrl.trainer.step import prompt_groups


def _setup(make_traj_fn, config_fn, model_fn):
    cfg = config_fn(**{"rollout.n": 2, "trainer.ppo_epochs": 2, "trainer.mini_batch_size": 4,
                       "trainer.micro_batch_size": 1, "trainer.lr": 1e-2, "algorithm.entropy_coef": 0.01})
    trajs = []
    for g, ln in enumerate([3, 7, 2, 5]):
        for k in range(2):
            n = ln + 2 * k
            trajs.append(make_traj_fn(f"t{g}", [1, 2, 3 + g], [4 + (i * 7 + g + k) % 50 for i in range(n)],
                                      [0 if i == 1 else 1 for i in range(n)], sample=k))
    batch = build_batch(trajs, prompt_groups(trajs), [True] * len(trajs), pad_token_id=0)
    batch.extras["advantages"] = torch.linspace(-1, 1, len(batch)).unsqueeze(1) * batch.response_mask
    model = model_fn(0)
    with torch.no_grad():
        from toolrl.trainer.forward import batched_logprobs

        batch.extras["old_logprobs"] = batched_logprobs(model, batch, 2)
    return cfg, batch, model


def _update(rank, world, port, cfg, batch, model, out):
    from toolrl.trainer.optim import make_optimizer
    from toolrl.trainer.optimize import DataParallel, update_policy

    torch.set_num_threads(1)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    opt = make_optimizer(model.parameters(), cfg.trainer.lr, 0.0)
    torch.manual_seed(0)
    stats = update_policy(model, opt, batch, cfg, kl_coef=0.0, seed=5, dp=DataParallel(rank, world))
    out[rank] = (stats, {k: v.detach().clone() for k, v in model.state_dict().items()})
    if world > 1:
        dist.destroy_process_group()


def _worker(rank, world, port, cfg, batch, model, path):
    out = {}
    _update(rank, world, port, cfg, batch, model, out)
    torch.save(out[rank], f"{path}.{rank}")  # a file, not a queue: shared-memory tensors die with the process


def test_two_gloo_processes_equal_one(tiny_llama, make_traj, make_config, tmp_path):
    import copy

    cfg, batch, model = _setup(make_traj, make_config, tiny_llama)
    one: dict = {}
    _update(0, 1, 0, cfg, batch, copy.deepcopy(model), one)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    path = str(tmp_path / "rank")
    procs = [ctx.Process(target=_worker, args=(r, 2, port, cfg, batch, copy.deepcopy(model), path)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    two = {r: torch.load(f"{path}.{r}", weights_only=False) for r in range(2)}
    s1, w1 = one[0]
    for rank in (0, 1):
        s2, w2 = two[rank]
        for key in ("loss/policy", "loss/total", "loss/entropy", "actor/grad_norm", "actor/entropy",
                    "actor/clip_frac", "actor/approx_kl"):
            assert s2[key] == pytest.approx(s1[key], rel=1e-5, abs=1e-7), (rank, key)
        for name in w1:
            torch.testing.assert_close(w2[name], w1[name], rtol=0, atol=1e-6)
    assert s1["actor/grad_norm"] > 0
    moved = max(float((w1[n] - model.state_dict()[n]).abs().max()) for n in w1)
    assert moved > 1e-3  # the update did something the comparison can see
    for name in two[0][1]:  # the ranks end bit-identical
        assert torch.equal(two[0][1][name], two[1][1][name])
