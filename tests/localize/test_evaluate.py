"""What the localization scores are computed from: the sound a still image is scored against, the partners a
clip's map is compared under, the exact cIoUs behind the summaries."""

from __future__ import annotations

import numpy as np
import torch
import torchvision.io as tvio

from avssl.data.datasets import DataConfig
from avssl.data.decode import decode_audio
from avssl.data.encode import write_av
from avssl.data.formats.localization import LocalizationSample
from avssl.localize.evaluate import _partners, annotated_time
from avssl.localize.heatmap import Localizer, MapConfig
from avssl.models.audio import AudioEncoderConfig
from avssl.models.avmodel import AVModel, ModelConfig
from avssl.models.video import VideoEncoderConfig

SR = 16000


def _localizer() -> Localizer:
    cfg = ModelConfig(video=VideoEncoderConfig(widths=(4, 4, 4, 4), blocks=(1, 1, 1, 1)),
                      audio=AudioEncoderConfig(widths=(4, 4, 4, 4), convs_per_stage=1, stem_channels=4), embed_dim=2)
    data = DataConfig()
    data.clip.video_duration, data.clip.fps, data.clip.audio_duration = 0.125, 8.0, 1.0  # localize_small_cpu's
    return Localizer(AVModel(cfg), data, MapConfig(size=32))


def test_a_still_is_scored_against_the_middle_of_its_sound(tmp_path):
    img = np.full((40, 60, 3), 90, np.uint8)
    for name in ("still.png", "still.jpg"):
        write = tvio.write_png if name.endswith("png") else tvio.write_jpeg
        write(torch.from_numpy(img).permute(2, 0, 1).contiguous(), str(tmp_path / name))
    t = np.arange(4 * SR) / SR
    write_av(tmp_path / "tone.wav", None, 16, (0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), SR,
             audio_codec="pcm_s16le")
    loc = _localizer()
    for name in ("still.png", "still.jpg"):
        sample = LocalizationSample("s", str(tmp_path / name), str(tmp_path / "tone.wav"), [[0, 0, 1, 1]])
        when, offset = annotated_time(sample)
        assert (when, offset) == (0.0, 2.0)  # the image's one frame, the middle of the 4 s sound
        wave = loc.audio_at(sample.video, when, sample.audio, offset)
        np.testing.assert_array_equal(wave, decode_audio(tmp_path / "tone.wav", 1.5, 1.0, SR).waveform)
        assert (np.abs(wave.reshape(10, -1)).max(1) > 0.25).all()  # no silence in the window
        maps = loc(tmp_path / name, audio=tmp_path / "tone.wav")  # `avssl localize still.jpg --audio tone.wav`
        assert maps.maps.shape == (1, 40, 60) and not any("silence" in n for n in maps.notes)


def test_mismatched_partners_are_drawn_across_kinds_at_random():
    samples = [LocalizationSample(f"{k}{i}", "v", "a", [[0, 0, 1, 1]], class_name=k) for k in "abcd" for i in range(5)]
    partners = _partners(samples, 3, seed=0)
    assert partners == _partners(samples, 3, seed=0) and partners != _partners(samples, 3, seed=1)
    for s, ps in zip(samples, partners):
        assert len(ps) == len(set(ps)) == 3 and all(samples[p].class_name != s.class_name for p in ps)
    first_partner_of_kind_a = {partners[i][0] for i in range(5)}
    assert len(first_partner_of_kind_a) > 1  # not the next other-kind clip for every clip of a kind
    assert _partners([LocalizationSample("x", "v", "a", [])], 3, 0) == [[]]
