"""The toolrl entry point of toolrl-rewards-model: registers `reward_model` and `llm_judge`."""

from toolrl import hookimpl

from toolrl_rewards_model.judge import llm_judge
from toolrl_rewards_model.classifier import reward_model

REWARDS = {
    "reward_model": reward_model,
    "llm_judge": llm_judge,
}


@hookimpl
def register_rewards(register):
    for name, fn in REWARDS.items():
        register(name, fn)
