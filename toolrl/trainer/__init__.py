"""The training loop, its Ray workers, batches, losses and checkpoints."""
