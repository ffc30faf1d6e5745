"""A program that rewrites its history trains on every segment (SmolLM2 on the hf backend, the endpoint on
127.0.0.1, the official `openai` client, the trainer's own batch, forward and update code).

`forgetful` (programs/agents.py) makes two calls on one conversation, then a third on a fresh, shorter one:
each episode is two segments. Through `toolrl.trainer.segments` both become training rows: each row's
teacher-forced logprobs equal what the engine sampled with, each row carries its episode's GRPO advantage,
and one real update moves every segment's sampled tokens in the direction of its episode's advantage.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from toolrl.algorithms.advantages import AdvantageInput, grpo
from toolrl.config import load_config
from toolrl.rollout.agent_loop import LoopSettings, run_episodes_sync
from toolrl.trainer.batch import build_batch
from toolrl.trainer.forward import batched_logprobs
from toolrl.trainer.optimize import update_policy
from toolrl.trainer.segments import episode_advantages, segment_rows
from toolrl.types import Task

pytestmark = pytest.mark.integration

AGENTS = Path(__file__).parent / "programs" / "agents.py"
LOGPROB_TOL = 1e-3  # as the agent-loop tests (float32 CPU, KV-cached sampling vs one teacher-forced pass)


def test_every_segment_of_a_rewritten_history_is_trained(program_env, smol):
    task = Task(id="forget", messages=({"role": "user", "content": "Name a color."},), env="program",
                env_args={"entry": f"{AGENTS}:forgetful", "timeout": 600})
    settings = LoopSettings(temperature=1.0, max_new_tokens=10, max_total_tokens=512, seed=21)
    trajs = run_episodes_sync([task], 4, smol, smol.tokenizer, settings)
    assert all(t.error is None for t in trajs), [t.error for t in trajs]
    assert [len(t.segments) for t in trajs] == [1, 1, 1, 1]

    # the reward reads what the program returned: the characters of its first reply (differs between samples)
    scores = torch.tensor([float(len(t.result[0] or "")) for t in trajs])
    assert len(set(scores.tolist())) > 1, scores

    rows = segment_rows(trajs, ["forget"] * 4, [True] * 4)
    assert len(rows) == 8 and rows.episode == (0, 1, 2, 3, 0, 1, 2, 3)
    batch = build_batch(rows.trajectories, rows.group_ids, rows.valid, int(smol.tokenizer.pad_token_id))
    first_segment_tokens = sum(sum(t.segments[0].loss_mask) for t in trajs)
    assert float(batch.response_mask[4:].sum()) == first_segment_tokens > 0  # the earlier segments are trained

    model = copy.deepcopy(smol.model)
    model.eval()
    # every row (the earlier segments too) is the sequence the engine sampled: teacher forcing gives its logprobs
    old = batched_logprobs(model, batch, 8, 1.0)
    diff = ((old - batch["rollout_logprobs"]).abs() * batch.response_mask).max()
    assert float(diff) < LOGPROB_TOL, float(diff)

    cfg = load_config(None, ["rollout.n=4", "data.prompts_per_step=1", "trainer.micro_batch_size=4"])
    adv = episode_advantages(grpo, AdvantageInput(scores=scores, response_mask=batch.response_mask,
                                                  group_ids=list(rows.group_ids), valid=batch.valid),
                             cfg.algorithm, rows)
    per_row = (adv.advantages * batch.response_mask).sum(-1) / batch.response_mask.sum(-1)
    episodes_alone = grpo(AdvantageInput(scores=scores, response_mask=torch.ones(4, 1), group_ids=["forget"] * 4,
                                         valid=torch.ones(4, dtype=torch.bool)), cfg.algorithm).advantages[:, 0]
    assert torch.allclose(per_row[:4], episodes_alone, atol=1e-5)
    assert torch.allclose(per_row[4:], episodes_alone, atol=1e-5)  # each segment row: its episode's advantage

    batch.extras["advantages"] = adv.advantages * batch.response_mask
    batch.extras["old_logprobs"] = old
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    stats = update_policy(model, optimizer, batch, cfg, kl_coef=0.0, seed=0)
    assert stats["actor/grad_norm"] > 0
    new = batched_logprobs(model, batch, 8, 1.0)
    change = ((new - old) * batch.response_mask).sum(-1)  # summed logprob change of each row's sampled tokens
    # the earlier segments moved with their episode's advantage: up where it is positive, down where negative
    seg_adv, seg_change = per_row[4:], change[4:]
    assert float((seg_adv * seg_change).sum()) > 0, (seg_adv.tolist(), seg_change.tolist())
    for a, c in zip(seg_adv.tolist(), seg_change.tolist()):
        if abs(a) > 0.5:
            assert (a > 0) == (c > 0), (seg_adv.tolist(), seg_change.tolist())
