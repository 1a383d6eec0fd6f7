"""Evaluation during pretraining: does the representation get better while the run goes on?

Every ``eval.every`` epochs the model, frozen and in eval mode, is scored on held-out data (``eval:`` in the
config, :class:`~avssl.train.configs.EvalConfig`):

- **retrieval** on a fixed set of held-out videos (``eval.manifest``, or ``eval.holdout`` of the training videos,
  the first ``eval.clips`` of them): video->audio and audio->video R@1 and R@5, each video's centre clip, each
  with what chance gives (``retrieval_chance_R@k`` = k / clips); R@5 of 5 clips or fewer (1 for any model) is left
  out (``retrieval_note`` says so), and fewer than 20 clips are said to be too few to mean much;
- **kNN** on frozen pooled features of a labeled split (``eval.labels_*``): DINO's weighted k-nearest-neighbour
  vote (cosine similarity, ``k`` neighbours weighted by ``exp(similarity / temperature)``), top-1 and top-5, for
  the video encoder and, where every file has sound, the audio encoder;
- **localization** on an annotated set (``eval.localization``: a composed set's or VGG-SS's ``vggss.json``, or
  Flickr-SoundNet's annotations with ``eval.localization_format: flickr``): cIoU@0.5 and AUC under
  ``eval.localization_binarize`` (adaptive; EZ-VSL's protocol: median), and whether the map
  listens (the cIoU drop and the share of the map on the object under another kind's sound), with the maps of
  a few clips drawn for the report.

Each evaluation is a row ``{"kind": "eval", "epoch", "step", figures..., "seconds"}``. It draws no number from
the training random streams (it runs inside :func:`torch.random.fork_rng`), so a resumed run stays bit-exact
with evaluation on. Under torchrun, rank 0 evaluates while the others wait.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..config import ConfigError
from ..data.collection import read_manifest, write_jsonl
from ..data.datasets import AVClipDataset, DataConfig, av_collate
from ..data.formats.localization import read_localization
from ..data.labeled import LabeledDataConfig, labeled_entries
from ..evaluation.features import embed_batches
from ..evaluation.retrieval import rank_metrics
from ..localize.evaluate import annotated_time, score_samples
from ..localize.heatmap import Localizer, MapConfig
from ..localize.render import contact_sheet, overlay
from ..models.avmodel import AVModel
from .configs import EvalConfig

FEW_CLIPS = 20  # fewer held-out clips than this: retrieval figures too coarse to mean much (said once)

__all__ = ["HeldBatches", "OnlineEval", "knn_accuracy", "left_as_found", "prepare_holdout", "split_holdout"]


def split_holdout(rows: list[dict[str, Any]], share: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, held-out rows): a seeded ``share`` of the videos held out, both in manifest order. Segment
    rows of one file (``avssl data manifest --segment``) go to the same side: a film is never trained on and held
    out at once."""
    files = list(dict.fromkeys(r["path"] for r in rows))
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    held = {files[i] for i in order[: max(1, round(share * len(files)))]} if share > 0 else set()
    return [r for r in rows if r["path"] not in held], [r for r in rows if r["path"] in held]


def knn_accuracy(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, labels: torch.Tensor,
                 k: int = 20, temperature: float = 0.07) -> dict[str, float]:
    """DINO's weighted kNN: top-1 and top-5 of each query's vote among its ``k`` most cosine-similar bank items,
    each weighted by ``exp(similarity / temperature)``."""
    bank, queries = F.normalize(bank.float(), dim=1), F.normalize(queries.float(), dim=1)
    classes = int(max(bank_labels.max(), labels.max())) + 1
    sim, idx = (queries @ bank.T).topk(min(k, len(bank)), dim=1)
    votes = torch.zeros(len(queries), classes).scatter_add_(1, bank_labels[idx], (sim / temperature).exp())
    top = votes.topk(min(5, classes), dim=1).indices
    return {"top1": float((top[:, 0] == labels).float().mean()),
            "top5": float((top == labels[:, None]).any(1).float().mean())}


class HeldBatches:
    """The batches of a test-mode dataset (the same clips and crops at every evaluation), decoded at the first
    evaluation and kept in memory if they fit in what is left of ``room[0]`` bytes (shared by the evaluation's
    sets); past it they are decoded anew each time."""

    def __init__(self, dataset: AVClipDataset, room: list[int], batch_size: int = 32) -> None:
        self.dataset, self.room, self.batch_size = dataset, room, batch_size
        self.kept: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.kept is not None:
            yield from self.kept
            return
        kept: list[dict[str, Any]] | None = []
        size = 0
        for batch in DataLoader(self.dataset, batch_size=self.batch_size, num_workers=0, collate_fn=av_collate):
            size += sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor))
            if kept is not None and size <= self.room[0]:
                kept.append(batch)
            else:
                kept = None
            yield batch
        if kept is not None:
            self.kept, self.room[0] = kept, self.room[0] - size


