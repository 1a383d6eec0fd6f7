"""avssl: audio-visual self-supervised learning (AVID, CMA), fine-tuning and sound localization."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["embed", "load_pretrained"]


def load_pretrained(path, device="cpu"):
    """The :class:`~avssl.models.avmodel.AVModel` of a pretraining checkpoint (``avssl pretrain``'s ``last.pt`` or its
    run folder, a file written by ``avssl import``, or a released model's name: ``avid-cma-audioset``, fetched once;
    ``avssl models`` lists them), in eval mode: ``embed_video``, ``spectrogram`` and ``embed_audio`` as the
    checkpoint was trained."""
    from .hub import checkpoint_path
    from .train.pretrain import load_pretrained as _load

    return _load(checkpoint_path(path), device)


def embed(source, checkpoint, **options):
    """Clip embeddings of the videos of ``source`` (a folder, a list file, a manifest, shards) by the model of
    ``checkpoint`` (a path or a released model's name), in memory, as numpy arrays: see
    :func:`avssl.embeddings.embed_arrays` for the options and what comes back. For a large collection, ``avssl embed``
    writes Parquet parts instead."""
    from .embeddings import embed_arrays

    return embed_arrays(source, checkpoint, **options)
