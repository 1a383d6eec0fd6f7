"""The schemas of the training commands: ``avssl pretrain`` (:class:`PretrainConfig`) and ``avssl finetune``
(:class:`FinetuneConfig`), and the optimizer and run sections they share. Every checkpoint stores its
config as a plain dict; :func:`avssl.config.from_dict` reads it back."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..config import ConfigError
from ..data.datasets import DataConfig
from ..data.labeled import LabeledDataConfig
from ..localize.heatmap import MapConfig
from ..losses.avid import LossConfig
from ..models.avmodel import ModelConfig
from ..models.video import VideoEncoderConfig

__all__ = ["ClassifierModelConfig", "EvalConfig", "FinetuneConfig", "FinetuneSection", "OptimConfig",
           "PretrainConfig", "RunConfig"]


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

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"optim.batch_size: at least 1 clip per process, got {self.batch_size}")
        if self.epochs < 1:
            raise ConfigError(f"optim.epochs: at least 1, got {self.epochs}")
        if not self.lr >= 0:
            raise ConfigError(f"optim.lr: must be >= 0, got {self.lr}")


@dataclass
class RunConfig:
    # keys of earlier versions that older configs and checkpoints still carry: dropped when a checkpoint is read,
    # an error naming the replacement when a user gives them
    __removed__ = {"collapse_cosine": "replaced by run.collapse_std (a centred figure, per modality)",
                   "collapse_steps": "replaced by run.collapse_window (log steps)"}

    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: bool = True  # mixed precision (CUDA only)
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = True  # CUDA only
    log_every: int = 10  # steps (also the plain progress lines when the output is not a terminal)
    checkpoint_every: int = 1  # epochs; a numbered checkpoint is kept besides last.pt
    save_every_steps: int = 0  # also rewrite last.pt every N steps (0: at epoch ends only)
    keep: int = 3
    max_steps: int | None = None  # stop early (tests, smoke runs)
    # where the weights start from: an avssl pretraining checkpoint (or one written by `avssl import`).
    # Pretraining takes its model, memory bank and NCE estimate (e.g. CMA after AVID); fine-tuning its video
    # encoder (architecture and weights). Empty: random initialization.
    init_from: str | None = None
    tensorboard: bool = False
    progress: bool = True
    # resume from last.pt although training values of the config changed (it names them and stops otherwise)
    allow_config_change: bool = False
    # keep best.pt: the checkpoint of the evaluation with the highest value of this figure (a key of the "eval"
    # rows of metrics.jsonl, e.g. retrieval_v2a_R@1, knn_top1, loc_ciou_at_0.5)
    keep_best: str | None = None
    # a non-finite loss (train/guard.py): stop (at the next log or checkpoint step; last.pt keeps the last good
    # state), skip_batch (such a step changes nothing, decided on the device), or warn
    on_divergence: Literal["stop", "skip_batch", "warn"] = "stop"
    # embeddings collapsing: judged on log steps after warm-up and one epoch (the memory bank filled once): a
    # modality whose spread (std of its L2-normalized embeddings x sqrt(D): ~1 spread, 0 collapsed) is below
    # collapse_std at 3/4 of the last collapse_window judged log steps; warn, stop, or off
    on_collapse: Literal["warn", "stop", "off"] = "warn"
    collapse_std: float = 0.05
    collapse_window: int = 10
    # torch.compile the model the step runs: false, true (the default mode) or a mode ("max-autotune",
    # "reduce-overhead", ...); checkpoints keep the plain module's keys; a failed compilation says so and the run
    # goes on eagerly
    compile: bool | Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = False
    time_phases: bool = False  # per-step time waiting for data, preparing, computing, logging in metrics.jsonl
    # how long a collective waits for the slowest process (rank 0 building a manifest, indexing shards, evaluating)
    # before torchrun's job is stopped; PyTorch's default is 10 minutes
    dist_timeout_min: float = 60.0

    def __post_init__(self) -> None:
        for key in ("log_every", "collapse_window"):
            if getattr(self, key) < 1:
                raise ConfigError(f"run.{key}: at least 1, got {getattr(self, key)}")
        if not self.collapse_std >= 0:
            raise ConfigError(f"run.collapse_std: must be >= 0, got {self.collapse_std}")
        if not self.dist_timeout_min > 0:
            raise ConfigError(f"run.dist_timeout_min: must be positive, got {self.dist_timeout_min}")


@dataclass
class EvalConfig:
    """Evaluation during pretraining (train/online.py): every ``every`` epochs, on held-out videos."""

    every: int = 0  # epochs between evaluations (0: none)
    manifest: str | None = None  # held-out videos (a JSONL) for retrieval
    holdout: float = 0.0  # or: this share of the training videos held out (seeded by run.seed), kept in the run folder
    clips: int = 256  # retrieval over this many held-out videos, always the same ones
    keep_decoded_mb: int = 512  # evaluation clips decoded once and kept in memory up to this size (0: decode each time)
    # a labeled split for a kNN on frozen features (k, temperature: DINO's eval_knn): an official format with its
    # root and annotations, or "manifest": labels_root a JSONL with "label" per row (the bank), labels_annotations
    # the JSONL of the queries
    labels_format: Literal["ucf101", "hmdb51", "kinetics", "list", "folders", "manifest"] | None = None
    labels_root: str | None = None
    labels_annotations: str | None = None
    labels_test_annotations: str | None = None
    labels_split: int = 1
    knn_k: int = 20
    knn_temperature: float = 0.07
    # a localization set: its annotations (localization_format vggss: a vggss.json, composed or VGG-SS's own;
    # flickr: Flickr-SoundNet's folder of XML files) and its media under localization_media (default: the
    # annotations' folder): cIoU@0.5 and AUC under localization_binarize (EZ-VSL's protocol: median), listening
    # figures
    localization: str | None = None
    localization_media: str | None = None
    localization_format: Literal["vggss", "flickr"] = "vggss"
    localization_binarize: Literal["median", "median_inclusive", "absolute", "adaptive"] = "adaptive"
    localization_clips: int = 48
    maps: int = 4  # held-out clips whose maps are drawn at each evaluation (with localization)

    def __post_init__(self) -> None:
        if self.every < 0 or not 0 <= self.holdout < 1:
            raise ConfigError(f"eval.every >= 0 and 0 <= eval.holdout < 1, got {self.every} and {self.holdout}")
        if self.keep_decoded_mb < 0:
            raise ConfigError(f"eval.keep_decoded_mb >= 0, got {self.keep_decoded_mb}")


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    localize: MapConfig = field(default_factory=MapConfig)  # how `avssl localize` makes this model's maps by default
    eval: EvalConfig = field(default_factory=EvalConfig)  # evaluation during pretraining


@dataclass
class ClassifierModelConfig:
    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)  # without run.init_from


@dataclass
class FinetuneSection:
    # full: train everything; linear: frozen encoder, batch-normalized linear classifier on the pooled feature;
    # stages: frozen encoder, one batch-normalized linear classifier per stage on its max-pooled map (the
    # released Kinetics linear protocol), each reported
    mode: Literal["full", "linear", "stages"] = "full"
    stage_grids: list[int] = field(default_factory=lambda: [12, 8, 6, 4])  # stages: max-pool grid over space
    # linear, stages: the frozen encoder's batch norm while the classifier trains: "eval" (running statistics) or
    # "train" (batch statistics, running ones updated: the released linear evaluation's model.train(True))
    encoder_bn: Literal["eval", "train"] = "eval"
    dropout: float = 0.5  # on the pooled feature
    # full mode: train the classifier alone first, with its own optimizer at the base lr (released: 5 epochs);
    # the main optimizer starts fresh after it
    classifier_warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        if len(self.stage_grids) != 4 or any(g < 1 for g in self.stage_grids):
            raise ConfigError(f"finetune.stage_grids: one positive grid size per encoder stage (4), got "
                              f"{self.stage_grids}")
        if self.classifier_warmup_epochs < 0 or not math.isfinite(self.classifier_warmup_epochs):
            raise ConfigError(f"finetune.classifier_warmup_epochs: must be >= 0, got {self.classifier_warmup_epochs}")


@dataclass
class FinetuneConfig:
    # model.checkpoint was the fine-tuning key of run.init_from; older configs and checkpoints still read
    __renamed__ = {"model.checkpoint": "run.init_from"}

    data: LabeledDataConfig = field(default_factory=LabeledDataConfig)
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
