"""Rollout: the agent loop (`agent_loop.run_episodes`) and the generation backends.

- `base`: the `RolloutBackend` protocol, `SamplingParams`, `GenerationRequest/Result`,
  `StreamChunk`, `BackendSettings`, `QueueFullError`, `PromptTooLongError`.
- `agent_loop`: `run_episodes`, `run_episodes_sync`, `LoopSettings`, `derive_seed`.
- `hf_backend` (+ `hf_engine`, `hf_cache`, `sampling`): the default transformers backend.
- `vllm_backend`, `sglang_backend`: the engines, imported only when selected.
- `testing`: `teacher_forced_logprobs`, `ForcedTurnsBackend`, `turn_of`.

Nothing heavy is imported here; import the submodules.
"""
