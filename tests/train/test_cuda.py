"""The CUDA paths of pretraining (AMP with bf16 and fp16 + GradScaler, channels-last, batch preprocessing
on the GPU, checkpoint and resume). Skipped on machines without CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avssl.config import load_config
from avssl.data.collection import build_manifest
from avssl.data.synthetic import SynthSpec, synthesize
from avssl.losses.cma import build_loss
from avssl.models.avmodel import AVModel
from avssl.train.checkpoint import load_checkpoint
from avssl.train.pretrain import PretrainConfig, pretrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "configs" / "pretrain" / "avid_small_cpu.yaml"
KINETICS = ROOT / "configs" / "pretrain" / "avid_r2plus1d18_kinetics.yaml"


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cuda_media")
    synthesize(d / "media", 16, seed=2, spec=SynthSpec(width=160, height=128, fps=20, duration=3.0))
    build_manifest(d / "media", d / "manifest.jsonl", progress=False)
    return d / "manifest.jsonl"


def _over(manifest: Path, *extra: str) -> list[str]:
    return [f"data.manifest={manifest}", "data.num_workers=2", "optim.batch_size=4", "optim.epochs=2",
            "run.progress=false", "run.log_every=1", "loss.num_negatives=8", "run.device=cuda", *extra]


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_kinetics_config_smoke_run_checkpoints_and_resumes(media, tmp_path):
    """A few steps of the paper protocol (released R(2+1)D-18 at 8x224x224 from full-resolution frames, 24 kHz
    linear spectrogram, Adam, bf16, channels-last) on the GPU; one clip per video so that an epoch ends."""
    over = _over(media, "optim.batch_size=8", "run.checkpoint_every=1", "data.clips_per_video=1")
    part = pretrain(load_config(PretrainConfig, KINETICS, [*over, "run.max_steps=2"]), tmp_path / "run")
    assert part["steps"] == 2
    done = pretrain(load_config(PretrainConfig, KINETICS, [*over, "run.max_steps=3"]), tmp_path / "run")
    assert done["steps"] == 3 and done["skipped_files"] == 0
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["step"] == 3 and ck["config"]["run"]["amp_dtype"] == "bfloat16"
    assert all(torch.isfinite(torch.tensor(_losses(tmp_path / "run"))))
    assert (tmp_path / "run" / "epoch_0001.pt").exists()


@pytest.mark.parametrize("amp, dtype, channels_last", [
    (True, "bfloat16", True), (True, "bfloat16", False), (True, "float16", True), (False, "bfloat16", False),
])
def test_amp_and_memory_formats_train(media, tmp_path, amp, dtype, channels_last):
    over = _over(media, f"run.amp={str(amp).lower()}", f"run.amp_dtype={dtype}",
                 f"run.channels_last={str(channels_last).lower()}", "run.max_steps=4")
    summary = pretrain(load_config(PretrainConfig, SMALL, over), tmp_path / "run")
    assert summary["steps"] == 4
    losses = _losses(tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(losses)))
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    if amp and dtype == "float16":  # GradScaler active: its state is saved for resuming
        assert ck["scaler"] and ck["scaler"]["scale"] > 0
    else:
        assert not ck["scaler"]


@pytest.fixture
def exact_fp32(monkeypatch):
    """No TF32 in convolutions and matrix products, so that CUDA and CPU compute the same thing."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def test_first_step_loss_matches_cpu(media, tmp_path, exact_fp32):
    """Same seed, same data, fp32: the first logged loss agrees on CPU (per-item preprocessing in the
    workers) and on CUDA (batch preprocessing on the GPU)."""
    common = ["run.amp=false", "run.channels_last=false", "run.max_steps=1", "data.video_aug.jitter_prob=1.0"]
    cpu = load_config(PretrainConfig, SMALL, [*_over(media, *common), "run.device=cpu"])
    gpu = load_config(PretrainConfig, SMALL, _over(media, *common))
    pretrain(cpu, tmp_path / "cpu")
    pretrain(gpu, tmp_path / "gpu")
    assert _losses(tmp_path / "gpu")[0] == pytest.approx(_losses(tmp_path / "cpu")[0], rel=1e-3)


