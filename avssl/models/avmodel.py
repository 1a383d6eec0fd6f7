"""The audio-visual model: both encoders and their projection heads into one embedding space, and the audio
front end its audio encoder was trained with (``spectrogram``: waveform -> the input ``embed_audio`` takes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..config import ConfigError
from ..data.audio import Spectrogram, SpectrogramConfig
from .audio import AudioEncoderConfig, Conv2DAudio
from .frame import FrameEncoder, FrameEncoderConfig
from .heads import ProjectionHead
from .video import R2Plus1D, VideoEncoderConfig

__all__ = ["AVModel", "ModelConfig", "count_parameters"]


@dataclass
class ModelConfig:
    # the video encoder: "r2plus1d" (3D, model.video) or "frame" (2D on single frames, model.frame: for localization)
    video_encoder: Literal["r2plus1d", "frame"] = "r2plus1d"
    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)
    frame: FrameEncoderConfig = field(default_factory=FrameEncoderConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    embed_dim: int = 128
    head_hidden: int | None = None  # None -> the encoder's width
    head_dims: list[int] | None = None  # every head layer's width, e.g. [512, 512, 128]; ends with embed_dim
    head_bn: bool = False  # batch-normalize the heads' outputs before the L2 normalization (heads.py)

    def __post_init__(self) -> None:
        if self.head_dims and self.head_dims[-1] != self.embed_dim:
            raise ConfigError(f"model.head_dims must end with model.embed_dim ({self.embed_dim}), got {self.head_dims}")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class AVModel(nn.Module):
    """``audio_frontend``: the spectrogram the audio encoder was trained on (a checkpoint's ``data.spectrogram``);
    it holds no weights, and :meth:`spectrogram` needs it."""

    def __init__(self, cfg: ModelConfig | None = None, audio_frontend: SpectrogramConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        self.video = FrameEncoder(cfg.frame) if cfg.video_encoder == "frame" else R2Plus1D(cfg.video)
        self.audio = Conv2DAudio(cfg.audio)
        self.video_head = ProjectionHead(self.video.out_dim, cfg.embed_dim, cfg.head_hidden, cfg.head_dims, cfg.head_bn)
        self.audio_head = ProjectionHead(self.audio.out_dim, cfg.embed_dim, cfg.head_hidden, cfg.head_dims, cfg.head_bn)
        self.frontend = Spectrogram(audio_frontend) if audio_frontend is not None else None

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

    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` float RGB clips -> unit-norm ``(B, D)``. The clips the model was trained on: ``T``
        frames at the config's ``data.clip.fps``, ``H x W`` its ``data.clip.crop`` (other sizes run; the pooling
        makes any size fit), values in [0, 1] then normalized with ``data.video_aug.mean``/``std`` (ImageNet's for
        the released models)."""
        return self.video_head(self.video(video)[1])

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, 1, F, T)`` spectrograms, as :meth:`spectrogram` makes them from ``data.clip.audio_duration``
        seconds of mono audio at :attr:`sample_rate` -> unit-norm ``(B, D)``."""
        return self.audio_head(self.audio(audio)[1])

    def dense_video(self, video: torch.Tensor) -> torch.Tensor:
        """Per-location unit-norm embeddings ``(B, D, T', H', W')`` (for localization)."""
        fmap = self.video(video)[0]
        return self.video_head(fmap.movedim(1, -1)).movedim(-1, 1)

    def spatial_video(self, video: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of each spatial location of the time-averaged feature map ``(B, D, H', W')``:
        what the max-over-locations (MIL) loss trains and what localization maps compare with the audio."""
        fmap = self.video(video)[0].mean(dim=2)
        return self.video_head(fmap.movedim(1, -1)).movedim(-1, 1)

    def forward(
        self, video: torch.Tensor, audio: torch.Tensor, spatial: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(video ``(B, D)``, or ``(B, D, H', W')`` per location with ``spatial``; audio ``(B, D)``)."""
        return self.spatial_video(video) if spatial else self.embed_video(video), self.embed_audio(audio)
