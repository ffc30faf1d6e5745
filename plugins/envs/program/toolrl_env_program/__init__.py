"""toolrl-env-program: train agent programs you already wrote (plain `openai` clients) with toolrl.

`env: program` runs `run(client, task)` for every episode against a loopback
OpenAI-compatible endpoint in front of the rollout backend and records its
calls as token-exact trajectories. See README.md and docs/environments.md.
"""

__version__ = "0.1.0"
