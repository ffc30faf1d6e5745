"""The toolrl entry point of toolrl-rewards-math: registers `gsm8k_exact` and `math_equiv`."""

from toolrl import hookimpl

from toolrl_rewards_math.rewards import gsm8k_exact, math_equiv


@hookimpl
def register_rewards(register):
    register("gsm8k_exact", gsm8k_exact)
    register("math_equiv", math_equiv)
