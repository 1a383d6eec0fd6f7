"""Sound-source localization scores, by the field's protocol (Senocak et al., 2018; Chen et al., 2021).

A map ``A`` in [0, 1] is binarized, then compared with a ground-truth map ``g`` (1 inside the boxes;
for Flickr-SoundNet the annotators' consensus ``min(sum / 2, 1)``):
``cIoU = sum(A * g) / (sum(g) + sum(A * (g == 0)))``. A set of samples is reported by the fraction
with ``cIoU >= 0.5`` and the AUC of that fraction over thresholds 0, 0.05, ..., 1.

Binarizations: ``median`` (the field's common protocol: the pixels above the map's median value),
``absolute`` (the pixels at or above 0.5 of the normalized map), ``adaptive`` (the most salient pixels,
as many as the ground truth covers). Baselines under the same binarization: a centred prior (a map
falling off with distance from the frame's centre) and the oracle (the ground truth itself as the map).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
    "Binarize",
    "THRESHOLDS",
    "auc",
    "binarize",
    "box_map",
    "centre_prior",
    "ciou",
    "consensus_map",
    "detection_scores",
    "summarize",
]

Binarize = Literal["median", "absolute", "adaptive"]
THRESHOLDS = np.linspace(0.0, 1.0, 21)


def box_map(boxes: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """1 inside any of the boxes ``[x1, y1, x2, y2]`` (normalized to [0, 1] of the frame), else 0."""
    g = np.zeros((height, width), dtype=np.float32)
    for b in boxes:
        g[_span(b[1], b[3], height), _span(b[0], b[2], width)] = 1.0
    return g


def consensus_map(annotations: Sequence[Sequence[Sequence[float]]], height: int, width: int) -> np.ndarray:
    """Flickr-SoundNet's ground truth: each annotator's boxes as a binary map, summed, ``min(sum / 2, 1)``."""
    total = sum((box_map(boxes, height, width) for boxes in annotations), np.zeros((height, width), np.float32))
    return np.minimum(total / 2.0, 1.0)


def _span(lo: float, hi: float, n: int) -> slice:
    """Pixels whose centres lie inside ``[lo, hi]`` (normalized)."""
    a = int(np.ceil(lo * n - 0.5))
    b = int(np.floor(hi * n - 0.5)) + 1
    return slice(max(a, 0), min(max(b, a), n))


def binarize(heat: np.ndarray, mode: Binarize, gt: np.ndarray | None = None) -> np.ndarray:
    """A 0/1 float map from a map in [0, 1]; ``adaptive`` needs the ground truth (its area)."""
    heat = np.asarray(heat, dtype=np.float32)
    if mode == "median":
        flat = np.sort(heat, axis=None)
        return (heat > flat[flat.size // 2]).astype(np.float32)
    if mode == "absolute":
        return (heat >= 0.5).astype(np.float32)
    if mode == "adaptive":
        if gt is None:
            raise ValueError("adaptive binarization needs the ground truth's area")
        k = int((gt > 0).sum())
        out = np.zeros(heat.size, dtype=np.float32)
        if k:
            out[np.argsort(-heat, axis=None, kind="stable")[:k]] = 1.0
        return out.reshape(heat.shape)
    raise ValueError(f"unknown binarization {mode!r} (median, absolute, adaptive)")


def ciou(pred: np.ndarray, gt: np.ndarray) -> float:
    """``sum(A * g) / (sum(g) + sum(A * (g == 0)))`` for a binary ``pred`` A and a ground truth g."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    denom = gt.sum() + (pred * (gt == 0)).sum()
    return float((pred * gt).sum() / denom) if denom > 0 else 0.0


def auc(cious: Sequence[float]) -> float:
    """Area under (fraction of samples with cIoU >= t) over t = 0, 0.05, ..., 1 (trapezoids)."""
    c = np.asarray(cious, dtype=np.float64)
    if c.size == 0:
        return float("nan")
    frac = np.array([(c >= t).mean() for t in THRESHOLDS])
    return float(np.sum((frac[1:] + frac[:-1]) / 2 * np.diff(THRESHOLDS)))


def centre_prior(height: int, width: int) -> np.ndarray:
    """1 at the frame's centre falling linearly to 0 at its corners (elliptic, in normalized coordinates)."""
    y = (np.arange(height) + 0.5) / height - 0.5
    x = (np.arange(width) + 0.5) / width - 0.5
    d = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2) / np.sqrt(0.5)
    return (1.0 - d).astype(np.float32)


def summarize(cious: Sequence[float]) -> dict[str, float | int]:
    """``ciou_at_0.5``, ``auc`` and ``num_samples`` of a set of per-sample cIoUs."""
    c = np.asarray(cious, dtype=np.float64)
    return {"ciou_at_0.5": float((c >= 0.5).mean()) if c.size else float("nan"), "auc": auc(c),
            "num_samples": int(c.size)}


def detection_scores(confidence: Sequence[float], correct: Sequence[bool]) -> dict[str, float]:
    """SLAVC's extended protocol (Mo and Morgado, 2022): every map is a detection with a ``confidence`` (the
    peak of its raw similarity); a detection is right when its sound is the clip's own and it localizes the
    object (``correct``); maps made with a mismatched sound or silence are never right, so confident ones
    count as false positives. Returns average precision (precision summed at each right detection, ties in
    confidence taken together) and the best F1 over thresholds, with recall over the right detections."""
    conf = np.asarray(confidence, np.float64)
    ok = np.asarray(correct, bool)
    positives = int(ok.sum())
    if positives == 0:
        return {"ap": 0.0, "max_f1": 0.0, "positives": 0, "detections": int(conf.size)}
    levels = np.unique(conf)[::-1]  # thresholds from the most confident down, ties grouped
    tp = np.array([(ok & (conf >= t)).sum() for t in levels], np.float64)
    kept = np.array([(conf >= t).sum() for t in levels], np.float64)
    precision, recall = tp / kept, tp / positives
    gain = np.diff(np.concatenate([[0.0], recall]))
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return {"ap": float((precision * gain).sum()), "max_f1": float(f1.max()), "positives": positives,
            "detections": int(conf.size)}
