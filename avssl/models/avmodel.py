"""The audio-visual model: both encoders and their projection heads into one embedding space, and the audio
front end its audio encoder was trained with (``spectrogram``: waveform -> the input ``embed_audio`` takes)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from ..config import ConfigError
from ..data.audio import Spectrogram, SpectrogramConfig
from .audio import AudioEncoderConfig, Conv2DAudio
from .frame import FrameEncoder, FrameEncoderConfig
from .heads import ProjectionHead
from .resnet import ResNetAudio, ResNetConfig, ResNetFrames
from .video import R2Plus1D, VideoEncoderConfig

__all__ = ["AVModel", "ModelConfig", "count_parameters"]


@dataclass
class ModelConfig:
    # the video encoder: "r2plus1d" (3D, model.video), "frame" (2D on single frames, model.frame: for localization)
    # or "resnet18" (torchvision's ResNet-18 on the centre frame, up to layer4: EZ-VSL's and SLAVC's, model.resnet)
    video_encoder: Literal["r2plus1d", "frame", "resnet18"] = "r2plus1d"
    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)
    frame: FrameEncoderConfig = field(default_factory=FrameEncoderConfig)
    resnet: ResNetConfig = field(default_factory=ResNetConfig)
    # the audio encoder: "conv2d" (AVID's, model.audio) or "resnet18" (a one-channel ResNet-18, global max-pooled)
    audio_encoder: Literal["conv2d", "resnet18"] = "conv2d"
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    embed_dim: int = 128
    head_hidden: int | None = None  # None -> the encoder's width
    head_dims: list[int] | None = None  # every head layer's width, e.g. [512, 512, 128]; ends with embed_dim
    head_bn: bool = False  # batch-normalize the heads' outputs before the L2 normalization (heads.py)
    head_branches: int = 1  # projections per modality (SLAVC: 2; the embedding is their concatenation, heads.py)
    # dropout on the encoders' features before the heads, in training (SLAVC: 0.9 on the image's)
    video_dropout: float = 0.0
    audio_dropout: float = 0.0
    # momentum copies of both encoders and heads (SLAVC): an exponential moving average of the trained ones
    # (momentum_rate per step), their targets; use_momentum: embed with them in eval mode (localize, embed, scores)
    momentum_encoders: bool = False
    momentum_rate: float = 0.999
    use_momentum: bool = False
    init: Literal["avssl", "peers"] = "avssl"  # "peers": EZ-VSL's initialization of the audio encoder and heads

    def __post_init__(self) -> None:
        if self.head_dims and self.head_dims[-1] != self.embed_dim:
            raise ConfigError(f"model.head_dims must end with model.embed_dim ({self.embed_dim}), got {self.head_dims}")
        if self.head_branches < 1:
            raise ConfigError(f"model.head_branches: at least 1, got {self.head_branches}")
        if self.use_momentum and not self.momentum_encoders:
            raise ConfigError("model.use_momentum needs model.momentum_encoders (the copies to embed with)")
        for key in ("video_dropout", "audio_dropout"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: a probability in [0, 1), got {getattr(self, key)}")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class AVModel(nn.Module):
    """``audio_frontend``: the spectrogram the audio encoder was trained on (a checkpoint's ``data.spectrogram``);
    it holds no weights, and :meth:`spectrogram` needs it."""

    def __init__(self, cfg: ModelConfig | None = None, audio_frontend: SpectrogramConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        self.video, self.audio, self.video_head, self.audio_head = _encoders(cfg)
        self.video_dropout = nn.Dropout(cfg.video_dropout)
        self.audio_dropout = nn.Dropout(cfg.audio_dropout)
        if cfg.init == "peers":
            peer_init([self.audio, self.video_head, self.audio_head])
        self.momentum: nn.ModuleDict | None = None
        if cfg.momentum_encoders:  # copies of the trained ones, updated by their moving average (not by gradients)
            self.momentum = nn.ModuleDict(dict(zip(("video", "audio", "video_head", "audio_head"),
                                                   _encoders(replace(cfg, resnet=replace(cfg.resnet, pretrained=None))))))
            self.reset_momentum()
        self.frontend = Spectrogram(audio_frontend) if audio_frontend is not None else None

    @torch.no_grad()
    def reset_momentum(self) -> None:
        """The momentum copies set to the trained modules' weights (their start), kept out of the gradients."""
        for name, copy in self.momentum.items():
            copy.load_state_dict(getattr(self, name).state_dict())
            copy.requires_grad_(False)

    @torch.no_grad()
    def update_momentum(self, rate: float | None = None) -> None:
        """One step of the moving average: each copy's parameter ``m * copy + (1 - m) * trained`` (``m``:
        ``rate``, default ``model.momentum_rate``); buffers (batch-norm statistics) are the copies' own, from
        their forward passes in training mode (as SLAVC does)."""
        m = self.cfg.momentum_rate if rate is None else rate
        for name, copy in self.momentum.items():
            for pc, pb in zip(copy.parameters(), getattr(self, name).parameters()):
                pc.mul_(m).add_(pb.detach(), alpha=1.0 - m)

    def _which(self, encoders: str | None) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
        """(video, audio, video head, audio head): the trained ones, or the momentum copies (``encoders``
        "momentum", or by default in eval mode with ``model.use_momentum``)."""
        if encoders is None:
            encoders = "momentum" if self.cfg.use_momentum and not self.training and self.momentum else "base"
        if encoders == "momentum":
            if self.momentum is None:
                raise ValueError("this model keeps no momentum encoders (model.momentum_encoders)")
            m = self.momentum
            return m["video"], m["audio"], m["video_head"], m["audio_head"]
        return self.video, self.audio, self.video_head, self.audio_head

    def video_encoders(self) -> list[nn.Module]:
        """Every video encoder of the model (the trained one and its momentum copy): what the localizer runs at
        another stride."""
        return [self.video] + ([self.momentum["video"]] if self.momentum is not None else [])

    @property
    def sample_rate(self) -> int | None:
        """The audio rate :meth:`spectrogram` expects (None without a front end)."""
        return self.frontend.cfg.sample_rate if self.frontend is not None else None

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, samples)`` float mono audio at :attr:`sample_rate` -> ``(B, 1, F, T)``, exactly the input
        :meth:`embed_audio` takes: the model's own front end (kind, rate, window, hop, dB, normalization)."""
        if self.frontend is None:
            raise RuntimeError("this AVModel has no audio front end: build it with audio_frontend=cfg.data.spectrogram "
                               "(avssl.load_pretrained does)")
        if waveform.dim() != 2:
            raise ValueError(f"waveform must be (B, samples), got {tuple(waveform.shape)}")
        return self.frontend(waveform).unsqueeze(1)

    def embed_video(self, video: torch.Tensor, encoders: str | None = None) -> torch.Tensor:
        """``(B, 3, T, H, W)`` float RGB clips -> unit-norm ``(B, D)``. The clips the model was trained on: ``T``
        frames at the config's ``data.clip.fps``, ``H x W`` its ``data.clip.crop`` (other sizes run; the pooling
        makes any size fit), values in [0, 1] then normalized with ``data.video_aug.mean``/``std`` (ImageNet's for
        the released models). ``encoders``: "base" or "momentum" (default: as :meth:`_which` says)."""
        v, _, vh, _ = self._which(encoders)
        return vh(self.video_dropout(v(video)[1]))

    def embed_audio(self, audio: torch.Tensor, encoders: str | None = None) -> torch.Tensor:
        """``(B, 1, F, T)`` spectrograms, as :meth:`spectrogram` makes them from ``data.clip.audio_duration``
        seconds of mono audio at :attr:`sample_rate` -> unit-norm ``(B, D)``."""
        _, a, _, ah = self._which(encoders)
        return ah(self.audio_dropout(a(audio)[1]))

    def dense_video(self, video: torch.Tensor, encoders: str | None = None) -> torch.Tensor:
        """Per-location unit-norm embeddings ``(B, D, T', H', W')`` (for localization)."""
        v, _, vh, _ = self._which(encoders)
        fmap = self.video_dropout(v(video)[0])
        return vh(fmap.movedim(1, -1)).movedim(-1, 1)

    def spatial_video(self, video: torch.Tensor, encoders: str | None = None) -> torch.Tensor:
        """Unit-norm embeddings of each spatial location of the time-averaged feature map ``(B, D, H', W')``:
        what the max-over-locations (MIL) loss trains and what localization maps compare with the audio."""
        return ProjectionHead.join(self.spatial_parts(video, encoders), dim=1)

    def spatial_parts(self, video: torch.Tensor, encoders: str | None = None) -> list[torch.Tensor]:
        """Each head branch's per-location unit-norm embeddings ``(B, D, H', W')`` (one for a plain head)."""
        v, _, vh, _ = self._which(encoders)
        fmap = self.video_dropout(v(video)[0].mean(dim=2))
        return [p.movedim(-1, 1) for p in vh.parts(fmap.movedim(1, -1))]

    def audio_parts(self, audio: torch.Tensor, encoders: str | None = None) -> list[torch.Tensor]:
        """Each head branch's unit-norm audio embedding ``(B, D)``."""
        _, a, _, ah = self._which(encoders)
        return ah.parts(self.audio_dropout(a(audio)[1]))

    def forward(
        self, video: torch.Tensor, audio: torch.Tensor, spatial: bool = False, parts: bool = False,
        encoders: str | None = None,
    ) -> tuple[Any, Any]:
        """(video ``(B, D)``, or ``(B, D, H', W')`` per location with ``spatial``; audio ``(B, D)``); with ``parts``,
        each head branch's per-location video and audio embeddings (lists: SLAVC's loss)."""
        if parts:
            return self.spatial_parts(video, encoders), self.audio_parts(audio, encoders)
        video_out = self.spatial_video(video, encoders) if spatial else self.embed_video(video, encoders)
        return video_out, self.embed_audio(audio, encoders)


def _encoders(cfg: ModelConfig) -> tuple[nn.Module, nn.Module, ProjectionHead, ProjectionHead]:
    """The video and audio encoders and their heads that ``cfg`` describes."""
    if cfg.video_encoder == "frame":
        video: nn.Module = FrameEncoder(cfg.frame)
    elif cfg.video_encoder == "resnet18":
        video = ResNetFrames(cfg.resnet)
    else:
        video = R2Plus1D(cfg.video)
    audio: nn.Module = ResNetAudio() if cfg.audio_encoder == "resnet18" else Conv2DAudio(cfg.audio)
    heads = [ProjectionHead(enc.out_dim, cfg.embed_dim, cfg.head_hidden, cfg.head_dims, cfg.head_bn,
                            cfg.head_branches) for enc in (video, audio)]
    return video, audio, heads[0], heads[1]


def peer_init(modules: list[nn.Module]) -> None:
    """EZ-VSL's and SLAVC's initialization of what they train from scratch: convolutions Kaiming-normal (fan out),
    linear layers truncated-normal (std 0.01), batch norms N(1, 0.02) weights and zero biases."""
    for net in modules:
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, mean=1, std=0.02)
                nn.init.constant_(m.bias, 0)
