from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avssl.cli import main
from avssl.config import load_config
from avssl.data.collection import build_manifest
from avssl.train.checkpoint import load_checkpoint
from avssl.data.labeled import as_data_config
from avssl.train.finetune import FinetuneConfig, finetune
from avssl.train.pretrain import PretrainConfig, pretrain
from tests.conftest import make_ucf_layout

ROOT = Path(__file__).resolve().parents[2]
FT_SMALL = ROOT / "configs" / "finetune" / "finetune_r2plus1d-small_4x56_8e_ucf101.yaml"
PT_SMALL = ROOT / "configs" / "pretrain" / "avid_small_cpu.yaml"


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> Path:
    return make_ucf_layout(tmp_path_factory.mktemp("ucf"))


def _cfg(ucf: Path, *extra: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, FT_SMALL, [
        f"data.root={ucf / 'UCF-101'}", f"data.annotations={ucf / 'ucfTrainTestlist'}", "data.num_workers=0",
        "data.clips_per_video=2", "data.test_clips=3", "data.clip_test_clips=3", "optim.batch_size=4", "optim.epochs=2", "run.progress=false",
        "run.log_every=1", "run.device=cpu", *extra])


@pytest.mark.parametrize("warmup", [0, 1])
def test_resumed_finetuning_equals_uninterrupted_finetuning(ucf, tmp_path, warmup):
    w = [f"finetune.classifier_warmup_epochs={warmup}", "data.clip_test_clips=1", "data.test_clips=1"]
    full = finetune(_cfg(ucf, "run.max_steps=5", *w), tmp_path / "full")
    assert finetune(_cfg(ucf, "run.max_steps=4", *w), tmp_path / "resumed")["steps"] == 4
    resumed = finetune(_cfg(ucf, "run.max_steps=5", *w), tmp_path / "resumed")  # picks up last.pt
    assert full["steps"] == resumed["steps"] == 5 and full["final_loss"] == resumed["final_loss"]
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("full", "resumed"))
    for name, t in a["model"].items():
        torch.testing.assert_close(t, b["model"][name], rtol=0, atol=0, msg=f"{name} differs")


def test_finetune_trains_resumes_and_evaluates(ucf, tmp_path):
    out = tmp_path / "ft"
    part = finetune(_cfg(ucf, "run.max_steps=3"), out)
    assert part["steps"] == 3
    done = finetune(_cfg(ucf), out)  # resumes from last.pt
    report = json.loads((out / "data_report.json").read_text())["train"]
    assert report["missing"] == 1 and report["used"] > 0
    steps = (report["used"] * 2 // 4) * 2
    assert done["steps"] == steps
    ev = json.loads((out / "eval.json").read_text())
    assert ev["num_videos"] == ev["num_classes"] == 6 and ev["clips_per_video"] == 3
    assert 0 <= ev["top1"] <= ev["top5"] <= 1 and 0 <= ev["clip_top1"] <= 1
    assert (out / "per_class_accuracy.csv").read_text().startswith("class,videos,accuracy")
    assert (out / "confusion.png").stat().st_size > 0
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] == steps and len(ck["classes"]) == 6


