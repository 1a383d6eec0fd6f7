"""AVID / CMA pretraining: what is pretraining's own, on the one training skeleton (:class:`~.engine.Trainer`).

Its own: the collection (a manifest, or a folder scanned into one), the audio-visual model, the loss with
its memory bank (one slot per video), CMA's positive sets refreshed from the memory at epoch starts, the
negatives drawn per step from a seed, and the memory update after each step. A run started in a folder
holding ``last.pt`` resumes from it, reproducing the uninterrupted run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .. import distributed as dist
from ..config import ConfigError, InputError
from ..data.cache import build as build_cache
from ..data.cache import default_cache_dir, entry_sizes, plan_cache
from ..data.collection import build_manifest, merge_manifests, read_jsonl, read_manifest
from ..fileio import to_json
from ..progress import counted
from ..data.datasets import ClipMaker, DataConfig, check_durations
from ..data.entries import Entries, load_entries
from ..data.shards import ShardStream, load_shard_index, usable_workers
from ..losses.cma import CMALoss, build_loss
from ..models.avmodel import AVModel, count_parameters
from ..models.heads import ProjectionHead
from ..models.resnet import imagenet_resnet18
from .checkpoint import checkpoint_file, load_checkpoint, pretrained_model
from .configs import OptimConfig, PretrainConfig, RunConfig
from .engine import Runtime, Trainer, lr_at, make_optimizer
from .online import OnlineEval, prepare_holdout

__all__ = ["OptimConfig", "PretrainConfig", "PretrainJob", "RunConfig", "load_pretrained", "pretrain"]


def _prepare_manifest(cfg: PretrainConfig, out: Path) -> str:
    """The training manifest: ``data.manifest``, or ``data.root`` probed into the run folder. Under torchrun every
    process probes its share of the files (``--part rank/world``) and rank 0 joins the parts, so a large folder
    takes 1/world of the time and no process waits alone past the collectives' timeout."""
    if cfg.data.manifest:
        if not Path(cfg.data.manifest).is_file():
            raise ConfigError(f"data.manifest: no such file: {cfg.data.manifest}")
        return cfg.data.manifest
    if not cfg.data.root:
        raise ConfigError("set data.manifest (a JSONL from `avssl data manifest`) or data.root (a folder)")
    if not Path(cfg.data.root).is_dir():
        raise ConfigError(f"data.root: no such folder: {cfg.data.root}")
    path = out / "manifest.jsonl"
    rank, world = dist.rank(), dist.world_size()
    if world == 1:
        build_manifest(cfg.data.root, path, require_audio=cfg.data.missing_audio == "error", progress=cfg.run.progress)
        return str(path)
    parts = [out / "manifest_parts" / f"part{k:05d}-of-{world:05d}.jsonl" for k in range(world)]
    parts[rank].parent.mkdir(parents=True, exist_ok=True)
    build_manifest(cfg.data.root, parts[rank], require_audio=cfg.data.missing_audio == "error",
                   progress=cfg.run.progress and dist.is_main(), part=(rank, world))
    dist.barrier()
    if dist.is_main():
        merge_manifests([str(p) for p in parts], path)
    dist.barrier()
    return str(path)


