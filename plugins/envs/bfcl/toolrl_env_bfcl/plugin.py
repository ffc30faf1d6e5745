"""toolrl hooks of toolrl-env-bfcl: the `bfcl` environment and suite, and the `bfcl_ast`, `bfcl_state` and `bfcl` rewards."""

from toolrl import hookimpl


@hookimpl
def register_environments(register):
    from toolrl_env_bfcl.env import bfcl_env

    register("bfcl", bfcl_env)


@hookimpl
def register_task_suites(register):
    from toolrl_env_bfcl.suite import make_bfcl_tasks

    register("bfcl", make_bfcl_tasks)


@hookimpl
def register_rewards(register):
    from toolrl_env_bfcl.rewards import bfcl, bfcl_ast, bfcl_state

    register("bfcl_ast", bfcl_ast)
    register("bfcl_state", bfcl_state)
    register("bfcl", bfcl)
