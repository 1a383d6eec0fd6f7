"""Training loops, evaluation and checkpoints (the only layer that wires data, models and losses)."""
