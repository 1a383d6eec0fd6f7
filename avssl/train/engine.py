"""The one training skeleton (:class:`Trainer`) and the machinery under it: the device and process group,
mixed precision, optimizers and learning-rate schedules, each process's batches of an epoch, metrics and
skipped-file logs, and the atomic ``last.pt`` with numbered copies.

A training command brings a *job* (:class:`Job`): its model, optimizers and loss, and what it does around
a step (CMA's positive sets and memory update; the classifier's warm-up). The trainer does the rest, the
same way for every job: the run folder and ``config.yaml``, steps per epoch, the start from
``run.init_from`` or the resume from ``last.pt``, DDP, the per-step sequence (learning rate, batch
preprocessing, channels-last inputs, the optimizer step, counters, skipped files, progress, metrics,
checkpoints) and the summary. ``pretrain.py`` and ``finetune.py`` hold only what is their own.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .. import distributed as dist
from ..config import ConfigError, InputError, from_saved, to_dict
from ..data.datasets import AVClipDataset, BatchPreprocess, DataConfig, av_collate
from ..progress import Progress, counted
from .checkpoint import keep_copy, load_checkpoint, prune_checkpoints, save_atomic
from .configs import OptimConfig, RunConfig
from .guard import DivergenceGuard, RunDiverged
from .prefetch import Prefetcher
from .resume import RunShape, changed_values, config_hash, gather_rng_states, resume_position, set_rng_state
from .signals import RunInterrupted, StopRequests, ignore_in_worker
from .timing import PhaseTimer
from ..fileio import to_json, write_json

__all__ = ["Checkpointer", "EpochBatches", "Job", "RunLog", "Runtime", "StepStats", "Trainer", "UpdateUndo", "compile_model",
           "epoch_indices", "lr_at", "make_optimizer", "optimizer_step", "resolve_device", "setup", "to_channels_last",
           "train_batches", "train_step"]


@dataclass
class Runtime:
    """Where this process runs: rank, local rank, world size, device, and the mixed-precision settings."""

    rank: int
    local_rank: int
    world: int
    device: torch.device
    use_amp: bool
    amp_dtype: torch.dtype

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Active for float16 autocast only (bfloat16 needs no loss scaling)."""
        return torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":  # one GPU per process: torchrun's LOCAL_RANK picks it
        return torch.device("cuda", local_rank)
    return torch.device(name)


