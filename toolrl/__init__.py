"""toolrl: train tool-using language-model agents with RL, and serve them.

Import cost is kept low: torch, transformers, Ray and the engines load only
where they are used.
"""

from toolrl.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl", "train"]


def train(config, overrides=(), plugins=()):
    """Run training from a Config, a dict, or a YAML path (see docs/user-guide.md).

    `plugins`: plugin objects or modules registered in the driver and in every worker process.
    """
    from toolrl.trainer.api import train as _train

    return _train(config, overrides, plugins)
