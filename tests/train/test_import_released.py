"""`avssl import avid-cma`: released files in, avssl checkpoints out, one-line errors for anything else."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avssl.cli import main
from avssl.config import load_config
from avssl.data.collection import build_manifest
from avssl.models.avmodel import AVModel
from avssl.models.released import to_released
from avssl.train.checkpoint import load_checkpoint
from avssl.train.pretrain import PretrainConfig, load_pretrained, pretrain

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "configs" / "pretrain"


@pytest.fixture
def small_config(tmp_path) -> Path:
    """The released architecture (block names and strides) at small widths, so files stay small."""
    path = tmp_path / "released_small.yaml"
    path.write_text(f"base: {PAPER / 'avid_cma_r2plus1d18_kinetics.yaml'}\n"
                    "data: {clip: {crop: 32}}\n"
                    "model: {video: {widths: [4, 8, 8, 16]}, audio: {widths: [4, 8, 8, 16], stem_channels: 4},\n"
                    "        embed_dim: 8, head_dims: [16, 16, 8]}\n")
    return path


def _released_file(path: Path, config: Path, n: int = 6, cma: bool = True, seed: int = 0) -> AVModel:
    """A file in the released layout, from a seeded model of ``config``'s architecture."""
    torch.manual_seed(seed)
    model = AVModel(load_config(PretrainConfig, config).model).eval()
    criterion = {"nce_average.view1_mem": F.normalize(torch.randn(n, 8), dim=1),
                 "nce_average.view2_mem": F.normalize(torch.randn(n, 8), dim=1),
                 "criterion.avg_exp_score": torch.tensor(2.5)}
    if cma:
        criterion["nce_average.positive_set"] = torch.randint(0, n, (n, 32), dtype=torch.int32)
    torch.save({"epoch": 20, "model": to_released(model.state_dict()), "optimizer": {"state": {}},
                "train_criterion": criterion}, path)
    return model


