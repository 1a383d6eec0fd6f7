"""avssl: audio-visual self-supervised learning (AVID, CMA), fine-tuning and sound localization."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_pretrained"]


def load_pretrained(path, device="cpu"):
    """The :class:`~avssl.models.avmodel.AVModel` of a pretraining checkpoint (``avssl pretrain``'s ``last.pt``,
    or a file written by ``avssl import avid-cma``), in eval mode: ``embed_video``, ``spectrogram`` and
    ``embed_audio`` as the checkpoint was trained."""
    from .train.pretrain import load_pretrained as _load

    return _load(path, device)
