"""Sampling maths and the slot KV cache, on small tensors."""

import math

import torch

from toolrl.rollout.hf_cache import SlotKVCache
from toolrl.rollout.sampling import RowSampler, make_generator, sample_rows


def test_greedy_rows_take_argmax_and_record_plain_logprobs():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, 0.1, 0.2]])
    toks, lps = sample_rows(logits, [RowSampler(0.0), RowSampler(0.0)])
    assert toks.tolist() == [1, 0]
    ref = torch.log_softmax(logits, -1)
    assert torch.allclose(lps, ref[[0, 1], [1, 0]])


def test_sampled_rows_record_temperature_scaled_logprobs_before_truncation():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    row = RowSampler(0.5, top_k=2, generator=make_generator(1))
    tok, lp = sample_rows(logits, [row])
    assert tok.item() in (0, 1)  # top-k=2 leaves only the two best
    ref = torch.log_softmax(logits / 0.5, -1)[0, tok.item()]  # not renormalised over the top-2
    assert math.isclose(lp.item(), ref.item(), abs_tol=1e-5)


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    seen = set()
    g = make_generator(0)
    for _ in range(300):
        tok, _ = sample_rows(logits, [RowSampler(1.0, top_p=0.75, generator=g)])
        seen.add(tok.item())
    assert seen == {0, 1}  # 0.5 < 0.75 <= 0.8: the first two tokens


def test_sampling_follows_the_distribution_and_seeds_reproduce():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = torch.log(probs)[None].repeat(4000, 1)
    rows = [RowSampler(1.0, generator=make_generator(i)) for i in range(4000)]
    toks, _ = sample_rows(logits, rows)
    freq = torch.bincount(toks, minlength=3).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)
    again, _ = sample_rows(logits[:5], [RowSampler(1.0, generator=make_generator(i)) for i in range(5)])
    assert again.tolist() == toks[:5].tolist()  # same seed, same draw, whatever the batch


def _kv(rows, heads, length, dim, fill):
    return torch.stack([torch.full((heads, length, dim), float(f)) for f in fill])


def test_slot_cache_right_aligns_rows_and_masks_their_padding():
    cache = SlotKVCache(num_layers=1, max_rows=4, device="cpu", dtype=torch.float32)
    # two prompts of lengths 3 and 1, left-padded to 3 (pad positions hold junk that must be zeroed)
    k = _kv(2, 1, 3, 2, [1, 2])
    k[1, :, :2] = float("nan")
    cache.add_rows([k], [k.clone()], [3, 1])
    assert (cache.start, cache.end, cache.lengths) == (0, 3, [3, 1])
    mask, pos = cache.prepare_decode()
    assert pos[:, 0].tolist() == [3, 1]
    assert mask[:, 0, 0].tolist() == [[True, True, True, True], [False, False, True, True]]
    keys, _ = cache.update(torch.full((2, 1, 1, 2), 9.0), torch.full((2, 1, 1, 2), 9.0), 0)
    assert keys.shape == (2, 1, 4, 2)
    assert not torch.isnan(keys).any()
    assert keys[1, 0, :, 0].tolist() == [0.0, 0.0, 2.0, 9.0]
    cache.advance()
    # a longer prompt arrives: the running rows shift right to make room
    cache.add_rows([_kv(1, 1, 6, 2, [5])], [_kv(1, 1, 6, 2, [5])], [6])
    assert cache.lengths == [4, 2, 6] and cache.width == 6
    mask, pos = cache.prepare_decode()
    assert pos[:, 0].tolist() == [4, 2, 6]
    keys, _ = cache.update(torch.zeros(3, 1, 1, 2), torch.zeros(3, 1, 1, 2), 0)
    assert keys[0, 0, -5:, 0].tolist() == [1.0, 1.0, 1.0, 9.0, 0.0]
    assert keys[2, 0, :, 0].tolist() == [5.0] * 6 + [0.0]
    cache.advance()
    # row 0 finishes: the last row moves into its slot (only that row is copied)
    assert cache.remove_rows([0]) == [2, 1]
    assert cache.lengths == [7, 3] and cache.width == 7
    keys, _ = cache.update(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2), 0)
    assert keys[0, 0, :, 0].tolist() == [5.0] * 6 + [0.0, 0.0]
    assert keys[1, 0, -4:, 0].tolist() == [2.0, 9.0, 0.0, 0.0]
    assert cache.remove_rows([0, 1]) == [] and cache.num_rows == 0


def test_slot_cache_grows_when_decoding_past_its_capacity():
    cache = SlotKVCache(num_layers=2, max_rows=2, device="cpu", dtype=torch.float32)
    cache.add_rows([_kv(1, 1, 2, 1, [1])] * 2, [_kv(1, 1, 2, 1, [1])] * 2, [2])
    cap = cache.capacity
    for i in range(cap + 10):
        cache.prepare_decode()
        for layer in range(2):
            cache.update(torch.full((1, 1, 1, 1), float(i)), torch.zeros(1, 1, 1, 1), layer)
        cache.advance()
    assert cache.capacity > cap and cache.lengths == [cap + 12]
    keys, _ = cache.update(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), 1)
    assert keys[0, 0, :3, 0].tolist() == [1.0, 1.0, 0.0] and keys[0, 0, -2, 0].item() == cap + 9
