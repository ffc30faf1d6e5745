"""toolrl-rewards-text: text rewards for toolrl.

Rewards (registered through the `toolrl` entry point, see `plugin.py`):
    format_tool_call      well-formed tool calls (the trajectory's own parse counters)
    format_answer_tag     exactly one non-empty <answer>...</answer>
    reasoning_connectors  "because … therefore"-style connectors, per phrase
    length_penalty        a penalty per N characters (or tokens) over a limit
    bleu2                 sentence BLEU-2 against a reference (sacrebleu)
    keyword_recall        fraction of keywords mentioned
    bertscore_f1          BERTScore F1 (the bert-score library) with a local embedding model (MiniLM)

Importing this package does not import torch or bert-score; `bertscore_f1` loads them on first use.
"""

from toolrl_rewards_text.format import format_answer_tag, format_tool_call
from toolrl_rewards_text.model_based import bertscore_f1
from toolrl_rewards_text.overlap import bleu2, keyword_recall
from toolrl_rewards_text.shaping import DEFAULT_CONNECTORS, length_penalty, reasoning_connectors

__version__ = "0.1.0"
__all__ = ["DEFAULT_CONNECTORS", "bertscore_f1", "bleu2", "format_answer_tag", "format_tool_call", "keyword_recall",
           "length_penalty", "reasoning_connectors"]
