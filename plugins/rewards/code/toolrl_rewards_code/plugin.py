"""The toolrl entry point of toolrl-rewards-code: registers `code_pass_rate`."""

from toolrl import hookimpl

from toolrl_rewards_code.rewards import code_pass_rate


@hookimpl
def register_rewards(register):
    register("code_pass_rate", code_pass_rate)
