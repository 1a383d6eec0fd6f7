"""Labeled videos for fine-tuning and evaluation: the dataset's official split (any format reader, picked by
name) -> entries with probe facts and labels, and the clip pipeline they are read with.

Files listed but absent, and files that fail to probe, are counted in a report and left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .. import distributed as dist
from ..config import ConfigError
from .clips import ClipConfig
from .collection import build_manifest, read_manifest
from .datasets import DataConfig
from .formats import LabeledSet, read_esc50, read_folders, read_hmdb51, read_kinetics, read_list, read_ucf101
from .transforms import VideoAugConfig

__all__ = ["LabeledDataConfig", "as_data_config", "labeled_entries", "read_labeled"]


def _video_only_clip() -> ClipConfig:
    return ClipConfig(audio_duration=0.0)


@dataclass
class LabeledDataConfig:
    format: Literal["kinetics", "ucf101", "hmdb51", "list", "folders"] = "ucf101"
    root: str | None = None  # the videos
    annotations: str | None = None  # the official annotation file or folder (train split for Kinetics/lists)
    test_annotations: str | None = None  # Kinetics and lists: the evaluation CSV/list
    split: int = 1  # UCF-101 / HMDB-51: official split 1-3
    clip: ClipConfig = field(default_factory=_video_only_clip)
    video_aug: VideoAugConfig = field(default_factory=VideoAugConfig)
    clips_per_video: int = 5  # training clips per video per epoch
    test_clips: int = 10  # uniformly spaced clips per test video, softmax averaged
    test_size: int | None = None  # test: short side decoded at and resized to before the centre crop; None: crop
    clip_test_clips: int = 25  # clip-level accuracy: random-time clips per test video (released: 25); 0: none
    num_workers: int = 2
    on_error: Literal["skip", "raise"] = "skip"
    preprocess: Literal["auto", "worker", "device"] = "auto"


def read_labeled(fmt: str, root: str | os.PathLike, annotations: str | os.PathLike | None = None,
                 split: int | str | None = None, subset: str = "train") -> LabeledSet:
    """``fmt``: kinetics, ucf101, hmdb51, list, folders or esc50 (``split``: the official split number, or for
    Kinetics the CSV's split name; ``subset``: train or test)."""
    if fmt == "kinetics":
        if annotations is None:
            raise ConfigError("data.format kinetics needs data.annotations: the official CSV of the split")
        return read_kinetics(annotations, root)
    if fmt == "ucf101":
        return read_ucf101(annotations or Path(root) / "ucfTrainTestlist", root, int(split or 1), subset)
    if fmt == "hmdb51":
        return read_hmdb51(annotations or Path(root) / "testTrainMulti_7030_splits", root, int(split or 1), subset)
    if fmt == "list":
        if annotations is None:
            raise ConfigError("data.format list needs data.annotations: a file of `path label` lines")
        return read_list(annotations, root)
    if fmt == "folders":
        return read_folders(root)
    if fmt == "esc50":
        folds = None if split is None else [int(split)]
        return read_esc50(root, folds)
    raise ValueError(f"unknown dataset format {fmt!r} (kinetics, ucf101, hmdb51, list, folders, esc50)")


def as_data_config(d: LabeledDataConfig, train: bool) -> DataConfig:
    """The clip pipeline of AVClipDataset, video only (a file without audio is normal here); test clips are
    decoded at ``test_size`` when it is set."""
    clip, aug = d.clip, d.video_aug
    if not train and d.test_size is not None:
        clip, aug = replace(clip, size=d.test_size), replace(aug, resize=d.test_size)
    return DataConfig(clip=clip, video_aug=aug, missing_audio="silence", on_error=d.on_error,
                      clips_per_video=d.clips_per_video if train else 1, num_workers=d.num_workers,
                      preprocess=d.preprocess)


def labeled_entries(d: LabeledDataConfig, subset: str, work_dir: Path, progress: bool = False
                    ) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """(entries with probe facts and ``label``, class names, report) of a split. Files listed but absent, and
    files that fail to probe, are counted in the report and left out."""
    if not d.root:
        raise ConfigError("set data.root (the videos)")
    ann = d.test_annotations if subset == "test" and d.format in ("kinetics", "list") else d.annotations
    if subset == "test" and d.format in ("kinetics", "list") and not ann:
        raise ConfigError(f"data.format {d.format}: set data.test_annotations (the evaluation split)")
    root = str(Path(d.root).resolve())
    labeled = read_labeled(d.format, root, ann, d.split, subset)
    lst = work_dir / f"{subset}_files.txt"
    manifest = work_dir / f"{subset}_manifest.jsonl"
    if dist.is_main():
        lst.write_text("".join(e["path"] + "\n" for e in labeled.entries))
        build_manifest(lst, manifest, require_audio=False, progress=progress)
    dist.barrier()
    probed = {r["path"]: r for r in read_manifest(manifest)}
    entries = []
    for e in labeled.entries:
        row = probed.get(str(Path(e["path"]).resolve()))
        if row is not None:
            entries.append({**row, "label": e["label"], "class": e["class"]})
    report = {"listed": len(labeled.entries) + len(labeled.missing), "missing": len(labeled.missing),
              "unreadable": len(labeled.entries) - len(entries), "used": len(entries),
              "missing_examples": labeled.missing[:5]}
    return entries, labeled.classes, report
