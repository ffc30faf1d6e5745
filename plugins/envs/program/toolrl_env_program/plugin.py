"""toolrl hooks of toolrl-env-program: the `program` environment and the `result_match` reward."""

from toolrl import hookimpl


@hookimpl
def register_environments(register):
    from toolrl_env_program.driver import ProgramDriver

    register("program", ProgramDriver())


@hookimpl
def register_rewards(register):
    from toolrl_env_program.rewards import result_match

    register("result_match", result_match)
