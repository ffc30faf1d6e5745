"""Built-in metric sinks: console (rich progress), jsonl, csv, tensorboard, wandb, mlflow."""

from toolrl.hookspecs import hookimpl


def console(run_dir):
    from toolrl.metrics.sinks import ConsoleSink

    return ConsoleSink(run_dir)


def jsonl(run_dir):
    from toolrl.metrics.sinks import JsonlSink

    return JsonlSink(run_dir)


def csv(run_dir):
    from toolrl.metrics.sinks import CsvSink

    return CsvSink(run_dir)


def tensorboard(run_dir):
    from toolrl.metrics.sinks import TensorBoardSink

    return TensorBoardSink(run_dir)


def wandb(run_dir):
    from toolrl.metrics.tracking import WandbSink

    return WandbSink(run_dir)


def mlflow(run_dir):
    from toolrl.metrics.tracking import MlflowSink

    return MlflowSink(run_dir)


@hookimpl
def register_metric_sinks(register):
    register("console", console)
    register("jsonl", jsonl)
    register("csv", csv)
    register("tensorboard", tensorboard)
    register("wandb", wandb)
    register("mlflow", mlflow)
