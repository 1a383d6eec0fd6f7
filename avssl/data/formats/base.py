"""The result every format reader returns, and one entry point that picks the reader by name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LabeledSet", "check_split", "index_files", "read_labeled"]


@dataclass
class LabeledSet:
    """``entries``: ``{"path", "label" (int), "class" (name)}`` (plus format extras such as ``fold``) of
    the files found; ``classes``: names by label; ``missing``: listed files that are not on disk."""

    entries: list[dict[str, Any]]
    classes: list[str]
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = f"{len(self.entries)} files, {len(self.classes)} classes"
        if self.missing:
            s += f", {len(self.missing)} listed but missing (e.g. {self.missing[0]})"
        return s


def check_split(dataset: str, split: int, subset: str) -> None:
    """The official splits 1-3 of UCF-101 and HMDB-51, and their train or test subset."""
    if split not in (1, 2, 3):
        raise ValueError(f"{dataset} has splits 1, 2, 3; got {split}")
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be train or test, got {subset!r}")


def index_files(root: str | os.PathLike, suffixes: frozenset[str] | None = None) -> dict[str, list[Path]]:
    """Files under ``root`` (recursive) by stem; one directory walk, however many lookups follow."""
    out: dict[str, list[Path]] = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if suffixes is None or p.suffix.lower() in suffixes:
                out.setdefault(p.stem, []).append(p)
    return out


def read_labeled(fmt: str, root: str | os.PathLike, annotations: str | os.PathLike | None = None,
                 split: int | str | None = None, subset: str = "train") -> LabeledSet:
    """``fmt``: kinetics, ucf101, hmdb51, list, folders or esc50 (``split``: the official split number, or for
    Kinetics the CSV's split name; ``subset``: train or test)."""
    from .esc50 import read_esc50
    from .generic import read_folders, read_list
    from .hmdb51 import read_hmdb51
    from .kinetics import read_kinetics
    from .ucf101 import read_ucf101

    if fmt == "kinetics":
        if annotations is None:
            raise ValueError("kinetics needs data.annotations: the official CSV of the split")
        return read_kinetics(annotations, root)
    if fmt == "ucf101":
        return read_ucf101(annotations or Path(root) / "ucfTrainTestlist", root, int(split or 1), subset)
    if fmt == "hmdb51":
        return read_hmdb51(annotations or Path(root) / "testTrainMulti_7030_splits", root, int(split or 1), subset)
    if fmt == "list":
        if annotations is None:
            raise ValueError("list needs data.annotations: a file of `path label` lines")
        return read_list(annotations, root)
    if fmt == "folders":
        return read_folders(root)
    if fmt == "esc50":
        folds = None if split is None else [int(split)]
        return read_esc50(root, folds)
    raise ValueError(f"unknown dataset format {fmt!r} (kinetics, ucf101, hmdb51, list, folders, esc50)")
