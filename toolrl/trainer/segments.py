"""Every segment of an agent-program episode as a training row, sharing the episode's advantage.

An agent program (`env: program`) that edits or drops earlier messages makes a
prompt that does not extend what was sampled before, so its episode is several
token sequences (`toolrl.rollout.program_record`): the trajectory itself (the
segment of the last call) and the earlier `Trajectory.segments`. Each one was
generated exactly as recorded, so each is correct training data on its own; the
episode has one reward. The step therefore:

1. `segment_rows`: one row per episode (the trajectories, in order), then one row
   per earlier segment, each carrying its episode's group id, validity and weight
   version. The batch, the reference/critic/old-logprob passes and the update run
   over all rows, so every segment's tokens get the same treatment (KL in the loss,
   clipping, importance ratios) as any trajectory's.
2. `episode_advantages`: the estimator sees the episodes only (one score each,
   groups as usual; with `algorithm.kl_in=reward` the KL penalty of an episode's
   earlier segments is added to its score, as the penalty of its own tokens is),
   and every earlier segment gets its episode's advantage on its sampled tokens.

For outcome estimators (grpo, dr_grpo, rloo, and reinforce_pp /
reinforce_pp_baseline without a per-token KL penalty) an episode's advantage is
one number on every sampled token, so every segment is trained exactly as if the
episode were one sequence. Where the estimator gives different advantages along
a response (a per-token KL penalty in the reward, `gamma < 1`), the earlier
segments get the mean over the last segment's sampled tokens (a warning says so).
A critic-based estimator (`ppo`/GAE) would need values and bootstrapping across
segment boundaries: it raises a `ToolrlError` at the first step where an episode
has segments. Without segments both functions are the identity: the step is
unchanged for every other environment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from toolrl.algorithms.advantages import AdvantageInput, AdvantageOutput
from toolrl.algorithms.spec import estimator_needs
from toolrl.errors import ToolrlError
from toolrl.types import Segment, Trajectory

logger = logging.getLogger(__name__)

_warned_token_level = False


@dataclass(frozen=True)
class EpisodeRows:
    """The step's training rows: the episodes first (same order as the trajectories), then their earlier segments.

    Attributes:
        trajectories: one per row; rows `num_episodes..` are earlier segments as trajectories.
        group_ids, valid: per row; a segment row has its episode's.
        episode: per row, the index of the episode (its own row) it belongs to.
        num_episodes: the number of trajectories the rollout returned.
    """

    trajectories: tuple[Trajectory, ...]
    group_ids: tuple[str, ...]
    valid: tuple[bool, ...]
    episode: tuple[int, ...]
    num_episodes: int

    @property
    def has_segments(self) -> bool:
        return len(self.trajectories) > self.num_episodes

    def __len__(self) -> int:
        return len(self.trajectories)


def segment_trajectory(episode: Trajectory, segment: Segment) -> Trajectory:
    """An earlier segment of `episode` as a trajectory row: its own token sequence, the episode's identity.

    Messages, tool calls, result and timing stay with the episode's own row (rewards and logs read those)."""
    return Trajectory(
        task_id=episode.task_id, sample_index=episode.sample_index, prompt_ids=segment.prompt_ids,
        response_ids=segment.response_ids, loss_mask=segment.loss_mask, logprobs=segment.logprobs, messages=(),
        num_prompt_messages=0, finish_reason=episode.finish_reason, num_turns=0,
        infra_error=episode.infra_error, weight_version=episode.weight_version)


def segment_rows(trajectories: Sequence[Trajectory], group_ids: Sequence[str], valid: Sequence[bool]) -> EpisodeRows:
    """The episodes' rows, then one row per earlier segment (episode order, then segment order)."""
    n = len(trajectories)
    if len(group_ids) != n or len(valid) != n:
        raise ToolrlError(f"segment_rows needs one group id and one validity per trajectory: got {n} trajectories, "
                          f"{len(group_ids)} group ids, {len(valid)} validity flags",
                          where="toolrl.trainer.segments.segment_rows", fix="pass lists aligned with the trajectories")
    rows = list(trajectories)
    groups, ok, episode = list(group_ids), [bool(v) for v in valid], list(range(n))
    for i, t in enumerate(trajectories):
        for seg in t.segments:
            rows.append(segment_trajectory(t, seg))
            groups.append(group_ids[i])
            ok.append(bool(valid[i]))
            episode.append(i)
    return EpisodeRows(tuple(rows), tuple(groups), tuple(ok), tuple(episode), n)


