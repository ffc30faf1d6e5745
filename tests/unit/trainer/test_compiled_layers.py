"""`trainer.compile_layers` (toolrl/trainer/compiled.py): the decoder layers run compiled in the update and the
logprob passes, with and without gradient checkpointing, give the eager results, and generation stays eager."""

import pytest
import torch

from toolrl.trainer import compiled
from toolrl.trainer.batch import build_batch
from toolrl.trainer.forward import batched_logprobs
from toolrl.trainer.modeling import enable_checkpointing
from toolrl.trainer.optimize import update_policy


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch (dynamo caches graphs per code object across models and backends)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _batch(make_traj):
    trajs = [make_traj("a", [3, 4, 5], [10 + i, 11, 12 + i, 13, 7][: 2 + i % 4], [1] * (2 + i % 4), sample=i)
             for i in range(4)]
    trajs += [make_traj("b", [9, 8], [20 + i, 21, 22][: 1 + i % 3], [1] * (1 + i % 3), sample=i) for i in range(4)]
    b = build_batch(trajs, ["0"] * 4 + ["1"] * 4, [True] * 8, 0)
    b.extras["advantages"] = torch.tensor([[1.0], [-0.5], [0.25], [-0.75], [0.5], [-1.0], [0.3], [0.2]]) * b.response_mask
    return b


class _Counting:
    """A torch.compile backend that runs the captured graph as is and counts graphs and calls."""

    def __init__(self):
        self.graphs = 0
        self.calls = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1

        def run(*args):
            self.calls += 1
            return gm.forward(*args)

        return run


def _update(tiny_llama, batch, cfg, *, backend=None, checkpointing=False):
    model = tiny_llama()
    if checkpointing:
        enable_checkpointing(model)
    if backend is not None:
        assert compiled.prepare(model, cfg, backend=backend)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    stats = update_policy(model, opt, batch, cfg, kl_coef=0.0, seed=0)
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    return model, delta, stats


@pytest.mark.parametrize("checkpointing", [False, True])
def test_compiled_layers_run_in_the_update_and_change_nothing(tiny_llama, make_traj, make_config, checkpointing):
    cfg = make_config(**{"rollout.n": 4, "data.prompts_per_step": 2, "trainer.max_grad_norm": 1e9,
                         "trainer.micro_batch_size": 4, "trainer.compile_layers": True})
    batch = _batch(make_traj)
    _, eager, eager_stats = _update(tiny_llama, batch, cfg, checkpointing=checkpointing)
    counting = _Counting()
    model, delta, stats = _update(tiny_llama, batch, cfg, backend=counting, checkpointing=checkpointing)
    # one graph serves both layers (parameters are inputs), and it ran for each layer of each micro-batch
    assert counting.graphs >= 1 and counting.calls >= 2 * 2
    assert torch.allclose(delta, eager, atol=1e-6, rtol=1e-5), (delta - eager).abs().max()
    assert eager.abs().sum() > 0  # the update moved the weights
    assert stats["loss/policy"] == pytest.approx(eager_stats["loss/policy"], rel=1e-5, abs=1e-7)
    # outside the update the layers are plain modules again
    assert all(layer._compiled_call_impl is None for layer in model.model.layers)


def test_compiled_logprob_pass_matches_and_generation_stays_eager(tiny_llama, make_traj, make_config):
    cfg = make_config(**{"trainer.compile_layers": True})
    batch = _batch(make_traj)
    model = tiny_llama()
    eager = batched_logprobs(model, batch, 4)
    counting = _Counting()
    compiled.prepare(model, cfg, backend=counting)
    assert compiled.is_prepared(model)
    lp = batched_logprobs(model, batch, 4)
    assert counting.calls > 0
    assert torch.allclose(lp, eager, atol=1e-6)
    calls = counting.calls
    with torch.no_grad():
        model.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert counting.calls == calls  # generation did not go through the compiled layers


def test_compile_layers_off_prepares_nothing(tiny_llama, make_config):
    model = tiny_llama()
    assert not compiled.prepare(model, make_config())
    assert not compiled.is_prepared(model)
    with compiled.compiled_layers(model):
        assert all(layer._compiled_call_impl is None for layer in model.model.layers)


def test_compile_layers_with_fsdp_is_a_config_error(make_config):
    from toolrl.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        make_config(**{"trainer.compile_layers": True, "trainer.fsdp.enabled": True})
    assert "trainer.compile_layers" in str(e.value) and "fsdp" in str(e.value)


def test_aot_compiled_update_equals_eager(tiny_llama, make_traj, make_config):
    """Through AOTAutograd (the joint forward/backward graph Inductor compiles; Inductor itself runs in
    tests/gpu/test_update_gpu.py), gradient checkpointing on as on a GPU."""
    cfg = make_config(**{"rollout.n": 4, "data.prompts_per_step": 2, "trainer.max_grad_norm": 1e9,
                         "trainer.micro_batch_size": 4, "trainer.compile_layers": True})
    batch = _batch(make_traj)
    _, eager, _ = _update(tiny_llama, batch, cfg, checkpointing=True)
    _, delta, _ = _update(tiny_llama, batch, cfg, backend="aot_eager", checkpointing=True)
    assert torch.allclose(delta, eager, atol=1e-5, rtol=1e-4), (delta - eager).abs().max()


