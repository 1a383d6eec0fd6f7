"""Maps line up with the displayed frames: a planted model whose per-location embedding says how bright a
location is, and an audio embedding that asks for brightness, must light up the bright object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.io as tvio

from avssl.data.datasets import DataConfig
from avssl.data.decode import DecodeError
from avssl.data.encode import write_av
from avssl.localize.heatmap import Localizer, MapConfig, normalize_maps
from avssl.localize.metrics import binarize, ciou
from avssl.models.audio import AudioEncoderConfig
from avssl.models.avmodel import AVModel, ModelConfig
from avssl.models.video import VideoEncoderConfig

SR = 16000


class BrightnessModel(AVModel):
    """Per-location embedding (brightness, 0.1) normalized; every audio embeds to (1, 0)."""

    def spatial_video(self, video: torch.Tensor) -> torch.Tensor:
        b = F.avg_pool2d(video.mean(dim=(1, 2))[:, None], 8)  # (B, 1, H/8, W/8)
        return F.normalize(torch.cat([b, torch.full_like(b, 0.1)], 1), dim=1)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0]]).expand(len(audio), 2)


def _model() -> AVModel:
    cfg = ModelConfig(video=VideoEncoderConfig(widths=(4, 4, 4, 4), blocks=(1, 1, 1, 1)),
                      audio=AudioEncoderConfig(widths=(4, 4, 4, 4), convs_per_stage=1, stem_channels=4), embed_dim=2)
    return BrightnessModel(cfg)


def _data() -> DataConfig:
    data = DataConfig()
    data.clip.video_duration, data.clip.fps, data.clip.audio_duration = 0.25, 8.0, 0.5
    data.spectrogram.n_mels = 20
    return data


def _square_video(path: Path, h: int = 96, w: int = 160, rotation: int = 0, audio: bool = True,
                  click: float | None = None) -> Path:
    frames = []
    for i in range(16):
        img = np.full((h, w, 3), 30, np.uint8)
        x0 = 64
        img[10:42, x0 : x0 + 32] = 230
        frames.append(img)
    wave = None
    if audio:
        wave = np.zeros((1, 2 * SR), np.float32)
        if click is not None:
            wave[0, int(click * SR) : int(click * SR) + 80] = 0.9
    write_av(path, frames, 16, wave, SR, rotation=rotation)
    return path


@pytest.mark.parametrize("rotation, pad", [(0, 0.0), (90, 0.0), (0, 0.125), (90, 0.25)])
def test_maps_light_up_the_bright_object_at_the_frames_own_geometry(tmp_path, rotation, pad):
    video = _square_video(tmp_path / "sq.mp4", rotation=rotation)
    loc = Localizer(_model(), _data(), MapConfig(size=64, fps=4.0, batch_size=3, pad=pad))
    res = loc(video)
    assert res.times.tolist() == [0.0, 0.25, 0.5, 0.75]  # 1 s of video at 4 maps per second
    assert res.maps.dtype == np.float32 and res.maps.min() >= 0 and res.maps.max() <= 1
    assert res.maps.shape == res.frames.shape[:3]
    assert res.frames.shape[1:3] == ((96, 160) if rotation == 0 else (160, 96))  # shown upright
    for heat, frame in zip(res.maps, res.frames):
        bright = (frame.mean(axis=2) > 128).astype(np.float32)
        assert bright[np.unravel_index(np.argmax(heat), heat.shape)] == 1.0
        assert ciou(binarize(heat, "adaptive", bright), bright) > 0.6


def test_another_files_audio_and_an_offset(tmp_path):
    video = _square_video(tmp_path / "own.mp4", click=1.25)
    other = tmp_path / "other.wav"
    write_av(other, None, 16, np.full((1, SR), 0.3, np.float32), SR, audio_codec="pcm_s16le")
    loc = Localizer(_model(), _data(), MapConfig(size=64, fps=4.0))
    res = loc(video, audio=other)
    assert res.audio_source == str(other) and np.abs(res.waveform[: SR // 2]).mean() > 0.2
    shifted = loc(video, audio_offset=0.5)  # the compared audio starts 0.5 s later: the click at 0.75 s
    assert abs(np.argmax(np.abs(shifted.waveform)) / SR - 0.75) < 0.01
    assert shifted.audio_offset == 0.5


def test_a_video_without_audio_needs_another_files_audio(tmp_path):
    video = _square_video(tmp_path / "silent.mp4", audio=False)
    loc = Localizer(_model(), _data(), MapConfig(size=64, fps=4.0))
    with pytest.raises(DecodeError, match="no audio track"):
        loc(video)
    other = tmp_path / "a.wav"
    write_av(other, None, 16, np.zeros((1, SR), np.float32), SR, audio_codec="pcm_s16le")
    assert loc(video, audio=other).maps.shape[0] == 4


def test_a_still_image_with_a_sound_file(tmp_path):
    img = np.full((60, 100, 3), 30, np.uint8)
    img[5:35, 60:95] = 230
    tvio.write_png(torch.from_numpy(img).permute(2, 0, 1).contiguous(), str(tmp_path / "still.png"))
    write_av(tmp_path / "still.wav", None, 16, np.zeros((1, SR), np.float32), SR, audio_codec="pcm_s16le")
    res = Localizer(_model(), _data(), MapConfig(size=48))(tmp_path / "still.png", audio=tmp_path / "still.wav")
    assert res.maps.shape == (1, 60, 100)
    assert res.frames[0, 20, 80].min() > 200 and res.maps[0][20, 80] > 0.9


def test_normalizations():
    sim = torch.tensor([[[-0.5, 0.0], [0.25, 0.5]]])
    np.testing.assert_allclose(normalize_maps(sim, "minmax")[0], [[0, 0.5], [0.75, 1.0]])
    np.testing.assert_allclose(normalize_maps(sim, "fixed")[0], [[0, 0], [0.25, 0.5]])
    flat = normalize_maps(torch.zeros(1, 2, 2), "minmax")
    assert torch.isfinite(flat).all()


def test_the_last_stage_at_stride_1_doubles_the_map_with_the_same_weights():
    model = AVModel(ModelConfig(video=VideoEncoderConfig(widths=(4, 4, 8, 8), blocks=(1, 1, 1, 1)))).eval()
    x = torch.randn(1, 3, 4, 64, 96)
    coarse = model.spatial_video(x)
    model.video.set_last_stride(1)
    fine = model.spatial_video(x)
    assert coarse.shape[-2:] == (4, 6) and fine.shape[-2:] == (8, 12)
    model.video.set_last_stride(2)
    torch.testing.assert_close(model.spatial_video(x), coarse)


def test_surround_audio_and_audio_shorter_than_the_video(tmp_path):
    frames = [np.full((48, 64, 3), 100, np.uint8)] * 16
    t = np.arange(SR // 2) / SR  # 0.5 s of 5.1 audio under 1 s of video
    write_av(tmp_path / "short51.mp4", frames, 16, np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (6, 1)), SR)
    res = Localizer(_model(), _data(), MapConfig(size=48, fps=4.0))(tmp_path / "short51.mp4")
    assert res.maps.shape == (4, 48, 64) and np.isfinite(res.maps).all()
    assert "the last 0.50 s have no sound" in res.notes[0]  # the audio past its end is silence, said so in seconds
    assert res.notes[1].startswith("1 map of 4 (at 0.75 s) would compare its frames with more silence")
    assert np.abs(res.waveform[: SR // 4]).max() > 0.1 and np.abs(res.waveform[-SR // 4 :]).max() == 0


def test_a_corrupt_file_raises_the_decoders_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    with pytest.raises(DecodeError):
        Localizer(_model(), _data(), MapConfig(size=48))(bad)


def test_on_a_static_clip_the_first_map_equals_the_middle_one(tmp_path):
    # Near either end of the file the clip's window is shifted inside it, as training samples clips: it is not
    # padded (padding with silence inverted the first and last maps). Lossless frames and a tone of 400 Hz,
    # whose period divides the windows' shift, make the first and middle windows hold the same content.
    t = np.arange(SR) / SR
    path = tmp_path / "static.mkv"
    frames = [np.tile(np.linspace(0, 255, 96, dtype=np.uint8)[None, :, None], (64, 1, 3))] * 16
    write_av(path, frames, 16, (0.4 * np.sin(2 * np.pi * 400 * t))[None].astype(np.float32), SR,
             audio_codec="pcm_s16le", crf=0)
    cfg = ModelConfig(video=VideoEncoderConfig(widths=(4, 4, 4, 4), blocks=(1, 1, 1, 1)),
                      audio=AudioEncoderConfig(widths=(4, 4, 4, 4), convs_per_stage=1, stem_channels=4), embed_dim=4)
    torch.manual_seed(0)
    loc = Localizer(AVModel(cfg), _data(), MapConfig(size=64, fps=4.0, pad=0.0))
    res = loc(path)
    assert res.times.tolist() == [0.0, 0.25, 0.5, 0.75]
    assert loc.starts(res.times, 1.0).tolist() == [0.125, 0.125, 0.375, 0.625]  # inside [0, 1 s]
    np.testing.assert_allclose(res.maps[0], res.maps[2], atol=1e-4)
    assert not res.notes  # no silence compared


def _uniform(model: torch.nn.Module) -> torch.nn.Module:
    """Every convolution averages its inputs (positive, equal weights) and batch norm is the identity: a linear,
    symmetric network whose receptive fields are centred exactly where the architecture puts them."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            torch.nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
    return model.eval()


