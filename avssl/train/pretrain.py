"""AVID / CMA pretraining: one loop for CPU and CUDA, one process or many (torchrun, DDP).

Read top to bottom: set-up, resume, then epochs of (load clips -> embed -> loss -> step -> memory
update), with metrics, the list of skipped files and atomic checkpoints in the output folder.
A run started in a folder holding ``last.pt`` resumes from it, reproducing the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch.utils.data import DataLoader

from .. import distributed as dist
from ..config import from_dict, to_dict
from ..data.collection import build_manifest, read_manifest
from ..data.datasets import AVClipDataset, BatchPreprocess, DataConfig, av_collate
from ..losses.avid import LossConfig
from ..losses.cma import CMALoss, build_loss
from ..models.avmodel import AVModel, ModelConfig, count_parameters
from .checkpoint import keep_copy, load_checkpoint, prune_checkpoints, save_atomic

__all__ = ["OptimConfig", "PretrainConfig", "RunConfig", "pretrain"]


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"  # adam: L2 weight decay in the gradient (the released AVID)
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-5
    batch_size: int = 32  # per process
    epochs: int = 10
    warmup_epochs: float = 0.0
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    lr_milestones: list[int] = field(default_factory=list)  # epochs, for "step"
    lr_gamma: float = 0.1


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: bool = True  # mixed precision (CUDA only)
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = True  # CUDA only
    log_every: int = 10  # steps
    checkpoint_every: int = 1  # epochs; a numbered checkpoint is kept besides last.pt
    save_every_steps: int = 0  # also rewrite last.pt every N steps (0: at epoch ends only)
    keep: int = 3
    max_steps: int | None = None  # stop early (tests, smoke runs)
    init_from: str | None = None  # start from this checkpoint's model and memory bank (e.g. CMA after AVID)
    tensorboard: bool = False
    progress: bool = True


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":  # one GPU per process: torchrun's LOCAL_RANK picks it
        return torch.device("cuda", local_rank)
    return torch.device(name)


def lr_at(cfg: OptimConfig, step: int, steps_per_epoch: int) -> float:
    epoch = step / steps_per_epoch
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return cfg.lr * (step + 1) / (cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-8)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, (epoch - cfg.warmup_epochs) / span)))
    if cfg.schedule == "step":
        return cfg.lr * cfg.lr_gamma ** sum(epoch >= m for m in cfg.lr_milestones)
    return cfg.lr


def _epoch_indices(n: int, epoch: int, seed: int, batch: int, rank: int, world: int) -> list[list[int]]:
    """This process's batches of an epoch: a seeded permutation split across processes, last partial
    batch dropped (every process runs the same number of steps)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    per_step = batch * world
    steps = n // per_step
    mine = [order[s * per_step + rank * batch : s * per_step + (rank + 1) * batch] for s in range(steps)]
    return mine


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
    rank, local_rank, world = dist.init_from_env("gloo" if cfg.run.device == "cpu" else None)
    device = _device(cfg.run.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
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
    model = AVModel(cfg.model).to(device)
    num_videos = len(dataset.entries)  # one memory slot per video, whatever the clips per video
    loss_fn = build_loss(num_videos, cfg.model.embed_dim, cfg.loss, seed=run.seed).to(device)
    if device.type == "cuda" and run.channels_last:
        model.to_channels_last()
    params = [p for p in model.parameters() if p.requires_grad]
    if opt_cfg.name == "sgd":
        optimizer = torch.optim.SGD(params, lr=opt_cfg.lr, momentum=opt_cfg.momentum, weight_decay=opt_cfg.weight_decay)
    elif opt_cfg.name == "adam":
        optimizer = torch.optim.Adam(params, lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
    use_amp = run.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if run.amp_dtype == "bfloat16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    neg_gen = torch.Generator()  # reseeded every step from (seed, rank, step): nothing to save

    # Resume, or start from another run's weights and memory
    step = 0
    skipped_total = 0
    last = out / "last.pt"
    if run.init_from and not last.exists():
        init = load_checkpoint(run.init_from)
        model.load_state_dict(init["model"])
        # the memory bank and the NCE partition estimates (as the released CMA restores them from AVID)
        memory = {k: v for k, v in init["loss"].items() if k.startswith("memory.") or k == "log_z"}
        if memory["memory.video"].shape != loss_fn.memory.video.shape:
            raise ValueError(f"{run.init_from}: its memory bank has {memory['memory.video'].shape[0]} slots, "
                             f"this collection {num_videos} videos")
        loss_fn.load_state_dict(memory, strict=False)
        if dist.is_main():
            print(f"initialized model and memory bank from {run.init_from}", flush=True)
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

    saved_step = step if last.exists() else -1  # last.pt already holds this step

    def save_last() -> None:
        """Rewrite last.pt unless it already holds this step (rank 0 only)."""
        nonlocal saved_step
        if not dist.is_main() or saved_step == step:
            return
        saved_step = step
        save_atomic(
            {
                "config": to_dict(cfg),
                "model": model.state_dict(),
                "loss": loss_fn.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "epoch": step // steps_per_epoch,
                "skipped_total": skipped_total,
                "rng_torch": torch.get_rng_state(),
            },
            last,
        )

    writer = None
    if run.tensorboard and dist.is_main():
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise RuntimeError("run.tensorboard needs the tensorboard package: pip install tensorboard") from e
        writer = SummaryWriter(str(out / "tb"))

    if dist.is_main():
        print(
            f"pretraining {cfg.loss.kind.upper()} ({cfg.loss.form}) on {num_videos} videos x "
            f"{cfg.data.clips_per_video} clip(s) per epoch, {world} process(es) on {device}, "
            f"{count_parameters(model) / 1e6:.2f}M parameters, {total_steps} steps",
            flush=True,
        )
    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not (run.progress and dist.is_main()), unit="step")
    metrics_file = (out / "metrics.jsonl").open("a") if dist.is_main() else None
    skipped_file = (out / "skipped.jsonl").open("a") if dist.is_main() else None
    model.train()
    t_start, clips_done, last_loss = time.perf_counter(), 0, float("nan")
    while step < total_steps:
        epoch = step // steps_per_epoch
        dataset.set_epoch(epoch)
        if isinstance(loss_fn, CMALoss) and epoch >= cfg.loss.cma_start_epoch:
            # At an epoch's first step only: a run resumed mid-epoch keeps the checkpoint's positives.
            due = (epoch - cfg.loss.cma_start_epoch) % cfg.loss.cma_every == 0 and step == epoch * steps_per_epoch
            if due or not loss_fn.has_positives:
                loss_fn.update_positives()
        batches = _epoch_indices(len(dataset), epoch, run.seed, opt_cfg.batch_size, rank, world)
        batches = batches[step - epoch * steps_per_epoch :]  # resume inside an epoch
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=cfg.data.num_workers,
            collate_fn=av_collate,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        for batch in loader:
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
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                v, a = ddp_model(video, audio)
            neg_gen.manual_seed((run.seed * 1_000_003 + rank) * 100_000_007 + step)
            loss, terms = loss_fn(v.float(), a.float(), index, neg_gen)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_fn.memory.update(index, v.float(), a.float())
            step += 1
            clips_done += len(index) * world
            last_loss = float(loss.detach())
            failures = dist.gather_lists(batch["failures"])  # from every process
            if failures and skipped_file is not None:
                for f in failures:
                    skipped_file.write(json.dumps({"step": step, **f}) + "\n")
                skipped_file.flush()
            skipped_total += len(failures)
            bar.update(1)
            if dist.is_main() and (step % run.log_every == 0 or step == total_steps):
                elapsed = time.perf_counter() - t_start
                rate = clips_done / elapsed
                bar.set_postfix(loss=f"{last_loss:.4f}", clips_s=f"{rate:.1f}")
                row = {"step": step, "epoch": epoch, "loss": last_loss, **terms, "lr": lr,
                       "clips_per_s": rate, "clips": clips_done, "seconds": round(elapsed, 3), "time": time.time(),
                       "skipped_total": skipped_total}
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                if writer is not None:
                    for k, val in row.items():
                        writer.add_scalar(f"pretrain/{k}", val, step)
            if run.save_every_steps and step % run.save_every_steps == 0:
                save_last()
            if step >= total_steps:
                break
        if step % steps_per_epoch == 0:
            ep = step // steps_per_epoch
            save_last()
            if run.checkpoint_every and ep % run.checkpoint_every == 0 and dist.is_main():
                keep_copy(last, out / f"epoch_{ep:04d}.pt")
                prune_checkpoints(out, "epoch_*.pt", run.keep)
    save_last()
    bar.close()
    elapsed = time.perf_counter() - t_start
    summary = {"steps": step, "final_loss": last_loss, "skipped_files": skipped_total,
               "clips_per_s": clips_done / elapsed if elapsed > 0 else None, "output_dir": str(out)}
    if dist.is_main():
        metrics_file.close()
        skipped_file.close()
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        if skipped_total:
            print(f"skipped {skipped_total} clip(s) that failed to decode; see {out / 'skipped.jsonl'}", flush=True)
    if writer is not None:
        writer.close()
    return summary


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> AVModel:
    """The model of a pretraining checkpoint (``last.pt`` or ``epoch_N.pt``), in eval mode."""
    ck = load_checkpoint(path)
    cfg = from_dict(PretrainConfig, ck["config"])
    model = AVModel(cfg.model)
    model.load_state_dict(ck["model"])
    return model.to(device).eval()
