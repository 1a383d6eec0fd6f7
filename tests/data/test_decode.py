from __future__ import annotations

import json
import os

import numpy as np
import pytest

from avssl.data.decode import DecodeError, decode_clip, output_size, probe
from avssl.data.encode import write_av
from tests.conftest import EVENT_TIME, click_time, event_media, flash_time

FPS_OUT = 16
SR_OUT = 16000


def _clip(path, start=1.6, **kw):
    args = dict(video_duration=1.0, fps=FPS_OUT, size=32, audio_duration=2.0, sample_rate=SR_OUT)
    args.update(kw)
    return decode_clip(path, start, **args)


def test_probe_reports_stream_facts(event_video):
    info = probe(event_video)
    assert info.duration == pytest.approx(4.0, abs=0.05)
    assert info.video.codec == "h264" and (info.video.height, info.video.width) == (48, 64)
    assert info.video.fps == pytest.approx(30)
    assert info.video.start_time == pytest.approx(0.0)
    assert info.video.rotation == 0
    assert info.audio.codec == "aac" and info.audio.sample_rate == 44100 and info.audio.channels == 1
    assert info.size_bytes == os.path.getsize(event_video)
    row = info.to_dict()  # a manifest line: plain values that survive JSON
    assert json.loads(json.dumps(row)) == row and row["video"]["width"] == 64


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("aligned.mp4", {}),
        ("video_late.mp4", {"video_start": 0.5}),
        ("audio_late.mp4", {"audio_start": 0.7}),
        ("both_late.mkv", {"video_start": 0.3, "audio_start": 0.9}),
        ("flac.mkv", {"audio_codec": "flac"}),
        ("stereo_48k.mp4", {"sample_rate": 48000, "channels": 2, "fps": 25}),
    ],
)
@pytest.mark.parametrize("start", [1.6, 1.53])
def test_audio_and_video_are_cut_on_the_same_clock(tmp_path, name, kwargs, start):
    path = event_media(tmp_path / name, **kwargs)
    info = probe(path)
    # Times are relative to the container start (MP4 edit lists usually make it 0, MKV keeps offsets).
    event = EVENT_TIME - info.start_time
    if "video_start" in kwargs:
        assert info.start_time + info.video.start_time == pytest.approx(kwargs["video_start"], abs=0.01)
    clip = _clip(path, start - info.start_time)
    # The first frame showing the flash is the first output time at or after the event.
    assert 0 <= flash_time(clip.frames, clip.frame_times) - event < 1 / FPS_OUT
    assert click_time(clip.waveform, clip.audio_start, SR_OUT) == pytest.approx(event, abs=0.010)
    assert clip.waveform.shape == (2 * SR_OUT,) and clip.waveform.dtype == np.float32
    assert not clip.padded


def test_audio_window_is_centred_and_offset_configurable(event_video):
    clip = _clip(event_video, 1.6, video_duration=0.5, audio_duration=1.0)
    assert clip.audio_start == pytest.approx(1.6 + 0.25 - 0.5)
    shifted = _clip(event_video, 1.6, video_duration=0.5, audio_duration=1.0, audio_offset=0.2)
    assert shifted.audio_start == pytest.approx(clip.audio_start + 0.2)
    # Same event, found 0.2 s earlier in the shifted window.
    k0 = click_time(clip.waveform, 0, SR_OUT)
    k1 = click_time(shifted.waveform, 0, SR_OUT)
    assert k0 - k1 == pytest.approx(0.2, abs=0.002)


def test_frames_are_picked_by_timestamp_exactly(tmp_path):
    # Lossless gray frames whose level encodes the frame index.
    fps, n = 30, 60
    frames = [np.full((32, 32, 3), 8 * i % 256 if i < 32 else 8 * (i - 32) + 4, np.uint8) for i in range(n)]
    levels = np.array([f[0, 0, 0] for f in frames], dtype=float)
    path = tmp_path / "index.mkv"
    write_av(path, frames, fps, None, gop=10, crf=0)
    clip = decode_clip(path, 0.37, video_duration=0.5, fps=10, audio_duration=None)
    expected = np.floor(np.round((0.37 + np.arange(5) / 10) * fps, 6)).astype(int)
    got = clip.frames[:, 0, 0, 0].astype(float)
    assert np.abs(got - levels[expected]).max() <= 2


