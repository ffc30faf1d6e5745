"""The memory-saving update path (toolrl/trainer/forward.py): the chunked LM head and micro-batches by token
budget give the same logprobs, entropies and gradients as the plain padded, unchunked computation."""

import pytest
import torch

from toolrl.trainer.batch import build_batch
from toolrl.trainer.forward import (
    chunked_logprobs,
    gradient_checkpointing_wanted,
    micro_batches,
    peak_memory,
    response_logprobs,
)


def _batch(make_traj, n_groups=3, group=4, seed=0):
    """Groups of `group` samples sharing a prompt; prompt and response lengths vary, tool tokens masked."""
    g = torch.Generator().manual_seed(seed)
    trajs, gids = [], []
    for k in range(n_groups):
        prompt = torch.randint(3, 60, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist()
        for s in range(group):
            r = int(torch.randint(1, 14, (1,), generator=g))
            resp = torch.randint(3, 60, (r,), generator=g).tolist()
            mask = [0 if (i % 5 == 3) else 1 for i in range(r)]
            trajs.append(make_traj(f"t{k}", prompt, resp, mask, sample=s))
            gids.append(str(k))
    return build_batch(trajs, gids, [True] * len(trajs), 0)


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("share_prompt", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_head_equals_full_logits(tiny_llama, make_traj, share_prompt, temperature):
    batch = _batch(make_traj)
    mask = batch.response_mask
    results = {}
    for chunk in (None, 5, 4096):
        model = tiny_llama()
        lp, ent = response_logprobs(model, batch, temperature, with_entropy=True, entropy_grad=True,
                                    share_prompt=share_prompt, logits_chunk=chunk)
        loss = -(lp * mask).sum() / mask.sum() - 0.01 * (ent * mask).sum() / mask.sum()
        loss.backward()
        results[chunk] = ((lp * mask).detach(), (ent * mask).detach(), _grads(model))
    ref_lp, ref_ent, ref_g = results[None]
    for chunk in (5, 4096):
        lp, ent, g = results[chunk]
        assert torch.allclose(lp, ref_lp, atol=1e-5), (chunk, (lp - ref_lp).abs().max())
        assert torch.allclose(ent, ref_ent, atol=1e-5)
        assert torch.allclose(g, ref_g, atol=1e-6, rtol=1e-4), (chunk, (g - ref_g).abs().max())
    assert ref_lp.abs().sum() > 0 and ref_g.abs().sum() > 0  # the comparison is not between zeros


def test_chunked_logprobs_only_holds_one_chunk_of_logits():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 1000, bias=False)
    h = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 1000, (300,))
    full = torch.log_softmax(head(h).float(), -1).gather(1, targets[:, None])
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = chunked_logprobs(h, head, targets, chunk=64)
    assert torch.allclose(out, full, atol=1e-5)
    assert max(saved) < 300 * 1000  # no [300, V] tensor kept for backward (the chunks are recomputed)
    out.sum().backward()
    g_chunked = h.grad.clone()
    h.grad = None
    full.sum().backward()
    assert torch.allclose(g_chunked, h.grad, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_chunk_logprobs_entropy_and_gradients_equal_autograd(temperature, bias, dtype):
    """The fused chunk (logprobs with gradient, entropy for logging) against the same formulas through
    autograd: logprobs, entropies, and the gradients of h, the head's weight and its bias."""
    torch.manual_seed(0)
    head = torch.nn.Linear(24, 700, bias=bias).to(dtype)
    h = (torch.randn(130, 24) * 2).to(dtype).requires_grad_(True)
    targets = torch.randint(0, 700, (130,))
    weights = torch.randn(130)  # a different upstream gradient per token

    def grads():
        out = [h.grad.clone(), head.weight.grad.clone()] + ([head.bias.grad.clone()] if bias else [])
        h.grad = head.weight.grad = None
        if bias:
            head.bias.grad = None
        return out

    logits = head(h).float() / temperature
    ref_lp = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    ref_ent = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
    (ref_lp * weights).sum().backward()
    ref_g = grads()

    out = chunked_logprobs(h, head, targets, temperature, chunk=48, with_entropy=True, entropy_grad=False)
    assert out.dtype == torch.float32 and out.shape == (130, 2)
    (out[:, 0] * weights).sum().backward()
    got_g = grads()
    assert torch.allclose(out[:, 0], ref_lp, atol=1e-5), (out[:, 0] - ref_lp).abs().max()
    assert torch.allclose(out[:, 1], ref_ent.detach(), atol=1e-4), (out[:, 1] - ref_ent).abs().max()
    tol = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}[dtype]
    for name, got, ref in zip(("h", "weight", "bias"), got_g, ref_g):
        assert ref.abs().sum() > 0, name
        assert torch.allclose(got.float(), ref.float(), **tol), (name, (got.float() - ref.float()).abs().max())
    with torch.no_grad():  # the no-grad pass (old / reference logprobs) gives the same numbers
        assert torch.allclose(chunked_logprobs(h, head, targets, temperature, chunk=48)[:, 0], ref_lp, atol=1e-5)


