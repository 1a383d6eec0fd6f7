"""EZ-VSL's and SLAVC's released layouts imported exactly: the mapping on self-made files (always), the equality with
their own code's outputs on the shared fixture (skipped without it), their audio front end, and one-line refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import avssl
from avssl.cli import main
from avssl.config import load_config
from avssl.data.audio import Spectrogram
from avssl.models.avmodel import AVModel
from avssl.models.peers import detect_peer, from_peer, to_peer
from avssl.train.checkpoint import load_checkpoint, pretrained_model
from avssl.train.configs import PretrainConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "pretrain"
FIXTURE = ROOT.parent / "shared" / "fixtures" / "peer_localization"
needs_fixture = pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"the peers' fixture is not here ({FIXTURE}): it is "
                                                                "shared beside the repository, not part of it")


def _config(peer: str) -> PretrainConfig:
    return load_config(PretrainConfig, CONFIGS / f"{peer}_resnet18_224_vggsound.yaml")


def _their_file(peer: str, path: Path, seed: int = 0) -> AVModel:
    """A model of the peer's architecture with random weights, saved in their layout (``best.pth``)."""
    torch.manual_seed(seed)
    model = AVModel(_config(peer).model).eval()
    for t in model.state_dict().values():  # batch-norm statistics that are not the defaults
        if t.is_floating_point() and t.dim() == 1:
            t.uniform_(0.5, 1.5)
    torch.save({"model": to_peer(model.state_dict()), "epoch": 7, "best_cIoU": 0.3, "best_Auc": 0.4}, path)
    return model


