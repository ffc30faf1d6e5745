"""toolrl-rewards-model: model-based rewards for toolrl.

Rewards (registered through the `toolrl` entry point, see `plugin.py`):
    reward_model   a sequence-classification checkpoint scores (prompt, completion), batched,
                   in this process or in its own Ray actor
    llm_judge      an LLM behind any OpenAI-compatible endpoint (`toolrl serve` too) grades
                   the answer with a rubric; the score is parsed from its reply

BERTScore is `bertscore_f1` in toolrl-rewards-text (through the bert-score library).
Importing this package imports neither torch nor httpx; the rewards load them on first use.
"""

from toolrl_rewards_model.judge import DEFAULT_RUBRIC, DEFAULT_SCORE_REGEX, judge_stats, llm_judge
from toolrl_rewards_model.classifier import reward_model

__version__ = "0.1.0"
__all__ = ["DEFAULT_RUBRIC", "DEFAULT_SCORE_REGEX", "judge_stats", "llm_judge", "reward_model"]
