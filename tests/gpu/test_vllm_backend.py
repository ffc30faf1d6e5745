"""The vllm backend on a real GPU with vLLM installed (tiny random Qwen2, float32).

Checks: generation from token ids with per-token logprobs that match a HF teacher-forced
forward; the stop token kept in the output; greedy batch == single; streaming and abort;
weights pushed with update_weights change the output and the logprobs follow the new weights.
"""

import asyncio
import os

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams  # noqa: E402

PROMPTS = [tuple(range(10, 10 + n)) for n in (5, 17, 3, 40)]
# vLLM's float32 kernels (Triton attention, fused RMSNorm/rotary) against HF's eager float32 forward on this
# tiny model whose lm_head is scaled x20: measured on an H200 (2026-11-21) at up to 5.8e-3 max / ~1e-3 mean per
# token, with HF at "highest" matmul precision (benchmarks/gpu/vllm_precision_probe.py). The bugs this guards
# against (off-by-one alignment, logprobs of the wrong token, missing temperature scaling) are errors of 0.1-10.
# Logit errors are divided by the temperature before the softmax, so the tolerance is too.
MAX_ATOL, MEAN_ATOL = 2e-2, 3e-3


def close(ours, ref, temperature=1.0):
    diffs = [abs(a - b) for a, b in zip(ours, ref)]
    ok = max(diffs) < MAX_ATOL / temperature and sum(diffs) / len(diffs) < MEAN_ATOL / temperature
    return ok, (max(diffs), sum(diffs) / len(diffs))


@pytest.fixture(scope="module")
def backend(tiny_qwen2):
    from toolrl.rollout.vllm_backend import VLLMBackend

    b = VLLMBackend(BackendSettings(model_path=str(tiny_qwen2), dtype="float32", max_batch_size=8, seed=0,
                                    extra={"gpu_memory_utilization": 0.3, "enforce_eager": True,
                                           "skip_tokenizer_init": True, "max_model_len": 1024}))
    yield b
    b.close()


def test_generate_from_ids_with_logprobs_matching_hf(backend, tiny_qwen2, gpu_helpers):
    reqs = [GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=24, seed=i)) for i, p in enumerate(PROMPTS)]
    for req, res in zip(reqs, backend.generate(reqs)):
        assert 0 < len(res.token_ids) <= 24 and len(res.logprobs) == len(res.token_ids)
        assert res.finish_reason in ("stop", "length") and res.prompt_tokens == len(req.prompt_ids)
        ref = gpu_helpers.hf_logprobs(tiny_qwen2, req.prompt_ids, res.token_ids)
        ok, diff = close(res.logprobs, ref)
        assert ok, diff
        assert not close(res.logprobs[1:], ref[:-1])[0]  # the check can tell a one-token misalignment


def test_temperature_scaled_logprobs_and_greedy_batch_equals_single(backend, tiny_qwen2, gpu_helpers):
    [hot] = backend.generate([GenerationRequest(PROMPTS[1], SamplingParams(temperature=0.6, max_tokens=16, seed=7))])
    ref = gpu_helpers.hf_logprobs(tiny_qwen2, PROMPTS[1], hot.token_ids, temperature=0.6)
    assert close(hot.logprobs, ref, 0.6)[0], close(hot.logprobs, ref, 0.6)[1]
    unscaled = gpu_helpers.hf_logprobs(tiny_qwen2, PROMPTS[1], hot.token_ids, temperature=1.0)
    assert not close(hot.logprobs, unscaled, 0.6)[0]  # the check can tell a missing temperature scaling
    greedy = [GenerationRequest(p, SamplingParams(temperature=0.0, max_tokens=16)) for p in PROMPTS]
    batch = backend.generate(greedy)
    assert [r.token_ids for r in batch] == [backend.generate([g])[0].token_ids for g in greedy]


def test_stop_token_is_kept(backend):
    [free] = backend.generate([GenerationRequest(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=20))])
    stop = free.token_ids[5]
    [cut] = backend.generate([GenerationRequest(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=20,
                                                                           stop_token_ids=(stop,)))])
    assert cut.finish_reason == "stop" and cut.token_ids[-1] == stop
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]


