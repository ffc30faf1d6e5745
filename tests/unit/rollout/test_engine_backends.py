"""vllm and sglang backends: request/response conversion and the weight-update plumbing.

No GPU here, so the engines are fakes that follow the real APIs' shapes (vLLM's
`llm_engine.add_request/step/abort_request` with DELTA outputs and `collective_rpc`;
SGLang's `Engine.loop`, `async_generate` and `update_weights_from_tensor`). The
real engines are exercised by tests/gpu/test_vllm_backend.py and test_sglang_backend.py.
"""

import asyncio
import importlib.util
from types import SimpleNamespace

import pytest
import torch

from toolrl.errors import MissingExtraError, ToolrlError
from toolrl.rollout import sglang_backend as sgb
from toolrl.rollout import vllm_backend as vlb
from toolrl.rollout import vllm_engine
from toolrl.rollout import vllm_weights as vlb_weights
from toolrl.rollout.base import BackendSettings, GenerationRequest, RolloutBackend, SamplingParams

SETTINGS = BackendSettings(model_path="/models/x", dtype="bfloat16", max_batch_size=16, seed=3,
                           extra={"gpu_memory_utilization": 0.4, "max_queue": 8})


def fake_tokens(prompt, n):
    """The fake engines' deterministic 'model': token i is prompt[-1] + i + 1, logprob -0.1 * (i + 1)."""
    return [prompt[-1] + i + 1 for i in range(n)], [-0.1 * (i + 1) for i in range(n)]


# ----------------------------------------------------------------------------- vllm
class FakeVLLMEngine:
    def __init__(self):
        self.running, self.aborted, self.added = {}, [], []

    def add_request(self, request_id, prompt, params):
        assert params.output_kind in ("DELTA", "FINAL") and params.logprobs == 0
        self.added.append((request_id, prompt, params))
        self.running[request_id] = [prompt["prompt_token_ids"], params, 0, [], []]

    def abort_request(self, ids):
        self.aborted.extend(ids)
        for i in ids:
            self.running.pop(i, None)

    def step(self):
        outs = []
        for rid, state in list(self.running.items()):
            prompt, params, k, toks, lps = state
            tok = prompt[-1] + k + 1
            state[2] = k + 1
            toks.append(tok)
            lps.append(-0.1 * (k + 1))
            stop = tok in params.stop_token_ids
            done = stop or state[2] >= params.max_tokens
            reason = ("stop" if stop else "length") if done else None
            if params.output_kind == "DELTA":  # the new token, logprobs as one dict per position
                comp = SimpleNamespace(token_ids=[tok], logprobs=[{tok: SimpleNamespace(logprob=lps[-1], rank=1)}],
                                       finish_reason=reason)
                outs.append(SimpleNamespace(request_id=rid, outputs=[comp], finished=done))
            elif done:  # FINAL_ONLY: everything at the end, logprobs in vLLM's flat container
                flat = SimpleNamespace(start_indices=list(range(len(toks))), token_ids=list(toks), logprobs=list(lps))
                comp = SimpleNamespace(token_ids=list(toks), logprobs=flat, finish_reason=reason)
                outs.append(SimpleNamespace(request_id=rid, outputs=[comp], finished=True))
            if done:
                del self.running[rid]
        return outs


class FakeWorker:
    def __init__(self):
        self.loaded = []
        self.model_runner = SimpleNamespace(model=SimpleNamespace(load_weights=lambda weights: self.loaded.extend(weights)))


class FakeLLM:
    def __init__(self):
        self.llm_engine = FakeVLLMEngine()
        self.worker = FakeWorker()
        self.calls = []

    def collective_rpc(self, fn, args=()):
        self.calls.append("collective_rpc")
        return [fn(self.worker, *args)]

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def sleep(self, level=1):
        self.calls.append(f"sleep({level})")

    def wake_up(self):
        self.calls.append("wake_up")


VLLM_TYPES = vlb.VLLMTypes(SamplingParams=lambda **kw: SimpleNamespace(**kw),
                           TokensPrompt=lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids},
                           delta_kind="DELTA", final_kind="FINAL")


@pytest.fixture
def vllm_backend():
    b = vlb.VLLMBackend(SETTINGS, llm=FakeLLM(), types=VLLM_TYPES)
    yield b
    b.close()