def test_import_writes_a_checkpoint_every_command_takes(tmp_path, small_config, capsys):
    src = tmp_path / "AVID-CMA_Kinetics_InstX-N1024-PosW-N64-Top32_checkpoint.pth.tar"
    original = _released_file(src, small_config)
    out = tmp_path / "cma.pt"
    assert main(["import", "avid-cma", str(src), "--output", str(out), "--config", str(small_config)]) == 0
    ck = load_checkpoint(out)
    source = ck["source"]
    assert source["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() and source["file"] == src.name
    assert (source["method"], source["dataset"], source["epoch"]) == ("avid-cma", "kinetics", 20)
    assert source["detected"] == {"method": "file name", "dataset": "file name"}
    assert "loss" not in ck  # no memory bank without --with-memory
    model = load_pretrained(out)
    video, wave = torch.randn(2, 3, 8, 32, 32), 0.1 * torch.randn(2, 48000)
    with torch.no_grad():
        spec = model.spectrogram(wave)
        assert spec.shape == (2, 1, 257, 200)
        assert torch.allclose(model.embed_video(video), original.embed_video(video), atol=1e-6)
        assert torch.allclose(model.embed_audio(spec), original.embed_audio(spec), atol=1e-6)


def test_with_memory_keeps_bank_estimate_and_positive_sets_for_init_from(tmp_path, small_config, synth_dir):
    src = tmp_path / "released.pth.tar"
    _released_file(src, small_config, n=6)
    out = tmp_path / "cma.pt"
    assert main(["import", "avid-cma", str(src), "--output", str(out), "--config", str(small_config),
                 "--with-memory", "--dataset", "audioset"]) == 0
    ck = load_checkpoint(out)
    released = torch.load(src, weights_only=True)["train_criterion"]
    assert torch.equal(ck["loss"]["memory.video"], released["nce_average.view1_mem"])
    assert torch.equal(ck["loss"]["memory.audio"], released["nce_average.view2_mem"])
    assert torch.allclose(ck["loss"]["log_z"], torch.full((4,), math.log(2.5) + math.log(6)))
    assert torch.equal(ck["loss"]["positives"], released["nce_average.positive_set"].long())
    assert ck["source"]["method"] == "avid-cma" and ck["source"]["dataset"] == "audioset"
    assert ck["source"]["detected"] == {"method": "checkpoint (positive sets)", "dataset": "given"}
    # CMA continues from it: same weights (lr 0), the released estimate of Z, positives from its memory
    build_manifest(synth_dir, tmp_path / "m.jsonl", progress=False)
    cfg = load_config(PretrainConfig, small_config, [
        f"data.manifest={tmp_path / 'm.jsonl'}", "data.num_workers=0", "data.clip.size=40", "data.clip.crop=32",
        "optim.batch_size=3", "run.max_steps=1", "run.progress=false", "run.device=cpu", f"run.init_from={out}",
        "optim.lr=0.0", "loss.cma_topk=2", "loss.num_negatives=3", "loss.cma_negatives=2"])
    pretrain(cfg, tmp_path / "run")
    after = load_checkpoint(tmp_path / "run" / "last.pt")
    assert torch.equal(after["model"]["video.stem.0.weight"], ck["model"]["video.stem.0.weight"])
    assert float(after["loss"]["log_z"][0]) == pytest.approx(math.log(2.5) + math.log(6))


def test_the_legacy_file_format_imports_too(tmp_path, small_config):
    src = tmp_path / "AVID_Audioset_Cross-N1024_checkpoint.pth.tar"
    model = _released_file(src, small_config, cma=False)
    ck = torch.load(src, weights_only=True)
    torch.save(ck, src, _use_new_zipfile_serialization=False)  # as PyTorch 1.4 wrote the released files
    assert main(["import", "avid-cma", str(src), "--output", str(tmp_path / "o.pt"), "--config",
                 str(small_config)]) == 0
    assert load_checkpoint(tmp_path / "o.pt")["source"]["method"] == "avid"
    loaded = load_pretrained(tmp_path / "o.pt")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


def _fails(argv: list[str], capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_bad_sources_get_one_clear_line_and_no_output(tmp_path, small_config, capsys):
    good = tmp_path / "good.pth.tar"
    _released_file(good, small_config)
    out = tmp_path / "out.pt"
    base = ["import", "avid-cma", "--output", str(out), "--config", str(small_config)]
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "not a readable PyTorch checkpoint" in _fails([*base[:2], str(truncated), *base[2:]], capsys)
    noise = tmp_path / "noise.pth.tar"
    noise.write_bytes(bytes(range(256)) * 64)
    assert "not a readable PyTorch checkpoint" in _fails([*base[:2], str(noise), *base[2:]], capsys)
    assert "no such file" in _fails([*base[:2], str(tmp_path / "absent.pth.tar"), *base[2:]], capsys)
    foreign = tmp_path / "resnet.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).state_dict(), foreign)
    err = _fails([*base[:2], str(foreign), *base[2:]], capsys)
    assert "not the released AVID/CMA model" in err and "unexpected (0.bias" in err and "missing" in err
    partial = tmp_path / "partial.pth.tar"
    ck = torch.load(good, weights_only=True)
    del ck["model"]["module.audio_model.block2.conv1.weight"]
    torch.save(ck, partial)
    err = _fails([*base[:2], str(partial), *base[2:]], capsys)
    assert "1 missing (audio.net.9.weight)" in err
    assert not out.exists() and not list(tmp_path.glob(".out.pt.*"))


def test_with_memory_needs_a_memory_bank(tmp_path, small_config, capsys):
    src = tmp_path / "weights_only.pth.tar"
    _released_file(src, small_config)
    ck = torch.load(src, weights_only=True)
    ck["train_criterion"] = {}
    torch.save(ck, src)
    err = _fails(["import", "avid-cma", str(src), "--output", str(tmp_path / "o.pt"), "--config", str(small_config),
                  "--with-memory"], capsys)
    assert "holds no memory bank" in err and not (tmp_path / "o.pt").exists()
