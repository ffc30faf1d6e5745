"""FSDP2 sharding (toolrl/trainer/fsdp.py) on one gloo rank on the CPU: a sharded training step computes what
the unsharded model computes, the full state dict has the HF names and loads into transformers, mixed
precision keeps float32 master weights. (The trainer uses FSDP2 on CUDA only; tests/gpu/test_fsdp_gpu.py runs
it on a GPU with NCCL. FSDP2 itself runs on gloo as well, which is what makes this CPU test possible.)"""

import copy
from types import SimpleNamespace

import pytest
import torch

from toolrl.errors import ToolrlError
from toolrl.trainer import fsdp


def _cfg(mixed_precision=False, cpu_offload=False, enabled=True):
    return SimpleNamespace(trainer=SimpleNamespace(fsdp=SimpleNamespace(
        enabled=enabled, mixed_precision=mixed_precision, cpu_offload=cpu_offload)))


@pytest.fixture
def process_group():
    import torch.distributed as dist

    made = fsdp.single_process_group("gloo")
    yield
    if made:
        dist.destroy_process_group()


def _steps(model, x, n=2):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses, norms = [], []
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        norms.append(fsdp.clip_grad_norm([p for p in model.parameters() if p.requires_grad], 1.0))
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses, norms


def test_sharded_step_equals_unsharded_and_state_dict_loads(tiny_llama, process_group, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_llama()
    ref = copy.deepcopy(model)
    fsdp.shard_model(model, _cfg())
    assert fsdp.is_sharded(model) and len(fsdp.decoder_layers(model)) == 2
    assert all(fsdp.is_sharded(layer) for layer in fsdp.decoder_layers(model))
    x = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(0))
    (losses, norms), (ref_losses, ref_norms) = _steps(model, x), _steps(ref, x)
    assert losses == pytest.approx(ref_losses, rel=1e-5) and norms == pytest.approx(ref_norms, rel=1e-5)
    sd, ref_sd = fsdp.full_state_dict(model), ref.state_dict()
    assert sorted(sd) == sorted(ref_sd)
    assert all(sd[k].device.type == "cpu" and torch.allclose(sd[k], ref_sd[k], atol=1e-6) for k in ref_sd)
    ref.save_pretrained(tmp_path)  # the config; then the gathered weights into a fresh transformers model
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    result = loaded.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.allclose(loaded(input_ids=x).logits, ref(input_ids=x).logits, atol=1e-5)


def test_mixed_precision_keeps_float32_master_weights(tiny_llama, process_group):
    model = tiny_llama().to(torch.bfloat16)
    fsdp.shard_model(model, _cfg(mixed_precision=True))
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the optimizer updates float32 shards
    x = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    out = model(input_ids=x)
    assert out.logits.dtype == torch.bfloat16  # computed in bfloat16
    out.logits.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def test_without_a_process_group_the_error_says_what_to_do(tiny_llama):
    import torch.distributed as dist

    assert not dist.is_initialized()
    with pytest.raises(ToolrlError, match="single_process_group"):
        fsdp.shard_model(tiny_llama(), _cfg())


def test_wanted_only_on_cuda():
    assert fsdp.wanted(_cfg(), "cuda:0") and not fsdp.wanted(_cfg(), "cpu")
    assert not fsdp.wanted(_cfg(enabled=False), "cuda")