def test_vllm_request_conversion():
    kw = vlb.sampling_kwargs(SamplingParams(temperature=0.7, top_p=0.9, top_k=0, max_tokens=12, stop_token_ids=(2,),
                                            seed=5))
    assert kw == dict(n=1, temperature=0.7, top_p=0.9, top_k=0, max_tokens=12, stop_token_ids=[2], seed=5, logprobs=0,
                      flat_logprobs=True, skip_special_tokens=False, detokenize=False, ignore_eos=False, min_tokens=0)
    forced = vlb.sampling_kwargs(SamplingParams(max_tokens=64, ignore_eos=True, min_tokens=64))
    assert forced["ignore_eos"] is True and forced["min_tokens"] == 64
    with_stop = vlb.sampling_kwargs(SamplingParams(stop=("###",), top_k=20))
    assert with_stop["detokenize"] and with_stop["stop"] == ["###"] and with_stop["include_stop_str_in_output"]
    assert with_stop["top_k"] == 20
    llm = vlb.llm_kwargs(SETTINGS)
    assert llm["logprobs_mode"] == "processed_logprobs" and llm["gpu_memory_utilization"] == 0.4
    assert "max_queue" not in llm and llm["max_num_seqs"] == 16 and llm["model"] == "/models/x"


def test_vllm_output_conversion():
    comp = SimpleNamespace(token_ids=[7, 2], logprobs=[{7: SimpleNamespace(logprob=-0.5), 9: SimpleNamespace(logprob=-1)},
                                                     {2: SimpleNamespace(logprob=-0.25)}])
    assert vlb.delta_of(comp) == ([7, 2], [-0.5, -0.25])
    with pytest.raises(ToolrlError, match="no logprob for the sampled token 7"):
        vlb.delta_of(SimpleNamespace(token_ids=[7], logprobs=[{8: SimpleNamespace(logprob=-1)}]))
    assert [vlb.finish_of(r) for r in ("stop", "length", "abort", None)] == ["stop", "length", "abort", "stop"]
    flat = SimpleNamespace(start_indices=[0, 2], token_ids=[7, 9, 2], logprobs=[-0.5, -1.0, -0.25])
    assert vlb.delta_of(SimpleNamespace(token_ids=[7, 2], logprobs=flat)) == ([7, 2], [-0.5, -0.25])
    with pytest.raises(ToolrlError, match="flat logprobs"):
        vlb.delta_of(SimpleNamespace(token_ids=[7, 3], logprobs=flat))
    # logprobs=0 (the trainer's requests): one entry per position, read as whole lists, still checked
    one = SimpleNamespace(start_indices=[0, 1, 2], token_ids=[7, 2, 5], logprobs=[-0.5, -0.25, -2.0])
    assert vlb.delta_of(SimpleNamespace(token_ids=[7, 2, 5], logprobs=one)) == ([7, 2, 5], [-0.5, -0.25, -2.0])
    with pytest.raises(ToolrlError, match="flat logprobs do not match its 3 tokens"):
        vlb.delta_of(SimpleNamespace(token_ids=[7, 2, 6], logprobs=one))
    empty = SimpleNamespace(start_indices=[], token_ids=[], logprobs=[])
    assert vlb.delta_of(SimpleNamespace(token_ids=[], logprobs=empty)) == ([], [])


class FakeRenderer:
    """vLLM 0.25's `llm.renderer.render_cmpl`: token prompts in, engine inputs out; a prompt holding -1 is bad."""

    def __init__(self):
        self.calls = 0

    def render_cmpl(self, prompts):
        self.calls += 1
        if any(-1 in p["prompt_token_ids"] for p in prompts):
            raise ValueError("token id -1 is out of range")
        return [{"type": "token", "prompt_token_ids": p["prompt_token_ids"]} for p in prompts]


def test_vllm_requests_rendered_final_only_unless_streamed():
    llm = FakeLLM()
    llm.renderer = FakeRenderer()
    b = vlb.VLLMBackend(SETTINGS, llm=llm, types=VLLM_TYPES)
    try:
        good, bad = GenerationRequest((3, 4), SamplingParams(max_tokens=3)), GenerationRequest((5, -1))
        handles = [b.submit(good), b.submit(bad)]
        assert handles[0].future.result(timeout=10).token_ids == (5, 6, 7)
        with pytest.raises(ValueError, match="out of range"):  # the bad prompt fails alone
            handles[1].future.result(timeout=10)

        async def stream():
            return [c async for c in b.astream(good)]

        assert [c.token_ids for c in asyncio.run(stream())] == [(5,), (6,), (7,)]
        kinds = [(p["type"], params.output_kind) for _, p, params in llm.llm_engine.added]
        assert kinds == [("token", "FINAL"), ("token", "DELTA")] and llm.renderer.calls >= 2
    finally:
        b.close()


