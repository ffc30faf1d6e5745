"""`algorithm.objective: dpo`: direct preference optimisation on chosen/rejected pairs, against the frozen start.

    toolrl data dpo --config examples/dpo/config.yaml --model qwen2.5-coder-0.5b-instruct \\
        --tasks data/arith_train.jsonl --n 4 --out data/arith_pairs.jsonl   # best vs worst sample per prompt
    toolrl train --config examples/dpo/config.yaml

Each pair is encoded by `conversations.encode_pair` (the RL chat template and
loss masks: only assistant tokens count), the chosen and the rejected
sequence side by side so that the forward pass runs their shared prompt once.
The reference is the model as loaded (with LoRA: the same model with the
adapters disabled, no copy; otherwise a frozen copy); its sequence
log-probabilities are computed once per pair and cached. The loss is
`toolrl.algorithms.preference.dpo_loss` with `algorithm.dpo_beta` and
`algorithm.dpo_loss` (sigmoid, ipo, hinge), averaged over the step's pairs.
Metrics: `dpo/loss`, `dpo/reward_chosen`, `dpo/reward_rejected`,
`dpo/accuracy`, `dpo/margin`, `dpo/grad_norm`, `dpo/lr`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from toolrl.algorithms.preference import dpo_loss, sequence_logprobs
from toolrl.trainer.offline import OfflineResult, run_offline


class DPOObjective:
    name = "dpo"

    def __init__(self, cfg: Any, model: Any, model_path: str):
        from toolrl.trainer.modeling import is_peft, load_causal_lm

        self.cfg = cfg
        self.pad_token_id = 0
        self.ref_cache: dict[int, tuple[float, float]] = {}
        # with LoRA the reference is the base (adapters off); otherwise a frozen copy of the start
        self.reference = None if is_peft(model) else load_causal_lm(
            model_path, cfg.model.dtype, next(model.parameters()).device, trainable=False)

    def encode(self, tokenizer: Any, path: str) -> list[Any]:
        from toolrl.trainer.conversations import encode_pair, load_pairs

        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        return [encode_pair(tokenizer, p) for p in load_pairs(path)]

    def _seq_logprobs(self, model: Any, pairs: Sequence[Any], grad: bool) -> torch.Tensor:
        """`[P, 2]` sums of assistant-token logprobs of (chosen, rejected) per pair."""
        from toolrl.trainer.batch import build_batch
        from toolrl.trainer.forward import response_logprobs

        trajs = [t for pair in pairs for t in pair]
        batch = build_batch(trajs, [str(i // 2) for i in range(len(trajs))], [True] * len(trajs), self.pad_token_id)
        batch = batch.trimmed().to(next(model.parameters()).device)
        with torch.set_grad_enabled(grad):
            logprobs, _ = response_logprobs(model, batch, 1.0, share_prompt=self.cfg.trainer.share_prompt,
                                          logits_chunk=self.cfg.trainer.logits_chunk)
            return sequence_logprobs(logprobs, batch.response_mask).view(-1, 2)

    def _reference(self, model: Any, examples: Sequence[Any], idx: Sequence[int]) -> torch.Tensor:
        missing = [i for i in idx if i not in self.ref_cache]
        if missing:
            from contextlib import nullcontext

            ref_model = self.reference if self.reference is not None else model
            ctx = model.disable_adapter() if self.reference is None else nullcontext()
            with ctx:
                lp = self._seq_logprobs(ref_model, [examples[i] for i in missing], grad=False)
            for i, row in zip(missing, lp.tolist()):
                self.ref_cache[i] = (row[0], row[1])
        return torch.tensor([self.ref_cache[i] for i in idx], dtype=torch.float32)

    def step(self, model: Any, examples: Sequence[Any], indices: Sequence[int]) -> dict[str, float]:
        alg = self.cfg.algorithm
        n = len(indices)
        sums = {"dpo/loss": 0.0, "dpo/reward_chosen": 0.0, "dpo/reward_rejected": 0.0, "dpo/accuracy": 0.0,
                "dpo/margin": 0.0}
        size = self.cfg.trainer.micro_batch_size
        for start in range(0, n, size):
            idx = list(indices[start : start + size])
            ref = self._reference(model, examples, idx)
            pol = self._seq_logprobs(model, [examples[i] for i in idx], grad=True)
            losses, stats = dpo_loss(pol[:, 0], pol[:, 1], ref[:, 0].to(pol.device), ref[:, 1].to(pol.device),
                                     beta=alg.dpo_beta, kind=alg.dpo_loss)
            loss = losses.sum() / n  # the mean over the step's pairs, accumulated over micro-batches
            loss.backward()
            w = len(idx) / n
            sums["dpo/loss"] += float(loss.detach())
            sums["dpo/reward_chosen"] += stats.reward_chosen * w
            sums["dpo/reward_rejected"] += stats.reward_rejected * w
            sums["dpo/accuracy"] += stats.accuracy * w
            sums["dpo/margin"] += stats.margin * w
        sums["dpo/pairs"] = float(n)
        return sums


def train_dpo(cfg: Any) -> OfflineResult:
    """Run DPO with `cfg` (its `algorithm.objective` must be "dpo")."""
    return run_offline(cfg, DPOObjective)
