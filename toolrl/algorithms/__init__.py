"""The RL algorithms as plain tensor functions: advantage estimators, policy and
value losses, KL estimators and controllers. No models, no Ray: every function
takes tensors and returns tensors, so each one is tested against a formula."""