def test_model_and_loss_agree_on_cpu_and_cuda(exact_fp32):
    cfg = load_config(PretrainConfig, KINETICS)
    torch.manual_seed(0)
    model = AVModel(cfg.model).eval()
    video = torch.randn(2, 3, 8, 112, 112)
    audio = torch.randn(2, 1, 257, 200)  # the config's 2 s at 24 kHz
    index = torch.tensor([3, 7])
    out = {}
    for dev in ("cpu", "cuda"):
        loss_fn = build_loss(64, cfg.model.embed_dim, cfg.loss, seed=0)
        m = model.to(dev)
        with torch.no_grad():
            v, a = m(video.to(dev), audio.to(dev))
            loss, _ = loss_fn.to(dev)(v, a, index.to(dev), torch.Generator().manual_seed(0))
        out[dev] = (v.cpu(), a.cpu(), float(loss))
    torch.testing.assert_close(out["cuda"][0], out["cpu"][0], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(out["cuda"][1], out["cpu"][1], atol=1e-3, rtol=1e-3)
    assert out["cuda"][2] == pytest.approx(out["cpu"][2], rel=1e-3)


def test_finetuning_resumes_on_cuda_with_its_own_dropout_stream(tmp_path, monkeypatch, tmp_path_factory):
    """4 + 1 steps equal 5 on CUDA: each process's CUDA generator is saved and restored (before, the resumed run
    drew the classifier's dropout masks from the start of the stream). Tolerance: atomic adds in some CUDA
    backward kernels (pooling) are not bit-reproducible; a replayed dropout mask differs by far more."""
    from avssl.train.finetune import finetune
    from tests.conftest import make_ucf_layout
    from tests.train.test_finetune import _cfg

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    data = make_ucf_layout(tmp_path_factory.mktemp("ucf"))
    over = ["run.device=cuda", "run.amp=false", "finetune.dropout=0.5", "data.clip_test_clips=1", "data.test_clips=1"]
    full = finetune(_cfg(data, "run.max_steps=5", *over), tmp_path / "full")
    assert finetune(_cfg(data, "run.max_steps=4", *over), tmp_path / "resumed")["steps"] == 4
    resumed = finetune(_cfg(data, "run.max_steps=5", *over), tmp_path / "resumed")
    assert resumed["final_loss"] == pytest.approx(full["final_loss"], rel=1e-5, abs=1e-6)
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("full", "resumed"))
    assert "cuda" in b["rng"][0]
    for name, t in a["model"].items():
        torch.testing.assert_close(t, b["model"][name], rtol=1e-5, atol=1e-6, msg=f"{name} differs")


@pytest.mark.parametrize("config", ["avid_small_cpu.yaml", "avid_r2plus1d18_kinetics.yaml",
                                    "avid_cma_r2plus1d18_kinetics.yaml", "avid_r2plus1d18tv_8x112_200e_kinetics.yaml"])
@pytest.mark.parametrize("on_divergence", ["stop", "skip_batch"])
def test_steady_state_steps_never_wait_on_the_host(tmp_path, config, on_divergence):
    """torch.cuda.set_sync_debug_mode("error") around steady-state steps: the prefetcher's copy and batch
    preprocessing of the next batch (side stream), the step, the guard's counters, the figures summed on the device.
    Any operation that makes the host wait for the GPU raises."""
    from avssl.train.engine import StepStats, Trainer, UpdateUndo
    from avssl.train.guard import DivergenceGuard
    from avssl.train.prefetch import Prefetcher
    from avssl.train.pretrain import PretrainJob

    cfg = load_config(PretrainConfig, ROOT / "configs" / "pretrain" / config, [
        "run.device=cuda", "data.preprocess=device", f"run.on_divergence={on_divergence}", "optim.batch_size=4"])
    trainer = Trainer(cfg, tmp_path, "pretrain")
    trainer._use(torch.utils.data.TensorDataset(torch.zeros(64)), cfg.data, 64)
    job = PretrainJob(cfg, trainer.rt, 64, trainer.steps_per_epoch)
    if hasattr(job.loss_fn, "update_positives"):
        job.loss_fn.update_positives()  # at an epoch's start
    trainer.setup_job(job)
    trainer.wrap(job)
    guard = DivergenceGuard(on_divergence, "warn", 0.05, 10, 1, trainer.device, print)
    undo, stats = UpdateUndo(job.model) if guard.skips else None, StepStats()
    c, b = cfg.data.clip, 4
    t = max(1, round(c.video_duration * c.fps))
    params = torch.tensor([[1.0, 1.1, 0.9, 1.2, 0.05, 0.0, 1.0, 2.0, 3.0]]).repeat(b, 1)

    def batch(i: int) -> dict:  # as the loader gives it on CUDA: pinned
        return {"video": torch.randint(0, 255, (b, 3, t, c.crop, c.crop), dtype=torch.uint8).pin_memory(),
                "video_params": params, "waveform": torch.randn(b, round(c.audio_duration * c.sample_rate)).pin_memory(),
                "audio_params": torch.tensor([[[0, 3, 5]]]).repeat(b, 1, 1), "index": (torch.arange(b) + i).pin_memory(),
                "failures": []}

    it = iter(Prefetcher([(0, batch(i)) for i in range(8)], trainer._prepare, trainer.device))
    for step in range(2):  # warm-up: the first step reads the partition estimate once, cuDNN picks its kernels
        _, bt, inputs = next(it)
        trainer.step(job, bt, inputs, step, guard, undo, stats)
    stats.read()  # a log step
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(2, 6):
            _, bt, inputs = next(it)
            trainer.step(job, bt, inputs, step, guard, undo, stats)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    row = stats.read()
    assert torch.isfinite(torch.tensor(row["loss"])) and stats.steps == 0
