"""The update path on a GPU: the chunked LM head and token-budget micro-batches give the padded, unchunked
logprobs and gradients (float32 on CUDA), the chunked head's peak memory is below the full logits', and one
FSDP2 rank (NCCL, bf16 compute, float32 master weights) takes the same step as the plain model in float32
to bf16 tolerance; its full state dict loads into transformers."""

import copy

import pytest
import torch

from toolrl.trainer.batch import build_batch
from toolrl.trainer.forward import micro_batches, peak_memory, response_logprobs
from toolrl.types import Trajectory


def _traj(task, prompt, response, sample):
    return Trajectory(task_id=task, sample_index=sample, prompt_ids=tuple(prompt), response_ids=tuple(response),
                      loss_mask=(1,) * len(response), logprobs=(0.0,) * len(response),
                      messages=({"role": "user", "content": "q"},), num_prompt_messages=1)


def _batch(vocab, groups=4, n=4, seed=0, long=200):
    g = torch.Generator().manual_seed(seed)
    trajs, gids = [], []
    for k in range(groups):
        prompt = torch.randint(3, vocab, (int(torch.randint(5, 30, (1,), generator=g)),), generator=g).tolist()
        for s in range(n):
            r = int(torch.randint(10, long, (1,), generator=g))
            trajs.append(_traj(f"t{k}", prompt, torch.randint(3, vocab, (r,), generator=g).tolist(), s))
            gids.append(f"t{k}")
    return build_batch(trajs, gids, [True] * len(trajs), 0)


@pytest.fixture(scope="module")
def model_dir(tiny_qwen2):
    return tiny_qwen2


def _load(model_dir, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).cuda().eval()


def _grads(model):
    return torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])


def test_chunked_and_budgeted_equal_padded_on_cuda(model_dir):
    batch = _batch(2048)
    mask = batch.response_mask.cuda()
    model = _load(model_dir)
    lp_ref, _ = response_logprobs(model, batch.to("cuda"), logits_chunk=None)
    (-(lp_ref * mask).sum()).backward()
    g_ref = _grads(model)
    model = _load(model_dir)
    total = 0
    for m in micro_batches(batch, 4, token_budget=600, group_size=4):
        t = m.trimmed().to("cuda")
        lp, _ = response_logprobs(model, t, logits_chunk=64)
        (-(lp * t.response_mask).sum()).backward()
        total += float((lp.detach() * t.response_mask).sum())
    assert total == pytest.approx(float((lp_ref.detach() * mask).sum()), rel=1e-4)
    g = _grads(model)
    rel = float((g - g_ref).norm() / g_ref.norm())
    print("relative gradient difference", rel)
    assert rel < 1e-3  # float32 on CUDA: different micro-batch shapes pick different kernels (~1e-5 seen)


def test_chunked_head_peak_memory_is_a_fraction_of_the_full_logits(model_dir):
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config.from_pretrained(model_dir)
    cfg.vocab_size = 65536  # a big vocabulary makes the logits dominate
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).cuda().train()
    batch = _batch(2048, groups=2, n=8, long=400).to("cuda")
    peaks = {}
    for chunk in (None, 256):
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        lp, ent = response_logprobs(model, batch, with_entropy=True, logits_chunk=chunk)
        (-(lp * batch.response_mask).sum()).backward()
        peaks[chunk] = peak_memory("cuda")["perf/peak_memory_gib"]
    tokens = int(batch.response_mask.sum())
    logits_gib = tokens * cfg.vocab_size * 4 / (1 << 30)
    assert peaks[256] < peaks[None] - 1.5 * logits_gib, (peaks, logits_gib)


