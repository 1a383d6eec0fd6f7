"""The paper-scale configs carry the released AVID / AVID+CMA protocols (docs/paper_protocol.md)."""

from __future__ import annotations

import pytest
import torch

from avssl.config import load_config
from avssl.data.audio import Spectrogram
from avssl.data.datasets import AVClipDataset
from avssl.losses.cma import CMALoss, build_loss
from avssl.models.avmodel import AVModel, count_parameters
from avssl.train.pretrain import PretrainConfig

PAPER = {  # config: (dataset, batch over 8 GPUs, clips per video, lr, epochs, CMA refresh every N epochs)
    "configs/pretrain/avid_r2plus1d18_kinetics.yaml": ("kinetics", 256, 10, 2e-4, 30, None),
    "configs/pretrain/avid_cma_r2plus1d18_kinetics.yaml": ("kinetics", 256, 10, 2e-4, 20, 5),
    "configs/pretrain/avid_r2plus1d18_audioset.yaml": ("audioset", 160, 5, 5e-4, 40, None),
    "configs/pretrain/avid_cma_r2plus1d18_audioset.yaml": ("audioset", 160, 5, 1e-4, 40, 10),
}


@pytest.mark.parametrize("path", sorted(PAPER))
def test_paper_config_defines_the_released_protocol(path):
    _, batch, clips, lr, epochs, refresh = PAPER[path]
    cfg = load_config(PretrainConfig, path)
    c, d = cfg.data.clip, cfg.data
    # clips: 0.5 s at 16 fps, crop 224 of full-resolution frames; 2 s of 24 kHz audio
    clip = (round(c.video_duration * c.fps), c.crop, c.size, c.audio_duration, c.sample_rate, c.max_av_offset)
    assert clip == (8, 224, None, 2.0, 24000, 1.25)
    aug = d.video_aug
    assert aug.crop_scale == (0.08, 1.0) and aug.jitter_prob == 1.0
    assert (aug.brightness, aug.contrast, aug.saturation, aug.hue) == (0.4, 0.4, 0.4, 0.2)
    assert aug.mean == (0.485, 0.456, 0.406) and aug.std == (0.229, 0.224, 0.225)
    # log linear-frequency spectrogram, 257 bins x 200 frames for 2 s at 24 kHz
    spec = Spectrogram(d.spectrogram)(torch.randn(1, 48000))
    assert spec.shape == (1, 257, 200) and d.spectrogram.kind == "linear"
    # model: R(2+1)D-18 and Conv2D depth 10 as released, heads 512-512-128
    model = AVModel(cfg.model)
    assert (count_parameters(model.video), count_parameters(model.audio)) == (15_379_136, 4_725_696)
    widths = [m.out_features for m in model.video_head.mlp if isinstance(m, torch.nn.Linear)]
    assert widths == [512, 512, 128]
    with torch.no_grad():
        v, a = model.eval()(torch.randn(1, 3, 8, 224, 224), spec[:, None])
    assert v.shape == a.shape == (1, 128)
    # optimizer and schedule
    o = cfg.optim
    assert (o.name, o.lr, o.weight_decay, o.batch_size * 8, o.epochs, o.schedule) == ("adam", lr, 1e-5, batch, epochs,
                                                                                   "constant")
    # loss: NCE, 1024 negatives, momentum 0.5, cross-modal instance terms
    loss = build_loss(5000, cfg.model.embed_dim, cfg.loss)
    assert (cfg.loss.form, loss.num_negatives, cfg.loss.momentum, cfg.loss.temperature, cfg.loss.wmodal) == (
        "nce", 1024, 0.5, 0.07, 0.0)
    if refresh:
        assert isinstance(loss, CMALoss) and cfg.loss.cma_every == refresh
        assert (cfg.loss.cma_topk, cfg.loss.cma_negatives, cfg.loss.cma_form) == (32, 64, "nce")
        assert cfg.loss.xmodal == cfg.loss.cma_wmodal  # the released weights: 1 and 1, normalized
    assert d.clips_per_video == clips


def test_several_clips_per_video_share_one_memory_slot(synth_dir, tmp_path):
    from avssl.data.collection import build_manifest

    build_manifest(synth_dir, tmp_path / "m.jsonl", progress=False)
    cfg = load_config(PretrainConfig, "configs/pretrain/avid_small_cpu.yaml",
                      ["data.clips_per_video=3", f"data.cache_dir={tmp_path / 'cache'}"])
    ds = AVClipDataset(tmp_path / "m.jsonl", cfg.data, train=True, seed=0)
    n = len(ds.entries)
    assert len(ds) == 3 * n
    items = [ds[i] for i in (1, n + 1, 2 * n + 1)]
    assert {it["index"] for it in items} == {1}  # the same video, so the same memory slot
    assert len({round(it["start"], 6) for it in items}) == 3  # three different clips of it


@pytest.mark.parametrize("path", sorted(PAPER))
def test_paper_models_start_from_pytorchs_default_initialization(path):
    # Released: no custom init. PyTorch's default for a convolution has std 1/sqrt(3 fan_in); avssl's own
    # (kaiming, fan_out) would give sqrt(2 / fan_out): 0.0275 vs 0.0146 for the 3x7x7 stem.
    cfg = load_config(PretrainConfig, path)
    assert cfg.model.video.init == cfg.model.audio.init == "default"
    torch.manual_seed(0)
    stem = AVModel(cfg.model).video.stem[0].weight
    assert float(stem.detach().std()) == pytest.approx((3 * 3 * 7 * 7 * 3) ** -0.5, rel=0.05)
    assert cfg.data.spectrogram.normalize == "per_frequency" and cfg.data.spectrogram.norm_stats == "avid-cma-audioset"
    assert cfg.loss.nce_partition == "shared"