def test_vllm_generate_stream_cancel(vllm_backend):
    assert isinstance(vllm_backend, RolloutBackend)
    reqs = [GenerationRequest((10, 20), SamplingParams(max_tokens=4)),
            GenerationRequest((5,), SamplingParams(max_tokens=10, stop_token_ids=(8,)))]
    a, b = vllm_backend.generate(reqs)
    assert (a.token_ids, a.finish_reason) == (tuple(fake_tokens((10, 20), 4)[0]), "length")
    assert a.logprobs == pytest.approx(fake_tokens((10, 20), 4)[1])
    assert (b.token_ids, b.finish_reason) == ((6, 7, 8), "stop")  # the stop token is kept

    async def stream_and_cancel():
        chunks = [c async for c in vllm_backend.astream(reqs[0])]
        assert [c.token_ids for c in chunks] == [(21,), (22,), (23,), (24,)] and chunks[-1].finish_reason == "length"
        long = GenerationRequest((1,), SamplingParams(max_tokens=10**6))
        task = asyncio.create_task(vllm_backend.agenerate(long))
        while not vllm_backend.llm.llm_engine.running:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(500):
            if vllm_backend.llm.llm_engine.aborted:
                break
            await asyncio.sleep(0.002)
        assert vllm_backend.llm.llm_engine.aborted and not vllm_backend.llm.llm_engine.running

    asyncio.run(stream_and_cancel())
    assert vllm_backend.stats()["batch_size"] == 0


def test_vllm_weight_update_plumbing(vllm_backend):
    sd = {"model.embed_tokens.weight": torch.ones(2, 2, requires_grad=True), "lm_head.weight": torch.zeros(2, 2)}
    vllm_backend.update_weights(sd)
    llm = vllm_backend.llm
    assert llm.calls == ["collective_rpc", "reset_prefix_cache"]  # the prefix cache holds old-weight KV
    assert [n for n, _ in llm.worker.loaded] == list(sd) and not llm.worker.loaded[0][1].requires_grad
    vllm_backend.sleep()
    assert llm.calls[-1] == "reset_prefix_cache"  # sleep mode off: no-op
    sleepy = vlb.VLLMBackend(BackendSettings("/m", extra={"enable_sleep_mode": True}), llm=FakeLLM(), types=VLLM_TYPES)
    try:
        sleepy.sleep()
        sleepy.wake()
        assert sleepy.llm.calls == ["sleep(1)", "wake_up"]
    finally:
        sleepy.close()


class SyncMPClient:  # named as vLLM's client for an engine core in its own process
    stopped = False

    def shutdown(self, timeout=None):
        self.stopped = True


class FakeMPLLM(FakeLLM):
    """An engine in its own process: worker methods are called by name, arguments cross as bytes."""

    def __init__(self):
        super().__init__()
        self.llm_engine.engine_core = SyncMPClient()
        self.worker = type("Worker", (vlb_weights.WeightReceiver, FakeWorker), {})()
        self.payload_sizes = []

    def collective_rpc(self, method, args=()):
        assert isinstance(method, str), "a callable cannot cross to an engine process"
        (payload,) = args
        assert isinstance(payload, bytes)
        self.payload_sizes.append(len(payload))
        self.calls.append("collective_rpc")
        return [getattr(self.worker, method)(bytes(payload))]


class InprocClient:  # named as vLLM's client for an engine core in the caller's process
    def __init__(self, fail=False):
        self.shutdowns, self.fail = 0, fail
        self.engine_core = SimpleNamespace(model_executor=SimpleNamespace(shutdown=self._executor_shutdown))

    def _executor_shutdown(self):
        self.shutdowns += 1
        if self.fail:
            raise RuntimeError("worker gone")

    def shutdown(self, timeout=None):  # EngineCore.shutdown: would also destroy torch.distributed's default group
        raise AssertionError("close must not tear down the process's distributed state")


