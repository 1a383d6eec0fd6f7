from __future__ import annotations

import av
import numpy as np
import pytest

from avssl.cli import main
from avssl.data.decode import DecodeError, decode_clip, probe
from avssl.data.reencode import ReencodeConfig, reencode_file
from tests.conftest import EVENT_TIME, click_time, event_media, flash_time


def _keyframe_times(path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(p.pts * p.time_base) for p in c.demux(c.streams.video[0]) if p.is_keyframe and p.pts is not None]


@pytest.mark.parametrize("audio_codec", ["aac", "flac"])
def test_reencode_resizes_sets_keyframes_and_keeps_audio_in_sync(tmp_path, audio_codec):
    ext = ".mp4" if audio_codec == "aac" else ".mkv"
    src = event_media(tmp_path / f"src{ext}", size=(96, 128), fps=25, gop=75, audio_codec=audio_codec)
    dst = tmp_path / "out" / "src.mp4"
    reencode_file(src, dst, ReencodeConfig(short_side=64, keyframe_interval=1.0))
    info = probe(dst)
    assert (info.video.height, info.video.width) == (64, 86)
    assert info.audio.codec == "aac" and info.duration == pytest.approx(4.0, abs=0.1)
    keys = _keyframe_times(dst)
    assert np.allclose(np.diff(keys), 1.0)
    clip = decode_clip(dst, 1.6, 1.0, 16, 32, 2.0, 16000)
    assert 0 <= flash_time(clip.frames, clip.frame_times) - EVENT_TIME < 1 / 16
    assert click_time(clip.waveform, clip.audio_start, 16000) == pytest.approx(EVENT_TIME, abs=0.010)
    assert not list(dst.parent.glob(".*tmp*"))  # no temporary files left


def test_reencode_errors_and_cli(tmp_path, capsys):
    bad = tmp_path / "in" / "bad.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(DecodeError):
        reencode_file(bad, tmp_path / "x.mp4")
    event_media(tmp_path / "in" / "ok.mp4", duration=1.0)
    rc = main(["data", "reencode", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), "--workers", "1"])
    assert rc == 1 and "bad.mp4" in capsys.readouterr().err
    assert probe(tmp_path / "out" / "ok.mp4").video.height == 256


def test_reencoded_files_have_skippable_b_frames_and_at_most_stereo_audio(tmp_path):
    """For fast clips: B-frames no frame refers to between references (the loader skips those no clip shows; the
    source's own frame types are not forced on the encoder), and 5.1 audio downmixed to stereo, still in sync."""
    src = event_media(tmp_path / "src.mp4", size=(96, 128), fps=25, gop=25, channels=6, duration=4.0)
    dst = tmp_path / "out.mp4"
    reencode_file(src, dst, ReencodeConfig(short_side=64))
    with av.open(str(dst)) as c:
        types = [str(f.pict_type) for f in c.decode(video=0)]
    assert types.count("3") >= len(types) // 2  # B
    info = probe(dst)
    assert info.audio.channels == 2 and info.audio.codec == "aac"
    clip = decode_clip(dst, 1.6, 1.0, 16, 32, 2.0, 16000)
    assert 0 <= flash_time(clip.frames, clip.frame_times) - EVENT_TIME < 1 / 16
    assert click_time(clip.waveform, clip.audio_start, 16000) == pytest.approx(EVENT_TIME, abs=0.010)
    stereo = event_media(tmp_path / "stereo.mp4", size=(96, 128), channels=2, duration=2.0)
    reencode_file(stereo, tmp_path / "copied.mp4", ReencodeConfig(short_side=64))
    with av.open(str(stereo)) as a, av.open(str(tmp_path / "copied.mp4")) as b:  # stereo AAC: copied, not re-encoded
        assert [bytes(p) for p in a.demux(audio=0)][:20] == [bytes(p) for p in b.demux(audio=0)][:20]
