"""EZ-VSL's and SLAVC's protocols trained on a user's own videos, scaled down (64x64 frames, 1 s of sound, batch 4):
from files and shards, resumed exactly, SLAVC's momentum copies as their moving average, the image encoder from an
ImageNet file, evaluation while training on a VGG-SS layout, and EZ-VSL's objective on AVID-CMA's encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avssl.config import load_config
from avssl.data.synthetic.compose import ComposeSpec, compose
from avssl.train.checkpoint import load_checkpoint, pretrained_model
from avssl.train.configs import PretrainConfig
from avssl.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "pretrain"
SMALL = ["data.clip.crop=64", "data.clip.audio_duration=1.0", "data.clip.audio_offset=-0.02", "data.video_aug.resize=72",
         "data.num_workers=0", "data.preprocess=worker", "model.resnet.pretrained=null", "optim.batch_size=4",
         "optim.epochs=1", "run.device=cpu", "run.amp=false", "run.progress=false", "run.log_every=1", "eval.every=0"]


def _cfg(peer: str, source: str, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, CONFIGS / f"{peer}_resnet18_224_vggsound.yaml", [source, *SMALL, *extra])


@pytest.mark.parametrize("peer", ["ezvsl", "slavc"])
def test_the_protocol_trains_and_resumes_exactly(collection, tmp_path, peer):
    m = f"data.manifest={collection / 'manifest.jsonl'}"
    full = pretrain(_cfg(peer, m, "run.max_steps=2"), tmp_path / "full")
    assert full["steps"] == 2 and torch.isfinite(torch.tensor(full["final_loss"]))
    pretrain(_cfg(peer, m, "run.max_steps=1"), tmp_path / "resumed")
    resumed = pretrain(_cfg(peer, m, "run.max_steps=2"), tmp_path / "resumed")
    assert resumed["final_loss"] == full["final_loss"]
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("full", "resumed"))
    for name, t in a["model"].items():
        torch.testing.assert_close(b["model"][name], t, rtol=0, atol=0, msg=name)
    model, cfg = pretrained_model(tmp_path / "full" / "last.pt")  # what localize, embed and score load
    assert cfg.loss.kind == peer and (model.momentum is not None) == (peer == "slavc")


def test_slavc_momentum_copies_are_the_moving_average_of_the_trained_encoders(collection, tmp_path):
    m = f"data.manifest={collection / 'manifest.jsonl'}"
    one = pretrain(_cfg("slavc", m, "run.max_steps=1", "model.momentum_rate=0.5"), tmp_path / "one")
    two = pretrain(_cfg("slavc", m, "run.max_steps=2", "model.momentum_rate=0.5"), tmp_path / "two")
    assert one["steps"] == 1 and two["steps"] == 2
    a, b = load_checkpoint(tmp_path / "one" / "last.pt")["model"], load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    name = "video_head.mlp2.0.weight"
    # step 1 moved the copy towards the starting weights (equal to it), step 2 half-way to the weights after step 1
    torch.testing.assert_close(b[f"momentum.{name}"], 0.5 * a[f"momentum.{name}"] + 0.5 * a[name], rtol=1e-6, atol=1e-7)
    assert not torch.equal(b[name], b[f"momentum.{name}"])
    assert not b[f"momentum.{name}"].requires_grad


def test_the_image_encoder_starts_from_the_imagenet_file_only_on_a_fresh_start(collection, tmp_path, monkeypatch,
                                                                               capsys):
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.manual_seed(5)
    stand_in = resnet18(weights=None).state_dict()  # stands for torchvision's ImageNet file (no download in tests)
    torch.save(stand_in, hub / "resnet18-f37072fd.pth")
    m = f"data.manifest={collection / 'manifest.jsonl'}"
    cfg = _cfg("ezvsl", m, "run.max_steps=1", "model.resnet.pretrained=imagenet", "optim.lr=0.0")
    pretrain(cfg, tmp_path / "run")
    assert "initialized the image encoder from torchvision's ImageNet ResNet-18" in capsys.readouterr().out
    state = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    torch.testing.assert_close(state["video.net.layer4.1.conv2.weight"], stand_in["layer4.1.conv2.weight"])
    (hub / "resnet18-f37072fd.pth").unlink()  # a resumed run does not look for it
    pretrain(_cfg("ezvsl", m, "run.max_steps=2", "model.resnet.pretrained=imagenet", "optim.lr=0.0"), tmp_path / "run")


def test_the_protocols_read_shards(collection, tmp_path):
    from avssl.data.shard_writer import ShardConfig, write_shards

    write_shards(collection / "manifest.jsonl", tmp_path / "s", ShardConfig(samples_per_shard=4), progress=False)
    summary = pretrain(_cfg("slavc", f"data.shards={tmp_path / 's'}/{{000000..000002}}.tar", "run.max_steps=2"),
                       tmp_path / "run")
    assert summary["steps"] == 2


def test_evaluation_while_training_on_a_vggss_layout(collection, tmp_path):
    test = tmp_path / "vggss"
    compose(test, 4, seed=3, spec=ComposeSpec(width=96, height=64, fps=8, duration=1.5, distractors=1))
    m = f"data.manifest={collection / 'manifest.jsonl'}"
    pretrain(_cfg("ezvsl", m, "run.max_steps=3", "eval.every=1", f"eval.localization={test / 'vggss.json'}",
                  "localize.size=64"), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("kind") == "eval"]
    assert [r["epoch"] for r in evals] == [0, 1]
    assert all(0 <= r["loc_ciou_at_0.5"] <= 1 and 0 <= r["loc_auc"] <= 1 for r in evals)
    assert (tmp_path / "run" / "eval" / "localization_last.csv").read_text().startswith("id,")


def test_ezvsls_objective_starts_from_avid_cma_encoders(collection, tmp_path, capsys):
    """The variant of ezvsl-objective_r2plus1d18-avid-cma_224_vggsound.yaml, on a small R(2+1)D: run.init_from an
    AVID-CMA layout gives the encoders; the heads (another objective's) start as initialized."""
    small_avid = ["model.video.widths=[4,8,8,16]", "model.audio.widths=[4,8,8,16]", "model.audio.stem_channels=4",
                  "data.clip.crop=32", "data.clip.size=40", "data.num_workers=0", "data.preprocess=worker",
                  "optim.batch_size=4", "optim.epochs=1", "run.device=cpu", "run.amp=false", "run.progress=false",
                  "eval.every=0", f"data.manifest={collection / 'manifest.jsonl'}"]
    avid = load_config(PretrainConfig, CONFIGS / "avid_cma_r2plus1d18_audioset.yaml",
                       [*small_avid, "model.embed_dim=8", "model.head_dims=[16,16,8]", "loss.kind=avid",
                        "loss.num_negatives=4", "run.max_steps=1"])
    pretrain(avid, tmp_path / "avid")
    cfg = load_config(PretrainConfig, CONFIGS / "ezvsl-objective_r2plus1d18-avid-cma_224_vggsound.yaml",
                      [*small_avid, "data.video_aug.resize=36", "model.embed_dim=16", "model.head_dims=[16]",
                       f"run.init_from={tmp_path / 'avid' / 'last.pt'}", "run.max_steps=1", "optim.lr=0.0"])
    pretrain(cfg, tmp_path / "ez")
    assert "initialized video and audio encoders (its heads are not this model's" in capsys.readouterr().out
    a, b = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in ("avid", "ez"))
    for name in ("video.stages.3.0.main.0.weight", "audio.net.3.weight"):
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)
    assert b["video_head.mlp.0.weight"].shape == (16, 16)