def test_fsdp2_single_rank_step_matches_plain_model(model_dir, tmp_path):
    import torch.distributed as dist
    from types import SimpleNamespace

    from toolrl.trainer import fsdp

    made = fsdp.single_process_group("nccl")
    try:
        cfg = SimpleNamespace(trainer=SimpleNamespace(fsdp=SimpleNamespace(enabled=True, mixed_precision=True,
                                                                           cpu_offload=False)))
        plain = _load(model_dir)
        sharded = fsdp.shard_model(copy.deepcopy(plain), cfg)
        batch = _batch(2048, groups=2, n=4).to("cuda")
        stats = []
        for m in (plain, sharded):
            opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
            lp, _ = response_logprobs(m, batch, logits_chunk=128)
            loss = -(lp * batch.response_mask).sum() / batch.response_mask.sum()
            loss.backward()
            stats.append((float(loss), fsdp.clip_grad_norm(list(m.parameters()), 1e9)))
            opt.step()
        (loss_p, norm_p), (loss_s, norm_s) = stats
        assert loss_s == pytest.approx(loss_p, rel=2e-2) and norm_s == pytest.approx(norm_p, rel=5e-2)
        assert {p.dtype for p in sharded.parameters()} == {torch.float32}
        sd = fsdp.full_state_dict(sharded)
        ref = plain.state_dict()
        assert sorted(sd) == sorted(ref)
        moved = max(float((sd[k] - ref[k].cpu()).abs().max()) for k in ref)
        assert moved < 5e-3  # both took one AdamW step of lr 1e-3 from the same weights
        gpu = fsdp.full_state_dict(sharded, cpu=False)
        assert all(v.is_cuda for v in gpu.values())
    finally:
        if made:
            dist.destroy_process_group()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_layers_update_equals_eager_on_cuda(model_dir, dtype):
    """trainer.compile_layers with Inductor (Triton) on CUDA, checkpointing on, token-budget micro-batches of
    several shapes: the same gradients as the eager layers (float32 tight, bf16 to its rounding)."""
    from toolrl.config import Config
    from toolrl.trainer import compiled
    from toolrl.trainer.modeling import enable_checkpointing
    from toolrl.trainer.optimize import update_policy

    cfg = Config.model_validate({
        "model": {"name_or_path": str(model_dir), "device": "cuda"},
        "rollout": {"n": 4}, "algorithm": {"advantage": "grpo", "kl_coef": 0.0}, "data": {"prompts_per_step": 4},
        "trainer": {"micro_batch_size": 4, "token_budget": 600, "max_grad_norm": 1e9, "compile_layers": True}})
    batch = _batch(2048)
    batch.extras["advantages"] = torch.randn(len(batch), generator=torch.Generator().manual_seed(1))[:, None] \
        * batch.response_mask
    batch = batch.to("cuda")
    deltas, losses = [], []  # gradients, losses
    for compile_it in (False, True):
        model = _load(model_dir, dtype)
        enable_checkpointing(model)
        if compile_it:
            assert compiled.prepare(model, cfg)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the gradients stay on the parameters to compare
        stats = update_policy(model, opt, batch, cfg, 0.0, seed=0)
        deltas.append(_grads(model))
        losses.append(stats["loss/policy"])
    eager, comp = deltas
    rel = float((comp - eager).norm() / eager.norm())
    print(dtype, "relative gradient difference", rel)
    assert rel < (1e-3 if dtype == torch.float32 else 5e-2)
    assert losses[1] == pytest.approx(losses[0], rel=1e-3 if dtype == torch.float32 else 2e-2, abs=1e-6)


def test_update_on_a_green_context_stream_equals_the_default_stream(model_dir):
    """trainer.async_rollouts.update_sm_fraction: the update on a green context's stream (half the SMs) gives
    the default stream's gradients and loss, and the caller's stream sees the finished gradients."""
    from toolrl.config import Config
    from toolrl.trainer import sm_share
    from toolrl.trainer.optimize import update_policy

    cfg = Config.model_validate({
        "model": {"name_or_path": str(model_dir), "device": "cuda"},
        "rollout": {"n": 4}, "algorithm": {"advantage": "grpo", "kl_coef": 0.0}, "data": {"prompts_per_step": 4},
        "trainer": {"micro_batch_size": 4, "token_budget": 600, "max_grad_norm": 1e9,
                    "async_rollouts": {"max_staleness": 1, "update_sm_fraction": 0.5}}})
    batch = _batch(2048)
    batch.extras["advantages"] = torch.randn(len(batch), generator=torch.Generator().manual_seed(1))[:, None] \
        * batch.response_mask
    batch = batch.to("cuda")
    stream = sm_share.update_stream(0.5, torch.device("cuda"))
    total = torch.cuda.get_device_properties(0).multi_processor_count
    assert 0 < sm_share.sms_of(stream) < total and stream != torch.cuda.current_stream()
    grads, losses = [], []
    for s in (None, stream):
        model = _load(model_dir)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        with sm_share.on_stream(s):
            stats = update_policy(model, opt, batch, cfg, 0.0, seed=0)
        grads.append(_grads(model))  # read on the default stream: on_stream made it wait for the update
        losses.append(stats["loss/policy"])
    rel = float((grads[1] - grads[0]).norm() / grads[0].norm())
    print("relative gradient difference, green context stream vs default", rel)
    assert rel < 1e-4
    assert losses[1] == pytest.approx(losses[0], rel=1e-4, abs=1e-7)


