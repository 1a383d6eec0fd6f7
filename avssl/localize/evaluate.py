"""Score a model's maps against annotated boxes (VGG-SS, Flickr-SoundNet, a composed set), beside the
centred prior and the oracle under the same binarization; one row per sample in a CSV."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.decode import DecodeError, probe
from ..data.formats.localization import LocalizationSample, LocalizationSet
from ..progress import track
from .heatmap import Localizer
from .metrics import Binarize, binarize, box_map, centre_prior, ciou, consensus_map, summarize

__all__ = ["evaluate_localization", "ground_truth", "score_samples"]

_BASELINES = ("centre", "oracle")


def ground_truth(sample: LocalizationSample, height: int, width: int) -> np.ndarray:
    """The sample's ground-truth map at the frame's size: the union of its boxes, or Flickr's consensus."""
    if sample.consensus:
        return consensus_map([[b] for b in sample.boxes], height, width)
    return box_map(sample.boxes, height, width)


def _when(sample: LocalizationSample) -> tuple[float, float]:
    """(time of the annotated frame, audio offset): a video's middle frame with its own audio around it;
    a still image with the middle of its sound file."""
    info = probe(sample.video)
    duration = (info.video.duration if info.video is not None and info.video.duration else info.duration) or 0.0
    if duration and (info.video is None or (info.video.num_frames or 2) > 1):
        return duration / 2, 0.0
    audio = probe(sample.audio)
    return 0.0, (audio.duration or 0.0) / 2


def score_samples(
    localizer: Localizer,
    data: LocalizationSet,
    modes: list[Binarize],
    csv_path: str | os.PathLike,
    progress: bool = False,
) -> dict[str, Any]:
    """Per-sample cIoU of the model, the centred prior and the oracle under each binarization in ``modes``;
    writes the CSV and returns ``{mode: {"model": summary, "centre": ..., "oracle": ...}}`` plus ``skipped``."""
    rows, skipped = [], []
    for s in track(data.samples, enabled=progress, desc="localization", unit="sample"):
        try:
            t, offset = _when(s)
            res = localizer(s.video, [t], audio=None if s.audio == s.video else s.audio, audio_offset=offset)
        except DecodeError as e:
            skipped.append({"id": s.id, "path": e.path, "reason": e.reason})
            continue
        heat = res.maps[0]
        h, w = heat.shape
        gt = ground_truth(s, h, w)
        row: dict[str, Any] = {"id": s.id, "class": s.class_name, "time": round(t, 3), "height": h, "width": w,
                               "gt_area": round(float((gt > 0).mean()), 4)}
        maps = {"model": heat, "centre": centre_prior(h, w), "oracle": gt}
        for mode in modes:
            for name, m in maps.items():
                row[f"{name}_{mode}"] = round(ciou(binarize(m, mode, gt), gt), 6)
        rows.append(row)
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    out: dict[str, Any] = {}
    for mode in modes:
        out[mode] = {name: summarize([r[f"{name}_{mode}"] for r in rows]) for name in ("model", *_BASELINES)}
    out["skipped"] = skipped
    return out


def evaluate_localization(localizer: Localizer, data: LocalizationSet, modes: list[Binarize],
                          out_dir: str | os.PathLike, progress: bool = False, **about: Any) -> dict[str, Any]:
    """:func:`score_samples` into ``OUT/per_sample.csv``, and the result (the first binarization's figures
    at the top level, every one under ``by_binarization``, the map settings, ``about``) into
    ``OUT/localization.json``; returns the result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = score_samples(localizer, data, modes, out / "per_sample.csv", progress=progress)
    first, c = scores[modes[0]], localizer.cfg
    result = {**first["model"], "binarize": modes[0], "centre": first["centre"], "oracle": first["oracle"],
              "by_binarization": {m: scores[m] for m in modes}, "norm": c.norm, "size": localizer.size,
              "last_stride": c.last_stride, "pad": c.pad, "missing_media": len(data.missing),
              "skipped": scores["skipped"], **about}
    (out / "localization.json").write_text(json.dumps(result, indent=1))
    return result
