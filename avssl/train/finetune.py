"""Supervised fine-tuning of a video encoder on labeled videos (UCF-101, HMDB-51, Kinetics, a ``path label``
list, class folders), on the one training skeleton (:class:`~.engine.Trainer`), then the evaluation of the
test split.

Its own: the labeled split (:mod:`avssl.data.labeled`), the classifier (:mod:`avssl.models.classifier`) on the
video encoder of ``run.init_from`` (a pretraining or imported checkpoint) or a random one, the parameter
groups, the classifier's warm-up on its own optimizer, and the final evaluation (:mod:`avssl.evaluation.action`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed as dist
from ..config import InputError, to_dict
from ..data.labeled import as_data_config, check_disjoint, labeled_entries
from ..evaluation.action import evaluate_action
from ..models.classifier import make_classifier
from ..models.video import R2Plus1D, VideoEncoderConfig
from ..progress import counted
from .checkpoint import checkpoint_file, classifier_model, pretrained_video_encoder
from .configs import FinetuneConfig
from .engine import Runtime, Trainer, lr_at, make_optimizer
from ..fileio import write_json

__all__ = ["FinetuneConfig", "FinetuneJob", "build_classifier", "finetune", "load_classifier"]


def build_classifier(cfg: FinetuneConfig, num_classes: int, resolve: Callable[[str], Path] = checkpoint_file
                     ) -> tuple[nn.Module, VideoEncoderConfig]:
    """The classifier on the video encoder of ``run.init_from`` (architecture and weights; ``resolve`` makes it a
    file) when set, else on a randomly initialized ``model.video``."""
    if cfg.run.init_from:
        try:
            encoder, video_cfg = pretrained_video_encoder(resolve(cfg.run.init_from))
        except InputError as e:
            raise InputError(f"run.init_from: {e}") from None
    else:
        encoder, video_cfg = R2Plus1D(cfg.model.video), cfg.model.video
    f = cfg.finetune
    return make_classifier(encoder, num_classes, f.mode, f.dropout, f.stage_grids, f.encoder_bn), video_cfg


class FinetuneJob:
    """A classifier and its optimizers: the encoder and the classifier in separate parameter groups (the
    encoder's only in full mode); in full mode with a warm-up, the classifier first trains alone with its
    own optimizer at the base lr, and the main optimizer starts fresh after it (as released)."""

    def __init__(self, cfg: FinetuneConfig, rt: Runtime, classes: list[str], steps_per_epoch: int,
                 resolve: Callable[[str], Path] = checkpoint_file) -> None:
        self.cfg, self.rt, self.classes, self.steps_per_epoch = cfg, rt, classes, steps_per_epoch
        model, self.video_cfg = build_classifier(cfg, len(classes), resolve)
        self.model = model.to(rt.device)
        full = cfg.finetune.mode == "full"
        head = self.model.heads if cfg.finetune.mode == "stages" else self.model.fc
        groups = [{"params": list(head.parameters()), "name": "classifier"}]
        if full:
            groups.insert(0, {"params": list(self.model.encoder.parameters()), "name": "encoder"})
        self.optimizers = {"optimizer": make_optimizer(groups, cfg.optim)}
        self.warmup_steps = round(cfg.finetune.classifier_warmup_epochs * self.steps_per_epoch) if full else 0
        if self.warmup_steps:
            self.optimizers["warmup_optimizer"] = make_optimizer(list(head.parameters()), cfg.optim)

    def describe(self, trainer: Trainer) -> str:
        return (f"fine-tuning ({self.cfg.finetune.mode}) on {counted(len(trainer.dataset.entries), 'video')} x "
                f"{self.cfg.data.clips_per_video} clips per epoch, {len(self.classes)} classes, {trainer.rt.world} "
                f"process(es) on {trainer.device}, {trainer.total_steps} steps")

    def init_from(self, path: str) -> None:
        """Nothing more: the encoder of ``run.init_from`` is built in (its architecture is part of the model)."""

    def optimizer_at(self, step: int) -> tuple[torch.optim.Optimizer, float]:
        if step < self.warmup_steps:
            return self.optimizers["warmup_optimizer"], self.cfg.optim.lr
        return self.optimizers["optimizer"], lr_at(self.cfg.optim, step, self.steps_per_epoch)

    def on_epoch(self, epoch: int, step: int) -> None:
        pass

    def loss(self, model: nn.Module, video: torch.Tensor, audio: torch.Tensor | None, batch: dict[str, Any],
             step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        label = batch["label"].to(video.device, non_blocking=True)
        with self.rt.autocast():
            outputs = model(video)
        heads = outputs if isinstance(outputs, list) else [outputs]
        loss = sum(F.cross_entropy(o.float(), label) for o in heads)  # stages: one classifier per stage
        accuracy = (heads[-1].argmax(1) == label).float().mean()
        return loss, {"batch_accuracy": accuracy.detach(), "classifier_only": step < self.warmup_steps}

    def after_step(self, keep: torch.Tensor | None = None) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"video_config": to_dict(self.video_cfg), "classes": self.classes}

    def load_state(self, ck: dict[str, Any]) -> None:
        pass


def finetune(cfg: FinetuneConfig, output_dir: str | Path, resolve: Callable[[str], Path] = checkpoint_file
             ) -> dict[str, Any]:
    """Train on the training split, then evaluate the test split (``eval.json``); returns a summary. ``resolve``: how
    ``run.init_from`` becomes a file (the command's also takes released models' names)."""
    check_disjoint(cfg.data)  # before anything is trained: a test on training videos is refused
    trainer = Trainer(cfg, output_dir, "finetune")
    out = trainer.out
    d = cfg.data
    if d.format == "folders" and not d.test_root and dist.is_main():
        print(f"data.format folders without data.test_root: {d.test_share:.0%} of each class's videos held out for "
              f"the test (seed {d.test_seed}), listed in {out / 'test_files.txt'}", flush=True)
    entries, classes, report = labeled_entries(cfg.data, "train", out, cfg.run.progress)
    if dist.is_main():
        write_json(out / "data_report.json", {"train": report})
        if report["missing"] or report["unreadable"]:
            print(f"train split: {report['missing']} listed files missing, {report['unreadable']} unreadable "
                  f"(see {out / 'train_manifest.rejected.jsonl'}); training on {report['used']}", flush=True)
    trainer.set_data(entries, as_data_config(cfg.data, train=True))
    job = FinetuneJob(cfg, trainer.rt, classes, trainer.steps_per_epoch, resolve)
    summary = trainer.fit(job)
    if summary.get("already_finished") and (out / "eval.json").exists():
        return summary  # trained and evaluated before: nothing is redone or rewritten

    test_entries, test_classes, test_report = labeled_entries(cfg.data, "test", out, cfg.run.progress)
    if test_classes != classes:
        raise ValueError("the test split's classes differ from the training split's")
    result = evaluate_action(job.model, test_entries, cfg.data, classes, cfg.data.test_clips, trainer.device, out,
                             clip_clips=cfg.data.clip_test_clips)
    result["data"] = {"train": report, "test": test_report}
    summary.update(top1=result.get("top1"), clip_top1=result.get("clip_top1"))
    if dist.is_main():
        write_json(out / "eval.json", result)
    trainer.write_summary(summary)
    return summary


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, FinetuneConfig,
                                                                                   list[str]]:
    """(classifier in eval mode, its fine-tuning config, class names) of a fine-tuning checkpoint."""
    return classifier_model(path, device)
