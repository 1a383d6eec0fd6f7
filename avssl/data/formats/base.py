"""What the format readers share: the result they return, the split check, a file index."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LabeledSet", "check_split", "index_files"]


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


def index_files(root: str | os.PathLike, suffixes: Collection[str] | None = None) -> dict[str, list[Path]]:
    """Files under ``root`` (recursive) by stem; one directory walk, however many lookups follow."""
    out: dict[str, list[Path]] = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if suffixes is None or p.suffix.lower() in suffixes:
                out.setdefault(p.stem, []).append(p)
    return out
