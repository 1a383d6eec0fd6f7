"""Score a model's maps against annotated boxes (VGG-SS, Flickr-SoundNet, a composed set), beside the
centred prior and the oracle under the same binarization; one row per sample in a CSV."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.decode import DecodeError, probe
from ..data.formats.localization import LocalizationSample, LocalizationSet
from ..progress import track
from .heatmap import Localizer
from .heatmap import normalize_maps
from .metrics import Binarize, binarize, box_map, centre_prior, ciou, consensus_map, detection_scores, summarize

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


def _partners(samples: list[LocalizationSample]) -> list[int]:
    """For each sample, another whose sound is of another kind (the next such in order; any other sample when
    the set names no kinds); -1 when there is none."""
    out = []
    for i, s in enumerate(samples):
        order = samples[i + 1 :] + samples[:i]
        other = next((o for o in order if s.class_name is None or o.class_name != s.class_name), None)
        out.append(samples.index(other) if other is not None else -1)
    return out


def _score(localizer: Localizer, s: LocalizationSample, partner: LocalizationSample | None, modes: list[Binarize]
           ) -> dict[str, Any]:
    """One sample's row: cIoU of the model, the centred prior and the oracle under each binarization; with a
    partner, the same map made with the partner's sound and with silence (similarity on the object, cIoU,
    peak confidence)."""
    t, offset = _when(s)
    waves = [localizer.audio_at(s.video, t, s.audio, offset)]
    if partner is not None:
        tp, op = _when(partner)
        waves += [localizer.audio_at(partner.video, tp, partner.audio, op), np.zeros_like(waves[0])]
    frame, sims = localizer.compare(s.video, t, waves)
    heat = normalize_maps(torch.from_numpy(sims), localizer.cfg.norm).numpy()
    h, w = frame.shape[:2]
    gt = ground_truth(s, h, w)
    row: dict[str, Any] = {"id": s.id, "class": s.class_name, "time": round(t, 3), "height": h, "width": w,
                           "gt_area": round(float((gt > 0).mean()), 4)}
    maps = {"model": heat[0], "centre": centre_prior(h, w), "oracle": gt}
    for mode in modes:
        for name, m in maps.items():
            row[f"{name}_{mode}"] = round(ciou(binarize(m, mode, gt), gt), 6)
    if partner is not None:
        row["mismatched_with"] = partner.id
        row[f"mismatched_{modes[0]}"] = round(ciou(binarize(heat[1], modes[0], gt), gt), 6)
        inside = gt > 0
        for name, sim in zip(("true", "mismatched", "silence"), sims):
            row[f"similarity_{name}_on_object"] = round(float(sim[inside].mean()), 6)
            row[f"peak_{name}"] = round(float(sim.max()), 6)
    return row


def _listening(rows: list[dict[str, Any]], mode: Binarize) -> dict[str, Any]:
    """Does the map depend on the sound? Over the samples with a partner: how often the clip's own sound lights
    the sounding object more than another kind's sound does, the mean drop in cIoU under that sound, and SLAVC's
    extended protocol (maps under a mismatched sound or silence as detections that are never right). The
    centred prior does not hear, so it scores zero on the first two by construction; it is printed anyway."""
    rows = [r for r in rows if "mismatched_with" in r]
    if not rows:
        return {"num_samples": 0}
    right = [r[f"model_{mode}"] >= 0.5 for r in rows]
    confidence = [r["peak_true"] for r in rows] + [r["peak_mismatched"] for r in rows] + [r["peak_silence"] for r in rows]
    wins = [r["similarity_true_on_object"] > r["similarity_mismatched_on_object"] for r in rows]
    drop = [r[f"model_{mode}"] - r[f"mismatched_{mode}"] for r in rows]
    centre_right = [r[f"centre_{mode}"] >= 0.5 for r in rows]
    return {"num_samples": len(rows), "binarize": mode,
            "true_beats_mismatched": float(np.mean(wins)), "ciou_drop_mismatched": float(np.mean(drop)),
            "extended": detection_scores(confidence, right + [False] * 2 * len(rows)),
            "centre": {"true_beats_mismatched": 0.0, "ciou_drop_mismatched": 0.0,
                       "extended": detection_scores([1.0] * 3 * len(rows), centre_right + [False] * 2 * len(rows))}}


def score_samples(
    localizer: Localizer,
    data: LocalizationSet,
    modes: list[Binarize],
    csv_path: str | os.PathLike,
    progress: bool = False,
    listening: bool = True,
) -> dict[str, Any]:
    """Per-sample cIoU of the model, the centred prior and the oracle under each binarization in ``modes``,
    and with ``listening`` the maps of each sample under another kind's sound and under silence; writes the CSV
    and returns ``{mode: {"model": summary, "centre": ..., "oracle": ...}}``, ``listening`` and ``skipped``."""
    rows, skipped = [], []
    partners = _partners(data.samples) if listening else [-1] * len(data.samples)
    for s, p in zip(track(data.samples, enabled=progress, desc="localization", unit="sample"), partners):
        try:
            rows.append(_score(localizer, s, data.samples[p] if p >= 0 else None, modes))
        except DecodeError as e:
            skipped.append({"id": s.id, "path": e.path, "reason": e.reason})
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
    out: dict[str, Any] = {}
    for mode in modes:
        out[mode] = {name: summarize([r[f"{name}_{mode}"] for r in rows]) for name in ("model", *_BASELINES)}
    out["listening"] = _listening(rows, modes[0]) if listening else None
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
              "by_binarization": {m: scores[m] for m in modes}, "listening": scores["listening"],
              "norm": c.norm, "size": localizer.size,
              "last_stride": c.last_stride, "pad": c.pad, "missing_media": len(data.missing),
              "skipped": scores["skipped"], **about}
    (out / "localization.json").write_text(json.dumps(result, indent=1))
    return result