def test_green_context_stream_runs_on_a_share_of_the_sms():
    """A compute-bound matmul loop on a stream of 8 SMs takes several times longer than on the whole GPU:
    the partition is real, not just another stream (a functional check with a wide margin, not a benchmark)."""
    from toolrl.trainer import sm_share

    total = torch.cuda.get_device_properties(0).multi_processor_count
    if total < 64:
        pytest.skip(f"{total} SMs: too few for a clear contrast with 8")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)

    def seconds(stream):
        with sm_share.on_stream(stream):
            for _ in range(3):
                a @ a  # warm-up (cuBLAS heuristics, workspace)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(20):
                a @ a
            end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000

    narrow = sm_share.update_stream(8 / total + 1e-6, torch.device("cuda"))
    assert sm_share.sms_of(narrow) == 8
    whole, part = seconds(None), seconds(narrow)
    print(f"20 bf16 8192^2 matmuls: {whole:.3f}s on {total} SMs, {part:.3f}s on 8")
    assert part > 3 * whole


def test_cuda_graph_layers_update_equals_eager_and_replays(model_dir):
    """trainer.compile_mode=reduce-overhead (no checkpointing): the layers recorded as CUDA graphs give the eager
    layers' gradients in float32, over two updates (the first records, the second replays), and the logprob
    pass (inference graphs) gives the eager logprobs."""
    from toolrl.config import Config
    from toolrl.trainer import compiled
    from toolrl.trainer.forward import batched_logprobs
    from toolrl.trainer.optimize import update_policy

    cfg = Config.model_validate({
        "model": {"name_or_path": str(model_dir), "device": "cuda", "gradient_checkpointing": False},
        "rollout": {"n": 4}, "algorithm": {"advantage": "grpo", "kl_coef": 0.0}, "data": {"prompts_per_step": 4},
        "trainer": {"micro_batch_size": 4, "token_budget": 600, "max_grad_norm": 1e9, "compile_layers": True,
                    "compile_mode": "reduce-overhead"}})
    batch = _batch(2048)
    batch.extras["advantages"] = torch.randn(len(batch), generator=torch.Generator().manual_seed(1))[:, None] \
        * batch.response_mask
    grads, logprobs = [], []
    for graphs in (False, True):
        model = _load(model_dir)
        if graphs:
            assert compiled.prepare(model, cfg) and compiled.width_multiple(model) == 64
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        for _ in range(2):  # the second update replays what the first recorded
            opt.zero_grad(set_to_none=True)
            update_policy(model, opt, batch.to("cuda"), cfg, 0.0, seed=0)
        grads.append(_grads(model))
        logprobs.append(batched_logprobs(model, batch, 8, 1.0, share_prompt=False))
    rel = float((grads[1] - grads[0]).norm() / grads[0].norm())
    print("relative gradient difference, CUDA-graph layers vs eager", rel)
    assert rel < 1e-3
    assert torch.allclose(logprobs[1], logprobs[0], atol=1e-4)


def test_weight_fence_orders_another_threads_read_after_the_writers_stream(gpu_helpers):
    """toolrl.trainer.weight_fence: weights written on one thread's stream (kept busy by a spinning kernel, as
    an optimizer step's tail may be) and read on another thread's stream read the written values. The same
    read without the fence runs beside the spin and sees the old values (reported, not asserted: that is the
    hazard the fence removes, on this driver)."""
    import threading

    from toolrl.trainer.weight_fence import WeightFence

    weights = torch.zeros(1 << 20, device="cuda")
    torch.cuda.synchronize()
    cycles = int(0.5 * gpu_helpers.spin_cycles_per_second())  # about half a second of spinning

    def write_then_read(fenced: bool) -> float:
        weights.zero_()
        torch.cuda.synchronize()
        fence = WeightFence("cuda")
        writer = torch.cuda.Stream()
        with torch.cuda.stream(writer):  # the trainer's stream
            torch.cuda._sleep(cycles)
            weights.add_(1.0)
            fence.written()
        seen = {}

        def read():  # the rollout thread: its own current stream
            if fenced:
                fence.before_read()
            seen["sum"] = float(weights.sum())

        t = threading.Thread(target=read)
        t.start()
        t.join()
        torch.cuda.synchronize()
        return seen["sum"]

    unfenced = write_then_read(False)
    assert write_then_read(True) == weights.numel(), f"fenced read saw old weights (unfenced saw {unfenced})"
