# Sourced at the start of every command on the GPU machine, from the snapshot folder (.gpu_snapshot/, a
# `git archive` of HEAD): the carried wheels in /root/site, toolrl and its plugins from the snapshot.
export PYTHONPATH=/root/site:$PWD:$PWD/sandbox/src:$PWD/plugins/envs/code:$PWD/plugins/rewards/math
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOOLRL_CACHE=/root/toolrl-cache
export TOOLRL_NO_ENTRYPOINTS=1 TOOLRL_GPU_TOKENIZER=/root/qwen_tok
mkdir -p "${OUT:-/tmp/out}"
