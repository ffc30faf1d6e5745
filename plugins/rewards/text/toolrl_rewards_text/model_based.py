"""BERTScore F1 through the `bert-score` library, with a local embedding model (no model hub).

`bert_score.BERTScorer` takes a local folder as `model_type` and loads it with
`AutoModel.from_pretrained`, so the packaged all-MiniLM-L6-v2
(`toolrl.models.resolve_embedding_model`) works offline. The scorer is created
once per process per (model folder, layer, device) and reused by every call.
This replaced a hand-written approximation of the same greedy matching.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from toolrl.errors import RewardError

from toolrl_rewards_text.overlap import references

logger = logging.getLogger(__name__)

_MODELS: dict[tuple[str, int, str], Any] = {}  # (folder, num_layers, device) -> bert_score.BERTScorer
_LOCK = threading.Lock()
WHERE = "rewards[name=bertscore_f1].args"


def load_scorer(name_or_path: str = "all-minilm-l6-v2", num_layers: int | None = None, device: str = "cpu") -> Any:
    """A `bert_score.BERTScorer` for a packaged embedding model name or a local folder; cached per process.

    `num_layers` None uses the model's last layer (`config.num_hidden_layers`).
    """
    import json
    from pathlib import Path

    from toolrl.models import resolve_embedding_model

    path = str(resolve_embedding_model(name_or_path))
    depth = json.loads((Path(path) / "config.json").read_text()).get("num_hidden_layers")
    layers = depth if num_layers is None else num_layers
    if not isinstance(layers, int) or not 1 <= layers <= (depth or layers):
        raise RewardError(f"bertscore_f1: num_layers must be between 1 and {depth} for {path!r}, got {num_layers!r}",
                          where=f"{WHERE}.num_layers", fix=f"leave it unset (the last layer, {depth}) or pick 1..{depth}")
    key = (path, layers, device)
    with _LOCK:
        if key not in _MODELS:
            from bert_score import BERTScorer

            logger.info("loading BERTScore model %s (layer %d, %s; once per process)", path, layers, device)
            _MODELS[key] = BERTScorer(model_type=path, num_layers=layers, device=device)
        return _MODELS[key]


def bertscore_f1(
    trajectories: Sequence[Any],
    *,
    completions: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    tasks: Sequence[Any],
    reference_key: str = "reference",
    model: str = "all-minilm-l6-v2",
    num_layers: int | None = None,
    device: str = "cpu",
    baseline: float = 0.0,
    batch_size: int = 32,
) -> list[float]:
    """BERTScore F1 (the `bert-score` library) between the final answer and the reference.

    Each token of the answer is matched to its most similar reference token
    (cosine of contextual embeddings from layer `num_layers`) and vice versa;
    precision and recall are the mean best similarities, F1 their harmonic mean
    (no IDF weighting). With several references the best F1 counts. Raw scores of
    unrelated sentences are above 0 (0.14 on average with MiniLM, 90% below
    0.27; paraphrases 0.67-0.97); `baseline` rescales them: `(f1 - baseline) / (1 - baseline)`, clipped to [0, 1].

    Args:
        trajectories: the batch (toolrl passes it positionally).
        completions: the final assistant message of each trajectory (passed by toolrl).
        metadata: each task's metadata; `metadata[reference_key]` is the reference (passed by toolrl).
        tasks: each trajectory's task, to name it in errors (passed by toolrl).
        reference_key: the metadata key of the reference (a string or a list of strings).
        model: an embedding model name known to `toolrl.models` (`all-minilm-l6-v2`) or a local
            Hugging Face folder; loaded once per process.
        num_layers: the layer whose embeddings are compared (unset: the last one).
        device: the torch device (`cpu`, `cuda`, ...).
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
        raise RewardError(f"bertscore_f1: baseline must be in [0, 1), got {baseline}", where=f"{WHERE}.baseline",
                          fix="use 0 (raw F1) or the score of unrelated text, e.g. 0.3")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise RewardError(f"bertscore_f1: batch_size must be a positive integer, got {batch_size!r}",
                          where=f"{WHERE}.batch_size", fix="use e.g. 32")
    refs = [references(meta, reference_key, task, "bertscore_f1") for meta, task in zip(metadata, tasks)]
    texts = [(c or "").strip() for c in completions]
    out = [0.0] * len(texts)
    scored = [i for i, t in enumerate(texts) if t]
    if not scored:
        return out
    scorer = load_scorer(model, num_layers, device)
    with _LOCK:  # one scoring pass at a time per process (the scorer is shared)
        _, _, f1 = scorer.score([texts[i] for i in scored], [list(refs[i]) for i in scored], batch_size=batch_size)
    for i, f in zip(scored, f1.tolist()):
        if baseline:
            f = (f - baseline) / (1.0 - baseline)
        out[i] = float(min(1.0, max(0.0, f)))
    return out
