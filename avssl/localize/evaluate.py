"""Score a model's maps against annotated boxes (VGG-SS, Flickr-SoundNet, a composed set), beside the
centred prior and the oracle under the same binarization; one row per sample in a CSV."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import write_json
from ..data.decode import DecodeError, probe
from ..data.formats.localization import LocalizationSample, LocalizationSet
from ..progress import track
from .heatmap import Localizer
from .metrics import (RULES, Binarize, binarize, box_map, centre_prior, ciou, consensus_map, slavc_confidence,
                      slavc_extended, summarize)

__all__ = ["annotated_time", "evaluate_localization", "ground_truth", "score_samples"]

_BASELINES = ("centre", "oracle")


def ground_truth(sample: LocalizationSample, height: int, width: int) -> np.ndarray:
    """The sample's ground-truth map at the frame's size: the union of its boxes, or Flickr's consensus."""
    if sample.consensus:
        return consensus_map([[b] for b in sample.boxes], height, width)
    return box_map(sample.boxes, height, width)


def annotated_time(sample: LocalizationSample) -> tuple[float, float]:
    """(time of the annotated frame, audio offset): a video's middle frame with its own audio around it;
    a still image with the middle of its sound file."""
    info = probe(sample.video)
    if not info.is_still:
        duration = (info.video.duration if info.video is not None and info.video.duration else info.duration) or 0.0
        return duration / 2, 0.0
    return 0.0, (probe(sample.audio).duration or 0.0) / 2


def _partners(samples: list[LocalizationSample], per_clip: int, seed: int) -> list[list[int]]:
    """For each sample, ``per_clip`` others drawn at random (seeded) among those whose sound is of another kind
    (any other sample when the set names no kinds), without repeats where there are enough."""
    rng = random.Random(seed)
    out = []
    for i, s in enumerate(samples):
        pool = [j for j, o in enumerate(samples) if j != i and (not s.class_name or o.class_name != s.class_name)]
        out.append(rng.sample(pool, min(per_clip, len(pool))) if pool else [])
    return out


def _mass_on(heat: np.ndarray, gt: np.ndarray) -> float:
    """The share of a map's mass inside the ground truth."""
    total = float(heat.sum())
    return float((heat * (gt > 0)).sum() / total) if total > 0 else 0.0


def _score(localizer: Localizer, s: LocalizationSample, partners: list[LocalizationSample], modes: list[Binarize]
           ) -> dict[str, Any]:
    """One sample's row: cIoU of the model, the centred prior and the oracle under each binarization; with
    partners, the same map made with each partner's sound and with silence: cIoU, share of the map's mass on the
    object, raw cosine on the object, SLAVC's confidence."""
    t, offset = annotated_time(s)
    waves = [localizer.audio_at(s.video, t, s.audio, offset)]
    for p in partners:
        tp, op = annotated_time(p)
        waves.append(localizer.audio_at(p.video, tp, p.audio, op))
    if partners:
        waves.append(np.zeros_like(waves[0]))
    frame, sims, heat = localizer.compare_maps(s.video, t, waves)  # heat: normalized, with OGL where it is on
    h, w = frame.shape[:2]
    gt = ground_truth(s, h, w)
    row: dict[str, Any] = {"id": s.id, "class": s.class_name, "time": t, "height": h, "width": w,
                           "gt_area": float((gt > 0).mean())}
    maps = {"model": heat[0], "centre": centre_prior(h, w), "oracle": gt}
    for mode in modes:
        for name, m in maps.items():
            row[f"{name}_{mode}"] = ciou(binarize(m, mode, gt), gt)
    row["mass_on_object_true"] = _mass_on(heat[0], gt)
    row["confidence_true"] = slavc_confidence(sims[0])
    row["similarity_true_on_object"] = float(sims[0][gt > 0].mean())
    if partners:
        k = len(partners)
        mode = modes[0]
        row["mismatched_with"] = " ".join(p.id for p in partners)
        row[f"mismatched_{mode}"] = float(np.mean([ciou(binarize(heat[1 + j], mode, gt), gt) for j in range(k)]))
        masses = [_mass_on(heat[1 + j], gt) for j in range(k)]
        row["mass_on_object_mismatched"] = float(np.mean(masses))
        row["spatial_wins"] = float(np.mean([row["mass_on_object_true"] > m for m in masses]))
        row["similarity_mismatched_on_object"] = float(np.mean([sims[1 + j][gt > 0].mean() for j in range(k)]))
        row["similarity_silence_on_object"] = float(sims[-1][gt > 0].mean())
        row["confidence_mismatched"] = slavc_confidence(sims[1])  # the first partner's: a negative for SLAVC
    return row