def test_stream_and_abort(backend):
    req = GenerationRequest(PROMPTS[2], SamplingParams(temperature=0.0, max_tokens=12))

    async def go():
        chunks = [c async for c in backend.astream(req)]
        assert chunks[-1].finish_reason is not None
        streamed = tuple(t for c in chunks for t in c.token_ids)
        assert streamed == backend.generate([req])[0].token_ids
        task = asyncio.create_task(backend.agenerate(GenerationRequest(PROMPTS[2], SamplingParams(max_tokens=900))))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if backend.stats()["batch_size"] == 0:
                break
            await asyncio.sleep(0.05)
        assert backend.stats()["batch_size"] == 0

    asyncio.run(go())


def test_update_weights_changes_output_and_logprobs_follow(backend, tiny_qwen2, gpu_helpers):
    req = GenerationRequest(PROMPTS[3], SamplingParams(temperature=0.0, max_tokens=16))
    [before] = backend.generate([req])
    sd = gpu_helpers.perturbed_state_dict(tiny_qwen2)
    backend.update_weights(sd)
    [after] = backend.generate([req])
    assert after.token_ids != before.token_ids
    ref = gpu_helpers.hf_logprobs(tiny_qwen2, req.prompt_ids, after.token_ids, state_dict=sd)
    assert close(after.logprobs, ref)[0], close(after.logprobs, ref)[1]
    stale = gpu_helpers.hf_logprobs(tiny_qwen2, req.prompt_ids, after.token_ids)
    assert not close(after.logprobs, stale)[0]  # ... and they are not the old weights' logprobs


def test_ignore_eos_and_min_tokens_force_the_length(backend):
    [free] = backend.generate([GenerationRequest(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=40))])
    stop = free.token_ids[2]  # the greedy third token, declared a stop token: a free request ends there
    cut = backend.generate([GenerationRequest(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=40,
                                                                         stop_token_ids=(stop,)))])[0]
    assert cut.finish_reason == "stop" and len(cut.token_ids) <= 3
    # min_tokens: no stop before 30 tokens (vLLM masks the stop ids until then)
    [held] = backend.generate([GenerationRequest(PROMPTS[0], SamplingParams(
        temperature=0.0, max_tokens=40, stop_token_ids=(stop,), min_tokens=30))])
    assert len(held.token_ids) >= 30 and stop not in held.token_ids[:29]
    # ignore_eos + min_tokens = max_tokens: exactly max_tokens tokens for every sampled request
    forced = backend.generate([GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=33, seed=i,
                                                                   ignore_eos=True, min_tokens=33))
                               for i, p in enumerate(PROMPTS)])
    assert [len(r.token_ids) for r in forced] == [33] * len(PROMPTS)
    assert all(r.finish_reason == "length" and len(r.logprobs) == 33 for r in forced)


def test_no_deprecation_warning_for_the_input_path(backend):
    import logging

    import vllm

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    vllm_logger = logging.getLogger("vllm")  # vLLM's loggers do not propagate to the root logger
    vllm_logger.addHandler(handler)
    try:
        backend.generate([GenerationRequest(PROMPTS[1], SamplingParams(max_tokens=4, seed=1))])
        assert not [m for m in seen if "deprecated" in m.lower()], seen
        engine = backend.llm.llm_engine  # the old way (a raw prompt): the check sees vLLM's warning
        engine.input_processor.process_inputs("raw-1", {"prompt_token_ids": list(PROMPTS[1])},
                                              vllm.SamplingParams(max_tokens=1),
                                              supported_tasks=engine.get_supported_tasks())
        assert [m for m in seen if "deprecated" in m.lower()], seen
    finally:
        vllm_logger.removeHandler(handler)


