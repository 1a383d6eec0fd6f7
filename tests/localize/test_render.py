"""The listening check of `avssl localize` (render.listening): maps that follow the sound against maps that do not."""

from __future__ import annotations

import numpy as np
import torch
import torchvision.io as tvio

from avssl.data.encode import write_av
from avssl.localize.heatmap import Localizer
from avssl.localize.render import listening
from tests.localize.test_heatmap import SR, BrightnessModel, _data, _model, _square_video


class HearingModel(BrightnessModel):
    """The bright object's embedding is met by any sound, the dark background's by silence."""

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        flat = audio.flatten(1)
        loud = ((flat.amax(1) - flat.amin(1)) > 1.0).float()[:, None]  # a log-mel of silence is flat
        return torch.cat([loud, 1 - loud], 1)


def _toned(path, seconds: float = 2.0):
    """The square video of test_heatmap with a steady 440 Hz tone all along."""
    _square_video(path)
    frames = list(tvio.read_video(str(path), pts_unit="sec")[0].numpy())
    t = np.arange(int(seconds * SR)) / SR
    write_av(path, frames, 16, (0.5 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), SR)
    return path


def test_maps_that_ignore_the_sound_are_called_so(tmp_path):
    loc = Localizer(_model(), _data())
    heard = listening(loc, loc.plan(_toned(tmp_path / "v.mp4")))
    assert heard["corr_silence"] > 0.999 and heard["corr_other"] > 0.999
    assert not heard["listens"] and "barely change" in heard["verdict"]


def test_a_steady_sound_keeps_a_listening_maps_shape_elsewhere_and_silence_tells(tmp_path):
    """Its own tone half the video away gives the same map (rightly); silence moves it to the background: the maps
    listen, whichever comparison would have been alike."""
    model = _model()
    model.__class__ = HearingModel
    loc = Localizer(model, _data())
    heard = listening(loc, loc.plan(_toned(tmp_path / "v.mp4")))
    assert heard["corr_other"] > 0.99 and heard["corr_silence"] < 0
    assert heard["listens"] and "under silence" in heard["verdict"]


def test_maps_held_in_memory_are_written_with_every_file_they_list(tmp_path):
    """write_video_outputs (for maps a caller already holds, Localizer(...)(path)) writes what info.json names."""
    from avssl.localize.heatmap import MapConfig
    from avssl.localize.render import write_video_outputs

    loc = Localizer(_model(), _data(), MapConfig(size=64, fps=4.0))
    res = loc(_square_video(tmp_path / "v.mp4"))
    info = write_video_outputs(res, tmp_path / "out", 4.0, gif=True)
    names = [n for v in info["files"].values() for n in (v if isinstance(v, list) else [v])]
    assert all((tmp_path / "out" / n).stat().st_size > 0 for n in names)
    maps = np.load(tmp_path / "out" / "maps.npy")
    assert maps.dtype == np.uint8 and maps.shape == res.maps.shape and info["num_maps"] == len(res.maps)