def test_vllm_close_frees_an_inprocess_engine_once_without_the_distributed_teardown(caplog):
    llm = FakeLLM()
    llm.llm_engine.engine_core = InprocClient()
    b = vlb.VLLMBackend(SETTINGS, llm=llm, types=VLLM_TYPES)
    assert b.generate([GenerationRequest(prompt_ids=[5], sampling=SamplingParams(max_tokens=2))])[0].token_ids == (6, 7)
    assert b.stats()["engine_steps"] == 2  # one engine step per token of the one request
    b.close()
    b.close()  # a second close is a no-op
    assert llm.llm_engine.engine_core.shutdowns == 1
    assert vllm_engine.free_inprocess_engine(FakeLLM()) is False  # an engine without the executor API: nothing to free
    broken = FakeLLM()
    broken.llm_engine.engine_core = InprocClient(fail=True)
    b = vlb.VLLMBackend(SETTINGS, llm=broken, types=VLLM_TYPES)
    with caplog.at_level("ERROR"):
        b.close()  # a failing release is logged, not raised: closing still ends the run
    assert "freeing the in-process vLLM engine's GPU memory failed" in caplog.text


def test_vllm_engine_stream_priority_is_checked_and_not_passed_to_vllm():
    assert vlb.stream_priority("high") == -1 and vlb.stream_priority("NORMAL") == 0
    with pytest.raises(ToolrlError) as err:
        vlb.stream_priority("urgent")
    assert err.value.where == "rollout.backend_args.engine_stream_priority" and "high" in err.value.fix
    kw = vlb.llm_kwargs(BackendSettings("/m", extra={"engine_stream_priority": "high", "engine_stream": True}))
    assert "engine_stream_priority" not in kw and "engine_stream" not in kw
    with pytest.raises(ToolrlError):  # a bad value stops the run before vLLM loads the model
        vlb.llm_kwargs(BackendSettings("/m", extra={"engine_stream_priority": 2}))


def test_vllm_engine_process_weights_cross_as_flat_buckets():
    settings = BackendSettings("/m", extra={"engine_process": True, "weight_bucket_mb": 40 / (1 << 20)})  # 40 bytes
    kw = vlb.llm_kwargs(settings)
    assert kw["worker_extension_cls"] == vlb_weights.RECEIVER_CLS and "engine_process" not in kw
    assert "weight_bucket_mb" not in kw
    with pytest.raises(ToolrlError, match="worker_extension_cls"):
        vlb.llm_kwargs(BackendSettings("/m", extra={"engine_process": True, "worker_extension_cls": "my.Ext"}))
    b = vlb.VLLMBackend(settings, llm=FakeMPLLM(), types=VLLM_TYPES)
    try:
        assert b.shares_weights
        sd = {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.full((4,), 7.0),  # 24 + 16 bytes
              "c": torch.arange(3, dtype=torch.bfloat16), "d": torch.arange(20, dtype=torch.float32)}  # d alone
        b.update_weights(sd)
        llm = b.llm
        # float32 buckets: [a, b] (40 bytes), [d] (80 bytes, alone); bfloat16: [c]; then the prefix cache
        assert llm.calls == ["collective_rpc"] * 3 + ["reset_prefix_cache"]
        loaded = dict(llm.worker.loaded)
        assert sorted(loaded) == sorted(sd)
        for name, t in sd.items():
            assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t)
    finally:
        b.close()
    assert b.llm.llm_engine.engine_core.stopped  # close() stops the engine process
    with pytest.raises(ToolrlError, match="engine_process=true"):  # an engine process, but no receiver asked for
        vlb.VLLMBackend(SETTINGS, llm=FakeMPLLM(), types=VLLM_TYPES)
    inproc = vlb.VLLMBackend(settings, llm=FakeLLM(), types=VLLM_TYPES)  # vLLM made its engine in-process anyway
    try:
        assert not inproc.shares_weights
        inproc.update_weights({"a": torch.ones(2)})
        assert inproc.llm.calls == ["collective_rpc", "reset_prefix_cache"] and len(inproc.llm.worker.loaded) == 1
    finally:
        inproc.close()