def test_a_failed_compilation_names_the_key_and_the_fix(tiny_llama, make_traj, make_config):
    from toolrl.errors import ToolrlError

    def broken(gm, example_inputs):  # stands in for a missing Triton / C++ compiler
        raise RuntimeError("no compiler here")

    cfg = make_config(**{"trainer.compile_layers": True})
    model = tiny_llama()
    compiled.prepare(model, cfg, backend=broken)
    with pytest.raises(ToolrlError) as e:
        batched_logprobs(model, _batch(make_traj), 4)
    text = str(e.value)
    assert "trainer.compile_layers" in text and "no compiler here" in text and "compile_layers=false" in text
    assert all(layer._compiled_call_impl is None for layer in model.model.layers)  # left eager


def test_load_policy_prepares_the_compiled_layers(tiny_model_dir, make_config):
    from toolrl.trainer.modeling import load_policy

    on = load_policy(make_config(**{"trainer.compile_layers": True}), tiny_model_dir, torch.device("cpu"))
    off = load_policy(make_config(), tiny_model_dir, torch.device("cpu"))
    assert compiled.is_prepared(on) and not compiled.is_prepared(off)


def test_compiled_layers_with_lora_adapters_give_the_eager_update(tiny_model_dir, make_traj, make_config):
    """PEFT-wrapped policy (LoRA on q/v): the adapters' gradients through the compiled layers equal eager."""
    from toolrl.trainer.modeling import load_policy

    overrides = {"rollout.n": 4, "data.prompts_per_step": 2, "trainer.max_grad_norm": 1e9,
                 "trainer.micro_batch_size": 4, "model.lora.rank": 4, "model.lora.target_modules": "[q_proj,v_proj]",
                 "model.gradient_checkpointing": True}
    batch = _batch(make_traj)
    deltas = []
    for on in (False, True):
        cfg = make_config(**overrides, **{"trainer.compile_layers": on})
        torch.manual_seed(0)
        model = load_policy(cfg, tiny_model_dir, torch.device("cpu"))
        counting = _Counting()
        if on:
            compiled.prepare(model, cfg, backend=counting)  # in place of load_policy's Inductor wrappers
        trainable = [p for p in model.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in trainable]
        update_policy(model, torch.optim.SGD(trainable, lr=1.0), batch, cfg, kl_coef=0.0, seed=0)
        deltas.append(torch.cat([(p.detach() - b).flatten() for p, b in zip(trainable, before)]))
        if on:
            assert counting.calls > 0
    eager, comp = deltas
    assert eager.abs().sum() > 0
    assert torch.allclose(comp, eager, atol=1e-6, rtol=1e-5), (comp - eager).abs().max()


def test_rounded_widths_pad_a_micro_batch_without_changing_its_logprobs(tiny_llama, make_traj):
    """trainer.compile_mode=reduce-overhead: micro-batches are widened to multiples of 64 (few shapes, few CUDA
    graphs); the added columns are masked, so the real tokens' logprobs and the batch's extras are unchanged."""
    from toolrl.trainer.forward import response_logprobs

    batch = _batch(make_traj)
    batch.extras["rollout_logprobs"] = torch.randn(batch.response_mask.shape) * batch.response_mask
    narrow, wide = batch.trimmed(), batch.trimmed(64)
    assert (wide.prompt_width, wide.response_width) == (64, 64)
    assert wide.input_ids.shape == wide.attention_mask.shape == wide.position_ids.shape == (8, 128)
    assert wide.attention_mask.sum() == narrow.attention_mask.sum()  # only masked columns were added
    assert wide.response_mask.sum() == narrow.response_mask.sum()
    T = narrow.response_width
    assert torch.equal(wide.extras["advantages"][:, :T], narrow.extras["advantages"])
    assert torch.equal(wide.extras["rollout_logprobs"][:, T:], torch.zeros(8, 64 - T))
    # the real tokens keep their positions
    keep = wide.attention_mask.bool()
    assert torch.equal(wide.position_ids[keep], narrow.position_ids[narrow.attention_mask.bool()])
    model = tiny_llama()
    with torch.no_grad():
        a, _ = response_logprobs(model, narrow, 1.0, share_prompt=False)
        b, _ = response_logprobs(model, wide, 1.0, share_prompt=False)
    mask = narrow.response_mask.bool()
    assert torch.allclose(b[:, :T][mask], a[mask], atol=1e-5)
    assert batch.trimmed(1).input_ids.shape == narrow.input_ids.shape  # 1: trimmed as before