def setup(run: RunConfig) -> Runtime:
    """Join torchrun's process group (gloo when ``run.device`` is cpu; collectives wait ``run.dist_timeout_min``
    for the slowest process) and pick this process's device."""
    rank, local_rank, world = dist.init_from_env("gloo" if run.device == "cpu" else None, run.dist_timeout_min)
    device = resolve_device(run.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    use_amp = run.amp and device.type == "cuda"
    dtype = torch.bfloat16 if run.amp_dtype == "bfloat16" else torch.float16
    return Runtime(rank, local_rank, world, device, use_amp, dtype)


def make_optimizer(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum), Adam (L2 weight decay) or AdamW (decoupled weight decay) over ``params`` (tensors or
    parameter groups)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


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


class EpochBatches(Sequence):
    """This process's batches of an epoch, cut from one seeded permutation (int64, 8 bytes per item) as the
    loader asks for them: no Python list of every index is held."""

    def __init__(self, order: np.ndarray, batch: int, rank: int, world: int, first: int = 0) -> None:
        self.order, self.batch, self.rank, self.world = order, batch, rank, world
        self.first = first
        self.steps = len(order) // (batch * world)

    def __len__(self) -> int:
        return max(0, self.steps - self.first)

    def __getitem__(self, s: int | slice) -> Any:
        if isinstance(s, slice):
            start, stop, stride = s.indices(len(self))
            if stride != 1 or stop < len(self):
                raise ValueError("EpochBatches slices as batches[k:] only")
            return EpochBatches(self.order, self.batch, self.rank, self.world, self.first + start)
        if not 0 <= s < len(self):
            raise IndexError(s)
        lo = (self.first + s) * self.batch * self.world + self.rank * self.batch
        return self.order[lo : lo + self.batch].tolist()


def epoch_indices(n: int, epoch: int, seed: int, batch: int, rank: int, world: int) -> EpochBatches:
    """This process's batches of an epoch: a seeded permutation split across processes, last partial
    batch dropped (every process runs the same number of steps)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).numpy()
    return EpochBatches(order, batch, rank, world)


def train_batches(dataset: Dataset, run: RunConfig, batch_size: int, num_workers: int, rt: Runtime, step: int,
                  steps_per_epoch: int, total_steps: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(epoch, batch)`` for each step from ``step`` to ``total_steps``: every epoch's seeded batches of this
    process (from inside the epoch when resuming), loaded by a fresh DataLoader. Before an epoch's batches are
    made the dataset learns its epoch. A stream (an IterableDataset: shards) makes its own batches of the epoch
    and is told how many steps of it were already taken. The job's epoch hook is not run here: the
    :class:`~avssl.train.prefetch.Prefetcher` runs it when its caller reaches the epoch's first batch."""
    while step < total_steps:
        epoch = step // steps_per_epoch
        dataset.set_epoch(epoch)
        # the loader's own generator: otherwise it draws its workers' base seed from the global RNG at every
        # (re)start, and a run resumed inside an epoch would draw dropout masks from a different stream
        common = dict(num_workers=num_workers, collate_fn=av_collate, pin_memory=rt.device.type == "cuda",
                      generator=torch.Generator().manual_seed(run.seed * 100_003 + epoch),
                      worker_init_fn=ignore_in_worker if num_workers else None)
        if isinstance(dataset, IterableDataset):
            dataset.skip(step - epoch * steps_per_epoch)  # resume inside an epoch
            loader = DataLoader(dataset, batch_size=batch_size, **common)
        else:
            batches = epoch_indices(len(dataset), epoch, run.seed, batch_size, rt.rank, rt.world)
            loader = DataLoader(dataset, batch_sampler=batches[step - epoch * steps_per_epoch :], **common)
        taken = 0
        it = iter(loader)
        try:
            for batch in it:
                yield epoch, batch
                step += 1
                taken += 1
                if step >= total_steps:
                    return
        finally:  # on every way out (an error, a stop): the workers told to go now, not whenever this is collected
            getattr(it, "_shutdown_workers", lambda: None)()
        if isinstance(dataset, IterableDataset) and step % steps_per_epoch:  # a stream ended early
            raise RuntimeError(f"the epoch's stream ended after {taken} of its batches")


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward (scaled when the scaler is active) and one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


class UpdateUndo:
    """What ``run.on_divergence: skip_batch`` needs to make a step with a non-finite loss change nothing, decided
    on the device: :meth:`save` keeps the model's parameters and buffers (batch-norm statistics) and the
    optimizer's state before the step; :meth:`restore` puts each back where ``keep_old`` (a 0-d bool on the
    device) is true, with ``torch.where``, so that no value is read. An optimizer state created by the step
    itself (its first) goes back to zeros. Adam's step count, kept on the host, still advances."""

    def __init__(self, model: nn.Module) -> None:
        self.tensors = [p for p in model.parameters()] + list(model.buffers())
        self.saved: list[torch.Tensor] = []
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def save(self, optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            self.saved = [t.detach().clone() for t in self.tensors]
            self.state = {id(p): {k: v.detach().clone() for k, v in st.items() if _device_float(v, p)}
                          for p, st in optimizer.state.items()}

    @torch.no_grad()
    def restore(self, keep_old: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        for t, old in zip(self.tensors, self.saved):
            t.copy_(torch.where(keep_old, old, t))
        for p, st in optimizer.state.items():
            before = self.state.get(id(p), {})
            for k, v in st.items():
                if _device_float(v, p):
                    v.copy_(torch.where(keep_old, before[k] if k in before else torch.zeros_like(v), v))
        self.saved, self.state = [], {}


def _device_float(v: Any, p: torch.Tensor) -> bool:
    return isinstance(v, torch.Tensor) and v.is_floating_point() and v.device == p.device and v.dim() > 0


class StepStats:
    """The loss and the job's metrics, summed on the device over the steps between log steps and read there in one
    transfer: :meth:`add` each step (nothing is read), :meth:`read` on a log step (the interval's means)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.other: dict[str, Any] = {}
        self.steps = 0
        self.last_loss: torch.Tensor | None = None

    def add(self, loss: torch.Tensor, metrics: dict[str, Any]) -> None:
        self.last_loss = loss.detach()
        self.steps += 1
        for k, v in {"loss": loss, **metrics}.items():
            if isinstance(v, torch.Tensor):
                v = v.detach().float().reshape(())
                self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            else:
                self.other[k] = v

    def read(self) -> dict[str, Any]:
        if not self.steps:
            return {}
        names = list(self.sums)
        values = torch.stack([self.sums[k] for k in names]).tolist() if names else []
        row = {**self.other, **{k: v / self.steps for k, v in zip(names, values)}}
        self.sums, self.other, self.steps = {}, {}, 0
        return row

    def final_loss(self) -> float:
        return float(self.last_loss) if self.last_loss is not None else float("nan")


_COMPILERS = ("torch/_dynamo", "torch/_inductor", "torch/_functorch", "torch/fx", "torch/_subclasses")


def compile_model(model: Callable, setting: bool | str) -> Callable:
    """``torch.compile`` of ``model`` (a module or a function; ``True``: the default mode, or a mode such as
    ``max-autotune``), static shapes (every training batch has the same shape). Under DDP, pass the DDP-wrapped
    model (PyTorch's documented order: its optimizer splits the graph at the gradient buckets)."""
    mode = None if setting is True else str(setting)
    return torch.compile(model, mode=mode, dynamic=False)


def _compiler_failed(e: BaseException) -> bool:
    """Whether ``e`` came from torch.compile's machinery (graph capture, AOT autograd, Inductor, its C++/Triton
    build), as opposed to the step itself."""
    try:
        from torch._dynamo.exc import TorchDynamoException

        if isinstance(e, TorchDynamoException):
            return True
    except ImportError:
        pass
    tb = e.__traceback__
    while tb is not None:
        if any(c in tb.tb_frame.f_code.co_filename.replace("\\", "/") for c in _COMPILERS):
            return True
        tb = tb.tb_next
    return False


class RunLog:
    """``metrics.jsonl`` (a row per logging step), ``skipped.jsonl`` (files that failed to decode, gathered
    from every process) and TensorBoard when asked; written by rank 0 only."""

    def __init__(self, out: Path, tensorboard: bool, tag: str) -> None:
        self.main = dist.is_main()
        self.tag = tag
        self.metrics = (out / "metrics.jsonl").open("a") if self.main else None
        self.skipped = (out / "skipped.jsonl").open("a") if self.main else None
        self.writer = None
        if tensorboard and self.main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError("run.tensorboard needs the tensorboard package: pip install tensorboard") from e
            self.writer = SummaryWriter(str(out / "tb"))

    def failures(self, local: list[dict[str, Any]]) -> int:
        """Gather the decoding failures of the steps since the last call (each with its ``step``) from every process
        and record them; returns their count. Every process calls it, on log steps."""
        failures = dist.gather_lists(local)
        if failures and self.skipped is not None:
            for f in failures:
                self.skipped.write(to_json(f) + "\n")
            self.skipped.flush()
        return len(failures)

    def row(self, step: int, row: dict[str, Any]) -> None:
        if not self.main:
            return
        self.metrics.write(to_json(row) + "\n")
        self.metrics.flush()
        if self.writer is not None:
            for k, val in row.items():
                if isinstance(val, (int, float)):
                    self.writer.add_scalar(f"{self.tag}/{k}", val, step)

    def image(self, name: str, path: Path, step: int) -> None:
        """A PNG (an evaluation's maps) in TensorBoard, when on."""
        if self.writer is not None and path.exists():
            from torchvision.io import read_image

            self.writer.add_image(f"{self.tag}/{name}", read_image(str(path))[:3], step)

    def close(self) -> None:
        for f in (self.metrics, self.skipped, self.writer):
            if f is not None:
                f.close()


class Checkpointer:
    """The run folder's ``last.pt``, rewritten atomically at most once per step, and numbered ``epoch_NNNN.pt``
    copies (hard links) of which the newest ``keep`` stay. Every process calls it (the generators' states are
    gathered from all of them); rank 0 writes. ``state(rng)`` gives the checkpoint's contents; ``before_save()``
    runs first on every process and may stop the run (the divergence guard under ``stop``) or return True to hold
    this checkpoint back."""

    def __init__(self, out: Path, state: Callable[[list[dict[str, torch.Tensor]]], dict[str, Any]], keep: int,
                 step: int, device: torch.device, before_save: Callable[[int], bool] = lambda step: False) -> None:
        self.out, self.state, self.keep, self.device, self.before_save = out, state, keep, device, before_save
        self.last = out / "last.pt"
        self.saved_step: int | None = step if self.last.exists() else None  # the step last.pt holds
        self.held = False  # the last checkpoint asked for was held back

    def save_last(self, step: int, force: bool = False) -> None:
        """Rewrite ``last.pt`` (unless ``before_save`` holds it back; ``force``: the end of a run, or a stop on a
        signal, which saves whatever the guard suspects)."""
        if self.saved_step == step:
            return
        self.held = self.before_save(step) and not force
        if self.held:
            return
        self.saved_step = step
        rng = gather_rng_states(self.device)  # every process's own generators
        if dist.is_main():
            save_atomic(self.state(rng), self.last)

    def keep_epoch(self, epoch: int) -> None:
        if dist.is_main() and not self.held and self.last.exists():
            keep_copy(self.last, self.out / f"epoch_{epoch:04d}.pt")
            prune_checkpoints(self.out, "epoch_*.pt", self.keep)

    def after_step(self, step: int, steps_per_epoch: int, run: RunConfig) -> None:
        """``last.pt`` every ``run.save_every_steps`` steps and at each epoch's end, where every
        ``run.checkpoint_every``-th epoch is also kept as ``epoch_NNNN.pt``."""
        if run.save_every_steps and step % run.save_every_steps == 0:
            self.save_last(step)
        if step % steps_per_epoch == 0:
            self.save_last(step)
            epoch = step // steps_per_epoch
            if run.checkpoint_every and epoch % run.checkpoint_every == 0:
                self.keep_epoch(epoch)


class Job(Protocol):
    """What a training command brings to the :class:`Trainer`."""

    model: nn.Module  # trained (DDP-wrapped under torchrun) and saved as the checkpoint's "model"
    optimizers: dict[str, torch.optim.Optimizer]  # saved under their names

    def describe(self, trainer: Trainer) -> str:
        """The line printed before training."""

    def init_from(self, path: str) -> None:
        """Start from another run's checkpoint (``run.init_from``), when not resuming."""

    def optimizer_at(self, step: int) -> tuple[torch.optim.Optimizer, float]:
        """The optimizer that takes this step, and its learning rate."""

    def on_epoch(self, epoch: int, step: int) -> None:
        """Before an epoch's first batch (also when resuming inside it)."""

    def loss(self, model: nn.Module, video: torch.Tensor, audio: torch.Tensor | None, batch: dict[str, Any],
             step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """The step's loss and metrics (floats or 0-d tensors, read only on logging steps)."""

    def after_step(self, keep: torch.Tensor | None = None) -> None:
        """After the optimizer step (e.g. the memory update); ``keep`` (a 0-d bool on the device, with
        ``skip_batch``): false where the step's loss was not finite and nothing may change."""

    def state(self) -> dict[str, Any]:
        """The job's own checkpoint entries (besides model, optimizers and the trainer's)."""

    def load_state(self, ck: dict[str, Any]) -> None:
        """Restore them from a checkpoint."""


def train_step(job: Job, model: nn.Module, video: torch.Tensor, audio: torch.Tensor | None, batch: dict[str, Any],
               step: int, scaler: torch.amp.GradScaler, guard: DivergenceGuard | None = None,
               undo: UpdateUndo | None = None) -> tuple[torch.Tensor, dict[str, Any], float]:
    """One optimizer step of ``job`` on a batch already on the device: (loss, metrics, learning rate). What
    :meth:`Trainer.fit` runs each step, and what ``tools/bench_train.py`` times. Nothing in it reads the device:
    the guard counts a non-finite loss on the device, and with ``undo`` (``skip_batch``) such a step's update is
    undone there."""
    opt, lr = job.optimizer_at(step)
    for group in opt.param_groups:
        group["lr"] = lr
    if undo is not None:
        undo.save(opt)  # before the forward pass, which updates batch-norm statistics
    loss, metrics = job.loss(model, video, audio, batch, step)
    finite = guard.finite(loss) if guard is not None else None
    optimizer_step(loss, opt, scaler)
    job.after_step(finite if undo is not None else None)
    if undo is not None:
        undo.restore(~finite, opt)
    if guard is not None:
        guard.count(step + 1, finite)
    return loss, metrics, lr


@dataclass
class _Loop:
    """The state of :meth:`Trainer.fit`'s loop (see :meth:`Trainer._loop`)."""

    step: int
    log: RunLog
    guard: DivergenceGuard
    undo: UpdateUndo | None
    ckpt: Checkpointer
    bar: Progress
    stats: StepStats
    timer: PhaseTimer
    watch: Callable[[], dict[str, torch.Tensor]]
    pending: list[dict[str, Any]] = field(default_factory=list)  # decoding failures since the last log step
    clips: int = 0
    clips_row: int = 0
    t_start: float = field(default_factory=time.perf_counter)
    t_row: float = field(default_factory=time.perf_counter)

    def close(self) -> None:
        self.bar.close()
        self.log.close()


class Trainer:
    """The training skeleton: ``Trainer(cfg, output_dir, tag)``, then :meth:`set_data`, then :meth:`fit` a
    job (built after :meth:`set_data`, on :attr:`device`, with the global RNG seeded by ``run.seed``)."""

    def __init__(self, cfg: Any, output_dir: str | Path, tag: str) -> None:
        self.cfg, self.tag = cfg, tag
        self.run: RunConfig = cfg.run
        self.optim: OptimConfig = cfg.optim
        self.rt = setup(self.run)
        self.out = Path(output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if dist.is_main():  # a run killed while writing a checkpoint leaves its temporary file
            for tmp in self.out.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        dist.barrier()
        self.dataset: AVClipDataset | None = None
        self.preprocess: BatchPreprocess | None = None
        self.steps_per_epoch = self.total_steps = 0
        self.num_workers = 0
        self.evaluator: Callable[[nn.Module, int], dict[str, Any]] | None = None
        self.eval_every = 0

    @property
    def device(self) -> torch.device:
        return self.rt.device

    def set_data(self, entries: Sequence[dict[str, Any]], data: DataConfig, cached: np.ndarray | None = None
                 ) -> AVClipDataset:
        """The training clips of ``entries`` (a list or :class:`~avssl.data.entries.Entries`; with the per-pixel
        and spectrogram work on the device where ``data.preprocess`` asks for it; ``cached``: the entries the
        decode-once cache serves), and the steps per epoch and in all."""
        dataset = AVClipDataset(entries, data, train=True, seed=self.run.seed, defer=self.defer(data), cached=cached)
        self._use(dataset, data, len(dataset))
        return dataset

    def set_stream(self, stream: IterableDataset, data: DataConfig, num_workers: int | None = None
                   ) -> IterableDataset:
        """Train on a stream of clips (:class:`~avssl.data.shards.ShardStream`): ``len(stream)`` samples per
        epoch, the stream's own batches, with ``num_workers`` loader workers (default ``data.num_workers``)."""
        self._use(stream, data, len(stream))
        if num_workers is not None:
            self.num_workers = num_workers
        return stream

    def defer(self, data: DataConfig) -> bool:
        """Whether the per-pixel and spectrogram work runs on the device (batched) rather than per item."""
        return data.preprocess == "device" or (data.preprocess == "auto" and self.device.type == "cuda")

    def _use(self, dataset: Dataset, data: DataConfig, clips: int) -> None:
        self.dataset = dataset
        self.preprocess = BatchPreprocess(data, train=True).to(self.device) if self.defer(data) else None
        self.num_workers = data.num_workers
        per_step = self.optim.batch_size * self.rt.world
        self.steps_per_epoch = clips // per_step
        if self.steps_per_epoch == 0:
            fits = clips // self.rt.world
            more = -(-per_step // max(1, clips // max(1, getattr(data, "clips_per_video", 1))))
            hint = (f"set optim.batch_size={fits} (or fewer)" if fits else "use fewer processes") + (
                f", or data.clips_per_video={more} to draw {more} clips of each video per epoch"
                if hasattr(data, "clips_per_video") else "")
            raise ConfigError(f"optim.batch_size: an epoch has {counted(clips, 'clip')}, fewer than one batch "
                              f"({self.optim.batch_size} x {counted(self.rt.world, 'process', 'processes')}): "
                              f"{hint}")
        self.total_steps = self.steps_per_epoch * self.optim.epochs
        if self.run.max_steps is not None:
            self.total_steps = min(self.total_steps, self.run.max_steps)
        torch.manual_seed(self.run.seed)

    @property
    def shape(self) -> RunShape:
        return RunShape(self.rt.world, self.optim.batch_size, self.steps_per_epoch)

    def _write_config(self) -> None:
        if dist.is_main():
            (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(self.cfg), sort_keys=False))

    def _check_config(self, ck: dict[str, Any], last: Path) -> None:
        """Stop (ConfigError) where the checkpoint was written with other training values, unless
        ``run.allow_config_change``; then the earlier config.yaml is kept beside the new one."""
        try:
            then = to_dict(from_saved(type(self.cfg), ck["config"]))  # today's defaults for keys added since
        except ConfigError as e:
            then = {"<unreadable config>": str(e)}
        changed = changed_values(then, to_dict(self.cfg))
        if not changed:
            return
        diff = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in changed)
        if not self.run.allow_config_change:
            raise ConfigError(f"{last} was written with other training values ({diff}): resume with --set "
                              "run.allow_config_change=true, or start in another --output-dir")
        if dist.is_main():
            old = self.out / "config.yaml"
            if old.exists():
                old.replace(self.out / f"config.before_step_{int(ck['step']):06d}.yaml")
            print(f"resuming with changed training values: {diff}", flush=True)
        self._write_config()

    def _start(self, job: Job) -> tuple[int, int]:
        """(step, skipped files so far): from ``last.pt`` when the folder has one, else step 0 (after the job
        starts from ``run.init_from`` when set)."""
        last = self.out / "last.pt"
        if not last.exists():
            self._write_config()
            if self.run.init_from:
                job.init_from(self.run.init_from)
            elif hasattr(job, "fresh_start"):  # e.g. an image encoder that starts from ImageNet
                job.fresh_start()
            return 0, 0
        try:
            ck = load_checkpoint(last)
        except InputError as e:
            copies = sorted(self.out.glob("epoch_*.pt"))
            hint = f"copy {copies[-1].name} over it to resume from there" if copies else "nothing else to resume from"
            raise InputError(f"{e}; the run cannot resume from it: move it away to start over, or {hint}") from None
        self._check_config(ck, last)
        step, note = resume_position(ck, self.shape)
        self.best = dict(ck.get("best") or {})
        job.model.load_state_dict(ck["model"])
        for name, opt in job.optimizers.items():
            opt.load_state_dict(ck[name])
        self.scaler.load_state_dict(ck["scaler"])
        job.load_state(ck)
        own_rng = set_rng_state(ck, self.rt.rank, self.rt.world, self.device)
        self.samples_seen = int(ck.get("samples_seen", step * self.shape.global_batch))
        if dist.is_main():
            print(f"resuming from {last} at step {step} (epoch {step // self.steps_per_epoch})", flush=True)
            self._stream_note(ck, step)
            if note:
                print(f"  {note}; the random streams are rank 0's, so the run is not bit-exact from here"
                      if not own_rng else f"  {note}", flush=True)
        return step, int(ck["skipped_total"])

    def _stream_note(self, ck: dict[str, Any], step: int) -> None:
        """A stream resumed inside an epoch on another layout (processes x loader workers) cannot replay the
        epoch's deal of shards: say so (the rest of the epoch is dealt anew)."""
        if not isinstance(self.dataset, IterableDataset) or step % self.steps_per_epoch == 0:
            return
        was = (int(ck.get("world_size", self.rt.world)), ck.get("loader_workers"))
        if was[1] is not None and was != (self.rt.world, self.num_workers):
            print(f"  the epoch's shards were dealt to {was[0]} process(es) x {max(1, was[1])} loader worker slot(s), "
                  f"now {self.rt.world} x {max(1, self.num_workers)}: the rest of epoch "
                  f"{step // self.steps_per_epoch} is dealt anew, so samples it already showed may come again and "
                  "others wait for the next epoch", flush=True)

    def _prepare(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The batch's inputs on the device: video and audio (finished there when preprocessing is deferred, in
        channels-last formats where the model is), memory-bank indices and labels; copies are non-blocking (the
        loader pins its batches on CUDA). Run by the :class:`~avssl.train.prefetch.Prefetcher`, on CUDA on its side
        stream while the previous step computes."""
        if self.preprocess is not None:  # uint8 frames and waveforms in: jitter, normalization, spectrogram here
            video, audio = self.preprocess(batch, self.device)
        else:
            video = batch["video"].to(self.device, non_blocking=True)
            audio = batch["audio"].to(self.device, non_blocking=True) if "audio" in batch else None
        if self.channels_last:
            video = video.contiguous(memory_format=torch.channels_last_3d)
            audio = audio.contiguous(memory_format=torch.channels_last) if audio is not None else None
        inputs = {"video": video, "index": batch["index"].to(self.device, non_blocking=True)}
        if audio is not None:
            inputs["audio"] = audio
        if "label" in batch:
            inputs["label"] = batch["label"].to(self.device, non_blocking=True)
        return inputs

    def set_evaluator(self, evaluator: Callable[[nn.Module, int], dict[str, Any]] | None, every: int) -> None:
        """Evaluate the model every ``every`` epochs (and before the first): ``evaluator(model, epoch)`` -> figures
        (:class:`~avssl.train.online.OnlineEval`), run by rank 0 while the others wait (they pass None and the same
        ``every``)."""
        self.evaluator, self.eval_every = evaluator, every

    def _evaluate(self, job: Job, log: RunLog, step: int) -> None:
        epoch = step // self.steps_per_epoch
        if not self.eval_every or epoch % self.eval_every:  # the same on every process
            return
        if dist.is_main() and self.evaluator is not None:
            t0 = time.perf_counter()
            figures = self.evaluator(job.model, epoch)  # gives the model back as it found it
            row = {"kind": "eval", "epoch": epoch, "step": step, **figures, "seconds": time.perf_counter() - t0}
            log.row(step, row)
            if "maps" in figures:
                log.image("eval_maps", self.out / figures["maps"], step)
            key = self.run.keep_best
            if key and isinstance(row.get(key), (int, float)) and row[key] > self.best.get("value", -math.inf):
                if self._ckpt.saved_step == step:  # last.pt holds this evaluation's weights
                    keep_copy(self.out / "last.pt", self.out / "best.pt")
                    self.best = {"figure": key, "value": row[key], "epoch": epoch, "step": step}
                    print(f"best.pt: {key} {row[key]:.4f} at epoch {epoch}", flush=True)
        dist.barrier()

    def setup_job(self, job: Job) -> None:
        """Before a checkpoint is loaded: channels-last weights where the inputs will be, the gradient scaler."""
        self.channels_last = self.device.type == "cuda" and self.run.channels_last
        if self.channels_last:
            to_channels_last(job.model)
        self.scaler = self.rt.grad_scaler()

    def wrap(self, job: Job) -> None:
        """After it: the model the step runs, DDP-wrapped under torchrun, then compiled with ``run.compile``
        (PyTorch's documented order for DDP); checkpoints keep saving ``job.model``, the plain module."""
        model: nn.Module = job.model
        if self.rt.world > 1:
            model = nn.parallel.DistributedDataParallel(
                job.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model, self.step_model = model, compile_model(model, self.run.compile) if self.run.compile else model
        if self.run.compile and hasattr(job, "compile_loss"):  # the loss too, where the job's compiles
            job.compile_loss(lambda fn: compile_model(fn, self.run.compile))

    def fit(self, job: Job) -> dict[str, Any]:
        """Train ``job`` to ``total_steps``; returns the summary (also in ``summary.json``). Between log steps
        (``run.log_every``) and checkpoint steps nothing reads the device (docs/architecture.md)."""
        run = self.run
        self.setup_job(job)
        self.samples_seen, self.best = 0, {}
        step, self.skipped = self._start(job)
        if step >= self.total_steps > 0:
            return self._already_finished(step)
        self.wrap(job)
        loop = self._loop(job, step)
        if dist.is_main():
            print(job.describe(self), flush=True)
        job.model.train()
        if step == 0:
            self._evaluate(job, loop.log, 0)  # where the run starts from
        loop.t_start = loop.t_row = time.perf_counter()
        vote = dist.FlagVote()
        batches = Prefetcher(train_batches(self.dataset, run, self.optim.batch_size, self.num_workers, self.rt, step,
                                           self.steps_per_epoch, self.total_steps),
                             self._prepare, self.device, loop.timer, on_epoch=job.on_epoch, step=step)
        stream = iter(batches)
        try:
            with StopRequests(announce=dist.is_main()) as stop:
                for epoch, batch, inputs in stream:
                    with loop.timer.span("compute"):
                        lr = self.step(job, batch, inputs, step, loop.guard, loop.undo, loop.stats)
                    step = loop.step = step + 1
                    loop.timer.step()
                    loop.clips += len(batch["index"]) * self.rt.world
                    self.samples_seen += len(batch["index"]) * self.rt.world
                    loop.pending += [{"step": step, **f} for f in batch["failures"]]
                    loop.bar.update(1)
                    if step % run.log_every == 0 or step == self.total_steps:
                        self._log_step(job, loop, epoch, lr)
                    loop.ckpt.after_step(step, self.steps_per_epoch, run)
                    if step % self.steps_per_epoch == 0:
                        t0 = time.perf_counter()
                        self._evaluate(job, loop.log, step)
                        loop.t_row += time.perf_counter() - t0  # the rate is the training's, evaluation left out
                    if vote.poll(stop.signum is not None) and step < self.total_steps:
                        vote.close()
                        self._interrupted(loop, stop.signum or 15)
                vote.close()
        except RunDiverged:
            loop.close()
            self.write_summary({"steps": step, "final_loss": loop.stats.final_loss(), "skipped_files": self.skipped,
                                "diverged": True, "last_good_step": loop.ckpt.saved_step, "output_dir": str(self.out)})
            raise
        finally:
            stream.close()  # the loader's workers stop now, whatever ended the loop
        loop.ckpt.save_last(step, force=True)
        loop.close()
        return self._summary(loop)

    def _already_finished(self, step: int) -> dict[str, Any]:
        """A run started again in the folder of a finished one: nothing to train, and its summary left as it is
        (returned with ``already_finished``)."""
        if dist.is_main():
            print(f"{self.tag}: already finished at step {step} (nothing to do; {self.out / 'summary.json'} is kept)",
                  flush=True)
        try:
            summary = json.loads((self.out / "summary.json").read_text())
        except (OSError, ValueError):
            summary = {"steps": step, "output_dir": str(self.out)}
        return {**summary, "already_finished": True}

    def _loop(self, job: Job, step: int) -> _Loop:
        """What the loop keeps while it runs: logs, the guard (and the undo of ``skip_batch``), checkpoints, the
        progress bar, the figures since the last log step, the timer."""
        run, rt = self.run, self.rt
        log = RunLog(self.out, run.tensorboard, self.tag)
        warmup = math.ceil(self.optim.warmup_epochs * self.steps_per_epoch)
        fill = self.steps_per_epoch if getattr(job, "has_memory", False) else 0  # the memory bank filled once
        guard = DivergenceGuard(run.on_divergence, run.on_collapse, run.collapse_std, run.collapse_window,
                                max(warmup, fill, 1), self.device, lambda row: log.row(row["step"], row),
                                self.steps_per_epoch)
        loop: _Loop

        def state(rng: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
            config, at = to_dict(self.cfg), loop.step
            return {"config": config, "config_hash": config_hash(config), "model": job.model.state_dict(),
                    **{name: opt.state_dict() for name, opt in job.optimizers.items()},
                    "scaler": self.scaler.state_dict(), "step": at, "epoch": at // self.steps_per_epoch,
                    "world_size": rt.world, "batch_size": self.optim.batch_size,
                    "steps_per_epoch": self.steps_per_epoch, "samples_seen": self.samples_seen,
                    "loader_workers": self.num_workers, "skipped_total": self.skipped, "rng": rng, "best": self.best,
                    **job.state()}

        def before_save(at: int) -> bool:  # every process: a non-finite loss since the last look stops the run here
            if run.on_divergence == "stop":
                guard.poll(at, loop.ckpt.saved_step)
            return guard.holds_checkpoint()

        ckpt = Checkpointer(self.out, state, run.keep, step, self.device, before_save)
        self._ckpt = ckpt
        bar = Progress(self.total_steps, self.tag, "step", step, run.progress and dist.is_main(), run.log_every)
        loop = _Loop(step, log, guard, UpdateUndo(job.model) if guard.skips else None, ckpt, bar, StepStats(),
                     PhaseTimer(self.device, run.time_phases), getattr(job, "embeddings", lambda: {}))
        return loop

    def _log_step(self, job: Job, loop: _Loop, epoch: int, lr: float) -> None:
        """Every process: the decoding failures gathered, the interval's figures read (the device's one read), the
        guard's look; rank 0 writes the row."""
        t0, step = time.perf_counter(), loop.step
        self.skipped += loop.log.failures(loop.pending)
        loop.pending = []
        row = loop.stats.read()
        loop.guard.poll(step, loop.ckpt.saved_step)
        row.update(loop.guard.watch(step, loop.watch(), loop.ckpt.saved_step))
        now = time.perf_counter()
        loop.bar.update(0, loss=f"{row['loss']:.4f}")
        loop.log.row(step, {"kind": "train", "step": step, "epoch": epoch, "epochs": step / self.steps_per_epoch,
                            **row, "lr": lr, "clips_per_s": (loop.clips - loop.clips_row) / max(now - loop.t_row, 1e-9),
                            "clips": loop.clips, "seconds": round(now - loop.t_start, 3), "time": time.time(),
                            "skipped_total": self.skipped, **loop.timer.read()})
        loop.clips_row, loop.t_row = loop.clips, now
        loop.timer.add_host("log", time.perf_counter() - t0)

    def _summary(self, loop: _Loop) -> dict[str, Any]:
        elapsed = time.perf_counter() - loop.t_start
        summary = {"steps": loop.step, "final_loss": loop.stats.final_loss(), "skipped_files": self.skipped,
                   "clips_per_s": loop.clips / elapsed if elapsed > 0 and loop.clips else None,
                   "output_dir": str(self.out)}
        if self.best:
            summary["best"] = self.best
        if loop.guard.events:
            summary["divergence_events"] = loop.guard.events
        if dist.is_main() and self.skipped:
            print(f"skipped {self.skipped} clip(s) that failed to decode; see {self.out / 'skipped.jsonl'}", flush=True)
        self.write_summary(summary)
        return summary

    def step(self, job: Job, batch: dict[str, Any], inputs: dict[str, torch.Tensor], step: int,
             guard: DivergenceGuard | None, undo: UpdateUndo | None, stats: StepStats) -> float:
        """One training step on a batch whose inputs are on the device (:meth:`_prepare`), its loss and metrics added
        to ``stats``; returns the learning rate. Nothing here reads the device (tests/train/test_engine.py runs it on
        the meta device, where any read raises). With ``run.compile``, a compilation that fails says so in one line
        and the step is run again eagerly, as every later one."""
        args = (inputs["video"], inputs.get("audio"), {**batch, **inputs}, step, self.scaler, guard, undo)
        try:
            loss, metrics, lr = train_step(job, self.step_model, *args)
        except Exception as e:
            if self.step_model is self.model or not _compiler_failed(e):
                raise
            if dist.is_main():
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                print(f"run.compile: compilation failed ({type(e).__name__}: {first}); going on eagerly", flush=True)
            self.step_model = self.model
            if hasattr(job, "compile_loss"):
                job.compile_loss(None)
            loss, metrics, lr = train_step(job, self.model, *args)
        stats.add(loss, metrics)
        return lr

    def _interrupted(self, loop: _Loop, signum: int) -> None:
        """Every process stops at the same step after a signal: the failures gathered, ``last.pt`` at this step,
        the summary; then :class:`RunInterrupted`."""
        self.skipped += loop.log.failures(loop.pending)
        loop.ckpt.save_last(loop.step, force=True)
        loop.close()
        self.write_summary({"steps": loop.step, "final_loss": loop.stats.final_loss(), "skipped_files": self.skipped,
                            "interrupted": True, "output_dir": str(self.out)})
        raise RunInterrupted(loop.step, signum)

    def write_summary(self, summary: dict[str, Any]) -> None:
        if dist.is_main():
            write_json(self.out / "summary.json", summary)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Channels-last weights for every convolution (3D: ``channels_last_3d``, 2D: ``channels_last``); the
    faster layout on GPUs. Inputs are converted by the trainer."""
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            m.to(memory_format=torch.channels_last_3d)
        elif isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)
    return model
