"""Memory bank and contrastive losses (knows nothing of the training loop)."""
