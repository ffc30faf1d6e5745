"""`algorithm.objective: sft`: supervised fine-tuning on conversations, loss on assistant tokens only.

    toolrl data sft --config examples/sft/config.yaml --model qwen2.5-coder-0.5b-instruct \\
        --tasks data/arith_train.jsonl --n 4 --out data/arith_sft.jsonl     # rejection-sampled conversations
    toolrl train --config examples/sft/config.yaml

Each conversation is encoded by `conversations.encode_conversation` (the RL
rollout's chat template and loss masks), padded by the RL `build_batch`, and
scored by the RL forward pass (`response_logprobs`); the loss is the negative
log-likelihood of the masked tokens (`toolrl.algorithms.preference.sft_loss`)
aggregated with `algorithm.loss_agg` over the whole step, so micro-batching
does not change the gradient. Metrics: `sft/loss`, `sft/tokens`,
`sft/token_p_over_half` (share of assistant tokens the model gives probability
above 1/2), `sft/examples`, `sft/grad_norm`, `sft/lr`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from toolrl.algorithms.losses import agg_denominator, loss_norm_len, masked_mean
from toolrl.algorithms.preference import sft_loss
from toolrl.trainer.offline import OfflineResult, run_offline


class SFTObjective:
    name = "sft"

    def __init__(self, cfg: Any, model: Any, model_path: str):
        self.cfg = cfg
        self.pad_token_id = 0

    def encode(self, tokenizer: Any, path: str) -> list[Any]:
        from toolrl.trainer.conversations import encode_conversation, load_conversations

        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        return [encode_conversation(tokenizer, c.messages, c.tools, example_id=c.id) for c in load_conversations(path)]

    def step(self, model: Any, examples: Sequence[Any], indices: Sequence[int]) -> dict[str, float]:
        from toolrl.trainer.batch import build_batch
        from toolrl.trainer.forward import response_logprobs

        cfg = self.cfg
        alg = cfg.algorithm
        norm_len = loss_norm_len(cfg)
        trajs = [examples[i] for i in indices]
        batch = build_batch(trajs, [str(i) for i in indices], [True] * len(trajs), self.pad_token_id)
        denominator = agg_denominator(batch.response_mask, alg.loss_agg, norm_len)
        device = next(model.parameters()).device
        total, confident, tokens = 0.0, 0.0, 0.0
        for micro in batch.split(cfg.trainer.micro_batch_size):
            micro = micro.trimmed().to(device)
            logprobs, _ = response_logprobs(model, micro, 1.0, share_prompt=cfg.trainer.share_prompt,
                                            logits_chunk=cfg.trainer.logits_chunk)
            loss = sft_loss(logprobs, micro.response_mask, alg.loss_agg, denominator, norm_len)
            loss.backward()
            total += float(loss.detach())
            n = float(micro.response_mask.sum())
            tokens += n
            confident += float(masked_mean((logprobs.detach() > -0.6931).float(), micro.response_mask)) * n
        return {"sft/loss": total, "sft/tokens": tokens, "sft/token_p_over_half": confident / max(tokens, 1.0),
                "sft/examples": float(len(trajs))}


def train_sft(cfg: Any) -> OfflineResult:
    """Run SFT with `cfg` (its `algorithm.objective` must be "sft")."""
    return run_offline(cfg, SFTObjective)
