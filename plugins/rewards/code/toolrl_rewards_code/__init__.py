"""toolrl-rewards-code: the `code_pass_rate` reward, run in the toolrl sandbox.

Importing this package does not import docker or start anything; the sandbox
pool starts on the reward's first call.
"""

from toolrl_rewards_code.extract import code_blocks, extract_code, without_main_guard
from toolrl_rewards_code.pools import close_pools, get_pool, live_pools
from toolrl_rewards_code.rewards import code_pass_rate

__version__ = "0.1.0"
__all__ = ["close_pools", "code_blocks", "code_pass_rate", "extract_code", "get_pool", "live_pools",
           "without_main_guard"]
