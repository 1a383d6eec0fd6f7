"""avssl: audio-visual self-supervised learning (AVID, CMA), fine-tuning and sound localization."""

__version__ = "0.1.0"
