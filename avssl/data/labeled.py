"""Labeled videos for fine-tuning and evaluation: the dataset's official split (any format reader, picked by
name) -> entries with probe facts and labels, and the clip pipeline they are read with.

Files listed but absent, and files that fail to probe, are counted in a report and left out. Train and test never
share a file: a split whose two lists name the same file is refused with one line (:func:`check_disjoint`). Class
folders (``format: folders``) are tested on ``data.test_root`` (class folders of their own), else on a seeded share
of each class's videos (``data.test_share``, ``data.test_seed``) kept out of training; both lists are written to the
run folder (``train_files.txt``, ``test_files.txt``).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .. import distributed as dist
from ..config import ConfigError, InputError
from .clips import ClipConfig
from .collection import build_manifest, read_manifest
from .datasets import DataConfig
from .formats import LabeledSet, read_esc50, read_folders, read_hmdb51, read_kinetics, read_list, read_ucf101
from .transforms import VideoAugConfig

__all__ = ["LabeledDataConfig", "as_data_config", "check_disjoint", "held_out_folders", "labeled_entries", "read_labeled",
           "split_files"]


def _video_only_clip() -> ClipConfig:
    return ClipConfig(audio_duration=0.0)


@dataclass
class LabeledDataConfig:
    format: Literal["kinetics", "ucf101", "hmdb51", "list", "folders"] = "ucf101"
    root: str | None = None  # the videos
    annotations: str | None = None  # the official annotation file or folder (train split for Kinetics/lists)
    test_annotations: str | None = None  # Kinetics and lists: the evaluation CSV/list
    split: int = 1  # UCF-101 / HMDB-51: official split 1-3
    # folders: the test videos' class folders; without it, test_share of each class's videos (seeded by test_seed)
    # are held out of training
    test_root: str | None = None
    test_share: float = 0.2
    test_seed: int = 0
    clip: ClipConfig = field(default_factory=_video_only_clip)
    video_aug: VideoAugConfig = field(default_factory=VideoAugConfig)
    clips_per_video: int = 5  # training clips per video per epoch
    test_clips: int = 10  # uniformly spaced clips per test video, softmax averaged
    test_size: int | None = None  # test: short side decoded at and resized to before the centre crop; None: crop
    clip_test_clips: int = 25  # clip-level accuracy: random-time clips per test video (released: 25); 0: none
    num_workers: int = 2
    on_error: Literal["skip", "raise"] = "skip"
    preprocess: Literal["auto", "worker", "device"] = "auto"

    def __post_init__(self) -> None:
        if not 0 < self.test_share < 1:
            raise ConfigError(f"data.test_share: a share of each class's videos in (0, 1), got {self.test_share}")


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


def held_out_folders(labeled: LabeledSet, share: float, seed: int, subset: str) -> LabeledSet:
    """Class folders without a test set of their own: ``share`` of each class's videos (at least one where a class
    has two or more; a seeded draw) are the test subset, the rest the training subset."""
    rng = random.Random(seed)
    by_class: dict[int, list[dict[str, Any]]] = {}
    for e in labeled.entries:
        by_class.setdefault(e["label"], []).append(e)
    test: set[str] = set()
    for label in sorted(by_class):
        files = sorted(e["path"] for e in by_class[label])
        rng.shuffle(files)
        n = max(1, round(share * len(files))) if len(files) > 1 else 0
        test.update(files[:n])
    chosen = [e for e in labeled.entries if (e["path"] in test) == (subset == "test")]
    return LabeledSet(chosen, labeled.classes, labeled.missing)


def split_files(d: LabeledDataConfig, subset: str) -> LabeledSet:
    """The labeled files of the ``subset`` (train or test) of the split ``d`` describes (nothing probed)."""
    if not d.root:
        raise ConfigError("set data.root (the videos)")
    ann = d.test_annotations if subset == "test" and d.format in ("kinetics", "list") else d.annotations
    if subset == "test" and d.format in ("kinetics", "list") and not ann:
        raise ConfigError(f"data.format {d.format}: set data.test_annotations (the evaluation split)")
    if d.format == "folders":
        if d.test_root:
            if not Path(d.test_root).is_dir():
                raise InputError(f"data.test_root: no such folder: {d.test_root}")
            return read_folders(d.test_root if subset == "test" else d.root)
        return held_out_folders(read_folders(d.root), d.test_share, d.test_seed, subset)
    return read_labeled(d.format, str(Path(d.root).resolve()), ann, d.split, subset)


def check_disjoint(d: LabeledDataConfig) -> tuple[LabeledSet, LabeledSet]:
    """(train, test) files of the split; an :class:`~avssl.config.InputError` naming a file both list (a test on
    training videos would report what was learned by heart)."""
    train, test = split_files(d, "train"), split_files(d, "test")
    seen = {os.path.realpath(e["path"]) for e in train.entries}
    shared = [e["path"] for e in test.entries if os.path.realpath(e["path"]) in seen]
    if shared:
        where = {"folders": "data.test_root" if d.test_root else "the held-out share",
                 "kinetics": "data.test_annotations", "list": "data.test_annotations"}.get(d.format, "the split lists")
        raise InputError(f"data.format {d.format}: {len(shared)} of the {len(test.entries)} test files are training "
                         f"files too (e.g. {shared[0]}): train and test must not share a file (check {where})")
    if d.format == "folders" and train.classes != test.classes:
        raise InputError(f"data.test_root {d.test_root}: its classes ({', '.join(test.classes[:5])}...) are not the "
                         f"training folders' ({', '.join(train.classes[:5])}...)")
    return train, test


def labeled_entries(d: LabeledDataConfig, subset: str, work_dir: Path, progress: bool = False
                    ) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """(entries with probe facts and ``label``, class names, report) of a split. Files listed but absent, and
    files that fail to probe, are counted in the report and left out."""
    labeled = split_files(d, subset)
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
