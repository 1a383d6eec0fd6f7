"""Two layouts of one's own: a ``path label`` list (label: an integer or a class name; paths relative to
``root``) and a class-per-folder tree (``root/<class>/<file>``, classes sorted)."""

from __future__ import annotations

import os
from pathlib import Path

from ..collection import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from .base import LabeledSet

__all__ = ["read_folders", "read_list"]


def read_list(list_file: str | os.PathLike, root: str | os.PathLike | None = None) -> LabeledSet:
    base = Path(root) if root else Path(list_file).parent
    rows = []
    for n, line in enumerate(Path(list_file).read_text().split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path, sep, label = line.rpartition(" ")
        if not sep:
            raise ValueError(f"{list_file}:{n}: expected `path label`, got {line!r}")
        rows.append((path.strip(), label))
    numeric = all(lbl.lstrip("-").isdigit() for _, lbl in rows)
    if numeric:
        n_classes = max(int(lbl) for _, lbl in rows) + 1 if rows else 0
        classes = [str(i) for i in range(n_classes)]
    else:
        classes = sorted({lbl for _, lbl in rows})
    label_of = {c: i for i, c in enumerate(classes)}
    entries, missing = [], []
    for path, lbl in rows:
        p = Path(path) if Path(path).is_absolute() else base / path
        if not p.exists():
            missing.append(path)
            continue
        label = int(lbl) if numeric else label_of[lbl]
        entries.append({"path": str(p), "label": label, "class": classes[label]})
    return LabeledSet(entries, classes, missing)


def read_folders(root: str | os.PathLike) -> LabeledSet:
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    entries = []
    for label, cls in enumerate(classes):
        for p in sorted((root / cls).rglob("*")):
            if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS + AUDIO_EXTENSIONS:
                entries.append({"path": str(p), "label": label, "class": cls})
    return LabeledSet(entries, classes, [])
