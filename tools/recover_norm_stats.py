"""Recover the per-frequency normalization statistics of a released spectrogram from its output.

The AVID-CMA authors' ``LogSpectrogram(24000, n_fft=512, hop_size=0.01, normalize=True)`` returns
``(dB - mean) / (std + 1e-5)`` per frequency bin. Given a waveform and what their code returned for it
(a file holding ``waveform`` (N,) at 24 kHz and ``audio`` (B, 1, frames, 257): item 0 of ``waveform``, item 1
of the waveform reversed), this script computes the dB spectrogram itself (librosa, as their code does) and
solves the affine map per bin by least squares, then writes the statistics as JSON with the residual.

    python tools/recover_norm_stats.py --reference reference.pt --output stats.json

This is how ``avssl/data/assets/avid_cma_spectdb_24k_257_stats.json`` was made (the published ``.npz`` could not
be downloaded where avssl is developed); a user with the published file can pass it instead with
``data.spectrogram.norm_stats=PATH.npz``.
"""

from __future__ import annotations

import argparse
import json

import librosa
import numpy as np
import torch


def released_db(wave: np.ndarray, frames: int) -> np.ndarray:
    """Their dB spectrogram (librosa >= 0.10 pads the STFT with zeros), ``(257, frames)``."""
    power = np.abs(librosa.stft(wave.astype(np.float32), n_fft=1024, hop_length=240)) ** 2
    power = np.concatenate([power[:1], power[1:].reshape(256, 2, -1).mean(1)], 0)[:, :frames]
    return librosa.power_to_db(power, top_db=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="a torch file with 'waveform' and 'audio' (see above)")
    p.add_argument("--output", required=True)
    args = p.parse_args()
    ref = torch.load(args.reference, weights_only=True)
    wave = ref["waveform"].numpy()
    target = ref["audio"][:, 0].transpose(1, 2).numpy().astype(np.float64)  # (B, 257, frames)
    frames = target.shape[-1]
    db = np.stack([released_db(wave, frames), released_db(wave[::-1].copy(), frames)]).astype(np.float64)
    x = db.transpose(1, 0, 2).reshape(257, -1)  # dB = scale * normalized + mean
    y = target.transpose(1, 0, 2).reshape(257, -1)
    mean, std, residual = [], [], 0.0
    for f in range(257):
        a = np.stack([y[f], np.ones_like(y[f])], 1)
        (scale, m), *_ = np.linalg.lstsq(a, x[f], rcond=None)
        residual = max(residual, float(np.abs(a @ np.array([scale, m]) - x[f]).max()))
        mean.append(round(float(m), 6))
        std.append(round(float(scale) - 1e-5, 6))
    print(f"max residual {residual:.2e} dB over {x.shape[1]} points per bin")
    with open(args.output, "w") as f:
        json.dump({"mean": mean, "std": std, "max_residual_db": residual}, f)


if __name__ == "__main__":
    main()