class OnlineEval:
    """The held-out data of ``cfg.eval``, prepared once; :meth:`__call__` scores a model on it."""

    def __init__(self, cfg: Any, out: Path, heldout: list[dict[str, Any]] | None, device: torch.device) -> None:
        self.cfg: EvalConfig = cfg.eval
        self.data: DataConfig = replace(cfg.data, cache=False, num_workers=0, preprocess="worker")
        self.maps_cfg: MapConfig = cfg.localize
        self.out, self.device = out, device
        self.room = [self.cfg.keep_decoded_mb * 2**20]  # bytes the evaluation sets may keep decoded
        self.retrieval = None
        if heldout:
            rows = [r for r in heldout if r.get("audio")][: self.cfg.clips]
            self.retrieval = self._held(AVClipDataset(rows, self.data, train=False)) if len(rows) >= 2 else None
            if self.retrieval is not None and len(rows) < FEW_CLIPS:
                print(f"eval: retrieval on only {len(rows)} held-out clips: chance R@1 is {1 / len(rows):.2f} and "
                      f"R@5 {min(1.0, 5 / len(rows)):.2f}, so its figures say little" + (
                          " (R@5 is left out: 1 by construction)" if len(rows) <= 5 else "")
                      + f"; hold out {FEW_CLIPS} or more (eval.holdout, or eval.manifest)", flush=True)
        self.knn = self._labeled() if self.cfg.labels_format else None
        self.localization = None
        if self.cfg.localization:
            where = Path(self.cfg.localization)
            media = self.cfg.localization_media or (where.parent if where.is_file() else where)
            if not where.exists():
                raise ConfigError(f"eval.localization: no such file or folder: {where}")
            data = read_localization(self.cfg.localization_format, where, media)
            if not data.samples:
                raise ConfigError(f"eval.localization: none of the {len(data.missing)} annotated clips of "
                                  f"{self.cfg.localization} has its media under {media} (eval.localization_media)")
            data.samples = data.samples[: self.cfg.localization_clips]
            self.localization = data

    def _labeled(self) -> tuple[AVClipDataset, AVClipDataset]:
        c = self.cfg
        if c.labels_format == "manifest":
            train, test = read_manifest(c.labels_root), read_manifest(c.labels_annotations)
        else:
            d = LabeledDataConfig(format=c.labels_format, root=c.labels_root, annotations=c.labels_annotations,
                                  test_annotations=c.labels_test_annotations, split=c.labels_split)
            work = self.out / "eval"
            work.mkdir(parents=True, exist_ok=True)
            train, test = (labeled_entries(d, subset, work)[0] for subset in ("train", "test"))
        data = replace(self.data, missing_audio="silence")
        return self._held(AVClipDataset(train, data, train=False)), self._held(AVClipDataset(test, data, train=False))

    def _held(self, dataset: AVClipDataset) -> HeldBatches:
        return HeldBatches(dataset, self.room)

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.every) and any(x is not None for x in (self.retrieval, self.knn, self.localization))

    def __call__(self, model: AVModel, epoch: int) -> dict[str, Any]:
        """The figures of ``model``, which is left exactly as it was found (:func:`left_as_found`)."""
        row: dict[str, Any] = {}
        devices = [self.device] if self.device.type == "cuda" else []
        with left_as_found(model), torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(0)
            model.eval()
            if self.retrieval is not None:
                t0 = time.perf_counter()
                f = embed_batches(model, self.retrieval, self.device)
                for name, (q, k) in (("v2a", ("video_emb", "audio_emb")), ("a2v", ("audio_emb", "video_emb"))):
                    m = rank_metrics(f[q], f[k], (1, 5))
                    for key in ("R@1", "R@5"):
                        if key in m:  # R@5 of 5 clips or fewer is 1 whatever the model: left out
                            row[f"retrieval_{name}_{key}"] = m[key]
                            row[f"retrieval_chance_{key}"] = m[f"chance_{key}"]
                    if "left_out" in m:
                        row["retrieval_note"] = m["left_out"]
                row["retrieval_clips"], row["retrieval_seconds"] = len(self.retrieval), time.perf_counter() - t0
            if self.knn is not None:
                row.update(self._knn(model))
            if self.localization is not None:
                row.update(self._localization(model, epoch))
        return row

    def _knn(self, model: AVModel) -> dict[str, Any]:
        t0 = time.perf_counter()
        (train, test), c = self.knn, self.cfg
        a, b = embed_batches(model, train, self.device), embed_batches(model, test, self.device)
        row = {f"knn_{k}": v for k, v in knn_accuracy(a["video_feat"], a["label"], b["video_feat"], b["label"],
                                                      c.knn_k, c.knn_temperature).items()}
        if all(e.get("audio") for e in list(train.dataset.entries) + list(test.dataset.entries)):  # labels on sounds
            row.update({f"knn_audio_{k}": v for k, v in knn_accuracy(a["audio_emb"], a["label"], b["audio_emb"],
                                                                     b["label"], c.knn_k, c.knn_temperature).items()})
        row["knn_seconds"] = time.perf_counter() - t0
        return row

    def _localization(self, model: AVModel, epoch: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        folder = self.out / "eval"
        folder.mkdir(parents=True, exist_ok=True)
        loc = Localizer(model, self.data, self.maps_cfg, self.device)
        mode = self.cfg.localization_binarize
        scores = score_samples(loc, self.localization, [mode], folder / "localization_last.csv", partners_per_clip=1)
        listen, s = scores["listening"], scores[mode]["model"]
        row = {"loc_ciou_at_0.5": s["ciou_at_0.5"], "loc_auc": s["auc"],
               "loc_centre_ciou_at_0.5": scores[mode]["centre"]["ciou_at_0.5"]}
        if listen and listen["num_samples"]:
            row["loc_ciou_drop_mismatched"] = listen["ciou_drop_mismatched"]
            row["loc_own_sound_more_mass"] = listen["own_sound_more_mass_on_object"]
        frames, overlays = [], []
        for sample in self.localization.samples[: self.cfg.maps]:
            t, _ = annotated_time(sample)
            maps = loc(sample.video, [t], audio=sample.audio)  # a still: the middle of its sound, as scored
            frames.append(maps.frames[0])
            overlays.append(overlay(maps.frames[0], maps.maps[0]))
        if frames:
            from torchvision.io import write_png

            sheet = torch.from_numpy(np.ascontiguousarray(contact_sheet(frames, overlays, height=96)))
            write_png(sheet.permute(2, 0, 1).contiguous(), str(folder / f"maps_epoch_{epoch:04d}.png"))
            row["maps"] = f"eval/maps_epoch_{epoch:04d}.png"
        row["loc_seconds"] = time.perf_counter() - t0
        return row


@contextmanager
def left_as_found(model: nn.Module) -> Iterator[None]:
    """Evaluate ``model`` in this block and give it back as it was: every module's train/eval mode, every
    parameter's ``requires_grad``, the video encoder's last stride (localization runs it at another), and no
    hook added. A training run evaluates the very module it trains: anything left changed would change what
    it trains (and, under torchrun, only on the rank that evaluates)."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    hooks = [(m, {name: dict(getattr(m, name)) for name in _HOOKS if hasattr(m, name)}) for m in model.modules()]
    video = getattr(model, "video", None)
    stride = getattr(video, "last_stride", None)
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, requires in grads:
            p.requires_grad_(requires)
        for m, kept in hooks:
            for name, before in kept.items():
                current = getattr(m, name)
                for key in [k for k in current if k not in before]:
                    del current[key]
        if stride is not None and video.last_stride != stride:
            video.set_last_stride(stride)


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_forward_hooks_with_kwargs",
          "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def prepare_holdout(manifest: str, out: Path, share: float, seed: int) -> tuple[str, list[dict[str, Any]] | None]:
    """The training manifest without a seeded ``share`` of its videos, and those videos, both kept in the run folder
    (``train.jsonl``, ``heldout.jsonl``; reused when the run resumes). Where fewer than 2 of them have sound (too few
    to rank) nothing is held out: ``(manifest, None)``."""
    train, held = out / "train.jsonl", out / "heldout.jsonl"
    if not (train.exists() and held.exists()):
        kept, heldout = split_holdout(read_manifest(manifest), share, seed)
        if sum(1 for r in heldout if r.get("audio")) < 2:
            return manifest, None
        write_jsonl(held, heldout)
        write_jsonl(train, kept)
        (out / "heldout.json").write_text(json.dumps({"source": str(manifest), "share": share, "seed": seed,
                                                      "videos": len(heldout)}))
    return str(train), read_manifest(held)
