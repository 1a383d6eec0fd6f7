"""Sound-source localization scores, by the field's protocol (Senocak et al., 2018; Chen et al., 2021).

A map ``A`` in [0, 1] is binarized, then compared with a ground-truth map ``g`` (1 inside the boxes;
for Flickr-SoundNet the annotators' consensus ``min(sum / 2, 1)``):
``cIoU = sum(A * g) / (sum(g) + sum(A * (g == 0)))``. A set of samples is reported by the fraction
with ``cIoU >= 0.5`` and the AUC of that fraction over thresholds 0, 0.05, ..., 1.

Binarizations (:data:`RULES` says each one in words, and every result names its rule):

- ``median``: the pixels strictly above ``v``, the value at index ``N // 2`` of the sorted map (LVS's code);
- ``median_inclusive``: the pixels at or above the same ``v`` (EZ-VSL's and SLAVC's code); the two differ
  only where pixels tie at ``v`` (quantized, saturated or ``fixed``-normalized maps);
- ``absolute``: the pixels at or above 0.5 of the normalized map;
- ``adaptive`` (avssl's): the ``k`` most salient pixels, ``k`` the ground truth's area; where pixels tie at the
  ``k``-th value and would take the count past ``k``, all of them are left out, so a constant map selects
  nothing (it carries no information) and no pixel order (raster or other) decides a score.

Baselines under the same binarization: a centred prior (a map falling off with distance from the frame's
centre) and the oracle (the ground truth itself as the map). cIoUs are kept at full precision; only
displays round them.

SLAVC's extended protocol (:func:`slavc_extended`, Mo and Morgado, 2022) is computed as its ``EvaluatorFull``
computes it: each sample has a confidence (:func:`slavc_confidence`: the mean of the top quarter of the map
scaled as ``(cosine + 1) / 2``) and, where it has a sounding object, a cIoU; negatives are samples without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

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
    "RULES",
    "slavc_confidence",
    "slavc_extended",
    "summarize",
]

Binarize = Literal["median", "median_inclusive", "absolute", "adaptive"]
THRESHOLDS = np.linspace(0.0, 1.0, 21)
RULES = {
    "median": "pixels > the value at index N // 2 of the sorted map (LVS)",
    "median_inclusive": "pixels >= the value at index N // 2 of the sorted map (EZ-VSL, SLAVC)",
    "absolute": "pixels >= 0.5 of the normalized map",
    "adaptive": "the k most salient pixels, k = the ground truth's area; ties that would pass k are all left out",
}


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
    """A 0/1 float map from a map in [0, 1] by the rule :data:`RULES` names; ``adaptive`` needs the ground truth
    (its area)."""
    heat = np.asarray(heat, dtype=np.float32)
    if mode in ("median", "median_inclusive"):
        v = np.sort(heat, axis=None)[heat.size // 2]
        return (heat >= v if mode == "median_inclusive" else heat > v).astype(np.float32)
    if mode == "absolute":
        return (heat >= 0.5).astype(np.float32)
    if mode == "adaptive":
        if gt is None:
            raise ValueError("adaptive binarization needs the ground truth's area")
        k = int((gt > 0).sum())
        if k == 0:
            return np.zeros_like(heat)
        v = np.sort(heat, axis=None)[::-1][min(k, heat.size) - 1]  # the k-th largest value
        keep = heat >= v if int((heat >= v).sum()) <= k else heat > v
        return keep.astype(np.float32)
    raise ValueError(f"unknown binarization {mode!r} ({', '.join(RULES)})")


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


def slavc_confidence(similarity: np.ndarray) -> float:
    """SLAVC's confidence of a map: the mean of the top quarter (``N // 4`` values) of the map scaled to
    ``(cosine + 1) / 2`` (its ``(S / tau + 1 / tau) / (2 / tau)``)."""
    scores = (np.asarray(similarity, np.float64).ravel() + 1.0) / 2.0
    n = scores.size
    return float(np.sort(scores)[-(n // 4):].mean()) if n >= 4 else float(scores.mean())


def _slavc_pr(has_object: np.ndarray, cious: np.ndarray, conf: np.ndarray, thr: float, ciou_thr: float
              ) -> tuple[float, float]:
    """Precision and recall at confidence ``thr``, as ``EvaluatorFull.calc_precision_recall``: a confident map
    without a sounding object is a false positive, a confident one in the wrong place too, an unconfident one
    with an object a false negative; 1 where nothing is counted."""
    detected = conf >= thr
    tp = int((detected & has_object & (cious >= ciou_thr)).sum())
    fp = int((detected & ~has_object).sum() + (detected & has_object & (cious < ciou_thr)).sum())
    fn = int((~detected & has_object).sum())
    return (1.0 if tp + fp == 0 else tp / (tp + fp)), (1.0 if tp + fn == 0 else tp / (tp + fn))


def slavc_extended(has_object: Sequence[bool], cious: Sequence[float], confidence: Sequence[float],
                   ciou_thr: float = 0.5) -> dict[str, Any]:
    """SLAVC's extended protocol, as ``EvaluatorFull.finalize_stats`` computes its 'all' subset: ``ap`` (the
    thresholds are the sorted confidences without the top one, from the highest down, every ``N // 200``-th;
    precision interpolated as the best at any lower threshold; summed over recall steps), ``f1`` at its grid
    (every ``N // 10``-th sorted confidence, from the lowest), ``max_f1``, ``precision`` with every map detected,
    and the ``auc`` of the cIoUs of the samples with an object. ``cious`` of samples without one are ignored."""
    obj = np.asarray(has_object, bool)
    c = np.nan_to_num(np.asarray(cious, np.float64), nan=0.0)
    conf = np.asarray(confidence, np.float64)
    n = conf.size
    if n == 0:
        return {"ap": float("nan"), "max_f1": float("nan"), "f1": [], "precision": float("nan"),
                "auc": float("nan"), "positives": 0, "negatives": 0}
    step = max(1, n // 200)
    precision, recall = [], []
    for thr in np.sort(conf)[:-1][::-step]:
        p, r = _slavc_pr(obj, c, conf, float(thr), ciou_thr)
        precision.append(p)
        recall.append(r)
    best = [max(precision[i:]) for i in range(len(precision))]
    ap = sum(best[i] * (recall[i + 1] - recall[i]) for i in range(len(best) - 1))
    grid = sorted(conf)[:: max(1, n // 10)]
    f1 = []
    for thr in grid:
        p, r = _slavc_pr(obj, c, conf, float(thr), ciou_thr)
        f1.append(2 * r * p / (r + p) if r + p > 0 else 0.0)
    return {"ap": float(ap), "max_f1": float(max(f1)), "f1": [float(x) for x in f1],
            "precision": _slavc_pr(obj, c, conf, -1000.0, ciou_thr)[0],
            "auc": auc(c[obj]) if obj.any() else float("nan"), "positives": int(obj.sum()),
            "negatives": int((~obj).sum())}
