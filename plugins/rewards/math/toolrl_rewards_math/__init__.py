"""toolrl-rewards-math: final-answer extraction and math equivalence rewards for toolrl.

Rewards (registered through the `toolrl` entry point, see `plugin.py`):
    gsm8k_exact  the number after `####` equals the ground truth (GSM8K recipe)
    math_equiv   the final answer is numerically or symbolically equivalent (math-verify / SymPy)
"""

from toolrl_rewards_math.equivalence import answers_equal, normalize_answer, numbers_equal, parse_number
from toolrl_rewards_math.extract import METHODS, extract_answer
from toolrl_rewards_math.rewards import gsm8k_exact, math_equiv

__version__ = "0.1.0"
__all__ = ["METHODS", "answers_equal", "extract_answer", "gsm8k_exact", "math_equiv", "normalize_answer",
           "numbers_equal", "parse_number"]
