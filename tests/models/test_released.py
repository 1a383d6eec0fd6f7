"""The released AVID-CMA layout: the name map and transposes (self-made files), and exact equivalence with the
authors' own code's outputs (the shared fixture, when present)."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avssl.cli import main
from avssl.config import load_config
from avssl.data.audio import Spectrogram
from avssl.models.avmodel import AVModel
from avssl.models.released import ReleasedLayoutError, from_released, to_released
from avssl.train.pretrain import PretrainConfig

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "configs" / "pretrain" / "avid_r2plus1d18_kinetics.yaml"
FIXTURE = ROOT.parent / "shared" / "fixtures" / "avid_cma_released"


@pytest.fixture(scope="module")
def paper_model() -> AVModel:
    torch.manual_seed(0)
    return AVModel(load_config(PretrainConfig, PAPER).model).eval()


def test_every_tensor_maps_back_and_forth(paper_model):
    ours = paper_model.state_dict()
    released = to_released(ours)
    assert all(k.startswith("module.") for k in released) and len(released) == len(ours) == 267
    assert "module.video_model.conv3x.0.res_conv.weight" in released
    assert "module.audio_model.block4.bn2.running_var" in released
    back = from_released(released, ours)
    assert set(back) == set(ours) and all(torch.equal(back[k], ours[k]) for k in ours)
    # the same without DataParallel's prefix
    assert set(from_released({k.removeprefix("module."): v for k, v in released.items()}, ours)) == set(ours)


def test_audio_kernels_are_transposed_and_compute_the_transposed_map(paper_model):
    released = to_released(paper_model.state_dict())
    theirs = released["module.audio_model.conv1.0.weight"]  # (64, 1, 7, 7) over (time, frequency)
    assert torch.equal(theirs, paper_model.audio.net[0].weight.transpose(-1, -2))
    # their network on a (time, frequency) input = ours on (frequency, time), transposed
    net = paper_model.audio.net[:3]
    conv = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    conv.weight.data.copy_(theirs)
    spec = torch.randn(1, 1, 257, 200)
    with torch.no_grad():
        assert torch.allclose(net[0](spec), conv(spec.transpose(-1, -2)).transpose(-1, -2), atol=1e-5)


def test_missing_unexpected_and_misshapen_tensors_are_named(paper_model):
    ours = paper_model.state_dict()
    released = to_released(ours)
    del released["module.video_model.conv5x.1.out_bn.weight"]
    released["module.classifier.weight"] = torch.zeros(3)
    released["module.video_proj.projection.4.weight"] = torch.zeros(64, 512)
    with pytest.raises(ReleasedLayoutError) as e:
        from_released(released, ours)
    msg = str(e.value)
    assert "module.classifier.weight" in msg and "video.stages.3.1.out_bn.weight" in msg
    assert "(64, 512) (expected (128, 512))" in msg


def _rule_state(keys: dict) -> dict[str, torch.Tensor]:
    """Every tensor of the released layout filled by the fixture's rules (keys.json)."""
    state = {}
    for name, shape, dtype in keys["keys"]:
        g = torch.Generator().manual_seed(zlib.crc32((keys["salt"] + name).encode("utf-8")))
        if "int" in dtype:
            t = torch.zeros(shape, dtype=torch.int64)
        elif name.endswith("running_var"):
            t = 0.5 + torch.rand(shape, generator=g)
        elif name.endswith("running_mean"):
            t = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1 and name.endswith(".weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) * (2 / math.prod(shape[1:])) ** 0.5
        state["module." + name] = t
    return state


def _rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"the released-model fixture is not here ({FIXTURE})")
def test_imported_model_reproduces_the_authors_code_exactly(tmp_path):
    keys = json.loads((FIXTURE / "keys.json").read_text())
    ref = torch.load(FIXTURE / "reference.pt", weights_only=True)
    src = tmp_path / "AVID_Kinetics_Cross-N1024_checkpoint.pth.tar"
    torch.save({"epoch": 30, "model": _rule_state(keys), "optimizer": {}, "train_criterion": {}}, src)
    assert main(["import", "avid-cma", str(src), "--output", str(tmp_path / "avid.pt")]) == 0
    import avssl

    model = avssl.load_pretrained(tmp_path / "avid.pt")
    wave = ref["waveform"]
    waves = torch.stack([wave, wave.flip(0)])
    theirs = ref["audio"].transpose(-1, -2)  # their time x frequency -> our frequency x time
    spec = model.spectrogram(waves)
    assert spec.shape == theirs.shape == (2, 1, 257, 200)
    # The fixture ran librosa >= 0.10, whose STFT pads with zeros; the released models were trained with
    # librosa < 0.10, which reflects (model.spectrogram keeps that): the 3 frames at either end differ.
    assert _rel_err(spec[..., 3:-3], theirs[..., 3:-3]) < 1e-5
    zeros = Spectrogram(replace(model.frontend.cfg, pad_mode="constant"))(waves).unsqueeze(1)
    assert _rel_err(zeros, theirs) < 1e-5
    with torch.no_grad():
        fmap, pool = model.video(ref["video"])
        afmap, apool = model.audio(zeros)
        v, a = model.embed_video(ref["video"]), model.embed_audio(zeros)
    assert _rel_err(pool, ref["video_pool"]) < 1e-5 and _rel_err(fmap, ref["video_conv5x"]) < 1e-5
    assert _rel_err(apool, ref["audio_pool"]) < 1e-5
    assert _rel_err(afmap.transpose(-1, -2), ref["audio_conv5x"]) < 1e-5
    for ours, emb in ((v, ref["video_emb"]), (a, ref["audio_emb"])):
        assert F.cosine_similarity(ours, emb).min() > 0.9999
        assert _rel_err(ours, F.normalize(emb, dim=1)) < 1e-5