def segment_metrics(rows: EpisodeRows) -> dict[str, float]:
    """rollout/segments_per_episode (1.0 when no program rewrote its history) and rollout/segment_rows."""
    if not rows.num_episodes:
        return {}
    return {"rollout/segments_per_episode": len(rows) / rows.num_episodes,
            "rollout/segment_rows": float(len(rows) - rows.num_episodes)}


def _name(estimator: Any) -> str:
    return getattr(estimator, "__name__", type(estimator).__name__)


def episode_advantages(estimator: Callable[[AdvantageInput, Any], AdvantageOutput], inp: AdvantageInput,
                       config: Any, rows: EpisodeRows) -> AdvantageOutput:
    """Advantages `[rows, T]` for every row of `rows` (see the module doc).

    `inp` holds the step's tensors over all rows (`response_mask`, `valid`, `token_rewards`, `values`:
    `[rows, ...]`); `inp.scores` and `inp.group_ids` may be per episode or per row (only the episodes'
    entries are read). Without segments this is `estimator(inp, config)`.

    Raises:
        ToolrlError: an episode has segments and the estimator needs a critic.
    """
    E, N = rows.num_episodes, len(rows)
    if inp.response_mask.shape[0] != N:
        raise ToolrlError(f"the batch has {inp.response_mask.shape[0]} rows but the episodes make {N}",
                          where="toolrl.trainer.segments.episode_advantages",
                          fix="build the batch from segment_rows(...).trajectories")
    if not rows.has_segments:
        return estimator(inp, config)
    name = _name(estimator)
    if estimator_needs(estimator).critic:
        raise ToolrlError(
            f"{N - E} earlier segment(s) of agent-program episodes cannot be trained with the critic-based "
            f"advantage estimator {name!r}: its values and bootstrapping do not carry across a segment boundary "
            "(the program rewrote its message history)",
            where="algorithm.advantage", fix="use an outcome estimator (grpo, rloo, dr_grpo, reinforce_pp) with "
            "env: program, or make the program only append to its conversation (then every episode is one segment)")
    mask = inp.response_mask
    episode = torch.tensor(rows.episode[E:], dtype=torch.long)
    scores = inp.scores[:E].to(torch.float32).clone()
    token_rewards = None
    if inp.token_rewards is not None:  # the earlier segments' per-token penalty belongs to the episode's score
        seg_sums = (inp.token_rewards[E:] * mask[E:]).sum(-1).to(torch.float32)
        scores.index_add_(0, episode, seg_sums)
        token_rewards = inp.token_rewards[:E]
    own = replace(inp, scores=scores, response_mask=mask[:E], group_ids=list(inp.group_ids[:E]), valid=inp.valid[:E],
                  token_rewards=token_rewards, values=None)
    out = estimator(own, config)
    adv_e = out.advantages.to(torch.float32) * mask[:E].to(torch.float32)
    m = mask[:E].to(torch.float32)
    per_episode = adv_e.sum(-1) / m.sum(-1).clamp(min=1.0)
    spread = (adv_e - per_episode.unsqueeze(-1)).abs() * m
    global _warned_token_level
    if float(spread.max()) > 1e-5 and not _warned_token_level:
        _warned_token_level = True
        logger.warning("the advantage estimator %r gives different advantages along a response; the earlier "
                       "segments of agent-program episodes get their episode's mean advantage "
                       "(docs/environments.md, 'Segments')", name)
    full = torch.zeros(mask.shape, dtype=adv_e.dtype)
    full[:E] = adv_e
    full[E:] = per_episode[episode].unsqueeze(-1) * mask[E:].to(torch.float32)
    return AdvantageOutput(full.to(out.advantages.dtype))