def test_weight_buckets_pack_and_unpack():
    sd = {"x": torch.randn(3, 4), "y": torch.randn(5), "z": torch.randn(2, 2).t()}  # z not contiguous
    buckets = list(vlb_weights.pack_buckets(sd, bucket_bytes=4 * 17))
    assert [[e.name for e in entries] for _, entries in buckets] == [["x", "y"], ["z"]]
    for flat, entries in buckets:
        assert flat.numel() * 4 <= 4 * 17 and flat.is_contiguous()
        for name, view in vlb_weights.unpack(flat, entries):
            assert torch.equal(view, sd[name])
    flat, entries = vlb_weights.open_payload(vlb_weights.share_payload(*buckets[0]))
    assert [e.name for e in entries] == ["x", "y"] and torch.equal(flat, buckets[0][0])
    with pytest.raises(TypeError, match="'w' is a list"):
        list(vlb_weights.pack_buckets({"w": [1, 2]}))
    with pytest.raises(ValueError, match="bucket_bytes"):
        list(vlb_weights.pack_buckets(sd, bucket_bytes=0))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_missing_names_the_extra():
    with pytest.raises(MissingExtraError) as err:
        vlb.VLLMBackend(SETTINGS)
    assert "pip install 'toolrl[vllm]'" in str(err.value)


