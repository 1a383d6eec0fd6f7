"""Cross-modal retrieval: for each video, where its own audio ranks among all the clips' audio by cosine
similarity (and the other way round)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data.collection import build_manifest, read_jsonl, read_manifest, resolve_media
from ..data.datasets import AVClipDataset, DataConfig
from ..models.avmodel import AVModel
from .features import extract

__all__ = ["rank_metrics", "retrieval_benchmark"]


def rank_metrics(query: torch.Tensor, keys: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, Any]:
    """Recall@k and median rank (1 = first) of each query's own key (same row), by cosine similarity, each beside
    what chance gives (``chance_R@k`` = k / N, ``chance_median_rank`` = (N + 1) / 2). An R@k with k >= N (every
    own key is within the first N whatever the model) is left out, and ``left_out`` says why. The own similarity
    and the others come from one matrix product (a key that ties with the own one does not push it down)."""
    sim = F.normalize(query, dim=1) @ F.normalize(keys, dim=1).T
    rank = (sim > sim.diagonal()[:, None]).sum(dim=1) + 1
    n = len(keys)
    out: dict[str, Any] = {}
    for k in ks:
        if k < n:
            out[f"R@{k}"] = float((rank <= k).float().mean())
            out[f"chance_R@{k}"] = k / n
    out["median_rank"] = float(rank.float().median())
    out["chance_median_rank"] = (n + 1) / 2
    trivial = [k for k in ks if k >= n]
    if trivial:
        out["left_out"] = (f"{', '.join(f'R@{k}' for k in trivial)} left out: with {n} clips every clip's own "
                           f"pair ranks within the first {n}, so R@k is 1 for any model when k >= {n}")
    return out


def retrieval_benchmark(model: AVModel, data_cfg: DataConfig, data: str | os.PathLike, work_dir: str | os.PathLike,
                        clips_per_video: int = 1, batch_size: int = 32, device: str | torch.device = "cpu",
                        ) -> dict[str, Any]:
    """Video->audio and audio->video retrieval over the videos of ``data`` (a folder, a list file or a
    manifest; files without audio are left out); a video's embeddings are the mean of ``clips_per_video``
    uniformly spaced clips."""
    if Path(data).suffix == ".jsonl":
        entries = read_manifest(data)
    else:
        manifest = Path(work_dir) / "manifest.jsonl"
        build_manifest(resolve_media(data), manifest, require_audio=True, progress=False)
        entries = read_manifest(manifest)
    ds = AVClipDataset(entries, data_cfg, train=False, clips_per_video=clips_per_video)
    feats = extract(model.to(device), ds, batch_size=batch_size, num_workers=data_cfg.num_workers, device=device)
    n = len(entries)
    v = F.normalize(feats["video_emb"].view(n, clips_per_video, -1).mean(1), dim=1)
    a = F.normalize(feats["audio_emb"].view(n, clips_per_video, -1).mean(1), dim=1)
    result = {"num_videos": n, "clips_per_video": clips_per_video,
              "video_to_audio": rank_metrics(v, a), "audio_to_video": rank_metrics(a, v)}
    rejected = Path(work_dir) / "manifest.rejected.jsonl"
    if Path(data).suffix != ".jsonl" and rejected.exists():
        left = read_jsonl(rejected)
        if left:  # videos without sound cannot be retrieved by it: named, not dropped without a word
            result["left_out_files"] = [{"path": r["path"], "reason": r["reason"]} for r in left]
    return result
