"""The `avssl` command as a user runs it: defaults that agree with the dataclasses, and config mistakes that
end with one line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from avssl.cli import _MEDIA_OPTIONS, _map_config, _spec, build_parser, main
from avssl.data.decode import probe
from avssl.data.reencode import ReencodeConfig
from avssl.data.synthetic import ActionSpec, ComposeSpec, SynthSpec
from avssl.localize.heatmap import MapConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "configs" / "pretrain" / "avid_small_cpu.yaml"


def test_cli_defaults_are_the_dataclasses_defaults():
    parse = build_parser().parse_args
    args = parse(["data", "synth", "--output-dir", "x", "--actions"])
    assert _spec(ActionSpec, args, **_MEDIA_OPTIONS) == ActionSpec()  # 64 px, 16 fps, 16 kHz: the README's set
    args = parse(["data", "synth", "--output-dir", "x"])
    assert _spec(SynthSpec, args, num_distractors="distractors", **_MEDIA_OPTIONS) == SynthSpec()
    args = parse(["data", "compose", "--output-dir", "x"])
    assert _spec(ComposeSpec, args, distractors="distractors", **_MEDIA_OPTIONS) == ComposeSpec()
    args = parse(["data", "reencode", "v.mp4", "--output-dir", "x"])
    assert _spec(ReencodeConfig, args, short_side="short_side", keyframe_interval="keyframe_interval",
                 crf="crf") == ReencodeConfig()
    for argv in (["localize", "--checkpoint", "c", "--video", "v", "--output-dir", "x"],
                 ["evaluate", "localization", "--checkpoint", "c", "--annotations", "a", "--media", "m",
                  "--output-dir", "x"]):
        # map settings: the checkpoint's `localize` section (MapConfig's defaults unless its config sets them)
        assert _map_config(parse(argv), MapConfig()) == MapConfig()
        assert _map_config(parse(argv), MapConfig(size=128)) == MapConfig(size=128)
        assert _map_config(parse([*argv, "--size", "96"]), MapConfig(size=128)) == MapConfig(size=96)
    assert _spec(ActionSpec, parse(["data", "synth", "--output-dir", "x", "--actions", "--fps", "8"]),
                 **_MEDIA_OPTIONS) == ActionSpec(fps=8)


def test_synth_actions_writes_the_action_sets_own_format(tmp_path):
    assert main(["data", "synth", "--actions", "--output-dir", str(tmp_path), "--num-clips", "1"]) == 0
    info = probe(next((tmp_path / "UCF-101").rglob("*.avi"), None) or next((tmp_path / "UCF-101").rglob("*.mp4")))
    spec = ActionSpec()
    assert (info.video.width, info.video.height, info.video.fps, info.audio.sample_rate) == (
        spec.width, spec.height, spec.fps, spec.sample_rate)


@pytest.mark.parametrize("argv, message", [
    (["pretrain", "--config", str(SMALL), "--set", "run.progress=false"], "set data.manifest"),
    (["finetune", "--config", str(ROOT / "configs/finetune/finetune_r2plus1d-small_4x56_8e_ucf101.yaml"),
      "--set", "finetune.stage_grids=[4,2]"], "finetune.stage_grids"),
    (["finetune", "--config", str(ROOT / "configs/finetune/finetune_r2plus1d-small_4x56_8e_ucf101.yaml"),
      "--set", "run.progress=false"], "set data.root"),
    (["pretrain", "--config", str(SMALL), "--set", "loss.kind=cma", "--set", "loss.cma_form=nce",
      "--set", "loss.form=infonce"], "loss.cma_form"),
    (["pretrain", "--config", str(SMALL), "--set", "data.mel.n_mels=40", "--set", "data.spectrogram.n_mels=80"],
     "old name"),
])
def test_config_mistakes_are_one_line_and_status_2(tmp_path, capsys, argv, message):
    rc = main([*argv, "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_manifest_with_no_usable_videos_is_one_line_and_status_2(tmp_path, capsys):
    empty = tmp_path / "manifest.jsonl"
    empty.write_text("")
    rc = main(["pretrain", "--config", str(SMALL), "--set", f"data.manifest={empty}", "--output-dir",
               str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "lists no usable videos" in err and "Traceback" not in err
