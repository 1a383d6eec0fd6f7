"""Does a video's sound belong to its picture? A score per video from its mean video and audio embeddings.

For each video: ``score``, the cosine similarity of its mean video embedding and its mean audio embedding (the
joint space the model was trained in); ``rank``, where its own audio ranks among every video's audio for its
picture (1: its own sound is the closest); ``rank_score``, that rank as a share (1 first, 0 last). Collections of
web video hold voice-overs, added music and still images; VGGSound was built by filtering with such a model. The
ranks are computed a block of videos at a time (``chunk`` x N similarities in memory).

A video's own similarity and those it is ranked against come from one matrix product, so float rounding cannot
put a video behind its own sound (``(v * a).sum(1)`` and ``(v @ a.T).diagonal()`` differ in their last bits); a
sound that ties with the video's own (an exact duplicate) does not push it down: ties share the better rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["correspondence_scores", "ranked"]


def correspondence_scores(video: np.ndarray | torch.Tensor, audio: np.ndarray | torch.Tensor, chunk: int = 4096
                          ) -> dict[str, np.ndarray]:
    """``video``, ``audio``: ``(N, D)`` each video's mean embeddings -> ``score``, ``rank`` and ``rank_score`` per
    video (arrays of N)."""
    v = F.normalize(torch.as_tensor(np.asarray(video), dtype=torch.float32), dim=1)
    a = F.normalize(torch.as_tensor(np.asarray(audio), dtype=torch.float32), dim=1)
    n = len(v)
    score = torch.empty(n, dtype=torch.float32)
    rank = torch.empty(n, dtype=torch.int64)
    for lo in range(0, n, chunk):
        sims = v[lo : lo + chunk] @ a.T
        own = sims[torch.arange(len(sims)), torch.arange(lo, lo + len(sims))]  # from the same product
        score[lo : lo + chunk] = own
        rank[lo : lo + chunk] = (sims > own[:, None]).sum(1) + 1
    rank_score = 1 - (rank.double() - 1) / max(n - 1, 1)
    return {"score": score.numpy(), "rank": rank.numpy(), "rank_score": rank_score.numpy()}


def ranked(keys: list[str], paths: list[str], scores: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per video, sorted from the least to the most corresponding; figures as computed (not rounded, so that
    a threshold on what a file shows acts as on what was computed)."""
    rows = [{"key": k, "path": p, "score": float(s), "rank": int(r), "rank_score": float(q)}
            for k, p, s, r, q in zip(keys, paths, scores["score"], scores["rank"], scores["rank_score"])]
    return sorted(rows, key=lambda r: (r["score"], r["rank_score"]))