@pytest.mark.parametrize("peer", ["ezvsl", "slavc"])
def test_a_file_in_their_layout_imports_to_the_same_model(peer, tmp_path, capsys):
    model = _their_file(peer, tmp_path / "best.pth")
    out = tmp_path / "imported.pt"
    assert main(["import", peer, str(tmp_path / "best.pth"), "--output", str(out)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == peer and record["epoch"] == 7 and len(record["sha256"]) == 64
    loaded = avssl.load_pretrained(out)
    image, spec = torch.randn(2, 3, 1, 224, 224), torch.randn(2, 1, 257, 200)
    with torch.no_grad():
        for a, b in ((loaded.spatial_video(image), model.spatial_video(image, encoders="base")),
                     (loaded.embed_audio(spec), model.embed_audio(spec, encoders="base"))):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.spatial_video(image).shape == (2, 1024 if peer == "slavc" else 512, 7, 7)
    ck = load_checkpoint(out)
    assert ck["source"]["method"] == peer and not ck["config"]["model"]["use_momentum"]


def test_their_names_map_both_ways_and_say_which_method_a_file_is():
    for peer in ("ezvsl", "slavc"):
        with torch.device("meta"):
            expected = AVModel(_config(peer).model).state_dict()
        theirs = to_peer({k: torch.zeros(v.shape) for k, v in expected.items()})
        assert detect_peer(theirs) == peer
        assert set(from_peer(peer, theirs, expected)) == set(expected)
    assert len(theirs) == 496 and "module.momentum_aud_proj2.bias" in theirs and "module.img_proj1.weight" in theirs


def test_their_spectrogram_is_scipys():
    signal = pytest.importorskip("scipy.signal")
    cfg = _config("ezvsl").data.spectrogram
    rng = np.random.default_rng(0)
    wave = np.clip(rng.standard_normal((2, 48000)) * 0.5, -1.5, 1.5).astype(np.float32)  # some samples past 1
    ours = Spectrogram(cfg)(torch.from_numpy(wave)).numpy()
    for i in range(2):
        _, _, s = signal.spectrogram(np.clip(wave[i], -1, 1), 16000, nperseg=512, noverlap=274)
        theirs = np.log(s + 1e-7) / 12
        assert ours[i].shape == theirs.shape == (257, 200)
        assert np.abs(ours[i] - theirs).max() / np.abs(theirs).max() < 1e-5


def _one_line(capsys, rc: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc in (1, 2) and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_truncated_foreign_and_the_other_methods_files_end_with_one_line(tmp_path, capsys):
    _their_file("slavc", tmp_path / "slavc.pth")
    _their_file("ezvsl", tmp_path / "ezvsl.pth")
    out = tmp_path / "out.pt"
    cases = {
        "slavc.pth": ("ezvsl", "a SLAVC checkpoint, not EZ-VSL's: use avssl import slavc"),
        "ezvsl.pth": ("slavc", "an EZ-VSL checkpoint"),
        "cut.pth": ("ezvsl", "not a readable PyTorch checkpoint"),
        "page.pth": ("slavc", "it is an HTML page"),
        "other.pth": ("ezvsl", "not an EZ-VSL checkpoint: it holds another model"),
    }
    data = (tmp_path / "ezvsl.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    (tmp_path / "page.pth").write_text("<!DOCTYPE html><html><head><title>Google Drive</title></head></html>")
    torch.save({"model": {"module.encoder.weight": torch.zeros(3)}, "epoch": 1}, tmp_path / "other.pth")
    for name, (peer, words) in cases.items():
        line = _one_line(capsys, main(["import", peer, str(tmp_path / name), "--output", str(out)]))
        assert words in line, line
        assert not out.exists()
    line = _one_line(capsys, main(["import", "avid-cma", str(tmp_path / "ezvsl.pth"), "--output", str(out)]))
    assert "an EZ-VSL checkpoint, not AVID-CMA's: use avssl import ezvsl" in line


def test_the_slavc_momentum_encoders_are_an_option(tmp_path):
    model = _their_file("slavc", tmp_path / "best.pth")
    assert main(["import", "slavc", str(tmp_path / "best.pth"), "--output", str(tmp_path / "m.pt"), "--momentum"]) == 0
    loaded = avssl.load_pretrained(tmp_path / "m.pt")
    image = torch.randn(1, 3, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.spatial_video(image), model.spatial_video(image, encoders="momentum"))


# ----------------------------------------------------------------------------------------- against their code

@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The fixture's rule-made files in their layout (about 300 MB, built by its make_weights.py)."""
    if not FIXTURE.is_dir():
        pytest.skip(f"the peers' fixture is not here ({FIXTURE})")
    out = tmp_path_factory.mktemp("peer_weights")
    subprocess.run([sys.executable, str(FIXTURE / "make_weights.py"), str(out)], check=True, timeout=600)
    return out


def _reference(peer: str) -> dict:
    return torch.load(FIXTURE / peer / "reference.pt", weights_only=False)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _imported(weights: Path, peer: str, tmp: Path, *extra: str) -> Path:
    out = tmp / f"{peer}{'_'.join(extra)}.pt"
    assert main(["import", peer, str(weights / peer / "best.pth"), "--output", str(out), *extra]) == 0
    return out


@needs_fixture
def test_the_spectrogram_equals_theirs():
    for peer in ("ezvsl", "slavc"):
        ref = _reference(peer)
        model = AVModel(_config(peer).model, _config(peer).data.spectrogram)
        assert _rel(model.spectrogram(ref["waveforms"]), ref["spectrogram"]) < 1e-4


@needs_fixture
@pytest.mark.parametrize("peer, momentum", [("ezvsl", False), ("slavc", False), ("slavc", True)])
def test_the_maps_and_the_loss_equal_theirs(weights, tmp_path, peer, momentum):
    from avssl.losses.localizers import EZVSLLoss, SLAVCLoss

    ref = _reference(peer)
    model, _ = pretrained_model(_imported(weights, peer, tmp_path, *(["--momentum"] if momentum else [])))
    with torch.no_grad():
        v = model.spatial_video(ref["image"][:, :, None])
        a = model.embed_audio(ref["spectrogram"])
        cos = torch.einsum("bdhw,bd->bhw", v, a)
        key = "Savl" if peer == "ezvsl" else f"Savl_mom{int(momentum)}"
        assert _rel(cos, ref[key] * ref["tau"]) < 1e-4
        if peer == "ezvsl":
            loss, _ = EZVSLLoss(ref["tau"])(*model(ref["image"][:, :, None], ref["spectrogram"], spatial=True))
            assert abs(float(loss) - float(ref["loss_eval_mode"])) < 1e-4 * abs(float(ref["loss_eval_mode"]))
        elif not momentum:
            img, spec = ref["image"][:, :, None], ref["spectrogram"]
            base = model(img, spec, parts=True, encoders="base")
            target = model(img, spec, parts=True, encoders="momentum")
            loss, _ = SLAVCLoss(ref["tau"])(*base, *target)
            assert abs(float(loss) - float(ref["loss_mom0"])) < 1e-4 * abs(float(ref["loss_mom0"]))


def _still_and_sound(ref: dict, tmp: Path, i: int = 0) -> tuple[Path, Path]:
    import soundfile as sf
    from torchvision.io import write_png

    tmp.mkdir(exist_ok=True)
    write_png(ref["frames"][i].permute(2, 0, 1).contiguous(), str(tmp / "still.png"))
    sf.write(tmp / "sound.wav", ref["waveforms"][i].numpy(), int(ref["sample_rate"]), subtype="FLOAT")
    return tmp / "still.png", tmp / "sound.wav"


@needs_fixture
@pytest.mark.parametrize("peer", ["ezvsl", "slavc"])
def test_avssl_localize_on_a_frame_and_its_sound_gives_their_map_with_and_without_ogl(weights, tmp_path, peer,
                                                                                      monkeypatch):
    from avssl.localize.heatmap import Geometry, grid_to_frame

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # OGL's ImageNet file: the fixture's stands in for it
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copy(weights / "imagenet_resnet18.pth", hub / "resnet18-f37072fd.pth")
    ref = _reference(peer)
    ckpt = _imported(weights, peer, tmp_path)
    still, sound = _still_and_sound(ref, tmp_path / "media")
    out = tmp_path / "maps"
    assert main(["localize", "--checkpoint", str(ckpt), "--video", str(still), "--audio", str(sound), "--output-dir",
                 str(out), "--quiet", "--device", "cpu", "--ogl"]) == 0
    sim = torch.from_numpy(np.load(out / "still" / "similarity.npy"))
    objects = torch.from_numpy(np.load(out / "still" / "objects.npy"))
    key = "" if peer == "ezvsl" else "_mom0"
    tau = ref["tau"]
    assert _rel(sim[0], (ref["Savl" + key] if peer == "ezvsl" else ref["Savl_mom0"])[0] * tau) < 1e-4
    g = json.loads((out / "still" / "geometry.json").read_text())
    assert g["corners"] and g["mode"] == ("bilinear" if peer == "ezvsl" else "bicubic") and g["pad"] == 0
    geometry = Geometry(g["stride"], g["pad"], g["height"], g["width"], g["corners"], g["mode"])
    heat = grid_to_frame(sim, geometry, 224, 224)[0]  # their maps are 224 x 224
    assert _rel(heat, ref["heatmap_av" + key][0, 0] * tau) < 1e-4
    obj = grid_to_frame(objects, Geometry(g["ogl"]["stride"], 0, 224, 224, True, g["mode"]), 224, 224)[0]
    assert _rel(obj, ref["heatmap_obj"][0, 0]) < 1e-4
    model, cfg = pretrained_model(ckpt)
    from avssl.localize.heatmap import Localizer

    loc = Localizer(model, cfg.data, __import__("dataclasses").replace(cfg.localize, ogl=cfg.localize.ogl_alpha))
    mixed = loc.finish(heat[None], obj[None])[0]
    want = ref["pred_av_obj"][0] if peer == "ezvsl" else ref["scores_av_obj_mom0"][0, 0]
    assert (mixed - want).abs().max() < 1e-4


def test_every_command_takes_an_imported_localizer(tmp_path, monkeypatch, capsys):
    """localize and evaluate localization (with OGL), embed, score and run.init_from on an imported EZ-VSL file."""
    from torchvision.models import resnet18

    from avssl.data.synthetic.compose import ComposeSpec, compose

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    _their_file("ezvsl", tmp_path / "best.pth")
    ckpt = tmp_path / "ez.pt"
    assert main(["import", "ezvsl", str(tmp_path / "best.pth"), "--output", str(ckpt)]) == 0
    media = tmp_path / "set"
    compose(media, 3, seed=1, spec=ComposeSpec(width=96, height=64, fps=8, duration=3.5, distractors=1))
    common = ["--device", "cpu", "--quiet"]
    assert main(["evaluate", "localization", "--checkpoint", str(ckpt), "--annotations", str(media / "vggss.json"),
                 "--media", str(media), "--output-dir", str(tmp_path / "ev"), "--ogl", "0.4", *common]) == 0
    result = json.loads((tmp_path / "ev" / "localization.json").read_text())
    assert result["num_samples"] == 3
    assert main(["localize", "--checkpoint", str(ckpt), "--video", str(media / "clip_00000.mp4"), "--fps", "2",
                 "--ogl", "--output-dir", str(tmp_path / "maps"), *common]) == 0
    info = json.loads((tmp_path / "maps" / "clip_00000" / "info.json").read_text())
    assert info["files"]["objects"] == "objects.npy" and info["num_maps"] == 7
    assert main(["embed", str(media), "--checkpoint", str(ckpt), "--output-dir", str(tmp_path / "emb"), "--workers",
                 "0", *common]) == 0
    assert json.loads((tmp_path / "emb" / "embed.json").read_text())["clips"] == 3
    assert main(["score", str(media), "--checkpoint", str(ckpt), "--output-dir", str(tmp_path / "sc"), "--workers",
                 "0", "--clips-per-video", "1", *common]) == 0
    capsys.readouterr()
    assert main(["localize", "--checkpoint", str(ckpt), "--video", str(media / "clip_00000.mp4"), "--ogl", "1.5",
                 "--output-dir", str(tmp_path / "bad"), *common]) == 2
    assert "localize.ogl (--ogl)" in capsys.readouterr().err


def test_ogl_offline_says_in_one_line_what_to_fetch_and_where(tmp_path, monkeypatch, capsys):
    from avssl.models import resnet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(resnet, "IMAGENET_URL", "http://127.0.0.1:9/resnet18-f37072fd.pth")  # no network
    _their_file("ezvsl", tmp_path / "best.pth")
    assert main(["import", "ezvsl", str(tmp_path / "best.pth"), "--output", str(tmp_path / "ez.pt")]) == 0
    capsys.readouterr()
    frame = tmp_path / "still.png"
    from torchvision.io import write_png

    write_png(torch.zeros(3, 40, 60, dtype=torch.uint8), str(frame))
    rc = main(["localize", "--checkpoint", str(tmp_path / "ez.pt"), "--video", str(frame), "--audio", str(frame),
               "--ogl", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "ImageNet ResNet-18 weights are needed" in err[0]
    assert f"put it at {tmp_path / 'torch' / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'}" in err[0]
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()
