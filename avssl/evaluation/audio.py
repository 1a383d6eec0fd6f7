"""Sound classification on the frozen audio encoder: ESC-50's 5-fold protocol with a linear classifier on
the pooled features averaged over half-overlapping windows of each clip."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.audio import Spectrogram
from ..data.datasets import DataConfig
from ..data.decode import decode_audio
from ..data.formats import read_esc50
from ..models.avmodel import AVModel
from .features import linear_probe

__all__ = ["audio_features", "esc50_linear"]


@torch.no_grad()
def audio_features(model: AVModel, spec: Spectrogram, path: str, clip_duration: float, window: float,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """The audio encoder's pooled features averaged over half-overlapping windows covering the clip."""
    sr = spec.cfg.sample_rate
    wave = torch.from_numpy(decode_audio(path, 0.0, clip_duration, sr).waveform)
    n = round(window * sr)
    starts = np.arange(0, max(len(wave) - n, 0) + 1, max(n // 2, 1))
    windows = torch.stack([F.pad(wave[s : s + n], (0, max(0, s + n - len(wave)))) for s in starts])
    x = spec.to(device)(windows.to(device)).unsqueeze(1)
    return model.audio(x)[1].mean(0).cpu()


def esc50_linear(model: AVModel, data_cfg: DataConfig, root: str | os.PathLike, clip_duration: float = 5.0,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """ESC-50's 5-fold protocol: a linear classifier on frozen audio features, trained on four folds and
    tested on the fifth, for each fold; per-fold and mean accuracy."""
    model = model.to(device).eval()
    esc = read_esc50(root)
    if not esc.entries:
        raise ValueError(f"{root}: no ESC-50 audio found ({len(esc.missing)} listed files missing)")
    spec = Spectrogram(data_cfg.spectrogram)
    window = data_cfg.clip.audio_duration or clip_duration
    x = torch.stack([audio_features(model, spec, e["path"], clip_duration, window, device) for e in esc.entries])
    y = torch.tensor([e["label"] for e in esc.entries])
    folds = torch.tensor([e["fold"] for e in esc.entries])
    per_fold = {}
    for k in sorted(set(folds.tolist())):
        test = folds == k
        if test.all() or not test.any():
            continue
        per_fold[str(k)] = linear_probe(x[~test], y[~test], x[test], y[test])["accuracy"]
    mean = float(np.mean(list(per_fold.values()))) if per_fold else float("nan")
    return {"num_clips": len(esc.entries), "num_classes": len(esc.classes), "missing": len(esc.missing),
            "window_s": window, "per_fold_accuracy": per_fold, "mean_accuracy": mean,
            "chance": float(torch.bincount(y).max()) / len(y)}