def _listening(rows: list[dict[str, Any]], mode: Binarize, seed: int) -> dict[str, Any]:
    """Does the map depend on the sound? Over the samples with partners: the headline is spatial, the mean drop in
    cIoU when the clip's own sound is replaced by another kind's, and how often the own sound puts a larger share
    of the map's mass on the sounding object; beside it, how often the raw cosine on the object is higher with the
    own sound (which also moves with overall agreement, not only with where the map points). SLAVC's extended
    protocol on separate clips: a seeded half of the samples as positives (their own sound), the other half as
    negatives (another kind's sound); the centred prior, which does not hear, beside it."""
    rows = [r for r in rows if "mismatched_with" in r]
    if not rows:
        return {"num_samples": 0}
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    pos, neg = order[: (len(rows) + 1) // 2], order[(len(rows) + 1) // 2 :]
    obj = [True] * len(pos) + [False] * len(neg)
    cious = [rows[i][f"model_{mode}"] for i in pos] + [0.0] * len(neg)
    conf = [rows[i]["confidence_true"] for i in pos] + [rows[i]["confidence_mismatched"] for i in neg]
    centre = [rows[i][f"centre_{mode}"] for i in pos] + [0.0] * len(neg)
    return {"num_samples": len(rows), "binarize": mode,
            "ciou_drop_mismatched": float(np.mean([r[f"model_{mode}"] - r[f"mismatched_{mode}"] for r in rows])),
            "own_sound_more_mass_on_object": float(np.mean([r["spatial_wins"] for r in rows])),
            "mass_on_object": {"true": float(np.mean([r["mass_on_object_true"] for r in rows])),
                               "mismatched": float(np.mean([r["mass_on_object_mismatched"] for r in rows]))},
            "true_beats_mismatched_cosine": float(np.mean([r["similarity_true_on_object"]
                                                           > r["similarity_mismatched_on_object"] for r in rows])),
            "slavc_extended": slavc_extended(obj, cious, conf),
            "centre": {"ciou_drop_mismatched": 0.0, "own_sound_more_mass_on_object": 0.0,
                       "slavc_extended": slavc_extended(obj, centre, [1.0] * len(obj))}}


def _write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """The rows, floats rounded to 6 decimals for display (the figures are computed from the exact values)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows({k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in rows)


def score_samples(
    localizer: Localizer,
    data: LocalizationSet,
    modes: list[Binarize],
    csv_path: str | os.PathLike,
    progress: bool = False,
    listening: bool = True,
    partners_per_clip: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-sample cIoU of the model, the centred prior and the oracle under each binarization in ``modes``,
    and with ``listening`` the maps of each sample under ``partners_per_clip`` other kinds' sounds (drawn with
    ``seed``) and under silence; writes the CSV and returns ``{mode: {"model": summary, "centre": ...,
    "oracle": ...}}``, ``listening`` and ``skipped``."""
    rows, skipped = [], []
    partners = _partners(data.samples, partners_per_clip, seed) if listening else [[] for _ in data.samples]
    for s, ps in zip(track(data.samples, enabled=progress, desc="localization", unit="sample"), partners):
        try:
            rows.append(_score(localizer, s, [data.samples[p] for p in ps], modes))
        except DecodeError as e:
            skipped.append({"id": s.id, "path": e.path, "reason": e.reason})
    _write_csv(csv_path, rows)
    out: dict[str, Any] = {}
    for mode in modes:
        out[mode] = {name: summarize([r[f"{name}_{mode}"] for r in rows]) for name in ("model", *_BASELINES)}
    out["listening"] = _listening(rows, modes[0], seed) if listening else None
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
    result = {**first["model"], "binarize": modes[0], "binarize_rule": RULES[modes[0]], "centre": first["centre"],
              "oracle": first["oracle"], "rules": {m: RULES[m] for m in modes},
              "by_binarization": {m: scores[m] for m in modes}, "listening": scores["listening"],
              "norm": c.norm, "size": localizer.size,
              "last_stride": c.last_stride, "pad": c.pad, "missing_media": len(data.missing),
              "skipped": scores["skipped"], **about}
    write_json(out / "localization.json", result)
    return result