def _centroid(m: torch.Tensor) -> tuple[float, float]:
    m = m.abs().double()
    ys, xs = torch.meshgrid(torch.arange(m.shape[0]), torch.arange(m.shape[1]), indexing="ij")
    return float((m * ys).sum() / m.sum()), float((m * xs).sum() / m.sum())


@pytest.mark.parametrize("encoder, last_stride", [("frame", 1), ("r2plus1d", 2), ("r2plus1d", 1)])
@pytest.mark.parametrize("pad, display", [(0.0, (64, 80)), (0.125, (96, 120)), (0.125, (50, 62))])
def test_each_cell_is_drawn_where_its_receptive_field_is(encoder, last_stride, pad, display):
    """The centroid of the input gradient of cell (i, j), carried through the padding and the resize to the
    displayed frame, is where the map puts that cell's value, within a pixel (before: half a cell off)."""
    from avssl.models.frame import FrameEncoderConfig

    video = VideoEncoderConfig(widths=(4, 4, 4, 4), blocks=(1, 1, 1, 1))
    cfg = ModelConfig(video=video, video_encoder=encoder, frame=FrameEncoderConfig(widths=(4, 4, 4, 4)),
                      audio=AudioEncoderConfig(widths=(4, 4, 4, 4), convs_per_stage=1, stem_channels=4), embed_dim=2)
    model = _uniform(AVModel(cfg))
    loc = Localizer(model, _data(), MapConfig(size=64, pad=pad, last_stride=last_stride))
    h, w = 64, 80  # the encoder's input (short side 64)
    p = int(round(pad * h))
    x = torch.full((1, 3, 2, h + 2 * p, w + 2 * p), 0.5, requires_grad=True)
    with loc.map_stride():  # the encoder as the maps run it (and back at its own stride afterwards)
        fmap = model.video(x)[0].mean(2)[0]  # (C, h', w')
    assert model.video.last_stride == (1 if encoder == "frame" else 2)
    i, j = fmap.shape[1] // 2, fmap.shape[2] // 2
    fmap[:, i, j].sum().backward()
    gy, gx = _centroid(x.grad[0].sum((0, 1)))  # on the padded input
    H, W = display
    want = ((gy - p + 0.5) * H / h - 0.5, (gx - p + 0.5) * W / w - 0.5)  # on the displayed frame
    loc.similarity(torch.zeros(1, 2, h, w, 3, dtype=torch.uint8), torch.zeros(1, 8000))  # sets the geometry
    one = torch.zeros(1, *fmap.shape[1:])
    one[0, i, j] = 1.0
    drawn = _centroid(loc.project(one, H, W)[0])
    assert abs(drawn[0] - want[0]) < 1.0 and abs(drawn[1] - want[1]) < 1.0, (drawn, want)


def test_map_settings_that_cannot_work_stop_with_one_line():
    from avssl.config import ConfigError

    for bad in (dict(smooth=4), dict(smooth=0), dict(smooth=-3), dict(last_stride=3), dict(pad=0.6)):
        with pytest.raises(ConfigError, match="localize\\."):
            MapConfig(**bad)
    from avssl.models.frame import FrameEncoderConfig

    cfg = ModelConfig(video_encoder="frame", frame=FrameEncoderConfig(widths=(4, 4, 4, 4), strides=(1, 2, 2, 1)),
                      audio=AudioEncoderConfig(widths=(4, 4, 4, 4), convs_per_stage=1, stem_channels=4), embed_dim=2)
    with pytest.raises(ConfigError, match="trained at stride 1"):
        Localizer(AVModel(cfg), _data(), MapConfig(last_stride=2))