def test_linear_mode_keeps_the_pretrained_encoder_and_evaluate_action_reproduces_eval(ucf, tmp_path, capsys):
    synth = ucf / "synth"
    build_manifest(synth, tmp_path / "m.jsonl", progress=False)
    pretrain(load_config(PretrainConfig, PT_SMALL, [f"data.manifest={tmp_path / 'm.jsonl'}", "data.num_workers=0",
                                                    "optim.batch_size=6", "optim.epochs=1", "run.progress=false",
                                                    "loss.num_negatives=4", "run.device=cpu"]), tmp_path / "pt")
    out = tmp_path / "lin"
    # model.checkpoint: the key's name before run.init_from, still read
    finetune(_cfg(ucf, f"model.checkpoint={tmp_path / 'pt' / 'last.pt'}", "finetune.mode=linear"), out)
    pre = load_checkpoint(tmp_path / "pt" / "last.pt")["model"]
    ft = load_checkpoint(out / "last.pt")["model"]
    for k, v in pre.items():
        if k.startswith("video."):  # weights and batch-norm statistics untouched by a linear probe
            assert torch.equal(ft["encoder." + k[len("video."):]], v), k
    rc = main(["evaluate", "action", "--checkpoint", str(out / "last.pt"), "--output-dir", str(tmp_path / "ev"),
               "--device", "cpu", "--set", "data.num_workers=0"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["top1"] == pytest.approx(json.loads((out / "eval.json").read_text())["top1"])


@pytest.mark.parametrize("name, fmt, frames, batch, clips, epochs, milestones, jitter", [
    ("finetune_r2plus1d18_32x224_21e_ucf101.yaml", "ucf101", 32, 32, 5, 21, [11, 15, 19], 0.4),
    ("finetune_r2plus1d18_32x224_15e_hmdb51.yaml", "hmdb51", 32, 32, 10, 15, [8, 11, 13], 1.0),
    ("finetune_r2plus1d18_8x224_21e_ucf101.yaml", "ucf101", 8, 64, 10, 21, [11, 15, 19], 0.4),  # released 8at16
    ("finetune_r2plus1d18_8x224_15e_hmdb51.yaml", "hmdb51", 8, 64, 25, 15, [8, 11, 13], 1.0),
])
def test_benchmark_configs_carry_the_released_values(name, fmt, frames, batch, clips, epochs, milestones, jitter):
    cfg = load_config(FinetuneConfig, ROOT / "configs" / "finetune" / name)
    d, o = cfg.data, cfg.optim
    assert (d.format, d.clip.video_duration * d.clip.fps, d.clip.crop, d.clips_per_video, d.test_clips) == (
        fmt, frames, 224, clips, 10)
    assert d.clip_test_clips == 25  # Clip@1 as released: 25 clips at random times
    assert (d.video_aug.crop_scale, d.video_aug.brightness, d.video_aug.hue) == ((0.08, 1.0), jitter, 0.2)
    assert (o.name, o.lr, o.weight_decay, o.batch_size * 8, o.epochs, o.lr_milestones, o.lr_gamma) == (
        "adam", 1e-4, 0.0, batch, epochs, milestones, 0.3)
    assert (cfg.finetune.mode, cfg.finetune.dropout, cfg.finetune.classifier_warmup_epochs) == ("full", 0.5, 5)
    # released test transform: resize the short side to 224 / 0.875 = 256, centre crop 224; training crops
    # come from the native frames
    assert (as_data_config(d, train=False).clip.size, as_data_config(d, train=True).clip.size) == (256, None)


def test_evaluate_action_three_crops_and_folds(ucf, tmp_path, capsys):
    lists = ucf / "ucfTrainTestlist"
    for name in ("trainlist", "testlist"):  # a second split (same files; only the bookkeeping matters here)
        (lists / f"{name}02.txt").write_text((lists / f"{name}01.txt").read_text())
    runs = []
    for split in (1, 2):
        run = tmp_path / f"split{split}"
        finetune(_cfg(ucf, f"data.split={split}", "run.max_steps=1", "data.test_clips=1"), run)
        runs.append(str(run / "last.pt"))
    rc = main(["evaluate", "action", "--folds", *runs, "--clips", "2", "--crops", "3", "--output-dir",
               str(tmp_path / "ev"), "--device", "cpu", "--set", "data.num_workers=0"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["splits"] == [1, 2] and all(f["crops"] == 3 and f["clips_per_video"] == 2 for f in res["folds"])
    assert res["top1"] == pytest.approx(sum(f["top1"] for f in res["folds"]) / 2)
    assert (tmp_path / "ev" / "split2" / "confusion.png").exists()
    capsys.readouterr()
    assert main(["evaluate", "action", "--folds", runs[0], runs[0], "--output-dir", str(tmp_path / "ev2"),
                 "--device", "cpu", "--set", "data.num_workers=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different splits" in err[0]


def test_per_stage_linear_probes(ucf, tmp_path):
    out = tmp_path / "stages"
    finetune(_cfg(ucf, "finetune.mode=stages", "finetune.stage_grids=[4,3,2,1]", "run.max_steps=2"), out)
    ev = json.loads((out / "eval.json").read_text())
    assert sorted(ev["stages"]) == ["stage1", "stage2", "stage3", "stage4"]
    assert ev["top1"] == ev["stages"]["stage4"]["top1"] and all(0 <= s["top1"] <= 1 for s in ev["stages"].values())
    cfg = load_config(FinetuneConfig, ROOT / "configs" / "finetune" / "linear-stages_r2plus1d18_8x224_12e_kinetics400.yaml")
    assert (cfg.finetune.mode, cfg.finetune.stage_grids, cfg.optim.lr, cfg.optim.epochs, cfg.optim.lr_milestones,
            cfg.optim.batch_size * 8, cfg.data.test_clips) == ("stages", [12, 8, 6, 4], 1e-4, 12, [6, 9], 128, 10)
    # released transforms: 256x256 (aspect not kept), random crop 224, flip, jitter (0.4, 0.4, 0.4, 0.2); test
    # the centre 224 of the same resize; the encoder's batch norm in training mode while the probes train
    a = cfg.data.video_aug
    assert (a.geometry, a.resize, a.keep_aspect, a.flip, a.jitter_prob) == ("resize_crop", 256, False, 0.5, 1.0)
    assert (a.brightness, a.contrast, a.saturation, a.hue, cfg.finetune.encoder_bn) == (0.4, 0.4, 0.4, 0.2, "train")
    assert as_data_config(cfg.data, train=False).video_aug.resize == 256
    from avssl.models.video import R2Plus1D, VideoEncoderConfig
    from avssl.models.classifier import StageProbe

    probe = StageProbe(R2Plus1D(VideoEncoderConfig(block="avid", stem_pool=True, pool="max")), 400, [12, 8, 6, 4])
    dims = [head[1].in_features for head in probe.heads]
    assert dims == [9216, 8192, 9216, 8192]  # the released feature sizes


def test_test_clips_are_resized_to_test_size_then_centre_cropped(ucf):
    # released UCF-101/HMDB-51 test transform on non-square (4:3) frames: short side 256, centre 224
    cfg = load_config(FinetuneConfig, ROOT / "configs" / "finetune" / "finetune_r2plus1d18_32x224_21e_ucf101.yaml")
    d = as_data_config(cfg.data, train=False)
    assert (d.clip.size, d.video_aug.resize, d.clip.crop) == (256, 256, 224)
    from avssl.data.transforms import VideoTransform

    frames = torch.randint(0, 256, (2, 256, 341, 3), dtype=torch.uint8)  # decoded at short side 256
    x, _ = VideoTransform(224, False, d.video_aug).geometry(frames)
    assert torch.equal(x, frames[:, 16:240, 58:282].permute(3, 0, 1, 2))


def test_classifier_warmup_has_its_own_optimizer_and_the_main_one_starts_fresh(ucf, tmp_path):
    from avssl.train.finetune import build_classifier

    cfg = _cfg(ucf, "run.max_steps=1", "finetune.classifier_warmup_epochs=1")
    torch.manual_seed(cfg.run.seed)
    initial = build_classifier(cfg, 6)[0].state_dict()
    out = tmp_path / "wu"
    assert finetune(cfg, out)["steps"] == 1
    ck = load_checkpoint(out / "last.pt")
    assert ck["optimizer"]["state"] == {}  # the main Adam has not stepped
    assert len(ck["warmup_optimizer"]["state"]) == 2  # the classifier's weight and bias
    weights = [k for k in initial if k.startswith("encoder.") and "running" not in k and "num_batches" not in k]
    assert all(torch.equal(ck["model"][k], initial[k]) for k in weights)  # the encoder waits
    assert not torch.equal(ck["model"]["fc.weight"], initial["fc.weight"])
    done = finetune(_cfg(ucf, "finetune.classifier_warmup_epochs=1"), out)  # resumes, then the main optimizer
    ck = load_checkpoint(out / "last.pt")
    assert done["steps"] > 1 and len(ck["optimizer"]["state"]) == len(weights) + 2


def test_linear_probe_batch_norm_mode(ucf, tmp_path):
    # encoder_bn: train (the released linear evaluation) lets the frozen encoder's batch-norm statistics follow
    # the data while the probe trains; eval keeps them
    stats = {}
    for mode in ("eval", "train"):
        finetune(_cfg(ucf, "finetune.mode=linear", f"finetune.encoder_bn={mode}", "run.max_steps=2"), tmp_path / mode)
        stats[mode] = load_checkpoint(tmp_path / mode / "last.pt")["model"]["encoder.stem.1.running_mean"]
    assert torch.equal(stats["eval"], torch.zeros_like(stats["eval"]))
    assert not torch.equal(stats["train"], torch.zeros_like(stats["train"]))


def test_clip_level_accuracy_uses_random_times(ucf, tmp_path):
    out = tmp_path / "clip"
    finetune(_cfg(ucf, "run.max_steps=1", "data.clip_test_clips=7"), out)
    ev = json.loads((out / "eval.json").read_text())
    assert ev["clip_level"] == {"clips_per_video": 7, "times": "random", "crop": "centre"}
    assert 0 <= ev["clip_top1"] <= ev["clip_top5"] <= 1
    from avssl.data.datasets import AVClipDataset

    entries = [json.loads(line) for line in (out / "test_manifest.jsonl").read_text().splitlines()]
    d = as_data_config(_cfg(ucf).data, train=False)
    ds = AVClipDataset(entries[:1], d, train=False, clips_per_video=7, random_times=True, seed=0)
    starts = [ds[i]["start"] for i in range(7)]
    assert len(set(starts)) == 7 and starts == [ds[i]["start"] for i in range(7)]  # random, and repeatable


def _folders(root: Path, ucf: Path) -> Path:
    """The UCF layout's videos as class folders (root/<class>/<file>), no split lists."""
    import shutil

    shutil.copytree(ucf / "UCF-101", root)
    return root


def test_class_folders_are_tested_on_videos_kept_out_of_training(ucf, tmp_path, capsys):
    """The user's run of 2026-12-05: class folders, fine-tuned, then 'tested' on its own training videos."""
    root = _folders(tmp_path / "videos", ucf)
    out = tmp_path / "ft"
    cfg = _cfg(ucf, "data.format=folders", f"data.root={root}", "data.annotations=null", "optim.epochs=1",
               "data.test_clips=1", "data.clip_test_clips=0", "data.test_share=0.34")
    finetune(cfg, out)
    train = set((out / "train_files.txt").read_text().split())
    test = set((out / "test_files.txt").read_text().split())
    assert train and test and not train & test and len(train | test) == 18
    assert "held out for the test (seed 0)" in capsys.readouterr().out
    ev = json.loads((out / "eval.json").read_text())
    assert ev["num_videos"] == len(test) == 6  # a third of each class's three videos
    again = tmp_path / "ft2"
    finetune(cfg, again)
    assert (again / "test_files.txt").read_text() == (out / "test_files.txt").read_text()  # seeded


def test_a_test_folder_of_its_own_and_one_that_repeats_training_files(ucf, tmp_path, capsys):
    root = _folders(tmp_path / "train", ucf)
    test_root = tmp_path / "test"
    for c in sorted(p.name for p in root.iterdir()):
        (test_root / c).mkdir(parents=True)
        first = sorted((root / c).glob("*.mp4"))[0]
        first.rename(test_root / c / first.name)
    base = ["--config", str(FT_SMALL), "--set", "data.format=folders", "--set", f"data.root={root}", "--set",
            "data.num_workers=0", "--set", "optim.batch_size=4", "--set", "optim.epochs=1", "--set",
            "run.progress=false", "--set", "run.device=cpu", "--set", "data.test_clips=1", "--set",
            "data.clip_test_clips=0"]
    assert main(["finetune", *base, "--set", f"data.test_root={test_root}", "--output-dir", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "eval.json").read_text())["num_videos"] == 6
    capsys.readouterr()
    assert main(["finetune", *base, "--set", f"data.test_root={root}", "--output-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training files too" in err[0] and "data.test_root" in err[0]
    assert not (tmp_path / "b").exists()  # refused before anything was written


def test_a_list_split_whose_test_list_repeats_a_training_file_is_refused(ucf, tmp_path, capsys):
    lines = [ln for ln in (ucf / "ucfTrainTestlist" / "trainlist01.txt").read_text().splitlines() if "gone" not in ln]
    train = tmp_path / "train.txt"
    train.write_text("\n".join(f"{p} {int(lbl) - 1}" for p, lbl in (ln.split() for ln in lines)) + "\n")
    test = tmp_path / "test.txt"
    test.write_text(train.read_text().splitlines()[3] + "\n")
    argv = ["finetune", "--config", str(FT_SMALL), "--set", "data.format=list", "--set", f"data.root={ucf / 'UCF-101'}",
            "--set", f"data.annotations={train}", "--set", f"data.test_annotations={test}", "--output-dir",
            str(tmp_path / "ft")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of the 1 test files are training files too" in err[0]