@pytest.mark.slow
@pytest.mark.distributed
def test_slavc_under_torchrun_on_shards_trains_and_resumes_exactly(collection, tmp_path):
    """Two processes (gloo): DDP through SLAVC's two forward passes (trained encoders, then the momentum copies
    without gradient), the copies' moving average on every rank alike, and an exact resume."""
    import os
    import subprocess
    import sys

    from avssl.data.shard_writer import ShardConfig, write_shards

    write_shards(collection / "manifest.jsonl", tmp_path / "s", ShardConfig(samples_per_shard=3), progress=False)

    def run(out: Path, steps: int, port: int) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "-m",
               "avssl", "pretrain", "--config", str(CONFIGS / "slavc_resnet18_224_vggsound.yaml"), "--output-dir",
               str(out)]
        for o in (f"data.shards={tmp_path / 's'}/{{000000..000003}}.tar", *SMALL, "optim.batch_size=2",
                  "optim.epochs=2", f"run.max_steps={steps}"):
            cmd += ["--set", o]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert res.returncode == 0, res.stderr[-3000:]

    run(tmp_path / "full", 4, 29591)
    run(tmp_path / "resumed", 2, 29593)
    run(tmp_path / "resumed", 4, 29595)
    a, b = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in ("full", "resumed"))
    for name, t in a.items():
        torch.testing.assert_close(b[name], t, rtol=0, atol=0, msg=name)
    assert not torch.equal(a["momentum.video.net.conv1.weight"], a["video.net.conv1.weight"])
