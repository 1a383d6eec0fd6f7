"""ESC-50: ``meta/esc50.csv`` (``filename,fold,target,category,esc10,src_file,take``) over ``audio/*.wav``
(5 s clips, 44.1 kHz mono, 5 folds). Audio only: decode with :func:`avssl.data.decode.decode_audio`."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .base import LabeledSet

__all__ = ["read_esc50"]


def read_esc50(root: str | os.PathLike, folds: list[int] | None = None) -> LabeledSet:
    """Entries (with their ``fold``) of the given folds (all five by default); labels are ESC-50's targets."""
    root = Path(root)
    with open(root / "meta" / "esc50.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names: dict[int, str] = {}
    for r in rows:
        names[int(r["target"])] = r["category"]
    classes = [names.get(i, str(i)) for i in range(max(names) + 1)] if names else []
    entries, missing = [], []
    for r in rows:
        fold = int(r["fold"])
        if folds is not None and fold not in folds:
            continue
        path = root / "audio" / r["filename"]
        if not path.exists():
            missing.append(r["filename"])
            continue
        entries.append({"path": str(path), "label": int(r["target"]), "class": r["category"], "fold": fold})
    return LabeledSet(entries, classes, missing)