def test_sleep_frees_memory_and_wake_restores_generation(tiny_qwen2, gpu_helpers):
    import torch

    from toolrl.rollout.vllm_backend import VLLMBackend

    torch.cuda.empty_cache()
    free_before_engine = torch.cuda.mem_get_info()[0]
    b = VLLMBackend(BackendSettings(model_path=str(tiny_qwen2), dtype="float32", max_batch_size=8, seed=0,
                                    extra={"gpu_memory_utilization": 0.2, "enforce_eager": True,
                                           "skip_tokenizer_init": True, "max_model_len": 1024,
                                           "enable_sleep_mode": True, "sleep_level": 2}))
    try:
        req = GenerationRequest(PROMPTS[3], SamplingParams(temperature=0.0, max_tokens=12))
        [before] = b.generate([req])
        free0 = torch.cuda.mem_get_info()[0]
        taken = free_before_engine - free0  # what this engine holds: its KV cache, weights, buffers
        assert taken > 1 << 30, f"the engine took only {taken / 2**30:.2f} GiB"
        b.sleep()
        free1 = torch.cuda.mem_get_info()[0]
        # Most of it comes back (KV cache and, at level 2, the weights). Measured against what this engine took,
        # not against the card: vLLM sizes the cache from gpu_memory_utilization minus memory already in use, so
        # engines left behind by earlier tests in the same process shrink it (the 2026-12-03 suite run).
        assert free1 - free0 > 0.6 * taken, (taken, free1 - free0)
        b.wake()
        b.update_weights(gpu_helpers.perturbed_state_dict(tiny_qwen2, scale=0.0))  # level 2 dropped the weights
        [after] = b.generate([req])
        assert after.token_ids == before.token_ids
    finally:
        b.close()


def test_close_frees_the_engines_gpu_memory_and_keeps_the_process_group(tiny_qwen2):
    """An in-process engine gives its GPU memory back on close (before, it stayed taken until the `vllm.LLM` was
    garbage-collected: the 2026-12-05 suite run had the engines of closed tests hold 113 of 140 GiB, and the later
    engines did not fit), without destroying torch.distributed's default group, which a colocated trainer shares."""
    import torch
    import torch.distributed as dist

    from toolrl.rollout.vllm_backend import VLLMBackend

    torch.cuda.empty_cache()
    free_before_engine = torch.cuda.mem_get_info()[0]
    b = VLLMBackend(BackendSettings(model_path=str(tiny_qwen2), dtype="float32", max_batch_size=8, seed=0,
                                    extra={"gpu_memory_utilization": 0.2, "enforce_eager": True,
                                           "skip_tokenizer_init": True, "max_model_len": 1024}))
    try:
        [out] = b.generate([GenerationRequest(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=4))])
        assert len(out.token_ids) == 4
        taken = free_before_engine - torch.cuda.mem_get_info()[0]
        assert taken > 1 << 30, f"the engine took only {taken / 2**30:.2f} GiB"
        group_before = dist.is_initialized()
    finally:
        b.close()
    torch.cuda.empty_cache()
    left = free_before_engine - torch.cuda.mem_get_info()[0]
    assert left < 0.1 * taken, f"{left / 2**30:.2f} of the engine's {taken / 2**30:.2f} GiB still taken after close"
    assert dist.is_initialized() == group_before


def test_kv_cache_fit_reserves_the_batch_and_generates(tiny_qwen2):
    """backend_args.kv_cache=fit: vLLM's cache holds max_batch_size x max_model_len tokens (plus the 10% margin),
    not gpu_memory_utilization of the card, and the engine generates with it."""
    import torch

    from toolrl.rollout.vllm_backend import VLLMBackend

    torch.cuda.empty_cache()
    free0 = torch.cuda.mem_get_info()[0]
    b = VLLMBackend(BackendSettings(model_path=str(tiny_qwen2), dtype="float32", max_batch_size=8, seed=0,
                                    extra={"kv_cache": "fit", "gpu_memory_utilization": 0.2, "enforce_eager": True,
                                           "skip_tokenizer_init": True, "max_model_len": 1024}))
    try:
        core = b.llm.llm_engine.engine_core.engine_core  # the in-process EngineCore sets the block count
        cache = core.vllm_config.cache_config
        tokens = cache.num_gpu_blocks * cache.block_size
        assert 8 * 1024 <= tokens <= 1.2 * 8 * 1024, (cache.num_gpu_blocks, cache.block_size)
        outs = b.generate([GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=16, seed=i))
                           for i, p in enumerate(PROMPTS)])
        assert all(len(o.token_ids) == 16 for o in outs)
        taken = free0 - torch.cuda.mem_get_info()[0]
        assert taken < 0.05 * torch.cuda.get_device_properties(0).total_memory, taken  # not the 0.2 share
    finally:
        b.close()


