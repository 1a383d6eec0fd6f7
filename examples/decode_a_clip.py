"""Decode one synchronized audio-visual clip and turn its audio into a log-mel spectrogram.

    python examples/decode_a_clip.py [VIDEO]      # without VIDEO, a synthetic clip is made first
"""

import sys
import tempfile
from pathlib import Path

import torch

from avssl.data.audio import Spectrogram, SpectrogramConfig
from avssl.data.decode import decode_clip, probe
from avssl.data.synthetic import synthesize

if len(sys.argv) > 1:
    video = sys.argv[1]
else:
    video = synthesize(Path(tempfile.mkdtemp()) / "media", num_clips=1, seed=0)[0]

# 1. What is in the file?
info = probe(video)
print(f"{video}: {info.duration:.2f} s, video {info.video.width}x{info.video.height} @ {info.video.fps:g} fps",
      f"audio {info.audio.sample_rate} Hz x {info.audio.channels}" if info.audio else "no audio")

# 2. Cut a clip: 8 frames at 16 fps from t = 1 s, 2 s of audio centred on them, resampled to 16 kHz.
clip = decode_clip(video, start=1.0, video_duration=0.5, fps=16, size=112, audio_duration=2.0,
                   sample_rate=16000, missing_audio="silence")
print("frames", clip.frames.shape, clip.frames.dtype, "at", clip.frame_times.round(4).tolist())
print("waveform", clip.waveform.shape, "starting at", round(clip.audio_start, 4), "s")
print("notes:", clip.notes or "none")

# 3. Log-mel spectrogram: 100 frames per second, 80 mel bands.
spec = Spectrogram(SpectrogramConfig(sample_rate=16000))(torch.from_numpy(clip.waveform))
print("log-mel", tuple(spec.shape))
