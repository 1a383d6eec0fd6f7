"""Benchmarks of a pretrained model that need no fine-tuning: cross-modal retrieval over held-out clips,
and linear classification of sounds (ESC-50's 5-fold protocol) on the frozen audio encoder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.audio import LogMelSpectrogram
from ..data.collection import build_manifest, read_manifest
from ..data.datasets import AVClipDataset, DataConfig
from ..data.decode import decode_audio
from ..data.formats import read_esc50
from ..models.avmodel import AVModel
from .evaluate import extract, linear_probe

__all__ = ["audio_features", "esc50_linear", "rank_metrics", "retrieval_benchmark"]


def rank_metrics(query: torch.Tensor, keys: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k and median rank (1 = first) of each query's own key (same row), by cosine similarity."""
    sim = F.normalize(query, dim=1) @ F.normalize(keys, dim=1).T
    rank = (sim > sim.diagonal()[:, None]).sum(dim=1) + 1
    out = {f"R@{k}": float((rank <= k).float().mean()) for k in ks}
    out["median_rank"] = float(rank.float().median())
    out["chance_R@1"] = 1.0 / len(keys)
    return out


def retrieval_benchmark(model: AVModel, data_cfg: DataConfig, data: str | os.PathLike, work_dir: str | os.PathLike,
                        clips_per_video: int = 1, batch_size: int = 32, device: str | torch.device = "cpu",
                        ) -> dict[str, Any]:
    """Video->audio and audio->video retrieval over the videos of ``data`` (a folder or a manifest); a
    video's embeddings are the mean of ``clips_per_video`` uniformly spaced clips."""
    data = Path(data)
    if data.is_dir():
        manifest = Path(work_dir) / "manifest.jsonl"
        build_manifest(data, manifest, require_audio=True, progress=False)
    else:
        manifest = data
    entries = read_manifest(manifest)
    ds = AVClipDataset(entries, data_cfg, train=False, clips_per_video=clips_per_video)
    feats = extract(model.to(device), ds, batch_size=batch_size, num_workers=data_cfg.num_workers, device=device)
    n = len(entries)
    v = F.normalize(feats["video_emb"].view(n, clips_per_video, -1).mean(1), dim=1)
    a = F.normalize(feats["audio_emb"].view(n, clips_per_video, -1).mean(1), dim=1)
    return {"num_videos": n, "clips_per_video": clips_per_video,
            "video_to_audio": rank_metrics(v, a), "audio_to_video": rank_metrics(a, v)}


@torch.no_grad()
def audio_features(model: AVModel, spec: LogMelSpectrogram, path: str, clip_duration: float, window: float,
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
    spec = LogMelSpectrogram(data_cfg.mel)
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