def test_kv_cache_fit_starts_beside_a_trainer_that_holds_half_the_card(tiny_qwen2):
    """kv_cache=fit with no gpu_memory_utilization: vLLM's default share (0.92) would fail its start-up check once
    a colocated trainer holds more than 8% of the card; fit passes its own small share, so the engine starts."""
    import torch

    from toolrl.rollout.vllm_backend import VLLMBackend

    torch.cuda.empty_cache()
    held = torch.empty(torch.cuda.mem_get_info()[0] // 2, dtype=torch.uint8, device="cuda")  # the "trainer"
    try:
        b = VLLMBackend(BackendSettings(model_path=str(tiny_qwen2), dtype="float32", max_batch_size=8, seed=0,
                                        extra={"kv_cache": "fit", "enforce_eager": True, "skip_tokenizer_init": True,
                                               "max_model_len": 1024}))
        try:
            outs = b.generate([GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=8, seed=i))
                               for i, p in enumerate(PROMPTS)])
            assert all(len(o.token_ids) == 8 for o in outs)
        finally:
            b.close()
    finally:
        del held
        torch.cuda.empty_cache()


def test_engine_process_loads_weights_through_cuda_ipc(tiny_qwen2, gpu_helpers):
    """backend_args.engine_process: vLLM's engine core in its own process; update_weights crosses by CUDA IPC,
    in buckets (a small weight_bucket_mb forces several), and the new weights are the ones that generate."""
    from toolrl.rollout.vllm_backend import VLLMBackend

    b = VLLMBackend(BackendSettings(model_path=str(tiny_qwen2), dtype="float32", max_batch_size=8, seed=0,
                                    extra={"gpu_memory_utilization": 0.2, "enforce_eager": True,
                                           "skip_tokenizer_init": True, "max_model_len": 1024,
                                           "engine_process": True, "weight_bucket_mb": 1}))
    try:
        assert b.shares_weights and type(b.llm.llm_engine.engine_core).__name__ != "InprocClient"
        req = GenerationRequest(PROMPTS[3], SamplingParams(temperature=0.0, max_tokens=16))
        [before] = b.generate([req])
        ref0 = gpu_helpers.hf_logprobs(tiny_qwen2, req.prompt_ids, before.token_ids)
        assert close(before.logprobs, ref0)[0], close(before.logprobs, ref0)[1]
        sd = gpu_helpers.perturbed_state_dict(tiny_qwen2)
        b.update_weights({k: v.cuda() for k, v in sd.items()})
        [after] = b.generate([req])
        assert after.token_ids != before.token_ids
        ref = gpu_helpers.hf_logprobs(tiny_qwen2, req.prompt_ids, after.token_ids, state_dict=sd)
        assert close(after.logprobs, ref)[0], close(after.logprobs, ref)[1]
    finally:
        b.close()


def test_high_priority_engine_stream_generates_correctly(tiny_qwen2, gpu_helpers):
    """backend_args.engine_stream_priority=high: the engine thread's stream has CUDA's high priority, and what
    the engine generates on it still matches a HF forward (the stream changes scheduling, not results)."""
    from toolrl.rollout.vllm_backend import VLLMBackend

    b = VLLMBackend(BackendSettings(model_path=str(tiny_qwen2), dtype="float32", max_batch_size=8, seed=0,
                                    extra={"gpu_memory_utilization": 0.2, "enforce_eager": True,
                                           "skip_tokenizer_init": True, "max_model_len": 1024,
                                           "engine_stream_priority": "high"}))
    try:
        assert b._stream is not None and b._stream.priority < 0
        req = GenerationRequest(PROMPTS[1], SamplingParams(temperature=1.0, max_tokens=16, seed=3))
        [res] = b.generate([req])
        ref = gpu_helpers.hf_logprobs(tiny_qwen2, req.prompt_ids, res.token_ids)
        assert close(res.logprobs, ref)[0], close(res.logprobs, ref)[1]
    finally:
        b.close()


