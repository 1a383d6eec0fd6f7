"""UCF-101: ``ucfTrainTestlist/`` (``classInd.txt``: ``1 ApplyEyeMakeup``; ``trainlist0N.txt``:
``Class/v_Class_gXX_cYY.avi label``; ``testlist0N.txt``: ``Class/v_Class_gXX_cYY.avi``) over the
``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` tree. Labels are 0-based (the files count from 1)."""

from __future__ import annotations

import os
from pathlib import Path

from .base import LabeledSet, check_split

__all__ = ["read_ucf101"]


def read_ucf101(
    lists: str | os.PathLike, root: str | os.PathLike, split: int = 1, subset: str = "train"
) -> LabeledSet:
    lists, root = Path(lists), Path(root)
    check_split("UCF-101", split, subset)
    classes: list[str] = []
    for line in (lists / "classInd.txt").read_text().split("\n"):
        if line.strip():
            idx, name = line.split()
            if int(idx) != len(classes) + 1:
                raise ValueError(f"{lists / 'classInd.txt'}: class ids must run 1, 2, ...; found {idx}")
            classes.append(name)
    label_of = {c: i for i, c in enumerate(classes)}
    listed = (lists / f"{subset}list0{split}.txt").read_text().split("\n")
    entries, missing = [], []
    for line in listed:
        if not line.strip():
            continue
        rel = line.split()[0]
        cls = rel.split("/")[0]
        if cls not in label_of:
            raise ValueError(f"{rel}: class {cls!r} is not in classInd.txt")
        path = root / rel
        if not path.exists():
            alt = root / "UCF-101" / rel  # the archive unpacks to UCF-101/
            if not alt.exists():
                missing.append(rel)
                continue
            path = alt
        entries.append({"path": str(path), "label": label_of[cls], "class": cls})
    return LabeledSet(entries, classes, missing)
