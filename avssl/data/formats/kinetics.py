"""Kinetics-400/600/700: the official CSV (``label,youtube_id,time_start,time_end,split``; extra columns
such as ``is_cc`` are tolerated) over the usual download layouts: ``split/label/ID_000012_000022.mp4``,
labels with spaces or underscores, flat folders, or files named by the YouTube id alone."""

from __future__ import annotations

import csv
import os

from ..collection import VIDEO_EXTENSIONS
from .base import LabeledSet, index_files

__all__ = ["clip_stem", "read_kinetics"]


def clip_stem(youtube_id: str, start: float, end: float) -> str:
    """The file stem of the official download scripts: ``ID_000012_000022``."""
    return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}"


def read_kinetics(csv_path: str | os.PathLike, root: str | os.PathLike) -> LabeledSet:
    """Entries of the CSV found under ``root``; classes are the CSV's labels, sorted (Kinetics' own order)."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"label", "youtube_id", "time_start", "time_end"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: expected the columns {sorted(need)}, found {reader.fieldnames}")
        rows = list(reader)
    classes = sorted({r["label"] for r in rows})
    label_of = {c: i for i, c in enumerate(classes)}
    files = index_files(root, VIDEO_EXTENSIONS)
    entries, missing = [], []
    for r in rows:
        stem = clip_stem(r["youtube_id"], r["time_start"], r["time_end"])
        hits = files.get(stem) or files.get(r["youtube_id"])
        if not hits:
            missing.append(stem)
            continue
        if len(hits) > 1:  # the same clip under several class folders: prefer the one named for its label
            names = {r["label"], r["label"].replace(" ", "_")}
            hits = [h for h in hits if h.parent.name in names] or hits
        entries.append({"path": str(hits[0]), "label": label_of[r["label"]], "class": r["label"]})
    return LabeledSet(entries, classes, missing)