def test_engine_decodes_while_the_callers_stream_is_busy(tiny_qwen2, gpu_helpers):
    """The in-process engine launches on a stream of its own, not the caller's: with the caller's current stream
    (the trainer's, in asynchronous mode) kept busy by one spinning kernel, a generation takes about as long
    as alone. Were the engine's kernels queued on that stream, or synchronised with it, the generation would
    wait the whole spin. Default engine settings (CUDA graphs and torch.compile on), as in the benchmarks."""
    import time

    import torch

    from toolrl.rollout.vllm_backend import VLLMBackend

    b = VLLMBackend(BackendSettings(model_path=str(tiny_qwen2), dtype="bfloat16", max_batch_size=8, seed=0,
                                    extra={"gpu_memory_utilization": 0.2, "skip_tokenizer_init": True,
                                           "max_model_len": 1024}))
    try:
        engine = b._control(lambda: torch.cuda.current_stream().cuda_stream)
        caller = torch.cuda.current_stream().cuda_stream
        assert b._stream is not None and engine == b._stream.cuda_stream and engine != caller, (engine, caller)
        reqs = [GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=64, seed=i, ignore_eos=True,
                                                    min_tokens=64)) for i, p in enumerate(PROMPTS)]
        b.generate(reqs)  # warm-up
        # still its own stream after steps (vLLM's V2 runner moves the stepping thread onto its cached main
        # stream after every step: bind_runner_stream makes that the engine's)
        assert b._control(lambda: torch.cuda.current_stream().cuda_stream) == engine

        def runner_stream(worker):
            ms = getattr(worker.model_runner, "main_stream", None)
            return getattr(ms, "cuda_stream", None)

        assert all(s in (None, engine) for s in b.llm.collective_rpc(runner_stream))
        t = time.perf_counter()
        b.generate(reqs)
        alone = time.perf_counter() - t
        busy_s = max(3.0, 10 * alone)
        cycles = int(busy_s * gpu_helpers.spin_cycles_per_second())
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)  # on the caller's stream; returns at once
        end.record()
        t = time.perf_counter()
        out = b.generate(reqs)
        beside = time.perf_counter() - t
        end.synchronize()
        spun = start.elapsed_time(end) / 1000
        assert all(len(r.token_ids) == 64 for r in out)
        assert spun > 0.5 * busy_s, (spun, busy_s)  # the caller's stream really was busy that long
        assert beside < alone + 0.25 * spun, f"alone {alone:.3f}s, beside a {spun:.2f}s spin {beside:.3f}s"
    finally:
        b.close()


def test_graph_recordings_never_overlap_an_engine_step(tiny_qwen2):
    """A CUDA graph recorded on this thread (as the update's graph trees do) while the in-process engine
    generates: every recording waits for the engine thread's step to end, and no step begins before the
    recording ends (toolrl.rollout.capture_gate). Each step and each recording logs its begin and end."""
    import threading
    import time

    import torch

    from toolrl.rollout.capture_gate import GATE
    from toolrl.rollout.vllm_backend import VLLMBackend

    b = VLLMBackend(BackendSettings(model_path=str(tiny_qwen2), dtype="bfloat16", max_batch_size=8, seed=0,
                                    extra={"gpu_memory_utilization": 0.2, "skip_tokenizer_init": True,
                                           "max_model_len": 1024}))
    try:
        spans, lock = [], threading.Lock()
        real_step = b.llm.llm_engine.step

        def timed_step():
            t0 = time.perf_counter()
            out = real_step()
            with lock:
                spans.append(("step", t0, time.perf_counter()))
            return out

        b.llm.llm_engine.step = timed_step
        reqs = [GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=256, seed=i, ignore_eos=True,
                                                    min_tokens=256)) for i, p in enumerate(PROMPTS)]
        x = torch.randn(256, 256, device="cuda")
        waits_before = GATE.waits
        done = threading.Event()
        gen = threading.Thread(target=lambda: (b.generate(reqs), done.set()), daemon=True)
        gen.start()
        recordings = 0
        while not done.is_set() and recordings < 20:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                t0 = time.perf_counter()  # inside: the capture is under way, so the gate is closed
                y = x
                for _ in range(8):
                    y = y @ x / 16
                t1 = time.perf_counter()
            with lock:
                spans.append(("record", t0, t1))
            g.replay()
            recordings += 1
        gen.join(120)
        assert done.is_set() and recordings >= 3, recordings
        steps = [(a, z) for kind, a, z in spans if kind == "step"]
        recs = [(a, z) for kind, a, z in spans if kind == "record"]
        # the engine steps back to back while it generates, so without the gate a capture would almost always
        # fall inside a step
        overlaps = [(r, s) for r in recs for s in steps if s[0] < r[1] and r[0] < s[1]]
        assert GATE.waits > waits_before, "no recording ever had to wait for a step: the test proved nothing"
        assert not overlaps, overlaps[:3]
    finally:
        b.close()
