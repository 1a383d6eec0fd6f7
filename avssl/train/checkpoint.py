"""Checkpoints of plain types and tensors (loadable with ``torch.load(weights_only=True)``), written
atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write

__all__ = ["keep_copy", "load_checkpoint", "prune_checkpoints", "save_atomic"]


def save_atomic(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def keep_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Keep ``src`` as it is now under the name ``dst``: a hard link (no second write) where the file
    system allows, else a copy. Later atomic rewrites of ``src`` replace its name, not this file."""
    dst = Path(dst)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def prune_checkpoints(folder: str | os.PathLike, pattern: str, keep: int) -> None:
    """Delete all but the ``keep`` newest files matching ``pattern`` (by name order)."""
    files = sorted(Path(folder).glob(pattern))
    for f in files[: max(0, len(files) - keep)]:
        f.unlink()