# ----------------------------------------------------------------------------- sglang
class FakeSGLEngine:
    """Shaped like sglang.Engine: its own loop, async_generate, sync methods that run the loop."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.aborted, self.updates = [], []
        self.tokenizer_manager = SimpleNamespace(abort_request=self.aborted.append)
        self.shut = False

    def _out(self, prompt, params, n, finished):
        ids, lps = fake_tokens(prompt, n)
        fin = None
        if finished:
            fin = {"type": "stop", "matched": ids[-1]} if ids and ids[-1] in params["stop_token_ids"] else {"type": "length"}
        return {"output_ids": ids, "meta_info": {"output_token_logprobs": [(lp, i, None) for lp, i in zip(lps, ids)],
                                                 "finish_reason": fin, "completion_tokens": n}}

    def _length(self, prompt, params):
        n = params["max_new_tokens"]
        for i in range(n):
            if prompt[-1] + i + 1 in params["stop_token_ids"]:
                return i + 1
        return n

    async def async_generate(self, input_ids, sampling_params, return_logprob, rid, stream=False):
        assert return_logprob and asyncio.get_running_loop() is self.loop
        n = self._length(input_ids, sampling_params)
        if not stream:
            await asyncio.sleep(0.001 * n)
            return self._out(input_ids, sampling_params, n, True)

        async def chunks():  # cumulative chunks, as SGLang streams by default
            for k in range(1, n + 1):
                await asyncio.sleep(0.002)
                yield self._out(input_ids, sampling_params, k, k == n)

        return chunks()

    def update_weights_from_tensor(self, named_tensors, load_format=None, flush_cache=True):
        # the real method drives the engine's loop itself: it must not be running
        self.loop.run_until_complete(asyncio.sleep(0))
        self.updates.append(([n for n, _ in named_tensors], flush_cache))
        return True, "ok"

    def shutdown(self):
        self.shut = True


@pytest.fixture
def sglang_backend():
    b = sgb.SGLangBackend(SETTINGS, engine=FakeSGLEngine())
    yield b
    b.close()


def test_sglang_request_and_output_conversion():
    d = sgb.sampling_dict(SamplingParams(temperature=0.0, max_tokens=7, stop_token_ids=(2,), seed=2**40 + 3))
    assert d == dict(temperature=0.0, top_p=1.0, top_k=-1, max_new_tokens=7, stop_token_ids=[2], no_stop_trim=True,
                     skip_special_tokens=False, sampling_seed=3, ignore_eos=False, min_new_tokens=0)
    forced = sgb.sampling_dict(SamplingParams(max_tokens=64, ignore_eos=True, min_tokens=64))
    assert forced["ignore_eos"] is True and forced["min_new_tokens"] == 64
    with pytest.raises(ToolrlError) as err:
        sgb.sampling_dict(SamplingParams(stop=("###",)))
    assert "rollout.stop" in str(err.value) and "rollout.backend=hf or vllm" in str(err.value)
    kw = sgb.engine_kwargs(SETTINGS)
    assert kw["skip_tokenizer_init"] is True and kw["max_running_requests"] == 16 and "max_queue" not in kw
    out = {"output_ids": [4, 2], "meta_info": {"output_token_logprobs": [(-0.5, 4, None), (-0.1, 2, None)],
                                                 "finish_reason": {"type": "stop", "matched": 2}}}
    assert sgb.tokens_of(out) == ([4, 2], [-0.5, -0.1]) and sgb.finish_of(out) == "stop"
    # a trimmed stop token in output_ids is tolerated: the logprob entries carry it
    assert sgb.tokens_of({**out, "output_ids": [4]})[0] == [4, 2]
    with pytest.raises(ToolrlError, match="disagree"):
        sgb.tokens_of({**out, "output_ids": [9, 9]})
    assert sgb.finish_of({"meta_info": {"finish_reason": None}}) is None
    assert sgb.finish_of({"meta_info": {"finish_reason": {"type": "length"}}}) == "length"


def test_sglang_generate_stream_cancel_and_weights(sglang_backend):
    assert isinstance(sglang_backend, RolloutBackend)
    reqs = [GenerationRequest((10, 20), SamplingParams(max_tokens=4)),
            GenerationRequest((5,), SamplingParams(max_tokens=10, stop_token_ids=(8,)))]
    a, b = sglang_backend.generate(reqs)
    assert (a.token_ids, a.finish_reason) == ((21, 22, 23, 24), "length")
    assert a.logprobs == pytest.approx([-0.1, -0.2, -0.3, -0.4])
    assert (b.token_ids, b.finish_reason) == ((6, 7, 8), "stop")

    async def go():
        chunks = [c async for c in sglang_backend.astream(reqs[0])]
        assert [c.token_ids for c in chunks] == [(21,), (22,), (23,), (24,)] and chunks[-1].finish_reason == "length"
        both = await asyncio.gather(*[sglang_backend.agenerate(r) for r in reqs])
        assert [r.token_ids for r in both] == [a.token_ids, b.token_ids]
        task = asyncio.create_task(sglang_backend.agenerate(GenerationRequest((1,), SamplingParams(max_tokens=5000))))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(500):
            if sglang_backend.engine.aborted:
                break
            await asyncio.sleep(0.002)
        assert len(sglang_backend.engine.aborted) == 1

    asyncio.run(go())
    sglang_backend.update_weights({"lm_head.weight": torch.zeros(2, 2)})
    assert sglang_backend.engine.updates == [(["lm_head.weight"], True)]
    assert sglang_backend.generate(reqs[:1])[0].token_ids == a.token_ids  # serving resumes after the update
    sglang_backend.close()
    assert sglang_backend.engine.shut


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="sglang is installed")
def test_sglang_missing_names_the_extra():
    with pytest.raises(MissingExtraError) as err:
        sgb.SGLangBackend(SETTINGS)
    assert "pip install 'toolrl[sglang]'" in str(err.value)


def test_drop_module_tensors_frees_a_closed_models_tensors_whoever_still_holds_the_model():
    """vLLM keeps a closed in-process engine's model reachable (2026-12-05 GPU run: all of a 28 GiB engine still
    taken after the executor's shutdown); emptying the modules' tensors frees the memory anyway."""
    import weakref

    import torch

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)
            self.register_buffer("cos", torch.ones(8))
            self.kv_cache = [torch.zeros(16, 4)]  # how vLLM binds the KV cache: a plain attribute
            self.scale = torch.ones(3)

    model = torch.nn.Sequential(Attn(), torch.nn.Linear(4, 2))
    holder = [model]  # the engine's stray reference
    watched = [weakref.ref(t) for t in (model[0].proj.weight, model[0].cos, model[0].kv_cache[0], model[1].bias)]
    assert vllm_engine.drop_module_tensors(model) == 7  # 4 parameters, 1 buffer, 1 KV-cache entry, 1 tensor attribute
    assert all(w() is None for w in watched) and holder[0] is model
    assert model[0].kv_cache[0].numel() == 0 and model[0].kv_cache[0].dtype == torch.float32
    assert model[0].scale.numel() == 0 and list(model.parameters()) == []


def test_the_engine_model_is_found_through_get_model_and_only_as_a_module():
    import types as pytypes

    import torch

    net = torch.nn.Linear(2, 2)

    def executor(runner):
        return pytypes.SimpleNamespace(driver_worker=pytypes.SimpleNamespace(worker=pytypes.SimpleNamespace(
            model_runner=runner)))

    wrapped = pytypes.SimpleNamespace(get_model=lambda: net, model=object())  # V1: the model behind a graph wrapper
    assert vllm_engine._engine_model(executor(wrapped)) is net
    assert vllm_engine._engine_model(executor(pytypes.SimpleNamespace(model=net))) is net
    assert vllm_engine._engine_model(executor(pytypes.SimpleNamespace(model=object()))) is None  # not a module

    def no_model():
        raise ValueError("Cannot get model before model has been initialized")

    assert vllm_engine._engine_model(executor(pytypes.SimpleNamespace(get_model=no_model))) is None
    assert vllm_engine._engine_model(object()) is None
