"""HMDB-51: ``testTrainMulti_7030_splits/<action>_test_split{1,2,3}.txt`` files of ``name.avi 1|2|0``
lines (1 train, 2 test, 0 unused) over ``<action>/<name>.avi``. Classes are the actions, sorted."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .base import LabeledSet, check_split

__all__ = ["read_hmdb51"]


def read_hmdb51(
    splits: str | os.PathLike, root: str | os.PathLike, split: int = 1, subset: str = "train"
) -> LabeledSet:
    splits, root = Path(splits), Path(root)
    check_split("HMDB-51", split, subset)
    want = {"train": "1", "test": "2"}[subset]
    pattern = re.compile(rf"^(.+)_test_split{split}\.txt$")
    files = sorted(p for p in splits.iterdir() if pattern.match(p.name))
    if not files:
        raise ValueError(f"{splits}: no *_test_split{split}.txt files")
    classes = [pattern.match(p.name).group(1) for p in files]
    entries, missing = [], []
    for label, (cls, f) in enumerate(zip(classes, files)):
        for line in f.read_text().split("\n"):
            parts = line.split()
            if len(parts) != 2 or parts[1] != want:
                continue
            path = root / cls / parts[0]
            if path.exists():
                entries.append({"path": str(path), "label": label, "class": cls})
            else:
                missing.append(f"{cls}/{parts[0]}")
    return LabeledSet(entries, classes, missing)