def test_entropy_without_grad_has_no_graph(tiny_llama, make_traj):
    batch = _batch(make_traj, n_groups=1)
    lp, ent = response_logprobs(tiny_llama(), batch, with_entropy=True, entropy_grad=False)
    assert lp.requires_grad and not ent.requires_grad


@pytest.mark.parametrize("budget", [40, 90, 10_000])
def test_token_budget_micro_batches_equal_padded_logprobs_and_gradients(tiny_llama, make_traj, budget):
    batch = _batch(make_traj, n_groups=4, group=3, seed=1)
    model = tiny_llama()
    lp_all, _ = response_logprobs(model, batch, logits_chunk=None)
    mask = batch.response_mask
    (-(lp_all * mask).sum()).backward()
    ref_g = _grads(model)

    model = tiny_llama()
    micro = micro_batches(batch, micro_batch_size=4, token_budget=budget, group_size=3)
    assert sum(len(m) for m in micro) == len(batch)
    lp_parts = torch.zeros_like(lp_all)
    for m in micro:
        t = m.trimmed()
        lp, _ = response_logprobs(model, t)
        (-(lp * t.response_mask).sum()).backward()
        rows = _rows_of(batch, m)
        lp_parts[rows, : lp.shape[1]] = lp.detach()
        P, T = t.prompt_width, t.response_width
        if len(m) > 1:
            assert len(m) * (P + T) <= budget  # packed micro-batches respect the budget
    assert torch.allclose(lp_parts * mask, lp_all.detach() * mask, atol=1e-5)
    assert torch.allclose(_grads(model), ref_g, atol=1e-5, rtol=1e-4)
    if budget == 10_000:
        assert len(micro) == 1
    else:
        assert len(micro) > 2


def _rows_of(batch, micro):
    """Row indices of `micro`'s samples in `batch` (matched by their input ids and group)."""
    rows = []
    for k in range(len(micro)):
        for i in range(len(batch)):
            if i not in rows and batch.group_ids[i] == micro.group_ids[k] and \
                    torch.equal(batch.input_ids[i], micro.input_ids[k]):
                rows.append(i)
                break
    return rows


def test_budget_keeps_groups_whole_and_orders_by_length(make_traj):
    batch = _batch(make_traj, n_groups=5, group=2, seed=3)
    micro = micro_batches(batch, 4, token_budget=60, group_size=2)
    for m in micro:
        counts = {g: m.group_ids.count(g) for g in m.group_ids}
        assert all(c == 2 for c in counts.values()) or len(m) == 1
    assert micro_batches(batch, 4)[0].group_ids == batch.group_ids[:4]  # no budget: micro_batch_size samples


def test_checkpointing_default_and_peak_memory_on_cpu():
    assert gradient_checkpointing_wanted(None, "cuda") and not gradient_checkpointing_wanted(None, "cpu")
    assert gradient_checkpointing_wanted(True, "cpu") and not gradient_checkpointing_wanted(False, "cuda")
    assert peak_memory("cpu") == {}
