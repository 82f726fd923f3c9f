"""fusionedge.training: encoders, fusions, heads, the training loop and checkpoints (torch)."""
