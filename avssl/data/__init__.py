"""Decoding, clips, transforms, collections and datasets (knows nothing of models)."""
