"""What made an output folder: a record written before the first result, so that a command run again into the
folder reuses only work it can prove is the same.

A record (``plan.json``) holds the model's fingerprint (:func:`model_sha256`: a hash of every tensor of its state,
whatever file or name it was loaded from), the options that change the results, and the SHA-256 of the inputs'
listing (the listing itself is kept beside it, ``listing.tsv``: one ``path<TAB>size`` line per input, in order).
:func:`differences` says, in words, how another run's record differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from .fileio import atomic_write

__all__ = ["differences", "file_listing", "listing_sha256", "model_sha256", "read_listing", "read_record",
           "write_record"]

RECORD = "plan.json"
LISTING = "listing.tsv"


def model_sha256(model: torch.nn.Module) -> str:
    """A hash of the model's state (every tensor's name, dtype, shape and bytes, in name order): equal for the same
    weights whatever they were loaded from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_listing(paths: list[str]) -> list[tuple[str, int | None]]:
    """``(path, size in bytes)`` of each input (``None`` for one that is not a local file)."""
    out = []
    for p in paths:
        try:
            out.append((p, os.stat(p).st_size))
        except OSError:
            out.append((p, None))
    return out


def _lines(listing: list[tuple[str, int | None]]) -> list[str]:
    return [f"{p}\t{'' if s is None else s}" for p, s in listing]


def listing_sha256(listing: list[tuple[str, int | None]]) -> str:
    return hashlib.sha256("\n".join(_lines(listing)).encode()).hexdigest()


def read_listing(folder: Path) -> list[tuple[str, int | None]]:
    path = folder / LISTING
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        p, _, s = line.rpartition("\t")
        out.append((p, int(s) if s else None))
    return out


def read_record(folder: Path) -> dict[str, Any] | None:
    """The folder's record, None where it has none (or an unreadable one)."""
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None


def write_record(folder: Path, record: dict[str, Any], listing: list[tuple[str, int | None]]) -> None:
    """The listing, then the record naming its hash (each written atomically)."""
    with atomic_write(folder / LISTING) as f:
        f.write("".join(x + "\n" for x in _lines(listing)))
    with atomic_write(folder / RECORD) as f:
        json.dump(record, f, indent=1)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _listing_words(old: list[tuple[str, int | None]], new: list[tuple[str, int | None]]) -> str:
    a, b = dict(old), dict(new)
    added = [p for p in b if p not in a]
    removed = [p for p in a if p not in b]
    resized = [p for p in b if p in a and a[p] != b[p]]
    parts = []
    for what, paths in (("added", added), ("removed", removed), ("changed in size", resized)):
        if paths:
            parts.append(f"{len(paths)} {what} (e.g. {paths[0]})")
    if not parts:
        parts.append("the same files in another order" if list(a) != list(b) else "the listing changed")
    return "the inputs differ: " + ", ".join(parts)


def differences(old: dict[str, Any], new: dict[str, Any], folder: Path,
                new_listing: list[tuple[str, int | None]], names: dict[str, str] | None = None) -> list[str]:
    """How the record ``new`` of this run differs from ``old`` (the folder's), in words: the model, each option
    (``names`` gives an option's name for the user, e.g. ``{"spec.clips_per_video": "--clips-per-video"}``), the
    inputs. Empty when they are the same."""
    names = names or {}
    out = []
    if old.get("model_sha256") != new.get("model_sha256"):
        was, now = old.get("checkpoint") or "?", new.get("checkpoint") or "?"
        out.append(f"another model (weights {str(old.get('model_sha256'))[:12]} from {was}, now "
                   f"{str(new.get('model_sha256'))[:12]} from {now})")
    a, b = _flat(old.get("options", {})), _flat(new.get("options", {}))
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            out.append(f"{names.get(k, k)} {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}")
    if old.get("source") != new.get("source") and old.get("listing_sha256") != new.get("listing_sha256"):
        out.append(f"another source ({old.get('source')} -> {new.get('source')})")
    elif old.get("listing_sha256") != new.get("listing_sha256"):
        out.append(_listing_words(read_listing(folder), new_listing))
    return out