class PretrainJob:
    """AVModel and its loss on the trainer's device: AVID/CMA with one memory slot per video of the collection, or an
    in-batch objective (InfoNCE, EZ-VSL's, SLAVC's with the model's momentum copies)."""

    def __init__(self, cfg: PretrainConfig, rt: Runtime, num_videos: int, steps_per_epoch: int,
                 resolve: Callable[[str], Path] = checkpoint_file) -> None:
        self.cfg, self.rt, self.seed, self.resolve = cfg, rt, cfg.run.seed, resolve
        self.steps_per_epoch, self.num_videos = steps_per_epoch, num_videos
        self.model = AVModel(cfg.model, cfg.data.spectrogram).to(rt.device)
        self.loss_fn = build_loss(num_videos, cfg.model.embed_dim, cfg.loss, seed=cfg.run.seed).to(rt.device)
        self.optimizers = {"optimizer": make_optimizer([p for p in self.model.parameters() if p.requires_grad],
                                                       cfg.optim)}
        self.neg_gen = torch.Generator()  # reseeded every step from (seed, rank, step): nothing to save
        self.has_memory = hasattr(self.loss_fn, "memory")  # the divergence guard judges a collapse once it is filled
        self.loss_call: Any = self.loss_fn  # compiled with run.compile (compile_loss)
        self._last: tuple[torch.Tensor, ...] = ()

    def describe(self, trainer: Trainer) -> str:
        c = self.cfg
        form = {"batch": "in-batch InfoNCE", "ezvsl": "EZ-VSL's objective, in-batch",
                "slavc": "SLAVC's objective, in-batch, momentum targets"}.get(c.loss.kind,
                                                                          f"{c.loss.kind.upper()}, {c.loss.form}")
        return (f"pretraining ({form}) on {counted(self.num_videos, 'video')} x "
                f"{c.data.clips_per_video} clip(s) per epoch, {trainer.rt.world} process(es) on {trainer.device}, "
                f"{count_parameters(self.model) / 1e6:.2f}M parameters, {trainer.total_steps} steps")

    def init_from(self, path: str) -> None:
        """The model, memory bank and NCE partition estimates of another run (as the released CMA restores
        the memory and Z from AVID); a checkpoint without a memory bank gives the model only."""
        try:
            init = load_checkpoint(self.resolve(path))  # a file (from the avssl command: or a released model's name)
        except InputError as e:
            raise InputError(f"run.init_from: {e}") from None
        what = self._load_weights(init["model"], path)
        memory = {k: v for k, v in init.get("loss", {}).items() if k.startswith("memory.") or k == "log_z"}
        if not hasattr(self.loss_fn, "memory"):  # an in-batch loss keeps no memory
            memory = {}
        if memory and memory["memory.video"].shape != self.loss_fn.memory.video.shape:
            raise ValueError(f"{path}: its memory bank has {memory['memory.video'].shape[0]} slots, "
                             f"this collection {self.num_videos} videos")
        self.loss_fn.load_state_dict(memory, strict=False)
        if dist.is_main():
            what += " and memory bank" if memory else " (the checkpoint holds no memory bank)"
            print(f"initialized {what} from {path}", flush=True)

    def _load_weights(self, state: dict[str, torch.Tensor], path: str) -> str:
        """The checkpoint's model, whole where it is this model's architecture; else its video and audio encoders,
        where they are this model's (another objective's heads: e.g. EZ-VSL's objective from AVID-CMA's encoders),
        the heads left as initialized. Returns what was loaded, in words; a ConfigError where the encoders differ."""
        own = self.model.state_dict()
        if set(state) == set(own) and all(state[k].shape == own[k].shape for k in own):
            self.model.load_state_dict(state)
            return "model"
        loaded = {}
        for part in ("video.", "audio."):
            mine = {k: v for k, v in own.items() if k.startswith(part)}
            for k, v in mine.items():
                if k not in state or state[k].shape != v.shape:
                    got = "absent" if k not in state else f"{tuple(state[k].shape)}"
                    raise ConfigError(f"run.init_from {path}: its {part[:-1]} encoder is not this model's ({k}: {got}, "
                                      f"this model {tuple(v.shape)})")
                loaded[k] = state[k]
        self.model.load_state_dict(loaded, strict=False)
        if self.model.momentum is not None:
            self.model.reset_momentum()
        return "video and audio encoders (its heads are not this model's: those start as initialized)"

    def fresh_start(self) -> None:
        """A run that starts from nothing (no last.pt, no run.init_from): an image encoder that starts from ImageNet
        (``model.resnet.pretrained``) gets torchvision's weights (fetched once) here, not before a resume."""
        c = self.cfg.model
        if c.video_encoder == "resnet18" and c.resnet.pretrained == "imagenet":
            self.model.video.net.load_state_dict(imagenet_resnet18())
            if self.model.momentum is not None:
                self.model.reset_momentum()
            if dist.is_main():
                print("initialized the image encoder from torchvision's ImageNet ResNet-18", flush=True)

    def optimizer_at(self, step: int) -> tuple[torch.optim.Optimizer, float]:
        return self.optimizers["optimizer"], lr_at(self.cfg.optim, step, self.steps_per_epoch)

    def on_epoch(self, epoch: int, step: int) -> None:
        """CMA: positive sets from the memory at an epoch's first step only (a run resumed mid-epoch keeps
        the checkpoint's positives)."""
        loss = self.cfg.loss
        if isinstance(self.loss_fn, CMALoss) and epoch >= loss.cma_start_epoch:
            due = (epoch - loss.cma_start_epoch) % loss.cma_every == 0 and step == epoch * self.steps_per_epoch
            if due or not self.loss_fn.has_positives:
                self.loss_fn.update_positives()

    def loss(self, model: nn.Module, video: torch.Tensor, audio: torch.Tensor | None, batch: dict[str, Any],
             step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        index = batch["index"].to(video.device, non_blocking=True)
        if self.cfg.loss.kind == "slavc":
            return self._slavc_loss(model, video, audio, index)
        spatial = self.cfg.loss.av_pool != "mean" or self.cfg.loss.kind == "ezvsl"
        with self.rt.autocast():
            v, a = model(video, audio, spatial=spatial)
        self.neg_gen.manual_seed((self.seed * 1_000_003 + self.rt.rank) * 100_000_007 + step)
        v, a = v.float(), a.float()
        loss, terms = self.loss_call(v, a, index, self.neg_gen)
        self._last = (index, v, a)
        return loss, terms

    def _slavc_loss(self, model: nn.Module, video: torch.Tensor, audio: torch.Tensor, index: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """SLAVC's step: the momentum copies move towards the trained encoders first (as their forward does in
        training), then the trained encoders' two projections meet the momentum copies' (targets, no gradient)."""
        if self.model.training:
            self.model.update_momentum()
        with self.rt.autocast():
            v, a = model(video, audio, parts=True, encoders="base")
            with torch.no_grad():  # the plain module: under DDP a second pass through the wrapper would broadcast
                # the buffers again, in place, under the first pass's graph
                v_trg, a_trg = self.model(video, audio, parts=True, encoders="momentum")
        v, a = [x.float() for x in v], [x.float() for x in a]
        loss, terms = self.loss_call(v, a, [x.float() for x in v_trg], [x.float() for x in a_trg])
        self._last = (index, ProjectionHead.join(v, dim=1), ProjectionHead.join(a))  # what the guard watches
        return loss, terms

    def compile_loss(self, compile_fn: Any) -> None:
        """With ``run.compile``: the loss through ``compile_fn`` (the negatives' draw on the host's generator is its one
        graph break); None: eager again."""
        self.loss_call = compile_fn(self.loss_fn) if compile_fn is not None else self.loss_fn

    def after_step(self, keep: torch.Tensor | None = None) -> None:
        self.loss_fn.update(*self._last, keep=keep)

    def embeddings(self) -> dict[str, torch.Tensor]:
        """The last step's video and audio embeddings (what the divergence guard watches for a collapse)."""
        return {"video": self._last[1], "audio": self._last[2]} if self._last else {}

    def state(self) -> dict[str, Any]:
        return {"loss": self.loss_fn.state_dict()}

    def load_state(self, ck: dict[str, Any]) -> None:
        bank = ck["loss"].get("memory.video")
        if bank is not None and bank.shape[0] != self.num_videos:
            raise ConfigError(f"the checkpoint's memory bank has {bank.shape[0]} slots, this collection "
                              f"{self.num_videos} videos: resume on the same collection")
        self.loss_fn.load_state_dict(ck["loss"])


def _plan_cache(cfg: PretrainConfig, source: str, entries: Entries) -> tuple[DataConfig, np.ndarray | None]:
    """The data section with the cache's folder (beside the source manifest unless set: the collection's, not the
    run's held-out split of it, so that runs on one collection share it), and which videos the cache serves (None:
    no cache); says so once."""
    data = cfg.data
    if not data.cache:
        return data, None
    if not data.cache_dir:  # decoded videos beside the collection's manifest, for this run and the next ones
        data = replace(data, cache_dir=default_cache_dir(source))
    plan = plan_cache(entries.durations, entry_sizes(entries, data.clip), data.clip, data.cache, data.cache_dir,
                      data.cache_max_gb, cfg.optim.epochs, data.clips_per_video, entries.paths())
    if dist.is_main():
        print(plan.message, flush=True)
    if plan.enabled:  # decoded now, with a progress bar, each process its share (not unseen inside the first steps)
        mine = [entries[int(i)] for i in np.flatnonzero(plan.cached)[dist.rank()::dist.world_size()]]
        build_cache(data.cache_dir, data.clip, data.missing_audio, mine, max(1, data.num_workers),
                    cfg.run.progress and dist.is_main())
        dist.barrier()
    return data, plan.cached


def _stream(cfg: PretrainConfig, trainer: Trainer) -> tuple[ShardStream, int, int]:
    """Shards as a stream of training clips, the memory bank's size (the index's slots), and the loader workers
    each process can keep busy."""
    data = cfg.data
    if data.manifest or data.root:
        raise ConfigError("data.shards: give the shards, or data.manifest / data.root, not both")
    if not dist.is_main():  # rank 0 runs the index pass where one is needed; the others read its result
        dist.barrier()
    try:
        index = load_shard_index(data.shards, data.shards_index, fallback_dir=trainer.out)
    except (OSError, ValueError) as e:
        raise ConfigError(f"data.shards: {e}") from e
    finally:
        if dist.is_main():
            dist.barrier()
    maker = ClipMaker(replace(data, cache=False), train=True, defer=trainer.defer(data))
    stream = ShardStream(index, maker, cfg.optim.batch_size, cfg.run.seed, data.on_error, data.max_retries,
                         data.shuffle_buffer, data.clips_per_video)
    try:
        workers = usable_workers(index, trainer.rt.world, data.num_workers)
    except ValueError as e:
        raise ConfigError(f"data.shards: {e}") from None
    if dist.is_main():
        print(f"shards: {len(index.shards)} with {counted(index.samples, 'sample')} ({index.path})", flush=True)
        _record_unreadable(index, trainer.out)
        if workers < data.num_workers:
            print(f"data.num_workers: {index.non_empty} non-empty shards for {trainer.rt.world} process(es) x {data.num_workers} "
                  f"loader workers: each process uses {workers} (every worker needs a shard of its own)", flush=True)
    return stream, max(index.slots, index.samples), workers


def _record_unreadable(index: Any, out: Path) -> None:
    """Shards the index pass could not read a sample of (zero bytes, damaged from the start): never dealt to a slot,
    so no reader meets them; recorded in ``skipped.jsonl`` once and said in a line. (A shard damaged part-way is
    read up to its damage, and its reader records it.)"""
    dead = [s for s in index.shards if s.get("damaged") and int(s["count"]) == 0]
    if not dead:
        return
    log = out / "skipped.jsonl"
    known = {r.get("path") for r in read_jsonl(log)} if log.exists() else set()
    with open(log, "a") as f:
        for s in dead:
            if s["url"] not in known:
                f.write(to_json({"step": 0, "path": s["url"], "reason": s["damaged"]}) + "\n")
    print(f"shards: {counted(len(dead), 'shard')} with no readable sample left out (e.g. {dead[0]['url']}: "
          f"{dead[0]['damaged']}); listed in {log}", flush=True)


def pretrain(cfg: PretrainConfig, output_dir: str | Path, resolve: Callable[[str], Path] = checkpoint_file
             ) -> dict[str, Any]:
    """Train; returns a summary (steps, final loss, skipped files, throughput). ``resolve``: how ``run.init_from``
    becomes a file (the command passes :func:`avssl.hub.checkpoint_path`, which also takes released models' names)."""
    trainer = Trainer(cfg, output_dir, "pretrain")
    if cfg.data.shards:
        stream, slots, workers = _stream(cfg, trainer)
        trainer.set_stream(stream, cfg.data, workers)
        job = PretrainJob(cfg, trainer.rt, slots, trainer.steps_per_epoch, resolve)
        trainer.set_evaluator(*_evaluator(cfg, trainer, None))
        return trainer.fit(job)
    manifest = source = _prepare_manifest(cfg, trainer.out)
    heldout = None
    if cfg.eval.every and cfg.eval.holdout:  # a seeded share of the videos kept out of training, for evaluation
        if dist.is_main():
            prepare_holdout(manifest, trainer.out, cfg.eval.holdout, cfg.run.seed)
        dist.barrier()
        manifest, heldout = prepare_holdout(manifest, trainer.out, cfg.eval.holdout, cfg.run.seed)
    if not dist.is_main():  # rank 0 keeps the manifest's table beside it; the others map it
        dist.barrier()
    entries = load_entries(manifest)
    if dist.is_main():
        dist.barrier()
    if not entries:
        raise ConfigError(f"data.manifest {manifest} lists no usable videos (`avssl data manifest` writes the "
                          "rejected files and why beside it)")
    check_durations(entries, entries.durations, f"data.manifest {manifest}")
    data, cached = _plan_cache(cfg, source, entries)
    dataset = trainer.set_data(entries, data, cached)
    job = PretrainJob(cfg, trainer.rt, len(dataset.entries), trainer.steps_per_epoch, resolve)
    trainer.set_evaluator(*_evaluator(cfg, trainer, heldout))
    return trainer.fit(job)


def _evaluator(cfg: PretrainConfig, trainer: Trainer, heldout: list[dict[str, Any]] | None
               ) -> tuple[OnlineEval | None, int]:
    """The evaluation during pretraining (``eval:``) and its interval: built on rank 0 (the others get None and the
    same interval); interval 0 when off or when there is nothing to score (said once)."""
    if not cfg.eval.every:
        return None, 0
    evaluator = None
    if dist.is_main():
        if heldout is None and cfg.eval.manifest:
            heldout = read_manifest(cfg.eval.manifest)
        elif heldout is None and cfg.eval.holdout and cfg.data.shards:
            print("eval: eval.holdout splits a manifest, not shards: give eval.manifest (held-out videos) to evaluate "
                  "retrieval", flush=True)
        evaluator = OnlineEval(cfg, trainer.out, heldout, trainer.device)
        if not evaluator.enabled:
            print("eval: nothing to evaluate on (eval.manifest or eval.holdout with 2 or more held-out videos with "
                  "sound, eval.labels_*, or eval.localization): no evaluation during this run", flush=True)
            evaluator = None
    on = float(dist.all_reduce_mean(torch.tensor([1.0 if evaluator is not None else 0.0]))) > 0  # rank 0 decides
    return evaluator, cfg.eval.every if on else 0


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> AVModel:
    """The model of a pretraining checkpoint file (``last.pt``, ``epoch_N.pt``, one written by ``avssl import``), in
    eval mode, with its audio front end (:meth:`AVModel.spectrogram`). :func:`avssl.load_pretrained` also takes a
    run folder or a released model's name."""
    return pretrained_model(path, device)[0]
