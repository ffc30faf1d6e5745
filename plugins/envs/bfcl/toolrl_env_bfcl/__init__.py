"""toolrl-env-bfcl: Berkeley Function-Calling Leaderboard tasks, environment and rewards for toolrl.

Single-turn questions scored by AST match (`bfcl_ast`); multi-turn
conversations run against BFCL's simulated APIs in-process and scored by final
state (`bfcl_state`). See README.md.
"""

__version__ = "0.1.0"
