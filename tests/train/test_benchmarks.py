from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avssl.cli import main
from avssl.config import load_config
from avssl.data.collection import build_manifest
from avssl.data.synthetic import SynthSpec, synthesize
from avssl.data.encode import write_av
from avssl.evaluation.retrieval import rank_metrics
from avssl.train.pretrain import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "configs" / "pretrain" / "avid_small_cpu.yaml"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("bench")
    synthesize(d / "media", 8, seed=4, spec=SynthSpec(width=64, height=64, fps=16, duration=1.5, sample_rate=16000))
    build_manifest(d / "media", d / "m.jsonl", progress=False)
    cfg = load_config(PretrainConfig, SMALL, [f"data.manifest={d / 'm.jsonl'}", "data.num_workers=0",
                                              "optim.batch_size=4", "optim.epochs=1", "run.progress=false",
                                              "loss.num_negatives=4", "run.device=cpu"])
    pretrain(cfg, d / "run")
    return d / "run" / "last.pt", d / "media"


def test_rank_metrics_by_hand():
    q = torch.eye(3)
    keys = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])  # query 0 finds its key first; 1 and 2 second
    m = rank_metrics(q, keys, ks=(1, 2))
    assert m["R@1"] == pytest.approx(1 / 3) and m["R@2"] == 1.0 and m["median_rank"] == 2.0


def test_evaluate_retrieval_command(checkpoint, tmp_path, capsys):
    import shutil

    from avssl.data.decode import decode_frames
    from avssl.data.encode import write_av

    ckpt, media = checkpoint
    videos = tmp_path / "videos"
    shutil.copytree(media, videos)
    write_av(videos / "mute.mp4", list(decode_frames(videos / "clip_00000.mp4", np.arange(12) / 8)), 8, None, 16000)
    out = tmp_path / "out"
    rc = main(["evaluate", "retrieval", "--checkpoint", str(ckpt), "--data", str(videos), "--clips", "2",
               "--output-dir", str(out), "--device", "cpu", "--set", "data.num_workers=0"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((out / "retrieval.json").read_text())
    assert printed == saved and saved["num_videos"] == 8
    assert [Path(f["path"]).name for f in saved["left_out_files"]] == ["mute.mp4"]  # named, not dropped silently
    for d in ("video_to_audio", "audio_to_video"):
        m = saved[d]
        assert 0 <= m["R@1"] <= m["R@5"] <= 1 and 1 <= m["median_rank"] <= 8
        assert m["chance_R@5"] == 5 / 8 and "R@10" not in m and m["left_out"].startswith("R@10 left out")


def test_evaluate_audio_esc50_five_folds(checkpoint, tmp_path, capsys):
    ckpt, _ = checkpoint
    root = tmp_path / "ESC-50"
    (root / "audio").mkdir(parents=True)
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    t = np.arange(int(2.0 * 44100)) / 44100
    rng = np.random.default_rng(0)
    for fold in range(1, 6):
        for target, name in ((0, "tone"), (1, "noise")):
            wave = 0.3 * np.sin(2 * np.pi * (400 + 40 * fold) * t) if target == 0 else 0.2 * rng.standard_normal(len(t))
            fn = f"{fold}-{target}-A-{target}.wav"
            write_av(root / "audio" / fn, None, 25, wave[None].astype(np.float32), 44100, audio_codec="pcm_s16le")
            rows.append(f"{fn},{fold},{target},{name},False,{fold},A")
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    rc = main(["evaluate", "audio", "--checkpoint", str(ckpt), "--root", str(root), "--clip-duration", "2.0",
               "--output-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["num_clips"] == 10 and sorted(res["per_fold_accuracy"]) == ["1", "2", "3", "4", "5"]
    assert res["mean_accuracy"] == pytest.approx(np.mean(list(res["per_fold_accuracy"].values())))
    assert res["mean_accuracy"] >= 0.9  # a tone against noise: separable even by a briefly trained encoder
    assert json.loads((tmp_path / "out" / "audio.json").read_text()) == res
