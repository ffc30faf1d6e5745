"""toolrl hooks of toolrl-env-code: the `python` environment and the `arith-tool`, `gsm` and `code` suites."""

from toolrl import hookimpl


@hookimpl
def register_environments(register):
    from toolrl_env_code.env import python_env

    register("python", python_env)


@hookimpl
def register_task_suites(register):
    from toolrl_env_code.arith import make_arith_tasks
    from toolrl_env_code.code_suite import make_code_tasks
    from toolrl_env_code.gsm import make_gsm_tasks

    register("arith-tool", make_arith_tasks)
    register("gsm", make_gsm_tasks)
    register("code", make_code_tasks)
