"""A model-based reward: BERTScore-style F1 with a local embedding model.

The model (all-MiniLM-L6-v2 by default, from `toolrl.models.resolve_embedding_model`)
is loaded once per process and cached; every later call reuses it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from toolrl.errors import RewardError

from toolrl_rewards_text.overlap import references

logger = logging.getLogger(__name__)

_MODELS: dict[str, tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def load_embedding_model(name_or_path: str = "all-minilm-l6-v2") -> tuple[Any, Any]:
    """(tokenizer, model) for a packaged embedding model name or a local folder; cached per process."""
    from toolrl.models import resolve_embedding_model

    path = str(resolve_embedding_model(name_or_path))
    with _LOCK:
        if path not in _MODELS:
            from transformers import AutoModel, AutoTokenizer

            logger.info("loading embedding model %s (once per process)", path)
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path).eval()
            _MODELS[path] = (tok, model)
        return _MODELS[path]


def token_embeddings(texts: Sequence[str], tok: Any, model: Any, batch_size: int = 32,
                     max_length: int = 256) -> list[Any]:
    """Unit-length contextual embeddings of each text's tokens (special tokens dropped)."""
    import torch

    out: list[Any] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        enc = tok(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                  return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask").bool()
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        keep = enc["attention_mask"].bool() & ~special
        for i in range(len(chunk)):
            out.append(torch.nn.functional.normalize(hidden[i][keep[i]].float(), dim=-1))
    return out


def _f1(cand: Any, ref: Any) -> float:
    if cand.shape[0] == 0 or ref.shape[0] == 0:
        return 0.0
    sim = cand @ ref.T
    precision = sim.max(dim=1).values.mean().item()
    recall = sim.max(dim=0).values.mean().item()
    if precision + recall <= 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def bertscore_f1(
    trajectories: Sequence[Any],
    *,
    completions: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    tasks: Sequence[Any],
    reference_key: str = "reference",
    model: str = "all-minilm-l6-v2",
    baseline: float = 0.0,
    batch_size: int = 32,
) -> list[float]:
    """BERTScore-style F1 between the final answer and the reference, with a local embedding model.

    Each token of the answer is matched to its most similar reference token
    (cosine of contextual embeddings) and vice versa; precision and recall are the
    mean best similarities, and the reward is their harmonic mean. With several
    references the best F1 counts. Raw scores of unrelated sentences are well
    above 0 (around 0.3–0.5 with MiniLM); `baseline` rescales them:
    `(f1 - baseline) / (1 - baseline)`, clipped at 0.

    Args:
        trajectories: the batch (toolrl passes it positionally).
        completions: the final assistant message of each trajectory (passed by toolrl).
        metadata: each task's metadata; `metadata[reference_key]` is the reference (passed by toolrl).
        tasks: each trajectory's task, to name it in errors (passed by toolrl).
        reference_key: the metadata key of the reference (a string or a list of strings).
        model: an embedding model name known to `toolrl.models` (`all-minilm-l6-v2`) or a local
            Hugging Face folder; loaded once per process.
        baseline: score of unrelated text, subtracted and rescaled away (0: raw F1).
        batch_size: texts per forward pass.

    Returns:
        One float per trajectory in [0, 1]; 0.0 for an empty answer.

    Example:
        ```yaml
        rewards:
          - {name: bertscore_f1, weight: 0.5, args: {baseline: 0.3}}
        ```
        "The parcel will arrive on Monday." against "Your package arrives Monday." scores
        far higher than "I like turtles." does.
    """
    if not 0.0 <= baseline < 1.0:
        raise RewardError(f"bertscore_f1: baseline must be in [0, 1), got {baseline}", where="rewards[].args.baseline",
                          fix="use 0 (raw F1) or the score of unrelated text, e.g. 0.3")
    refs = [references(meta, reference_key, task, "bertscore_f1") for meta, task in zip(metadata, tasks)]
    texts = [(c or "").strip() for c in completions]
    tok, enc_model = load_embedding_model(model)
    flat_refs = [r for rs in refs for r in rs]
    cand_emb = token_embeddings([t or "." for t in texts], tok, enc_model, batch_size)
    ref_emb = token_embeddings(flat_refs, tok, enc_model, batch_size)
    out, k = [], 0
    for text, cand, rs in zip(texts, cand_emb, refs):
        best = max(_f1(cand, ref_emb[k + j]) for j in range(len(rs))) if text else 0.0
        k += len(rs)
        if baseline:
            best = (best - baseline) / (1.0 - baseline)
        out.append(float(min(1.0, max(0.0, best))))
    return out
