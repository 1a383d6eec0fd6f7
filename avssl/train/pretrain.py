"""AVID / CMA pretraining: one loop for CPU and CUDA, one process or many (torchrun, DDP).

Read top to bottom: set-up, resume, then epochs of (load clips -> embed -> loss -> step -> memory
update), with metrics, the list of skipped files and atomic checkpoints in the output folder.
A run started in a folder holding ``last.pt`` resumes from it, reproducing the uninterrupted run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import distributed as dist
from ..config import from_dict, to_dict
from ..data.collection import build_manifest, read_manifest
from ..data.datasets import AVClipDataset, BatchPreprocess, DataConfig
from ..losses.avid import LossConfig, best_location
from ..losses.cma import CMALoss, build_loss
from ..models.avmodel import AVModel, ModelConfig, count_parameters
from .checkpoint import load_checkpoint
from .engine import (
    Checkpointer,
    OptimConfig,
    RunConfig,
    RunLog,
    lr_at,
    make_optimizer,
    optimizer_step,
    setup,
    train_batches,
)

__all__ = ["OptimConfig", "PretrainConfig", "RunConfig", "load_pretrained", "lr_at", "pretrain", "pretrained_model"]


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _prepare_manifest(cfg: PretrainConfig, out: Path) -> str:
    if cfg.data.manifest:
        return cfg.data.manifest
    if not cfg.data.root:
        raise ValueError("set data.manifest (a JSONL from `avssl data manifest`) or data.root (a folder)")
    path = out / "manifest.jsonl"
    if dist.is_main():
        build_manifest(cfg.data.root, path, require_audio=cfg.data.missing_audio == "error",
                       progress=cfg.run.progress)
    dist.barrier()
    return str(path)


def pretrain(cfg: PretrainConfig, output_dir: str | Path) -> dict[str, Any]:
    """Train; returns a summary (steps, final loss, skipped files, throughput)."""
    rt = setup(cfg.run)
    rank, world, device = rt.rank, rt.world, rt.device
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run, opt_cfg = cfg.run, cfg.optim
    if dist.is_main():
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    # Data
    manifest = _prepare_manifest(cfg, out)
    entries = read_manifest(manifest)
    on_device = cfg.data.preprocess == "device" or (cfg.data.preprocess == "auto" and device.type == "cuda")
    dataset = AVClipDataset(entries, cfg.data, train=True, seed=run.seed, defer=on_device)
    preprocess = BatchPreprocess(cfg.data, train=True).to(device) if on_device else None
    steps_per_epoch = len(dataset) // (opt_cfg.batch_size * world)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} clips is fewer than one batch ({opt_cfg.batch_size} x {world} processes)")
    total_steps = steps_per_epoch * opt_cfg.epochs
    if run.max_steps is not None:
        total_steps = min(total_steps, run.max_steps)

    # Model, loss (with its memory bank), optimizer
    torch.manual_seed(run.seed)
    model = AVModel(cfg.model, cfg.data.mel).to(device)
    num_videos = len(dataset.entries)  # one memory slot per video, whatever the clips per video
    loss_fn = build_loss(num_videos, cfg.model.embed_dim, cfg.loss, seed=run.seed).to(device)
    if device.type == "cuda" and run.channels_last:
        model.to_channels_last()
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], opt_cfg)
    scaler = rt.grad_scaler()
    neg_gen = torch.Generator()  # reseeded every step from (seed, rank, step): nothing to save

    # Resume, or start from another run's weights and memory
    step = 0
    skipped_total = 0
    last = out / "last.pt"
    if run.init_from and not last.exists():
        init = load_checkpoint(run.init_from)
        model.load_state_dict(init["model"])
        # the memory bank and the NCE partition estimates (as the released CMA restores them from AVID)
        memory = {k: v for k, v in init.get("loss", {}).items() if k.startswith("memory.") or k == "log_z"}
        if memory and memory["memory.video"].shape != loss_fn.memory.video.shape:
            raise ValueError(f"{run.init_from}: its memory bank has {memory['memory.video'].shape[0]} slots, "
                             f"this collection {num_videos} videos")
        loss_fn.load_state_dict(memory, strict=False)
        if dist.is_main():
            what = "model and memory bank" if memory else "model (the checkpoint holds no memory bank)"
            print(f"initialized {what} from {run.init_from}", flush=True)
    if last.exists():
        ck = load_checkpoint(last)
        model.load_state_dict(ck["model"])
        loss_fn.load_state_dict(ck["loss"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        step, skipped_total = int(ck["step"]), int(ck["skipped_total"])
        torch.set_rng_state(ck["rng_torch"])
        if dist.is_main():
            print(f"resuming from {last} at step {step} (epoch {step // steps_per_epoch})", flush=True)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def state() -> dict[str, Any]:
        return {
            "config": to_dict(cfg),
            "model": model.state_dict(),
            "loss": loss_fn.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": step // steps_per_epoch,
            "skipped_total": skipped_total,
            "rng_torch": torch.get_rng_state(),
        }

    ckpt = Checkpointer(out, state, run.keep, step)
    log = RunLog(out, run.tensorboard, "pretrain")

    if dist.is_main():
        print(
            f"pretraining {cfg.loss.kind.upper()} ({cfg.loss.form}) on {num_videos} videos x "
            f"{cfg.data.clips_per_video} clip(s) per epoch, {world} process(es) on {device}, "
            f"{count_parameters(model) / 1e6:.2f}M parameters, {total_steps} steps",
            flush=True,
        )
    def refresh_positives(epoch: int, at_step: int) -> None:
        """CMA: positive sets from the memory at an epoch's first step only (a run resumed mid-epoch keeps
        the checkpoint's positives)."""
        if isinstance(loss_fn, CMALoss) and epoch >= cfg.loss.cma_start_epoch:
            due = (epoch - cfg.loss.cma_start_epoch) % cfg.loss.cma_every == 0 and at_step == epoch * steps_per_epoch
            if due or not loss_fn.has_positives:
                loss_fn.update_positives()

    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not (run.progress and dist.is_main()), unit="step")
    model.train()
    t_start, clips_done, last_loss = time.perf_counter(), 0, float("nan")
    for epoch, batch in train_batches(dataset, run, opt_cfg.batch_size, cfg.data.num_workers, rt, step,
                                      steps_per_epoch, total_steps, refresh_positives):
        lr = lr_at(opt_cfg, step, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if preprocess is not None:  # uint8 frames and waveforms in; jitter, normalization, log-mel here
            video, audio = preprocess(batch, device)
        else:
            video = batch["video"].to(device, non_blocking=True)
            audio = batch["audio"].to(device, non_blocking=True)
        index = batch["index"].to(device)
        if device.type == "cuda" and run.channels_last:
            video = video.contiguous(memory_format=torch.channels_last_3d)
            audio = audio.contiguous(memory_format=torch.channels_last)
        with rt.autocast():
            v, a = ddp_model(video, audio, spatial=cfg.loss.av_pool == "max")
        neg_gen.manual_seed((run.seed * 1_000_003 + rank) * 100_000_007 + step)
        loss, terms = loss_fn(v.float(), a.float(), index, neg_gen)
        optimizer_step(loss, optimizer, scaler)
        loss_fn.memory.update(index, best_location(v.float(), a.float()), a.float())
        step += 1
        clips_done += len(index) * world
        last_loss = float(loss.detach())
        skipped_total += log.failures(step, batch["failures"])  # from every process
        bar.update(1)
        if dist.is_main() and (step % run.log_every == 0 or step == total_steps):
            elapsed = time.perf_counter() - t_start
            rate = clips_done / elapsed
            bar.set_postfix(loss=f"{last_loss:.4f}", clips_s=f"{rate:.1f}")
            row = {"step": step, "epoch": epoch, "loss": last_loss, **terms, "lr": lr,
                   "clips_per_s": rate, "clips": clips_done, "seconds": round(elapsed, 3), "time": time.time(),
                   "skipped_total": skipped_total}
            log.row(step, row)
        ckpt.after_step(step, steps_per_epoch, run)
    ckpt.save_last(step)
    bar.close()
    elapsed = time.perf_counter() - t_start
    summary = {"steps": step, "final_loss": last_loss, "skipped_files": skipped_total,
               "clips_per_s": clips_done / elapsed if elapsed > 0 else None, "output_dir": str(out)}
    log.close()
    if dist.is_main():
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        if skipped_total:
            print(f"skipped {skipped_total} clip(s) that failed to decode; see {out / 'skipped.jsonl'}", flush=True)
    return summary


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> AVModel:
    """The model of a pretraining checkpoint (``last.pt``, ``epoch_N.pt``, or one written by ``avssl import``),
    in eval mode, with its audio front end (:meth:`AVModel.spectrogram`)."""
    return pretrained_model(path, device)[0]


def pretrained_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[AVModel, PretrainConfig]:
    """(model in eval mode, its config) of a pretraining checkpoint: the one place a checkpoint becomes a model."""
    ck = load_checkpoint(path)
    if "config" not in ck or "model" not in ck:
        raise ValueError(f"{path}: not an avssl checkpoint (no config and model)")
    if "finetune" in ck["config"]:
        raise ValueError(f"{path}: a fine-tuning checkpoint; this takes pretraining (or imported) checkpoints")
    cfg = from_dict(PretrainConfig, ck["config"])
    model = AVModel(cfg.model, cfg.data.mel)
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), cfg
