"""Evaluation: accuracy, unbiased pass@k, mean reward and diversity, with prompts rendered by the
training code path (the agent loop's `render_prompt`). `toolrl eval` is `cli.eval_command`;
`python -m toolrl.evaluation compare A.json B.json` prints a before/after table."""
