"""Encoders and heads (knows nothing of losses or training)."""