def test_cuda_graph_mode_rounds_widths_and_needs_compiled_layers_without_checkpointing(tiny_llama, make_config):
    from toolrl.errors import ConfigError

    cfg = make_config(**{"trainer.compile_layers": True, "trainer.compile_mode": "reduce-overhead",
                         "model.gradient_checkpointing": False})
    model = tiny_llama()
    assert compiled.width_multiple(model) == 1
    assert compiled.prepare(model, cfg, backend="aot_eager")
    assert compiled.width_multiple(model) == compiled.GRAPH_WIDTH_MULTIPLE == 64
    with pytest.raises(ConfigError, match="trainer.compile_layers=true"):
        make_config(**{"trainer.compile_mode": "reduce-overhead", "model.gradient_checkpointing": False})
    with pytest.raises(ConfigError, match="model.gradient_checkpointing=false"):
        make_config(**{"trainer.compile_layers": True, "trainer.compile_mode": "reduce-overhead"})
    with pytest.raises(ConfigError, match="model.device is cpu"):
        make_config(**{"trainer.compile_layers": True, "trainer.compile_mode": "reduce-overhead",
                       "model.gradient_checkpointing": False, "model.device": "cpu"})


def test_cuda_graph_mode_starts_a_graph_step_per_micro_batch_and_keeps_its_own_gradients(
        tiny_llama, make_traj, make_config, monkeypatch):
    """CUDA graph trees key a recording by its position since the last step mark: each micro-batch must start a
    new step (else a pass of 4 micro-batches records 4 graphs per layer and re-records whenever the shapes of
    any of them change), and no parameter gradient may be a graph's output buffer (the next micro-batch's
    replay would overwrite it), so the gradients are tensors of the trainer's own from the first backward on.
    The update still equals the eager one."""
    cfg = make_config(**{"rollout.n": 4, "data.prompts_per_step": 2, "trainer.max_grad_norm": 1e9,
                         "trainer.micro_batch_size": 2,
                         "trainer.compile_layers": True, "trainer.compile_mode": "reduce-overhead",
                         "model.gradient_checkpointing": False})
    batch = _batch(make_traj)
    _, eager, _ = _update(tiny_llama, batch, cfg)
    marks, grads_seen = [], []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    real_step = torch.optim.SGD.step

    def step(self, *a, **k):  # the gradients the optimizer reads: the very tensors given before the first backward
        grads_seen.append([p.grad for p in self.param_groups[0]["params"]])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    model = tiny_llama()
    assert compiled.prepare(model, cfg, backend="aot_eager")
    owned = {}
    real_own = compiled.own_gradients

    def own(m, params):  # a spy: what the real one gave and answered
        done = real_own(m, params)
        owned.update({id(p): p.grad for p in params})
        return done

    monkeypatch.setattr(compiled, "own_gradients", own)
    before = [p.detach().clone() for p in model.parameters()]
    update_policy(model, torch.optim.SGD(model.parameters(), lr=1.0), batch, cfg, kl_coef=0.0, seed=0)
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert len(marks) == 4  # 8 samples in micro-batches of 2
    assert len(grads_seen) == 1 and all(g is owned[id(p)] for g, p in zip(grads_seen[0], model.parameters()))
    assert torch.allclose(delta, eager, atol=1e-6, rtol=1e-5), (delta - eager).abs().max()
    # the logprob pass marks a step per micro-batch too
    marks.clear()
    batched_logprobs(model, batch, 3, 1.0)
    assert len(marks) == 3  # 8 samples in micro-batches of 3
    # eager models: neither marks nor gradients of their own
    plain = tiny_llama()
    compiled.micro_batch_begin(plain)
    assert not real_own(plain, list(plain.parameters()))
    assert not marks[3:] and all(p.grad is None for p in plain.parameters())


def test_own_gradients_zeroes_existing_gradients_in_place(tiny_llama, make_config):
    cfg = make_config(**{"trainer.compile_layers": True, "trainer.compile_mode": "reduce-overhead",
                         "model.gradient_checkpointing": False})
    model = tiny_llama()
    assert compiled.prepare(model, cfg, backend="aot_eager")
    params = list(model.parameters())
    params[0].grad = torch.ones_like(params[0])
    kept = params[0].grad
    assert compiled.own_gradients(model, params)
    assert params[0].grad is kept and not kept.any()
    assert all(p.grad is not None and p.grad.shape == p.shape and not p.grad.any() for p in params)


def test_the_first_compiled_pass_says_it_compiles_once(tiny_llama, make_traj, make_config, caplog):
    import logging

    cfg = make_config(**{"trainer.compile_layers": True})
    model = tiny_llama()
    assert compiled.prepare(model, cfg, backend="aot_eager")
    batch = _batch(make_traj)
    with caplog.at_level(logging.INFO, logger="toolrl.trainer.compiled"):
        batched_logprobs(model, batch, 4, 1.0)
        batched_logprobs(model, batch, 4, 1.0)
    said = [r.getMessage() for r in caplog.records if "first pass compiles" in r.getMessage()]
    assert len(said) == 1 and "CUDA graphs" not in said[0]