def test_sizes_short_side_and_exact(event_video):
    c = _clip(event_video, size=24)
    assert c.frames.shape == (16, 24, 32, 3) and c.frames.dtype == np.uint8
    c = _clip(event_video, size=(20, 30))
    assert c.frames.shape == (16, 20, 30, 3)
    c = _clip(event_video, size=None)
    assert c.frames.shape == (16, 48, 64, 3)
    assert output_size(720, 1280, 112) == (112, 199)
    assert output_size(1280, 720, 112) == (199, 112)


@pytest.mark.parametrize("rotation, corner", [(-90, "top-right"), (90, "bottom-left"), (180, "bottom-right")])
def test_rotated_stream_is_turned_upright(tmp_path, rotation, corner):
    # As FFmpeg's autorotate: a display matrix of -90 degrees (phones held upright) turns the frame
    # 90 degrees clockwise, so the coded top-left corner ends up top-right.
    img = np.full((32, 48, 3), 16, np.uint8)
    img[:8, :8] = 235  # a marker in the coded top-left corner
    path = tmp_path / "rot.mp4"
    write_av(path, [img] * 20, 20, None, rotation=rotation, crf=0)
    assert probe(path).video.rotation == rotation % 360
    clip = decode_clip(path, 0.0, 0.5, 8, size=None, audio_duration=None)
    assert clip.frames.shape == ((4, 48, 32, 3) if rotation % 180 else (4, 32, 48, 3))
    f = clip.frames[0, :, :, 0].astype(int)
    h, w = f.shape
    corners = {"top-left": f[:4, :4], "top-right": f[:4, w - 4 :], "bottom-left": f[h - 4 :, :4],
               "bottom-right": f[h - 4 :, w - 4 :]}
    assert {k for k, v in corners.items() if v.mean() > 128} == {corner}


def test_only_the_needed_packets_are_decoded(tmp_path):
    path = event_media(tmp_path / "long.mp4", duration=12.0, fps=25, gop=25, with_audio=False)
    clip = decode_clip(path, 9.3, 0.5, 16, audio_duration=None)
    # Seek lands on the keyframe at 9.0 s; decoding stops after the frame past 9.8 s.
    assert clip.decoded_frames <= int((9.8 - 9.0) * 25) + 3
    assert clip.frame_times[0] == pytest.approx(9.3)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_containers_are_closed_on_success_and_error(tmp_path, event_video):
    silent = event_media(tmp_path / "silent.mp4", with_audio=False)
    _clip(event_video)
    before = _open_fds()
    for _ in range(5):
        _clip(event_video)
        probe(event_video)
        with pytest.raises(DecodeError):
            _clip(silent)
    assert _open_fds() == before


def test_missing_audio_is_an_error_or_silence(tmp_path):
    path = event_media(tmp_path / "silent.mp4", with_audio=False)
    assert probe(path).audio is None
    with pytest.raises(DecodeError, match="no audio stream"):
        _clip(path)
    clip = _clip(path, missing_audio="silence")
    assert not clip.has_audio and clip.waveform.shape == (2 * SR_OUT,) and not clip.waveform.any()
    assert any("silence" in n for n in clip.notes)
    assert _clip(path, audio_duration=None).waveform is None


def test_audio_only_file(tmp_path):
    path = event_media(tmp_path / "audio.m4a", with_video=False)
    info = probe(path)
    assert info.video is None and info.audio.sample_rate == 44100
    with pytest.raises(DecodeError, match="no video stream"):
        _clip(path)


def test_surround_audio_is_downmixed_to_mono(tmp_path):
    path = event_media(tmp_path / "surround.mp4", channels=6)
    assert probe(path).audio.channels == 6
    clip = _clip(path)
    assert clip.waveform.ndim == 1 and clip.waveform.shape == (2 * SR_OUT,)
    assert click_time(clip.waveform, clip.audio_start, SR_OUT) == pytest.approx(EVENT_TIME, abs=0.010)


def test_low_sample_rate_audio_is_upsampled_and_noted(tmp_path):
    path = event_media(tmp_path / "phone.mp4", sample_rate=8000)
    assert probe(path).audio.sample_rate == 8000
    clip = _clip(path)
    assert clip.waveform.shape == (2 * SR_OUT,)
    assert any("upsampled from 8000" in n for n in clip.notes)
    assert click_time(clip.waveform, clip.audio_start, SR_OUT) == pytest.approx(EVENT_TIME, abs=0.010)


