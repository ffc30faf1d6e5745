"""Built-in rollout backends: hf (default, CPU/GPU), vllm and sglang (GPU, optional extras).

Each factory imports its engine only when called, so `toolrl` imports without them."""

from toolrl.hookspecs import hookimpl


def hf_backend(settings):
    from toolrl.rollout.hf_backend import HFBackend

    return HFBackend(settings)


def vllm_backend(settings):
    from toolrl.rollout.vllm_backend import VLLMBackend

    return VLLMBackend(settings)


def sglang_backend(settings):
    from toolrl.rollout.sglang_backend import SGLangBackend

    return SGLangBackend(settings)


@hookimpl
def register_rollout_backends(register):
    register("hf", hf_backend)
    register("vllm", vllm_backend)
    register("sglang", sglang_backend)