def test_window_past_the_end_is_padded_and_reported(event_video):
    clip = _clip(event_video, start=3.6, video_duration=1.0)
    assert clip.frames.shape[0] == 16
    past = clip.frame_times >= 4.0  # the last frame (3.967 s) is on screen until 4.0 s
    assert clip.video_padded_frames == past.sum() == 9
    assert all(np.array_equal(f, clip.frames[~past][-1]) for f in clip.frames[past])  # last frame repeated
    # Audio window [3.1, 5.1) s; the audio ends at 4.0 s (+ up to one AAC frame of 23 ms).
    assert clip.audio_padded_samples == pytest.approx(int(1.1 * SR_OUT), abs=0.03 * SR_OUT)
    assert not clip.waveform[-int(0.5 * SR_OUT) :].any()
    assert clip.padded and any("padded" in n for n in clip.notes)
    with pytest.raises(DecodeError, match="past the media"):
        _clip(event_video, start=3.6, on_short="error")


def test_window_before_the_start_pads_audio(event_video):
    clip = _clip(event_video, start=0.0, video_duration=0.5)  # audio window starts at -0.75 s
    assert clip.video_padded_frames == 0
    assert clip.audio_padded_samples == pytest.approx(int(0.75 * SR_OUT), abs=0.01 * SR_OUT)


def test_truncated_files(tmp_path):
    # moov at the end (PyAV's default): a cut file cannot be opened.
    whole = event_media(tmp_path / "whole.mp4", duration=6.0)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DecodeError, match="cut.mp4"):
        probe(cut)
    with pytest.raises(DecodeError):
        _clip(cut)
    # moov at the start: the header survives; verification and late clips notice.
    fast = event_media(tmp_path / "fast.mp4", duration=6.0, container_options={"movflags": "faststart"})
    data = fast.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    media_start = data.find(b"mdat")
    cut2 = tmp_path / "cut2.mp4"
    cut2.write_bytes(data[: media_start + (len(data) - media_start) // 3])
    assert probe(cut2).duration == pytest.approx(6.0, abs=0.1)  # the header's claim
    with pytest.raises(DecodeError, match="truncated"):
        probe(cut2, verify=True)
    with pytest.raises(DecodeError):
        _clip(cut2, start=5.0, video_duration=0.5)


@pytest.mark.parametrize(
    "content, reason",
    [(None, "file not found"), (b"", "empty file"), (os.urandom(20000), "cannot open")],
    ids=["missing", "empty", "random-bytes"],
)
def test_unreadable_inputs_raise_decode_error_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    for call in (lambda: probe(path), lambda: _clip(path)):
        with pytest.raises(DecodeError, match=reason) as err:
            call()
        assert err.value.path == str(path) and str(path) in str(err.value)


def test_directory_is_rejected(tmp_path):
    with pytest.raises(DecodeError, match="directory"):
        probe(tmp_path)


def test_decode_error_survives_pickling():
    import pickle

    e = pickle.loads(pickle.dumps(DecodeError("/x.mp4", "broken")))
    assert (e.path, e.reason) == ("/x.mp4", "broken")


def test_frames_no_target_shows_are_skipped_without_changing_what_the_targets_show(tmp_path, monkeypatch):
    """The decoder drops non-reference frames that no output time shows (B-frames before and between the picked
    frames): the clips are identical to decoding every frame, at any window, and fewer frames are decoded."""
    from avssl.data import decode as dec

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) // 4 * 4 + 2 * i % 4 for i in range(150)]
    path = tmp_path / "bframes.mp4"
    write_av(path, frames, 25, None, gop=50, crf=18)  # x264 with B-frames, 2 s keyframes
    starts = [0.0, 0.03, 1.97, 2.0, 3.3, 5.6, 5.9] + list(rng.uniform(0, 6, 12))
    fast = [decode_clip(path, s, 0.5, 16, None, None) for s in starts]
    monkeypatch.setattr(dec, "_needed", lambda *a: None)  # decode every frame
    full = [decode_clip(path, s, 0.5, 16, None, None) for s in starts]
    for s, a, b in zip(starts, fast, full):
        np.testing.assert_array_equal(a.frames, b.frames, err_msg=f"start {s}")
        assert a.video_padded_frames == b.video_padded_frames
    assert sum(a.decoded_frames for a in fast) < 0.8 * sum(b.decoded_frames for b in full)
